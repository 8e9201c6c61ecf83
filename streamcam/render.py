"""Heatmap -> picture: colormap lookup table and alpha blend over the frame."""

from __future__ import annotations

import functools

import cv2
import numpy as np

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS}


@functools.cache
def colormap_lut(name: str) -> np.ndarray:
    """(256,3) uint8 RGB table for a colormap; OpenCV already has the tables, so take them once."""
    from .errors import unknown_name

    if name not in COLORMAPS:
        raise unknown_name("colormap", name, COLORMAPS)
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, COLORMAPS[name])[:, 0, ::-1].copy()


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a [0,1] heatmap (h,w) over an RGB uint8 frame (H,W,3), resizing the map to the frame."""
    height, width = frame.shape[:2]
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.clip(heatmap * 255 + 0.5, 0, 255).astype(np.uint8)
    colours = colormap_lut(colormap)[levels]
    return cv2.addWeighted(colours, alpha, frame, 1 - alpha, 0)
