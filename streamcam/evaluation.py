"""How faithful are a method's maps? `streamcam.evaluate` on a batch, `streamcam evaluate` on clips.

    import streamcam
    result = streamcam.evaluate(loaded, x, method="gradcam")   # x: the normalised batch (N,3,H,W)
    result.adcc, result.average_drop, result.per_image["average_drop"]

On clips, each method explains the frames (all, or `sample` spread over each clip) and is measured
with faithfulness.py's metrics on the model input, and, in frame pixels, against the regions of
interest (pointing and share, as `streamcam check` computes them, at the --align given here) and
against what moves (motion.py). A fixed-size model's letterbox bars are part of its input, so they
count in the faithfulness metrics (they are already the zeros baseline).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cam import Explainer
from .cam.explainer import Explanation
from .cam.session import eval_mode
from .config import RunConfig
from .errors import StreamcamError
from .explain import frame_gray, maps_on_frame
from .faithfulness import (
    COPIES_PER_PASS,
    METRICS,
    Faithfulness,
    check_settings,
    class_scores,
    coherency,
    complexity,
    deletion_insertion,
)
from .faithfulness import average_drop as drop_of
from .faithfulness import increase_in_confidence as increase_of
from .geometry import MapGeometry
from .metrics import mask_energy_share
from .models import LoadedModel
from .motion import MotionMask, motion_share
from .picture import Picture, upload
from .plan import resolve_device
from .roi import RegionSpec, load_roi
from .sources import Frame, ImageSource, open_source

REPORT_KEYS = (*METRICS, "motion_share", "pointing", "share", "ms_per_frame")  # per method, in the report


def evaluate(model: nn.Module | LoadedModel, x: torch.Tensor, method: str = "gradcam", layer: str | None = None,
             targets=None, precision: str = "auto", *, steps: int = 20, baseline: str = "zeros",
             copies_per_pass: int = COPIES_PER_PASS, **options: object) -> Faithfulness:
    """Faithfulness of `Explainer(model, method, layer, precision, **options)(x, targets)`'s maps."""
    explainer = Explainer(model, method, layer, precision, **options)
    return faithfulness_of(explainer, x, targets, steps=steps, baseline=baseline, copies_per_pass=copies_per_pass)


def faithfulness_of(explainer: Explainer, x: torch.Tensor, targets=None, *, explanation: Explanation | None = None,
                    steps: int = 20, baseline: str = "zeros", copies_per_pass: int = COPIES_PER_PASS) -> Faithfulness:
    """The metrics of the maps `explainer` gives for x (or gave: `explanation`), for the classes it explained.
    The model is in eval mode throughout (BatchNorm on its running statistics) and left as it was."""
    check_settings(steps, baseline, copies_per_pass)
    x = x.to(explainer.device)  # as the explainer moves it: the masked copies are made beside the maps
    explanation = explanation if explanation is not None else explainer(x, targets)
    if explanation.maps.dim() != 3:
        raise StreamcamError("evaluate measures one class per image; give one target per image, not top-k")
    maps, classes = explanation.maps, explanation.targets
    scores = explanation.target_probabilities.float()
    masked = x * maps[:, None].to(x.dtype)
    with eval_mode(explainer.model):
        masked_scores = class_scores(explainer.model, masked, classes, explainer.precision, copies_per_pass)
        maps_of_masked = explainer(masked, classes).maps
        deletion, insertion = deletion_insertion(explainer.model, x, maps, classes, scores, steps=steps,
                                                 baseline=baseline, precision=explainer.precision,
                                                 copies_per_pass=copies_per_pass)
    return Faithfulness.from_images({
        "average_drop": drop_of(scores, masked_scores).cpu(),
        "increase_in_confidence": increase_of(scores, masked_scores).cpu(),
        "coherency": coherency(maps, maps_of_masked).cpu(),
        "complexity": complexity(maps).cpu(),
        "deletion_auc": deletion.cpu(),
        "insertion_auc": insertion.cpu(),
    })


