"""The explain stage: batches of decoded frames -> heatmaps, classes and probabilities per frame.

Owns the model and the compute device (one thread runs it). Pictures are uploaded once, as uint8 (BGR,
or the decoder's I420 planes), and resized, converted, normalised and explained on the device; only
small per-frame summaries come back to the CPU here. The maps and the uploaded pictures stay on the
device for the renderer.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .cam import Explainer
from .cam.maps import minmax
from .cam.targets import class_index
from .geometry import MapGeometry
from .metrics import Box, boxes_from_map
from .models import LoadedModel
from .motion import MotionMask, motion_share
from .picture import Picture, upload
from .sources import Frame


@dataclass
class MethodMap:
    """One method's map of a frame, when several are compared (--view methods)."""

    method: str
    peak: tuple[int, int]  # (x, y) in frame pixels
    boxes: list[Box] | None
    ms: float  # the method's time per frame


@dataclass
class FrameMotion:
    """What moves in a frame (--motion) and how much of each map lies on it."""

    mask: np.ndarray  # (h,w) bool at the maps' resolution, cut to the frame
    shares: list[float]  # per map slot: its energy on moving pixels / its total energy
    camera_moving: bool


@dataclass
class ExplainedFrame:
    frame: Frame
    picture: Picture  # the frame on the compute device (a view of its uploaded batch)
    maps: torch.Tensor  # (K,h,w) float32 in [0,1] at model-input resolution, on the compute device
    geometry: MapGeometry  # where the maps' pixels sit on the frame
    classes: list[int]  # the K explained classes
    probabilities: list[float]  # their probabilities
    top: list[tuple[int, float]]  # the frame's top-k (class, probability), for labels and logs
    peak: tuple[int, int]  # (x, y) of the first map's maximum, in frame pixels
    boxes: list[Box] | None = None  # hot regions of the first map, hottest first, in frame pixels (--boxes)
    methods: list[MethodMap] | None = None  # with several methods: one per map, in order
    motion: FrameMotion | None = None  # with --motion
    settings: dict[str, object] | None = None  # the live settings it was made with (controls.py), when served


