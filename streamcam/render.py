"""Heatmaps -> pictures: upsample, colormap (a 256-entry lookup table), alpha blend, labels and FPS.

Two renderers make the same pictures. On a GPU, blending runs on the device and one uint8 image comes
back; on the CPU, OpenCV's uint8 SIMD routines are an order of magnitude faster than torch float ops
(DESIGN.md), so they do the work. Frames are BGR, as OpenCV, the window and the encoder take them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import unknown_name
from .explain import ExplainedFrame

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@functools.cache
def colormap_lut(name: str) -> np.ndarray:
    """(256,3) uint8 BGR table; OpenCV already has the tables, so take them once."""
    if name not in COLORMAPS:
        raise unknown_name("colormap", name, COLORMAPS)
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, COLORMAPS[name])[:, 0].copy()


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a [0,1] heatmap (h,w) over a BGR uint8 frame (H,W,3), resizing the map to the frame."""
    height, width = frame.shape[:2]
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    levels = cv2.convertScaleAbs(heatmap, alpha=255.0)  # saturating, rounding float -> uint8
    colours = cv2.applyColorMap(levels, colormap_lut(colormap)[:, None, :])
    return cv2.addWeighted(colours, alpha, frame, 1 - alpha, 0)


class Renderer:
    """Composes the picture for one explained frame in a `view`:

    - overlay: the frame with the heatmap blended over it;
    - side: the original frame | the overlay;
    - grid: one overlay per explained class (top-k), each labelled.

    The label shows the explained class and its probability (and the top-k list when top_k > 1); the
    FPS sits in the top-right corner.
    """

    def __init__(self, class_name: Callable[[int], str], *, view: str = "overlay", alpha: float = 0.5,
                 colormap: str = "jet", top_k: int = 1):
        self.class_name = class_name
        self.view = view
        self.alpha = alpha
        self.lut = colormap_lut(colormap)
        self.top_k = top_k

    def render(self, explained: ExplainedFrame, fps: float | None = None) -> np.ndarray:
        frame = explained.frame.image
        overlays = self.overlays(frame, explained.maps)
        if self.view == "grid":
            tiles = []
            for rank, (overlay_image, cls, probability) in enumerate(zip(overlays, explained.classes, explained.probabilities)):
                tiles.append(draw_text_box(overlay_image, [f"{rank + 1}. {self.class_name(cls)} {_percent(probability)}"]))
            picture = _grid(tiles)
        else:
            if explained.boxes:
                overlays[0] = draw_boxes(overlays[0], explained.boxes)
            labelled = draw_text_box(overlays[0], self._label_lines(explained))
            picture = np.concatenate([frame, labelled], axis=1) if self.view == "side" else labelled
        if fps is not None:
            picture = draw_text_box(picture, [f"{fps:.1f} fps"], right=True)
        return picture

    def _label_lines(self, explained: ExplainedFrame) -> list[str]:
        """The explained class, or with top_k > 1 the ranked list; a --target class outside the top-k
        is named on a first line of its own, so the label always says what the heatmap explains."""
        cls, probability = explained.classes[0], explained.probabilities[0]
        if self.top_k == 1 and explained.top[0][0] == cls:
            return [f"{self.class_name(cls)} {_percent(probability)}"]
        lines = [f"{rank + 1}. {self.class_name(c)} {_percent(p)}" for rank, (c, p) in enumerate(explained.top)]
        if cls not in [c for c, _ in explained.top]:
            lines.insert(0, f"map: {self.class_name(cls)} {_percent(probability)}")
        return lines

    def overlays(self, frame: np.ndarray, maps: torch.Tensor) -> list[np.ndarray]:
        """One blended BGR image per map (K,h,w)."""
        raise NotImplementedError


