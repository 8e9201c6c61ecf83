"""Heatmaps -> pictures: upsample, colormap (a 256-entry lookup table), alpha blend, labels and FPS.

Two renderers make the same pictures. On a GPU, blending runs on the device, in YUV 4:2:0, and one
I420 picture comes back for the encoder; on the CPU, OpenCV's uint8 SIMD routines are an order of
magnitude faster than torch float ops (DESIGN.md), so they do the work, in BGR, as OpenCV and the
window take it. Text and boxes are drawn on the host picture, in either format.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import yuv
from .errors import unknown_name
from .explain import ExplainedFrame
from .transfer import download
from .yuv import I420

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


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


class Renderer(ABC):
    """Composes the picture for one explained frame in a `view`:

    - overlay: the frame with the heatmap blended over it;
    - side: the original frame | the overlay;
    - grid: one overlay per explained class (top-k), each labelled.

    The label shows the explained class and its probability (and the top-k list when top_k > 1); the
    FPS sits in the top-right corner. Subclasses make the pictures (`overlays`, `original`) and put them
    together (`side_by_side`, `grid`) where the pixels are; text and boxes are drawn on the host picture.
    """

    def __init__(self, class_name: Callable[[int], str], *, view: str = "overlay", alpha: float = 0.5,
                 colormap: str = "jet", top_k: int = 1):
        self.class_name = class_name
        self.view = view
        self.alpha = alpha
        self.lut = colormap_lut(colormap)
        self.top_k = top_k

    def render(self, explained: ExplainedFrame, fps: float | None = None) -> np.ndarray | I420:
        """The finished picture on the host: BGR, or I420 from the device renderer."""
        height, width = explained.frame.shape
        overlays = self.overlays(explained)
        if self.view == "grid":
            columns, tile_width, tile_height = grid_layout(len(overlays), width, height)
            picture = self.grid(overlays, columns, tile_width, tile_height)
            tiles = [((i % columns) * tile_width, (i // columns) * tile_height) for i in range(len(overlays))]
            image = self.to_host(picture, explained)
            for rank, ((x, y), cls, probability) in enumerate(zip(tiles, explained.classes, explained.probabilities)):
                image = draw_text_box(image, [f"{rank + 1}. {self.class_name(cls)} {_percent(probability)}"],
                                      area=(x, y, x + tile_width, y + tile_height))
        else:
            side = self.view == "side"
            image = self.to_host(self.side_by_side(self.original(explained), overlays[0]) if side else overlays[0], explained)
            left = width if side else 0  # where the overlay is
            if explained.boxes:
                image = draw_boxes(image, [(x0 + left, y0, x1 + left, y1) for x0, y0, x1, y1 in explained.boxes])
            image = draw_text_box(image, self._label_lines(explained), area=(left, 0, left + width, height))
        if fps is not None:
            image = draw_text_box(image, [f"{fps:.1f} fps"], right=True)
        return image

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

    def to_host(self, picture, explained: ExplainedFrame) -> np.ndarray | I420:
        """The picture as a host array."""
        return picture


class OpenCVRenderer(Renderer):
    """CPU: the maps come to the host once (small), OpenCV resizes, colours and blends BGR in uint8."""

    def overlays(self, explained: ExplainedFrame) -> list[np.ndarray]:
        frame = explained.frame.bgr()
        height, width = frame.shape[:2]
        lut = self.lut[:, None, :]
        images = []
        for heatmap in explained.maps.float().cpu().numpy():
            levels = cv2.convertScaleAbs(cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR), alpha=255.0)
            images.append(cv2.addWeighted(cv2.applyColorMap(levels, lut), self.alpha, frame, 1 - self.alpha, 0))
        return images

    def original(self, explained: ExplainedFrame) -> np.ndarray:
        return explained.frame.bgr()

    def side_by_side(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.concatenate([left, right], axis=1)

    def grid(self, pictures: list[np.ndarray], columns: int, tile_width: int, tile_height: int) -> np.ndarray:
        tiles = [p if p.shape[:2] == (tile_height, tile_width) else
                 cv2.resize(p, (tile_width, tile_height), interpolation=cv2.INTER_AREA) for p in pictures]
        rows = math.ceil(len(tiles) / columns)
        tiles += [np.zeros_like(tiles[0])] * (rows * columns - len(tiles))
        return np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0)


class TorchRenderer(Renderer):
    """The compute device (a GPU; it runs on the CPU too): the frame the explain stage uploaded is blended
    with its heatmaps in YUV 4:2:0, the encoder's format, and one pinned copy of the picture, as I420,
    comes back. A picture here is (Y (H,W), chroma (2,H/2,W/2)), float. 4:2:0 needs even sizes: the rare
    frame of an odd size is rendered on the host by OpenCV instead.

    On CUDA it works on a stream of its own, so that its copies overlap the next batch's inference.
    """

    def __init__(self, class_name: Callable[[int], str], device: torch.device, **options: object):
        super().__init__(class_name, **options)
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.odd_sizes = OpenCVRenderer(class_name, **options)
        self._luts: dict[str, torch.Tensor] = {}

    def render(self, explained: ExplainedFrame, fps: float | None = None) -> np.ndarray | I420:
        if any(size % 2 for size in explained.frame.shape):
            return self.odd_sizes.render(explained, fps)
        if self.stream is None:
            return super().render(explained, fps)
        # The explain stage made these on its own stream, and finished them before handing them over (it
        # read its results back), so there is nothing to wait for; keep their memory until this stream is done.
        explained.pixels.record_stream(self.stream)
        explained.maps.record_stream(self.stream)
        with torch.cuda.stream(self.stream):
            return super().render(explained, fps)

    def _matrix(self, explained: ExplainedFrame) -> str:
        return yuv.matrix_of(explained.frame.image)

    def original(self, explained: ExplainedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = explained.pixels
        if pixels.ndim == 3:  # BGR
            return yuv.bgr_to_planes(pixels, self._matrix(explained))
        y, u, v = yuv.planes(pixels)
        return y.float(), torch.stack([u, v]).float()

    def overlays(self, explained: ExplainedFrame) -> list[tuple[torch.Tensor, torch.Tensor]]:
        luma, chroma = self.original(explained)
        height, width = explained.frame.shape
        matrix = self._matrix(explained)
        if matrix not in self._luts:
            self._luts[matrix] = yuv.colours_to_yuv(self.lut, matrix).to(self.device)
        maps = F.interpolate(explained.maps[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)
        levels = (maps[:, 0] * 255).round_().clamp_(0, 255).long()
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

    def to_host(self, picture, explained: ExplainedFrame) -> I420:
        return I420(download(yuv.pack(*picture)), self._matrix(explained))


def _percent(probability: float) -> str:
    return f"{probability:.0%}" if probability >= 0.095 else f"{probability:.1%}"


def grid_layout(count: int, width: int, height: int) -> tuple[int, int, int]:
    """(columns, tile width, tile height) for `count` pictures of width x height: two side by side at
    full size; more in a grid of half-size (<= 4) or third-size tiles, of even sizes (for YUV 4:2:0)."""
    if count <= 2:
        return count, width, height
    columns = 2 if count <= 4 else 3
    return columns, max(2, width // columns // 2 * 2), max(2, height // columns // 2 * 2)


class _Pen:
    """Draws the same shapes on a BGR image or on the three planes of an I420 picture (the chroma planes
    at half the coordinates), so that text and boxes look alike whichever renderer made the picture."""

    def __init__(self, image: np.ndarray | I420):
        if isinstance(image, I420):
            self.layers = list(zip(image.planes(), (1, 2, 2)))  # (plane, subsampling)
            self.colour = lambda bgr: yuv.colour_to_yuv(bgr, image.matrix)  # one value per plane
        else:
            self.layers = [(image, 1)]
            self.colour = lambda bgr: [bgr]

    def darken(self, x0: int, y0: int, x1: int, y1: int, factor: float) -> None:
        """Move a region towards black by `factor` (0.35 keeps 35 % of its brightness and colour)."""
        for (plane, step), black in zip(self.layers, self.colour((0, 0, 0))):
            region = plane[y0 // step:-(-y1 // step), x0 // step:-(-x1 // step)]
            region[:] = (np.asarray(black) + (region - np.asarray(black)) * factor).astype(np.uint8)

    def text(self, line: str, origin: tuple[int, int], scale: float, thickness: int, bgr: tuple[int, int, int]) -> None:
        for (plane, step), colour in zip(self.layers, self.colour(bgr)):
            cv2.putText(plane, line, (origin[0] // step, origin[1] // step), _FONT, scale / step, colour,
                        max(1, round(thickness / step)), cv2.LINE_AA)

    def rectangle(self, corners: tuple[tuple[int, int], tuple[int, int]], bgr: tuple[int, int, int], thickness: int) -> None:
        for (plane, step), colour in zip(self.layers, self.colour(bgr)):
            (x0, y0), (x1, y1) = corners
            cv2.rectangle(plane, (x0 // step, y0 // step), (x1 // step, y1 // step), colour,
                          max(1, round(thickness / step)), cv2.LINE_AA)


def _writable(image: np.ndarray | I420) -> np.ndarray | I420:
    if isinstance(image, I420):
        return image if image.data.flags.writeable else I420(image.data.copy(), image.matrix)
    return image if image.flags.writeable else image.copy()


def draw_boxes(image: np.ndarray | I420, boxes: list[tuple[float, float, float, float]],
               colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray | I420:
    """Rectangles (pixel edges) outlined in `colour` over a dark halo, so they show on any heatmap.
    Draws in place when the picture is writable; returns the picture."""
    image = _writable(image)
    pen = _Pen(image)
    thickness = max(1, round(min(image.shape[:2]) / 360))
    for x0, y0, x1, y1 in boxes:
        corners = (round(x0), round(y0)), (max(round(x0), round(x1) - 1), max(round(y0), round(y1) - 1))
        pen.rectangle(corners, (0, 0, 0), 3 * thickness)
        pen.rectangle(corners, colour, thickness)
    return image


def draw_text_box(image: np.ndarray | I420, lines: list[str], right: bool = False, area: Rect | None = None) -> np.ndarray | I420:
    """White text on a darkened box in a top corner of `area` (default: the whole picture), sized for
    the area so it stays legible on any background and at any resolution. Draws in place when the
    picture is writable; returns the picture."""
    image = _writable(image)
    area_x0, area_y0, area_x1, area_y1 = area or (0, 0, image.shape[1], image.shape[0])
    height, width = area_y1 - area_y0, area_x1 - area_x0
    scale = min(2.0, max(0.35, min(height, width * 9 / 16) / 720 * 0.9))
    thickness = max(1, round(scale * 2))
    margin = max(2, round(8 * scale))
    sizes = [cv2.getTextSize(line, _FONT, scale, thickness) for line in lines]
    line_height = max(h + baseline for (w, h), baseline in sizes) + margin
    box_width = min(width, max(w for (w, h), _ in sizes) + 2 * margin)
    box_height = min(height, line_height * len(lines) + margin)
    x0 = area_x1 - box_width if right else area_x0
    pen = _Pen(image)
    pen.darken(x0, area_y0, x0 + box_width, area_y0 + box_height, 0.35)
    for i, line in enumerate(lines):
        baseline_y = area_y0 + margin + line_height * i + sizes[i][0][1]
        pen.text(line, (x0 + margin, baseline_y), scale, thickness, (255, 255, 255))
    return image
