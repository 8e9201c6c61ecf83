"""Does a heatmap point at the right place? Localisation metrics against a box, in torch.

- pointing game (Zhang et al. 2016): is the map's peak inside the box?
- energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's mass inside the box.
- flicker: mean absolute change of a map from one frame to the next.
- boxes from a map, and the same measures against a region in frame pixels (box or mask), with IoU.
"""

from __future__ import annotations

import cv2
import numpy as np
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


# ----- in frame pixels, against any region (a box or a mask): what `streamcam check` measures ---------------

def boxes_from_map(heatmap: np.ndarray, threshold: float | str = 0.5, min_area: float = 0.002) -> list[Box]:
    """Boxes around the hot regions of an (H,W) map in [0,1], as in the CAM paper's weakly supervised
    localisation: threshold at `threshold` × the map's maximum (or "otsu"), take 8-connected components
    larger than `min_area` of the map, and box each. Boxes are (x0, y0, x1, y1) pixel edges, hottest
    (largest map mass) first."""
    if heatmap.max() <= 0:
        return []
    as_bytes = np.clip(heatmap / heatmap.max() * 255, 0, 255).astype(np.uint8)
    if threshold == "otsu":
        _, binary = cv2.threshold(as_bytes, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        binary = (heatmap >= float(threshold) * heatmap.max()).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    found = []
    for label in range(1, count):
        x, y, width, height, area = stats[label]
        if area >= min_area * heatmap.size:
            mass = float(heatmap[labels == label].sum())
            found.append((mass, (float(x), float(y), float(x + width), float(y + height))))
    return [box for _, box in sorted(found, key=lambda item: -item[0])]


def region_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """(H,W) bool mask of the pixels whose centres lie inside a box given by its pixel edges."""
    height, width = shape
    ys, xs = np.arange(height)[:, None] + 0.5, np.arange(width)[None, :] + 0.5
    return (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])


def mask_energy_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of an (H,W) map's mass inside a same-size bool mask (energy-based pointing game)."""
    total = float(heatmap.sum())
    return float(heatmap[mask].sum()) / total if total > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
