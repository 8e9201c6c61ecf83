"""Heatmaps -> pictures: upsample, colormap (a 256-entry lookup table), alpha blend, labels and FPS.

Two renderers make the same pictures, and the run plan picks one. On a GPU (`TorchRenderer`), blending
runs on the device, in YUV 4:2:0, and one I420 picture comes back for the encoder. On the CPU
(`OpenCVRenderer`), OpenCV's uint8 SIMD routines are an order of magnitude faster than torch's float
ops, so they blend, in BGR, as OpenCV and the window take it. Either way text and boxes are drawn on
the host picture with its pen.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import yuv
from .errors import unknown_name
from .explain import ExplainedFrame
from .geometry import MapGeometry
from .picture import BgrPicture, Picture, picture_from_planes, text_size
from .sources import Frame

COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS}


@functools.cache
def colormap_lut(name: str) -> np.ndarray:
    """(256,3) uint8 BGR table; OpenCV already has the tables, so take them once."""
    if name not in COLORMAPS:
        raise unknown_name("colormap", name, COLORMAPS)
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, COLORMAPS[name])[:, 0].copy()


def blend_bgr(frame: np.ndarray, heatmap: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """A [0,1] heatmap of the frame's size, coloured by `lut` and blended over a BGR uint8 frame."""
    levels = cv2.convertScaleAbs(heatmap, alpha=255.0)  # saturating, rounding float -> uint8
    return cv2.addWeighted(cv2.applyColorMap(levels, lut[:, None, :]), alpha, frame, 1 - alpha, 0)