class FrameExplainer:
    """Runs `explainer` on frames. `top_k` classes are reported per frame; with `grid` each of them gets
    its own map, otherwise only the `target` (or the top-1) class is explained. Given several explainers
    (--view methods), each explains that class, and the maps are theirs, in order, each with its time.
    `smooth` in [0,1) blends each map with the previous frame's of the same camera (exponential moving
    average) to stop flicker. With `boxes` (a threshold: a fraction of the map's maximum, or "otsu") each
    map also gets boxes around its hot regions. `motion` (a MotionMask's mode, noise and min_flow) measures
    each map's share on what moves, per camera. `stream` is a CUDA stream of its own (the plan's), or None."""

    def __init__(self, loaded: LoadedModel, explainer: Explainer | list[Explainer], *, target: str | None = None,
                 top_k: int = 1, grid: bool = False, smooth: float = 0.0, boxes: float | str | None = None,
                 motion: tuple[str, float, float] | None = None, stream: torch.cuda.Stream | None = None):
        self.loaded = loaded
        self.motion = motion
        self._motion_masks: dict[int, MotionMask] = {}  # camera -> its mask, which remembers the last frame
        self.boxes = boxes
        self.explainers = explainer if isinstance(explainer, list) else [explainer]
        self.explainer = self.explainers[0]
        self.device = loaded.device
        self.top_k = top_k
        self.grid = grid
        self.smooth = smooth
        # Resolved here, before any output exists: a bad class fails the run before it starts.
        self.target = None if target is None else class_index(target, self.explainer.num_classes, loaded.class_names)
        self._previous: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (camera, slot) -> (class, map)
        # On CUDA, a stream of its own, so that NVDEC's copies into frames (on the legacy default
        # stream) overlap inference instead of queueing behind it.
        self.stream = stream

    @property
    def compares_methods(self) -> bool:
        return len(self.explainers) > 1

    def class_name(self, index: int) -> str:
        names = self.loaded.class_names
        return names[index] if names else f"class {index}"

    def __call__(self, frames: list[Frame]) -> list[ExplainedFrame]:
        """Explain frames in order. Consecutive frames of the same layout share one forward pass."""
        results: list[ExplainedFrame] = []
        start = 0
        with self._own_stream():
            while start < len(frames):
                end = start + 1
                while end < len(frames) and frames[end].picture.layout == frames[start].picture.layout:
                    end += 1
                results += self._explain_batch(frames[start:end])
                start = end
        return results

    def _own_stream(self) -> contextlib.AbstractContextManager:
        """This stage's CUDA stream, after the frames decoded so far (NVDEC) have been copied."""
        if self.stream is None:
            return contextlib.nullcontext()
        self.stream.wait_stream(torch.cuda.default_stream(self.device))
        return torch.cuda.stream(self.stream)

    def _explain_batch(self, frames: list[Frame]) -> list[ExplainedFrame]:
        pictures = upload([frame.picture for frame in frames], self.device)
        x = pictures.model_input(self.loaded.preprocess)
        k = self.top_k if self.grid else None
        result, maps, seconds = None, [], []
        for explainer in self.explainers:
            started = time.perf_counter()
            result = explainer(x, self.target, topk=k)
            maps.append(maps_on_frame(result.maps if k else result.maps[:, None], self.loaded.preprocess, frames[0].shape))
            if self.compares_methods and self.stream is not None:
                self.stream.synchronize()  # a GPU's work is done before its time is read
            seconds.append(time.perf_counter() - started)
        maps = torch.cat(maps, dim=1)  # (B, K maps: top-k classes, or one per method)
        targets = result.targets if k else result.targets[:, None].expand(-1, maps.shape[1])
        maps = self._smoothed(maps, targets, [frame.stream for frame in frames])

        # One transfer for everything the CPU needs: probabilities, top-k and each map's peak. It waits
        # for the maps, so what is handed to the renderer (on another CUDA stream) is complete.
        probabilities = result.probabilities
        top = probabilities.topk(min(self.top_k, probabilities.shape[1]), dim=1)
        slots = maps.shape[1] if self.compares_methods else 1
        peaks = maps[:, :slots].flatten(2).argmax(dim=2)
        host = [t.cpu() for t in (targets, probabilities.gather(1, targets), top.indices, top.values, peaks)]
        targets_cpu, target_probs, top_indices, top_values, peaks_cpu = host

        geometry = MapGeometry(tuple(maps.shape[-2:]), frames[0].shape)
        # One copy to the host for what is measured there (boxes, motion).
        host_maps = maps[:, :slots].float().cpu() if self.boxes is not None or self.motion else None
        motions = self._motions(frames, host_maps) if self.motion else [None] * len(frames)
        explained = []
        for i, frame in enumerate(frames):
            spots = [geometry.point(*reversed(divmod(int(peak), geometry.map_size[1]))) for peak in peaks_cpu[i]]
            boxes = [None] * slots
            if self.boxes is not None:  # found at map resolution (cheap), placed on the frame
                boxes = [[geometry.box(box) for box in boxes_from_map(heatmap, self.boxes)]
                         for heatmap in host_maps[i].numpy()]
            methods = None
            if self.compares_methods:
                methods = [MethodMap(e.method.name, spot, slot_boxes, 1000 * s / len(frames))
                           for e, spot, slot_boxes, s in zip(self.explainers, spots, boxes, seconds)]
            explained.append(ExplainedFrame(
                frame, pictures[i], maps[i], geometry, targets_cpu[i].tolist(), target_probs[i].tolist(),
                list(zip(top_indices[i].tolist(), top_values[i].tolist())), spots[0], boxes[0], methods, motions[i],
            ))
        return explained

    def _motions(self, frames: list[Frame], host: torch.Tensor) -> list[FrameMotion]:
        """Each frame's moving pixels at the maps' resolution (so the mask matches the maps), and each
        map's share on them. `host`: the maps (B,K,h,w) on the host."""
        height, width = host.shape[-2:]
        motions = []
        for frame, frame_maps in zip(frames, host):
            if frame.stream not in self._motion_masks:
                self._motion_masks[frame.stream] = MotionMask(*self.motion)
            mask_of = self._motion_masks[frame.stream]
            mask = mask_of(frame_gray(frame.picture, (width, height)))
            motions.append(FrameMotion(mask, [motion_share(heatmap, mask) for heatmap in frame_maps],
                                       mask_of.camera_moving))
        return motions

    def _smoothed(self, maps: torch.Tensor, targets: torch.Tensor, cameras: list[int]) -> torch.Tensor:
        """EMA per camera and map slot, in frame order; a slot restarts when its class or the map size
        changes. The class comparison stays on the device: reading the classes here would wait for the GPU."""
        if self.smooth == 0:
            return maps
        out = torch.empty_like(maps)
        for i, camera in enumerate(cameras):
            for slot in range(maps.shape[1]):
                current, target = maps[i, slot], targets[i, slot]
                if (camera, slot) in self._previous:
                    previous_target, previous = self._previous[camera, slot]
                    if previous.shape == current.shape:
                        current = torch.where(previous_target == target, self.smooth * previous + (1 - self.smooth) * current, current)
                self._previous[camera, slot] = (target, current)
                out[i, slot] = current
        return out


def maps_on_frame(maps: torch.Tensor, preprocess, shape: tuple[int, int]) -> torch.Tensor:
    """The maps (B,K,h,w) of the frame itself: a letterboxed input's bars are cut off (never drawn as
    heat), and what is left is normalised again."""
    top, left, height, width = preprocess.content(*shape)
    if (height, width) == tuple(maps.shape[-2:]):
        return maps
    return minmax(maps[..., top:top + height, left:left + width])


def frame_gray(picture: Picture, size: tuple[int, int]) -> np.ndarray:
    """The picture's brightness at (width, height): the maps' resolution, where motion is measured."""
    return cv2.resize(picture.gray(), size, interpolation=cv2.INTER_AREA)