@dataclass
class MethodScores:
    """One method over every evaluated frame."""

    method: str
    layer: str | None
    parts: list[Faithfulness] = field(default_factory=list)
    pointing: list[bool] = field(default_factory=list)  # one per frame and region
    share: list[float] = field(default_factory=list)
    motion: list[float] = field(default_factory=list)  # one per frame with a previous frame
    explain_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    frames: int = 0

    def summary(self) -> dict[str, object]:
        faithful = Faithfulness.combine(self.parts).as_dict() if self.parts else dict.fromkeys(METRICS)
        return {
            "method": self.method, "layer": self.layer or "input pixels", "frames": self.frames, **faithful,
            "motion_share": _mean(self.motion), "pointing": _mean(self.pointing), "share": _mean(self.share),
            "ms_per_frame": 1000 * self.explain_seconds / self.frames if self.frames else None,
            "evaluate_ms_per_frame": 1000 * self.evaluate_seconds / self.frames if self.frames else None,
        }


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass
class EvaluationReport:
    sources: list[str]
    methods: list[MethodScores]
    settings: dict[str, object]
    frames_seen: int = 0
    clips_done: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (clip, its one-line error): the rest went on
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def rows(self) -> list[dict[str, object]]:
        return [method.summary() for method in self.methods]

    def how_far(self) -> str:
        return f"{self.frames_seen} frames, {self.clips_done} of {len(self.sources)} clips"

    def write_json(self, path: Path) -> None:
        document = {"sources": self.sources, "settings": self.settings, "frames": self.frames_seen,
                    "complete": not self.interrupted and not self.errors, "clips_done": self.clips_done,
                    "errors": [{"source": source, "error": error} for source, error in self.errors],
                    "notes": self.notes, "methods": {row["method"]: row for row in self.rows()}}
        path.write_text(json.dumps(document, indent=2) + "\n")

    def write_csv(self, path: Path) -> None:
        rows = self.rows()
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def sampled_indices(frame_count: int | None, sample: int | None) -> set[int] | None:
    """Which frames to evaluate: None for all; `sample` spread evenly over a clip of known length, else
    (a stream) the first `sample`."""
    if sample is None:
        return None
    if frame_count is None:
        return set(range(sample))
    return set(np.linspace(0, frame_count - 1, min(sample, frame_count)).round().astype(int).tolist())


class ClipEvaluator:
    """Explains and measures batches of frames with every method of a config (one model)."""

    def __init__(self, loaded: LoadedModel, explainers: list[Explainer], *, target=None, roi: RegionSpec | None = None,
                 motion: tuple[str, float, float] | None = None, steps: int = 20, baseline: str = "zeros",
                 copies_per_pass: int = COPIES_PER_PASS):
        self.loaded, self.explainers, self.target, self.roi = loaded, explainers, target, roi
        self.motion = motion  # a MotionMask's mode, noise and min_flow
        self.steps, self.baseline, self.copies_per_pass = steps, baseline, copies_per_pass
        self.scores = [MethodScores(e.method.name, e.layer) for e in explainers]
        self._warm = False

    def motion_mask(self, previous: Picture | None, current: Picture) -> np.ndarray | None:
        """What moves between a frame and the one before it, at the maps' resolution, as the explain
        stage finds it (None: nothing to compare, or no motion asked for)."""
        if self.motion is None or previous is None or previous.shape != current.shape:
            return None
        top, left, height, width = self.loaded.preprocess.content(*current.shape)
        mask = MotionMask(*self.motion)  # fresh per pair: sampled frames are not consecutive
        mask(frame_gray(previous, (width, height)))
        return mask(frame_gray(current, (width, height)))

    def __call__(self, frames: list[Frame], moving: list[np.ndarray | None]) -> None:
        """One batch of frames of one size."""
        x = upload([frame.picture for frame in frames], self.loaded.device).model_input(self.loaded.preprocess)
        if not self._warm:  # first calls allocate and pick kernels: keep that out of ms_per_frame
            for explainer in self.explainers:
                explainer(x[:1], self.target)
            self._warm = True
        for explainer, scores in zip(self.explainers, self.scores):
            started = time.perf_counter()
            explanation = explainer(x, self.target)
            _wait(x.device)
            explained = time.perf_counter()
            scores.parts.append(faithfulness_of(explainer, x, explanation=explanation, steps=self.steps,
                                                baseline=self.baseline, copies_per_pass=self.copies_per_pass))
            on_frames = maps_on_frame(explanation.maps[:, None], self.loaded.preprocess, frames[0].shape)[:, 0]
            self._measure_on_frames(scores, frames, on_frames.float().cpu(), moving)
            _wait(x.device)
            scores.explain_seconds += explained - started
            scores.evaluate_seconds += time.perf_counter() - explained
            scores.frames += len(frames)

    def _measure_on_frames(self, scores: MethodScores, frames: list[Frame], maps: torch.Tensor,
                           moving: list[np.ndarray | None]) -> None:
        geometry = MapGeometry(tuple(maps.shape[-2:]), frames[0].shape)
        for frame, heatmap, mask in zip(frames, maps, moving):
            if mask is not None:
                scores.motion.append(motion_share(heatmap, mask))
            height, width = frame.shape
            regions = self.roi.regions(frame.index, width, height, mask) if self.roi is not None else []
            if not regions:
                continue
            y, x = divmod(int(heatmap.argmax()), heatmap.shape[1])
            x, y = geometry.point(x, y)
            on_frame = geometry.upsample(heatmap.numpy())
            for region in regions:
                scores.pointing.append(bool(region.mask[y, x]))
                scores.share.append(mask_energy_share(on_frame, region.mask))


