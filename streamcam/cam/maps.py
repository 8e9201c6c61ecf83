"""Raw maps -> heatmaps in [0,1] at the input's resolution, on the maps' device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# A map whose range is below this fraction of its peak is flat (fp32 noise, a dead layer): it becomes
# all zeros instead of noise stretched to full contrast.
_FLAT = 1e-5


ALIGNMENTS = ("image", "receptive-field")


def normalize_maps(raw: torch.Tensor, size: tuple[int, int], align: str = "image") -> torch.Tensor:
    """ReLU, bilinear upsampling to `size`, then min-max to [0,1] per map. (B,K,h,w) -> (B,K,H,W).

    The order matches pytorch-grad-cam (ReLU, min-max, resize, min-max): bilinear interpolation is a
    convex combination, so it commutes with the affine min-max and one normalisation after it suffices.
    NaN and inf (overflow in fp16, a broken model) count as zero.

    `align` says where a feature-map cell sits in the input:
    - "image" (pytorch-grad-cam and most tools): the map is a small image covering the input, so cell
      i is centred at (i + 0.5) * stride - 0.5;
    - "receptive-field": cell i is centred where its receptive field is, at i * stride, as in networks
      whose convolutions pad by half their kernel (ResNet, VGG, EfficientNet, ...). The "image" reading
      puts every map (stride - 1) / 2 pixels too far right and down: 15.5 pixels at ResNet's layer4.
    """
    maps = torch.nan_to_num(raw.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    if tuple(maps.shape[-2:]) != tuple(size):
        if align == "receptive-field":
            maps = _upsample_at_receptive_fields(maps, size)
        else:
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return minmax(maps)


def _upsample_at_receptive_fields(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear sampling where input pixel p reads the map at cell p / stride (edges clamped)."""
    (height, width), (rows, columns) = size, maps.shape[-2:]

    def positions(pixels: int, cells: int) -> torch.Tensor:
        stride = 2 ** round(math.log2(pixels / cells))  # CNN strides are powers of two
        cell = torch.arange(pixels, device=maps.device, dtype=torch.float32) / stride
        return cell * 2 / (cells - 1) - 1 if cells > 1 else torch.zeros_like(cell)  # [-1, 1] over centres

    ys, xs = torch.meshgrid(positions(height, rows), positions(width, columns), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).expand(maps.shape[0], height, width, 2)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each (h,w) map to [0,1]; flat maps become zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    flat = span <= _FLAT * high.abs()
    scaled = (maps - low) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(scaled), scaled)