def overlay(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a [0,1] heatmap (h,w) over a BGR uint8 frame (H,W,3), resizing the map to the frame."""
    geometry = MapGeometry(heatmap.shape, frame.shape[:2])
    return blend_bgr(frame, geometry.upsample(heatmap), colormap_lut(colormap), alpha)


@dataclass
class RenderedFrame:
    explained: ExplainedFrame
    picture: Picture  # the picture to show or write, on the host

    @property
    def frame(self) -> Frame:
        return self.explained.frame

    def bgr(self) -> np.ndarray:
        return self.picture.bgr()


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


class Renderer(ABC):
    """Composes the picture for one explained frame in a `view`:

    - overlay: the frame with the heatmap blended over it;
    - side: the original frame | the overlay;
    - grid: one overlay per explained class (top-k), each labelled;
    - methods: one overlay per method (--method a,b,c), each labelled with its name and time per frame.

    The label shows the explained class and its probability (and the top-k list when top_k > 1); the
    FPS sits in the top-right corner. Subclasses make the pictures (`overlays`, `original`) and put them
    together (`side_by_side`, `grid`) where the pixels are; text and boxes are drawn on the host picture.
    """

    def __init__(self, class_name: Callable[[int], str], *, view: str = "overlay", alpha: float = 0.5,
                 colormap: str = "jet", top_k: int = 1, tiles: int | None = None, hud_motion: bool = False):
        self.class_name = class_name
        self.view = view
        self.alpha = alpha
        self.lut = colormap_lut(colormap)
        self.top_k = top_k
        self.tiles = tiles or top_k  # maps in a grid: the top-k classes, or the methods
        self.hud_motion = hud_motion  # the label also says how much of the map lies on what moves

    def output_size(self, width: int, height: int, view: str | None = None) -> tuple[int, int]:
        """(width, height) of the pictures this renderer makes of frames of that size (in `view`, or its own)."""
        view = view or self.view
        if view == "side":
            return 2 * width, height
        if view in ("grid", "methods"):
            count = self.tiles
            columns, tile_width, tile_height = grid_layout(count, width, height)
            return columns * tile_width, math.ceil(count / columns) * tile_height
        return width, height

    def restyle(self, alpha: float | None = None, colormap: str | None = None, view: str | None = None) -> None:
        """A new look, from the next frame on (live controls)."""
        if alpha is not None:
            self.alpha = alpha
        if colormap is not None:
            self.lut = colormap_lut(colormap)
        if view is not None:
            self.view = view

    def render(self, explained: ExplainedFrame, fps: float | None = None) -> RenderedFrame:
        height, width = explained.frame.shape
        overlays = self.overlays(explained)
        if self.view in ("grid", "methods"):
            columns, tile_width, tile_height = grid_layout(len(overlays), width, height)
            picture = self.to_host(self.grid(overlays, columns, tile_width, tile_height), explained)
            tiles = [((i % columns) * tile_width, (i // columns) * tile_height) for i in range(len(overlays))]
            for rank, (x, y) in enumerate(tiles):
                picture = draw_text_box(picture, self._tile_lines(explained, rank),
                                        area=(x, y, x + tile_width, y + tile_height))
        else:
            side = self.view == "side"
            picture = self.to_host(self.side_by_side(self.original(explained), overlays[0]) if side else overlays[0],
                                   explained)
            left = width if side else 0  # where the overlay is
            if explained.boxes:
                picture = draw_boxes(picture, [(x0 + left, y0, x1 + left, y1) for x0, y0, x1, y1 in explained.boxes])
            picture = draw_text_box(picture, self._label_lines(explained), area=(left, 0, left + width, height))
        if fps is not None:
            picture = draw_text_box(picture, [f"{fps:.1f} fps"], right=True)
        return RenderedFrame(explained, picture)

    def _tile_lines(self, explained: ExplainedFrame, rank: int) -> list[str]:
        """A grid tile's label: its class and rank; or its method, its time, and the class it explains."""
        cls, probability = explained.classes[rank], explained.probabilities[rank]
        if explained.methods:
            method = explained.methods[rank]
            return [f"{method.method} {method.ms:.0f} ms", f"{self.class_name(cls)} {_percent(probability)}",
                    *self._motion_lines(explained, rank)]
        return [f"{rank + 1}. {self.class_name(cls)} {_percent(probability)}", *self._motion_lines(explained, rank)]

    def _label_lines(self, explained: ExplainedFrame) -> list[str]:
        """The explained class, or with top_k > 1 the ranked list; a --target class outside the top-k
        is named on a first line of its own, so the label always says what the heatmap explains."""
        cls, probability = explained.classes[0], explained.probabilities[0]
        if self.top_k == 1 and explained.top[0][0] == cls:
            return [f"{self.class_name(cls)} {_percent(probability)}", *self._motion_lines(explained, 0)]
        lines = [f"{rank + 1}. {self.class_name(c)} {_percent(p)}" for rank, (c, p) in enumerate(explained.top)]
        if cls not in [c for c, _ in explained.top]:
            lines.insert(0, f"map: {self.class_name(cls)} {_percent(probability)}")
        return lines + self._motion_lines(explained, 0)

    def _motion_lines(self, explained: ExplainedFrame, slot: int) -> list[str]:
        if not self.hud_motion or explained.motion is None or slot >= len(explained.motion.shares):
            return []
        return [f"on motion {_percent(explained.motion.shares[slot])}"]

    @abstractmethod
    def overlays(self, explained: ExplainedFrame) -> list:
        """One picture per map (K,h,w): the frame with that heatmap blended over it."""

    @abstractmethod
    def original(self, explained: ExplainedFrame):
        """The frame as a picture."""

    @abstractmethod
    def side_by_side(self, left, right):
        """Two pictures of the same size, left | right."""

    @abstractmethod
    def grid(self, pictures: list, columns: int, tile_width: int, tile_height: int):
        """Pictures resized to tiles (when they are not that size) in rows of `columns`, black elsewhere."""

    @abstractmethod
    def to_host(self, picture, explained: ExplainedFrame) -> Picture:
        """The composed picture as a host Picture."""


class OpenCVRenderer(Renderer):
    """CPU: the maps come to the host once (small), OpenCV resizes, colours and blends BGR in uint8."""

    def overlays(self, explained: ExplainedFrame) -> list[np.ndarray]:
        frame = explained.frame.picture.bgr()
        return [blend_bgr(frame, explained.geometry.upsample(heatmap), self.lut, self.alpha)
                for heatmap in explained.maps.float().cpu().numpy()]

    def original(self, explained: ExplainedFrame) -> np.ndarray:
        return explained.frame.picture.bgr()

    def side_by_side(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.concatenate([left, right], axis=1)

    def grid(self, pictures: list[np.ndarray], columns: int, tile_width: int, tile_height: int) -> np.ndarray:
        tiles = [p if p.shape[:2] == (tile_height, tile_width) else
                 cv2.resize(p, (tile_width, tile_height), interpolation=cv2.INTER_AREA) for p in pictures]
        rows = math.ceil(len(tiles) / columns)
        tiles += [np.zeros_like(tiles[0])] * (rows * columns - len(tiles))
        return np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)

    def to_host(self, picture: np.ndarray, explained: ExplainedFrame) -> Picture:
        return BgrPicture(picture)


class TorchRenderer(Renderer):
    """The compute device (a GPU; it runs on the CPU too): the picture the explain stage uploaded is
    blended with its heatmaps in YUV 4:2:0, the encoder's format, and one pinned copy of the result, as
    I420, comes back. A picture here is (Y (H,W), chroma (2,H/2,W/2)), float. 4:2:0 needs even sizes:
    the rare frame of an odd size is rendered on the host by OpenCV instead.

    `stream` (the plan's, on CUDA) is a stream of its own, so that copies overlap the next batch's inference.
    """

    def __init__(self, class_name: Callable[[int], str], device: torch.device,
                 stream: torch.cuda.Stream | None = None, **options: object):
        super().__init__(class_name, **options)
        self.device = device
        self.stream = stream
        self.odd_sizes = OpenCVRenderer(class_name, **options)
        self._luts: dict[str, torch.Tensor] = {}

    def restyle(self, alpha: float | None = None, colormap: str | None = None, view: str | None = None) -> None:
        super().restyle(alpha, colormap, view)
        self.odd_sizes.restyle(alpha, colormap, view)
        if colormap is not None:
            self._luts = {}  # the colormap's colours in YUV, per matrix, made again when next needed

    def render(self, explained: ExplainedFrame, fps: float | None = None) -> RenderedFrame:
        if any(size % 2 for size in explained.frame.shape):
            return self.odd_sizes.render(explained, fps)
        if self.stream is None:
            return super().render(explained, fps)
        # The explain stage made these on its own stream, and finished them before handing them over (it
        # read its results back), so there is nothing to wait for; keep their memory until this stream is done.
        explained.picture.data.record_stream(self.stream)
        explained.maps.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            return super().render(explained, fps)

    def original(self, explained: ExplainedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        return explained.picture.yuv_planes()

    def overlays(self, explained: ExplainedFrame) -> list[tuple[torch.Tensor, torch.Tensor]]:
        luma, chroma = self.original(explained)
        matrix = explained.picture.matrix
        if matrix not in self._luts:
            self._luts[matrix] = yuv.colours_to_yuv(self.lut, matrix).to(self.device)
        levels = (explained.geometry.upsample_tensor(explained.maps) * 255).round_().clamp_(0, 255).long()
        pictures = []
        for colours in self._luts[matrix][levels]:  # (H,W,3) Y, U, V of the heatmap's colours
            colour_chroma = F.avg_pool2d(colours[..., 1:].permute(2, 0, 1)[None], 2)[0]
            pictures.append((colours[..., 0] * self.alpha + luma * (1 - self.alpha),
                             colour_chroma * self.alpha + chroma * (1 - self.alpha)))
        return pictures

    def side_by_side(self, left, right):
        return torch.cat([left[0], right[0]], dim=1), torch.cat([left[1], right[1]], dim=2)

    def grid(self, pictures, columns, tile_width, tile_height):
        rows = math.ceil(len(pictures) / columns)
        luma = torch.full((rows * tile_height, columns * tile_width), 16.0, device=self.device)
        chroma = torch.full((2, rows * tile_height // 2, columns * tile_width // 2), 128.0, device=self.device)
        for i, (y, c) in enumerate(pictures):
            if y.shape != (tile_height, tile_width):
                y = F.interpolate(y[None, None], size=(tile_height, tile_width), mode="area")[0, 0]
                c = F.interpolate(c[None], size=(tile_height // 2, tile_width // 2), mode="area")[0]
            top, left = (i // columns) * tile_height, (i % columns) * tile_width
            luma[top:top + tile_height, left:left + tile_width] = y
            chroma[:, top // 2:(top + tile_height) // 2, left // 2:(left + tile_width) // 2] = c
        return luma, chroma

    def to_host(self, picture, explained: ExplainedFrame) -> Picture:
        return picture_from_planes(*picture, explained.picture.matrix)


def _percent(probability: float) -> str:
    return f"{probability:.0%}" if probability >= 0.095 else f"{probability:.1%}"


def grid_layout(count: int, width: int, height: int) -> tuple[int, int, int]:
    """(columns, tile width, tile height) for `count` pictures of width x height: two side by side at
    full size; more in a grid of half-size (<= 4) or third-size tiles, of even sizes (for YUV 4:2:0)."""
    if count <= 2:
        return count, width, height
    columns = 2 if count <= 4 else 3
    return columns, max(2, width // columns // 2 * 2), max(2, height // columns // 2 * 2)


def draw_boxes(picture: Picture, boxes: list[tuple[float, float, float, float]],
               colour: tuple[int, int, int] = (255, 255, 255)) -> Picture:
    """Rectangles (pixel edges) outlined in `colour` over a dark halo, so they show on any heatmap.
    Draws in place when the picture is writable; returns the picture."""
    picture = picture.writable()
    pen = picture.pen()
    thickness = max(1, round(min(picture.shape) / 360))
    for x0, y0, x1, y1 in boxes:
        corners = (round(x0), round(y0)), (max(round(x0), round(x1) - 1), max(round(y0), round(y1) - 1))
        pen.rectangle(corners, (0, 0, 0), 3 * thickness)
        pen.rectangle(corners, colour, thickness)
    return picture


def draw_text_box(picture: Picture, lines: list[str], right: bool = False, area: Rect | None = None) -> Picture:
    """White text on a darkened box in a top corner of `area` (default: the whole picture), sized for
    the area so it stays legible on any background and at any resolution. Draws in place when the
    picture is writable; returns the picture."""
    picture = picture.writable()
    area_x0, area_y0, area_x1, area_y1 = area or (0, 0, picture.shape[1], picture.shape[0])
    height, width = area_y1 - area_y0, area_x1 - area_x0
    scale = min(2.0, max(0.35, min(height, width * 9 / 16) / 720 * 0.9))
    thickness = max(1, round(scale * 2))
    margin = max(2, round(8 * scale))
    sizes = [text_size(line, scale, thickness) for line in lines]
    line_height = max(h + baseline for (w, h), baseline in sizes) + margin
    box_width = min(width, max(w for (w, h), _ in sizes) + 2 * margin)
    box_height = min(height, line_height * len(lines) + margin)
    x0 = area_x1 - box_width if right else area_x0
    pen = picture.pen()
    pen.darken(x0, area_y0, x0 + box_width, area_y0 + box_height, 0.35)
    for i, line in enumerate(lines):
        baseline_y = area_y0 + margin + line_height * i + sizes[i][0][1]
        pen.text(line, (x0 + margin, baseline_y), scale, thickness, (255, 255, 255))
    return picture