def _wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_sources(sources: Iterable[str], config: RunConfig, *, roi: str | None = None, sample: int | None = None,
                     steps: int = 20, baseline: str = "zeros", batch_size: int = 8,
                     on_clip: Callable[[str, int, int], None] | None = None) -> EvaluationReport:
    """Every method of `config` over the frames of each source (motion share with config.motion). A clip
    that cannot be read is recorded (`errors`) and the others go on; Ctrl-C ends it early. The report
    says how far it got. `on_clip(source, number, count)` is told as each clip starts."""
    from .api import Engines

    sources = list(sources)
    check_settings(steps, baseline, 1)
    for ok, message in [(sample is None or sample >= 1, f"sample must be at least 1, got {sample}"),
                        (batch_size >= 1, f"batch_size must be at least 1, got {batch_size}"),
                        (bool(sources), "no source to evaluate")]:
        if not ok:
            raise StreamcamError(message)
    for spec in sources:
        if is_local_path(spec) and not Path(spec).exists():
            raise StreamcamError(f"no such file or folder: {spec}")
    region_spec = load_roi(roi) if roi is not None else None
    config.validate(extra_outputs=True)
    device = resolve_device(config.device)
    loaded, explainers = Engines().get(config, device, batch_size)
    if region_spec is not None and region_spec.needs_motion and config.motion is None:
        config = dataclasses.replace(config, motion="auto")
    motion = config.motion_settings
    evaluator = ClipEvaluator(loaded, explainers, target=config.target, roi=region_spec, steps=steps, baseline=baseline,
                              motion=motion)
    settings = {"model": config.model, "weights": str(config.weights), "precision": explainers[0].precision,
                "device": str(device), "sample": sample, "motion": motion[0] if motion else "off", "steps": steps,
                "baseline": baseline, "roi": roi, "class": config.target}
    report = EvaluationReport(sources, evaluator.scores, settings)
    try:
        for number, spec in enumerate(sources, 1):
            if on_clip is not None:
                on_clip(spec, number, len(sources))
            try:
                _evaluate_clip(spec, evaluator, sample, batch_size, report)
            except StreamcamError as error:  # a damaged or unreadable clip: say so, go on with the others
                report.errors.append((spec, str(error)))
            report.clips_done += 1
    except KeyboardInterrupt:
        report.interrupted = True
    return report


def is_local_path(spec: str) -> bool:
    """Not a URL, lavfi graph or camera: a file or folder that must exist."""
    return not ("://" in spec or spec.startswith("lavfi:") or spec.isdigit() or spec.startswith("/dev/video"))


def _evaluate_clip(spec: str, evaluator: ClipEvaluator, sample: int | None, batch_size: int,
                   report: EvaluationReport) -> None:
    with open_source(spec, copy_streams=False) as source:
        count = source.videos[0].frame_count if source.videos else None
        chosen = sampled_indices(count, sample)
        # A folder of images is not a clip: consecutive images need not show one scene moving.
        motion = evaluator.motion is not None and not isinstance(source, ImageSource)
        batch: list[Frame] = []
        moving: list[np.ndarray | None] = []
        previous = None
        for frame in source.frames():
            if chosen is not None and not chosen:
                break
            if batch and frame.picture.layout != batch[0].picture.layout:  # one size per batch
                _flush(evaluator, batch, moving, report)
            if chosen is None or frame.index in chosen:
                if chosen is not None:
                    chosen.discard(frame.index)
                batch.append(frame)
                moving.append(evaluator.motion_mask(previous, frame.picture) if motion else None)
            previous = frame.picture
            if len(batch) == batch_size:
                _flush(evaluator, batch, moving, report)
        if batch:
            _flush(evaluator, batch, moving, report)
        if chosen:
            report.notes.append(f"{spec}: {len(chosen)} of the sampled frames were beyond its last decodable frame")


def _flush(evaluator: ClipEvaluator, batch: list[Frame], moving: list, report: EvaluationReport) -> None:
    evaluator(batch, moving)
    report.frames_seen += len(batch)
    batch.clear()
    moving.clear()
