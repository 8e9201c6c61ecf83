"""The explain stage: batches of decoded frames -> heatmaps, classes and probabilities per frame.

Owns the model and the compute device (one thread runs it). Frames are uploaded once, as uint8 (BGR, or
the decoder's I420 planes), and resized, converted, normalised and explained on the device; only small
per-frame summaries come back to the CPU here. The maps and the uploaded frames stay on the device for
the renderer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .cam import Explainer
from .errors import StreamcamError, unknown_name
from .metrics import Box, boxes_from_map
from .models import LoadedModel
from .sources import Frame
from .transfer import upload
from .yuv import I420


@dataclass
class ExplainedFrame:
    frame: Frame
    pixels: torch.Tensor  # the frame on the compute device: (H,W,3) BGR or (H*3/2,W) I420 uint8
    maps: torch.Tensor  # (K,h,w) float32 in [0,1] at model-input resolution, on the compute device
    classes: list[int]  # the K explained classes
    probabilities: list[float]  # their probabilities
    top: list[tuple[int, float]]  # the frame's top-k (class, probability), for labels and logs
    peak: tuple[int, int]  # (x, y) of the first map's maximum, in frame pixels
    boxes: list[Box] | None = None  # hot regions of the first map, hottest first, in frame pixels (--boxes)


class FrameExplainer:
    """Runs `explainer` on frames. `top_k` classes are reported per frame; with `grid` each of them gets
    its own map, otherwise only the `target` (or the top-1) class is explained. `smooth` in [0,1) blends
    each map with the previous frame's (exponential moving average) to stop flicker. With `boxes` (a
    threshold: a fraction of the map's maximum, or "otsu") each frame also gets boxes around the hot
    regions of its map."""

    def __init__(self, loaded: LoadedModel, explainer: Explainer, *, target: str | None = None,
                 top_k: int = 1, grid: bool = False, smooth: float = 0.0, boxes: float | str | None = None):
        self.loaded = loaded
        self.boxes = boxes
        self.explainer = explainer
        self.device = loaded.device
        self.top_k = top_k
        self.grid = grid
        self.smooth = smooth
        self.target = None if target is None else self._class_index(target)
        if grid and self.target is not None:
            raise StreamcamError("--target picks one class; the grid view shows the top-k classes (--top-k)")
        self._previous: list[tuple[torch.Tensor, torch.Tensor]] = []  # (class, smoothed map) per map slot
        # On CUDA, a stream of its own, so that NVDEC's copies into frames (on the legacy default
        # stream) overlap inference instead of queueing behind it.
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def class_name(self, index: int) -> str:
        names = self.loaded.class_names
        return names[index] if names else f"class {index}"

    def _class_index(self, target: str) -> int:
        names = self.loaded.class_names
        if target.isdigit():
            return int(target)
        if not names:
            raise StreamcamError(f"--target {target!r} is a name, but the model has no class names; give an index")
        if target not in names:
            raise unknown_name("class", target, names)
        return names.index(target)

    def __call__(self, frames: list[Frame]) -> list[ExplainedFrame]:
        """Explain frames in order. Consecutive frames of the same size and format share one forward pass."""
        results: list[ExplainedFrame] = []
        start = 0
        with self._own_stream():
            while start < len(frames):
                end = start + 1
                while end < len(frames) and frames[end].layout == frames[start].layout:
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
        first = frames[0].image
        if isinstance(first, I420):
            pixels = upload([frame.image.data for frame in frames], self.device)
            x = self.loaded.preprocess.i420(pixels, first.matrix)
        else:
            pixels = upload([frame.image for frame in frames], self.device)
            x = self.loaded.preprocess(pixels, bgr=True)
        k = self.top_k if self.grid else None
        result = self.explainer(x, self.target, topk=k)
        maps = result.maps if k else result.maps[:, None]
        targets = result.targets if k else result.targets[:, None]
        maps = self._smoothed(maps, targets)

        # One transfer for everything the CPU needs: probabilities, top-k and each frame's peak. It waits
        # for the maps, so what is handed to the renderer (on another CUDA stream) is complete.
        probabilities = result.probabilities
        top = probabilities.topk(min(self.top_k, probabilities.shape[1]), dim=1)
        peaks = maps[:, 0].flatten(1).argmax(dim=1)
        host = [t.cpu() for t in (targets, probabilities.gather(1, targets), top.indices, top.values, peaks)]
        targets_cpu, target_probs, top_indices, top_values, peaks_cpu = host

        height, width = frames[0].shape
        map_height, map_width = maps.shape[-2:]
        host_maps = maps[:, 0].float().cpu().numpy() if self.boxes is not None else None
        explained = []
        for i, frame in enumerate(frames):
            y, x_pos = divmod(int(peaks_cpu[i]), map_width)
            peak = (_to_frame(x_pos, map_width, width), _to_frame(y, map_height, height))
            boxes = None
            if host_maps is not None:  # found at map resolution (cheap), scaled to the frame
                sx, sy = width / map_width, height / map_height
                boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in boxes_from_map(host_maps[i], self.boxes)]
            explained.append(ExplainedFrame(
                frame, pixels[i], maps[i], targets_cpu[i].tolist(), target_probs[i].tolist(),
                list(zip(top_indices[i].tolist(), top_values[i].tolist())), peak, boxes,
            ))
        return explained

    def _smoothed(self, maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """EMA per map slot, in frame order; a slot restarts when its class or the map size changes. The
        class comparison stays on the device: reading the classes here would wait for the GPU."""
        if self.smooth == 0:
            return maps
        out = torch.empty_like(maps)
        for i in range(maps.shape[0]):
            for slot in range(maps.shape[1]):
                current, target = maps[i, slot], targets[i, slot]
                if slot < len(self._previous):
                    previous_target, previous = self._previous[slot]
                    if previous.shape == current.shape:
                        current = torch.where(previous_target == target, self.smooth * previous + (1 - self.smooth) * current, current)
                    self._previous[slot] = (target, current)
                else:
                    self._previous.append((target, current))
                out[i, slot] = current
        return out


def _to_frame(position: int, map_size: int, frame_size: int) -> int:
    """A map pixel's centre in frame pixels (the map covers the whole frame)."""
    return min(frame_size - 1, int((position + 0.5) * frame_size / map_size))
