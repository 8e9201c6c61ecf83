"""Raw maps -> heatmaps in [0,1] at the input's resolution, on the maps' device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cells import CellCentres, upsample_at_cells

# A map whose range is below this fraction of its peak is flat (fp32 noise, a dead layer): it becomes
# all zeros instead of noise stretched to full contrast.
_FLAT = 1e-5


ALIGNMENTS = ("image", "receptive-field")


def normalize_maps(raw: torch.Tensor, size: tuple[int, int], centres: CellCentres | None = None) -> torch.Tensor:
    """ReLU, bilinear upsampling to `size`, then min-max to [0,1] per map. (B,K,h,w) -> (B,K,H,W).

    The order matches pytorch-grad-cam (ReLU, min-max, resize, min-max): bilinear interpolation is a
    convex combination, so it commutes with the affine min-max and one normalisation after it suffices.
    NaN and inf (overflow in fp16, a broken model) count as zero.

    Cells are placed as pytorch-grad-cam places them (align "image": the map is a small image covering
    the input), or, with `centres` (align "receptive-field"), where the layer's cells look (cells.py).
    """
    maps = torch.nan_to_num(raw.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    if tuple(maps.shape[-2:]) != tuple(size):
        if centres is not None:
            maps = upsample_at_cells(maps, size, centres)
        else:
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return minmax(maps)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each (h,w) map to [0,1]; flat maps become zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    flat = span <= _FLAT * high.abs()
    scaled = (maps - low) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(scaled), scaled)
