"""The explain stage: batches of decoded frames -> heatmaps, classes and probabilities per frame.

Owns the model and the compute device (one thread runs it). Pictures are uploaded once, as uint8 (BGR,
or the decoder's I420 planes), and resized, converted, normalised and explained on the device; only
small per-frame summaries come back to the CPU here. The maps and the uploaded pictures stay on the
device for the renderer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .cam import Explainer
from .cam.maps import minmax
from .cam.targets import class_index
from .geometry import MapGeometry
from .metrics import Box, boxes_from_map
from .models import LoadedModel
from .picture import Picture, upload
from .sources import Frame


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


class FrameExplainer:
    """Runs `explainer` on frames. `top_k` classes are reported per frame; with `grid` each of them gets
    its own map, otherwise only the `target` (or the top-1) class is explained. `smooth` in [0,1) blends
    each map with the previous frame's of the same camera (exponential moving average) to stop flicker.
    With `boxes` (a threshold: a fraction of the map's maximum, or "otsu") each frame also gets boxes
    around the hot regions of its map. `stream` is a CUDA stream of its own (the plan's), or None."""

    def __init__(self, loaded: LoadedModel, explainer: Explainer, *, target: str | None = None,
                 top_k: int = 1, grid: bool = False, smooth: float = 0.0, boxes: float | str | None = None,
                 stream: torch.cuda.Stream | None = None):
        self.loaded = loaded
        self.boxes = boxes
        self.explainer = explainer
        self.device = loaded.device
        self.top_k = top_k
        self.grid = grid
        self.smooth = smooth
        # Resolved here, before any output exists: a bad class fails the run before it starts.
        self.target = None if target is None else class_index(target, explainer.num_classes, loaded.class_names)
        self._previous: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (camera, slot) -> (class, map)
        # On CUDA, a stream of its own, so that NVDEC's copies into frames (on the legacy default
        # stream) overlap inference instead of queueing behind it.
        self.stream = stream

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
        k = self.top_k if self.grid else None
        result = self.explainer(pictures.model_input(self.loaded.preprocess), self.target, topk=k)
        maps = self._frame_part(result.maps if k else result.maps[:, None], frames[0].shape)
        targets = result.targets if k else result.targets[:, None]
        maps = self._smoothed(maps, targets, [frame.stream for frame in frames])

        # One transfer for everything the CPU needs: probabilities, top-k and each frame's peak. It waits
        # for the maps, so what is handed to the renderer (on another CUDA stream) is complete.
        probabilities = result.probabilities
        top = probabilities.topk(min(self.top_k, probabilities.shape[1]), dim=1)
        peaks = maps[:, 0].flatten(1).argmax(dim=1)
        host = [t.cpu() for t in (targets, probabilities.gather(1, targets), top.indices, top.values, peaks)]
        targets_cpu, target_probs, top_indices, top_values, peaks_cpu = host

        geometry = MapGeometry(tuple(maps.shape[-2:]), frames[0].shape)
        host_maps = maps[:, 0].float().cpu().numpy() if self.boxes is not None else None
        explained = []
        for i, frame in enumerate(frames):
            boxes = None
            if host_maps is not None:  # found at map resolution (cheap), placed on the frame
                boxes = [geometry.box(box) for box in boxes_from_map(host_maps[i], self.boxes)]
            explained.append(ExplainedFrame(
                frame, pictures[i], maps[i], geometry, targets_cpu[i].tolist(), target_probs[i].tolist(),
                list(zip(top_indices[i].tolist(), top_values[i].tolist())),
                geometry.point(*reversed(divmod(int(peaks_cpu[i]), geometry.map_size[1]))), boxes,
            ))
        return explained

    def _frame_part(self, maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """The maps of the frame itself: a letterboxed input's bars are cut off (never drawn as heat),
        and what is left is normalised again."""
        top, left, height, width = self.loaded.preprocess.content(*shape)
        if (height, width) == tuple(maps.shape[-2:]):
            return maps
        return minmax(maps[..., top:top + height, left:left + width])

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