class OpenCVRenderer(Renderer):
    """CPU: the maps come to the host once (small), OpenCV resizes, colours and blends in uint8."""

    def overlays(self, frame: np.ndarray, maps: torch.Tensor) -> list[np.ndarray]:
        height, width = frame.shape[:2]
        lut = self.lut[:, None, :]
        images = []
        for heatmap in maps.float().cpu().numpy():
            levels = cv2.convertScaleAbs(cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR), alpha=255.0)
            images.append(cv2.addWeighted(cv2.applyColorMap(levels, lut), self.alpha, frame, 1 - self.alpha, 0))
        return images


class TorchRenderer(Renderer):
    """GPU: upload the uint8 frame, upsample, look up colours and blend on the device, download once."""

    def __init__(self, class_name: Callable[[int], str], device: torch.device, **options: object):
        super().__init__(class_name, **options)
        self.device = device
        self.lut_device = torch.from_numpy(self.lut).to(device)

    def overlays(self, frame: np.ndarray, maps: torch.Tensor) -> list[np.ndarray]:
        height, width = frame.shape[:2]
        image = torch.from_numpy(frame).to(self.device, non_blocking=True)
        upsampled = F.interpolate(maps[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
        levels = (upsampled * 255).round_().clamp_(0, 255).long()
        colours = self.lut_device[levels]  # (K,H,W,3)
        blended = colours * self.alpha + image * (1 - self.alpha)
        return list(blended.round_().to(torch.uint8).cpu().numpy())


def make_renderer(device: torch.device, class_name: Callable[[int], str], **options: object) -> Renderer:
    """The renderer that is fastest on `device`."""
    if device.type == "cuda":
        return TorchRenderer(class_name, device, **options)
    return OpenCVRenderer(class_name, **options)


def _percent(probability: float) -> str:
    return f"{probability:.0%}" if probability >= 0.095 else f"{probability:.1%}"


def _grid(tiles: list[np.ndarray]) -> np.ndarray:
    """Two tiles side by side at full size; more in a grid of half-size (<= 4) or third-size tiles."""
    count = len(tiles)
    columns = count if count <= 2 else (2 if count <= 4 else 3)
    if count > 2:
        height, width = tiles[0].shape[:2]
        size = (max(2, width // columns), max(2, height // columns))
        tiles = [cv2.resize(tile, size, interpolation=cv2.INTER_AREA) for tile in tiles]
    rows = math.ceil(count / columns)
    blank = np.zeros_like(tiles[0])
    tiles = tiles + [blank] * (rows * columns - count)
    return np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)


def draw_boxes(image: np.ndarray, boxes: list[tuple[float, float, float, float]],
               colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Rectangles (pixel edges) outlined in `colour` over a dark halo, so they show on any heatmap."""
    image = image if image.flags.writeable else image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 360))
    for x0, y0, x1, y1 in boxes:
        corners = (round(x0), round(y0)), (max(round(x0), round(x1) - 1), max(round(y0), round(y1) - 1))
        cv2.rectangle(image, *corners, (0, 0, 0), 3 * thickness, cv2.LINE_AA)
        cv2.rectangle(image, *corners, colour, thickness, cv2.LINE_AA)
    return image


def draw_text_box(image: np.ndarray, lines: list[str], right: bool = False) -> np.ndarray:
    """White text on a darkened box in a top corner, sized for the picture so it stays legible on any
    background and at any resolution. Draws on a copy of the box region only."""
    height, width = image.shape[:2]
    scale = min(2.0, max(0.35, min(height, width * 9 / 16) / 720 * 0.9))
    thickness = max(1, round(scale * 2))
    margin = max(2, round(8 * scale))
    sizes = [cv2.getTextSize(line, _FONT, scale, thickness) for line in lines]
    line_height = max(h + baseline for (w, h), baseline in sizes) + margin
    box_width = min(width, max(w for (w, h), _ in sizes) + 2 * margin)
    box_height = min(height, line_height * len(lines) + margin)
    x0 = width - box_width if right else 0
    image = image.copy() if not image.flags.writeable else image
    region = image[:box_height, x0:x0 + box_width]
    region[:] = (region * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        baseline_y = margin + line_height * i + sizes[i][0][1]
        cv2.putText(image, line, (x0 + margin, baseline_y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image
