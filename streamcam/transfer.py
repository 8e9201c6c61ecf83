"""Frames between the host and the compute device: one copy each way, through pinned memory.

From pageable memory a copy to the GPU is staged by the driver and blocks; from pinned (page-locked)
memory it is a DMA that overlaps with compute. torch's caching host allocator recycles a pinned block
once the copies that used it have finished, so a fresh pinned buffer per batch costs nothing after the
first few. On the CPU both directions are free: tensors and arrays share memory.
"""

from __future__ import annotations

import numpy as np
import torch


def upload(images: list[np.ndarray | torch.Tensor], device: torch.device) -> torch.Tensor:
    """Stack same-shaped uint8 images into one (B, ...) tensor on `device`. Host arrays are stacked
    straight into pinned memory (the only CPU copy) and sent without blocking; images already on the
    device (NVDEC) are stacked there."""
    if isinstance(images[0], torch.Tensor):
        return torch.stack(images).to(device)
    if device.type != "cuda":
        return torch.from_numpy(np.stack(images))
    staging = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=True)
    np.stack(images, out=staging.numpy())
    return staging.to(device, non_blocking=True)


def download(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a host array: on CUDA, one non-blocking copy into pinned memory on the current stream,
    waiting for that stream only (not for work other threads queued on other streams)."""
    if tensor.device.type != "cuda":
        return tensor.numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    return host.numpy()  # the array keeps the pinned tensor alive
