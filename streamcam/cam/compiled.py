"""`compile=True` (--compile): the forward pass of an explanation that needs no backward pass, compiled.

torchvision's feature extraction traces the model into a graph that returns the explained layer's
activation and the logits (no hooks, which compiled code handles badly), and torch.compile turns it
into fused kernels; on a GPU it also captures CUDA graphs ("reduce-overhead"), which take away the
per-kernel launch cost that dominates small batches. Compiling takes tens of seconds per input shape,
so it pays on long runs only (docs/benchmarks.md).
"""

from __future__ import annotations

import collections
import threading

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from ..errors import StreamcamError
from ..plan import uses_cuda_graphs


class CompiledForward:
    """model(x) -> (activation of `layer`, logits), compiled. A batch smaller than `batch_size` (or than
    the largest seen so far, without one) is padded, so that it reuses the compiled graph instead of
    compiling another; outputs are copied out of CUDA graphs' memory, which the next call reuses."""

    def __init__(self, model: nn.Module, layer: str, device: torch.device, batch_size: int = 1):
        try:
            output = get_graph_node_names(model)[1][-1]
            extractor = create_feature_extractor(model, return_nodes={layer: "activation", output: "logits"}).eval()
        except Exception as error:  # noqa: BLE001 - torch.fx raises many types for code it cannot trace
            raise StreamcamError(f"--compile: cannot trace {type(model).__name__} ({type(error).__name__}: {error}); "
                                 "run without --compile") from None
        self.cuda_graphs = uses_cuda_graphs(device)
        self.forward = torch.compile(extractor, mode="reduce-overhead" if self.cuda_graphs else None, dynamic=False)
        self.batch = batch_size

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = x.shape[0]
        self.batch = max(self.batch, count)
        if count < self.batch:
            x = torch.cat([x, x.new_zeros((self.batch - count, *x.shape[1:]))])
        if self.cuda_graphs:
            cuda_graph_state_in_this_thread()
        features = self.forward(x.contiguous(memory_format=torch.channels_last))  # one layout: another compiles again
        return features["activation"][:count].clone(), features["logits"][:count].clone()


def cuda_graph_state_in_this_thread() -> None:
    """torch.compile's CUDA graphs keep their state in thread-local storage, which torch before 2.14 sets
    up only in the thread that imported them (pytorch#123177); every run's explain stage is a new thread.
    Set it up here as torch 2.14 does itself."""
    from torch._inductor import cudagraph_trees as trees

    if hasattr(trees.local, "tree_manager_containers") or torch._C._is_key_in_tls("tree_manager_containers"):
        return
    trees.local.tree_manager_containers = {}
    trees.local.tree_manager_locks = collections.defaultdict(threading.Lock)
    torch._C._stash_obj_in_tls("tree_manager_containers", trees.local.tree_manager_containers)
    torch._C._stash_obj_in_tls("tree_manager_locks", trees.local.tree_manager_locks)
