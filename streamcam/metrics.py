"""Does a heatmap point at the right place? Localisation metrics against a box, in torch.

- pointing game (Zhang et al. 2016): is the map's peak inside the box?
- energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's mass inside the box.
- flicker: mean absolute change of a map from one frame to the next.
"""

from __future__ import annotations

import torch

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in map pixels, inclusive


def peak(heatmap: torch.Tensor) -> tuple[int, int]:
    """(x, y) of the maximum of an (H,W) map."""
    y, x = divmod(int(heatmap.argmax()), heatmap.shape[-1])
    return x, y


def pointing_hit(heatmap: torch.Tensor, box: Box) -> bool:
    x, y = peak(heatmap)
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def box_mask(shape: tuple[int, int], box: Box, device: torch.device | None = None) -> torch.Tensor:
    height, width = shape
    ys = torch.arange(height, device=device)[:, None]
    xs = torch.arange(width, device=device)[None, :]
    return (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])


def energy_share(heatmap: torch.Tensor, box: Box) -> float:
    """Fraction of the map's total (non-negative) mass inside the box; 0 for an all-zero map."""
    total = heatmap.sum()
    if total <= 0:
        return 0.0
    inside = heatmap[box_mask(tuple(heatmap.shape[-2:]), box, heatmap.device)].sum()
    return float(inside / total)


def flicker(maps: list[torch.Tensor]) -> float:
    """Mean absolute frame-to-frame change of a sequence of same-size maps in [0,1]."""
    if len(maps) < 2:
        return 0.0
    return sum(float((b - a).abs().mean()) for a, b in zip(maps, maps[1:])) / (len(maps) - 1)
