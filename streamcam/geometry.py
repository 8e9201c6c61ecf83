"""Where a heatmap's pixels sit on its frame, in one place: peaks, boxes and upsampled maps.

The model input is the whole frame resized (aspect kept, nothing cropped), so a map covers the whole
frame: map pixel (x, y) is the frame's region [x, x+1) * W/w by [y, y+1) * H/h, and upsampling is
bilinear with pixel centres aligned (OpenCV's and torch's align_corners=False, the same convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .metrics import Box


@dataclass(frozen=True)
class MapGeometry:
    map_size: tuple[int, int]  # (h, w)
    frame_size: tuple[int, int]  # (H, W)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) frame pixels per map pixel."""
        return self.frame_size[1] / self.map_size[1], self.frame_size[0] / self.map_size[0]

    def point(self, x: int, y: int) -> tuple[int, int]:
        """A map pixel's centre, in frame pixels."""
        sx, sy = self.scale
        return min(self.frame_size[1] - 1, int((x + 0.5) * sx)), min(self.frame_size[0] - 1, int((y + 0.5) * sy))

    def box(self, box: Box) -> Box:
        """A box of map pixel edges, in frame pixels."""
        sx, sy = self.scale
        x0, y0, x1, y1 = box
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy

    def upsample(self, heatmap: np.ndarray) -> np.ndarray:
        """An (h,w) float map at the frame's size, on the host."""
        height, width = self.frame_size
        if heatmap.shape == (height, width):
            return heatmap
        return cv2.resize(heatmap.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR)

    def upsample_tensor(self, maps: torch.Tensor) -> torch.Tensor:
        """(K,h,w) maps at the frame's size, where they are."""
        return F.interpolate(maps[:, None].float(), size=self.frame_size, mode="bilinear", align_corners=False)[:, 0]
