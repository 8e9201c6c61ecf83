"""Temporary changes to a model while it is explained, all undone on exit.

After an explanation the model must behave exactly as before: same train/eval flags, same
`requires_grad` flags, no hooks left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import unknown_name

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm uses running stats, dropout is off); restores each module's own flag."""
    training = [module for module in model.modules() if module.training]
    for module in training:
        module.training = False
    try:
        yield
    finally:
        for module in training:
            module.training = True


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter records autograd history, so backward never computes a parameter gradient."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


class LayerTap:
    """A forward hook on the explained layer that captures its output.

    With `grad=True` it also makes the rest of the forward pass record autograd history starting at the
    layer: the trunk before it ran without a graph, so the model is split at the layer and backward only
    goes through the head.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.activation: torch.Tensor | None = None
        self.armed = False
        self.grad = False

    @contextlib.contextmanager
    def attached(self) -> Iterator[LayerTap]:
        handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()
            self.activation = None
            self.armed = False

    @contextlib.contextmanager
    def capture(self, grad: bool) -> Iterator[LayerTap]:
        self.armed, self.grad, self.activation = True, grad, None
        try:
            yield self
        finally:
            self.armed = False

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if not self.armed:
            return None
        if self.grad:
            torch.set_grad_enabled(True)  # restored by the caller's torch.no_grad() on exit
            output = output.detach().requires_grad_(True)
        self.activation = output
        return output


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' runs the network in the fastest precision the hardware has natively: bf16 on CUDA GPUs that
    support it (fp16 on older ones) and on CPUs with bf16 instructions, fp32 on other CPUs."""
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions there about twice as fast as fp32 (ResNet-18 at
    299x168, batch 4, 2 cores: 51-56 ms against 97-101), with the demo model's maps within 0.004 and the
    same pointing-game score (docs/benchmarks.md). Elsewhere bf16 is emulated, and slower."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None not in checks:
        return any(check() for check in checks)
    try:  # older torch (2.4) has no such checks: the CPU's flags (Linux) tell
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_tile" in flags


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the network; CAM arithmetic stays in fp32 outside of it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])
