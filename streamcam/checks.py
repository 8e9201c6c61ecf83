"""Heatmap test automation: does the model look where it should? (`streamcam check`, and for pytest)

After Borg et al. (2021), "Test automation with Grad-CAM heatmaps": a model that is right for the wrong
reason (the sidewalk, not the dog) should fail a test. Each checked frame's map is measured against
its region of interest (roi.py), in frame pixels:

- share: the map's energy inside the region (energy-based pointing game);
- pointing: whether the map's peak is inside;
- iou: between the box around the map's hottest region (boxes_from_map) and the region.

A clip passes when its mean share is at least `min_share` and its pointing rate at least
`min_pointing`; with annotated objects, each object is also a test case of its own.

    import streamcam
    report = streamcam.check("drive.mp4", roi="boxes.json", target="car", model="demo", min_pointing=0.9)
    assert report.passed, report.failures()
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import api
from .check_report import CheckReport, ClipReport, Thresholds, summarize
from .config import RunConfig
from .errors import RunFailed, StreamcamError
from .formats import IMAGE_SUFFIXES, VIDEO_CODECS
from .metrics import mask_energy_share, mask_iou, region_mask
from .render import RenderedFrame
from .roi import RegionSpec, load_roi
from .sinks import Sink, check_output
from .sources import Source
from .video_sink import VideoFileSink


class CheckSink(Sink):
    """Measures each frame's map against its regions (writer thread); writes failing frames to a video."""

    def __init__(self, regions: RegionSpec, thresholds: Thresholds, class_name: Callable[[int], str],
                 failing_video: VideoFileSink | None = None):
        self.regions = regions
        self.thresholds = thresholds
        self.class_name = class_name
        self.failing_video = failing_video
        self.rows: list[dict[str, object]] = []
        self.frames_seen = 0

    def write(self, rendered: RenderedFrame) -> None:
        self.frames_seen += 1
        explained = rendered.explained
        frame = explained.frame
        height, width = frame.shape
        moving = explained.motion.mask if explained.motion is not None else None
        regions = self.regions.regions(frame.index, width, height, moving)
        if not regions:
            return
        # Each method's map (one, unless several are compared), as the viewer sees it: on the frame.
        maps = [(m.method, m.peak, m.boxes) for m in explained.methods] if explained.methods else \
            [(None, explained.peak, explained.boxes)]
        failed = False
        for slot, (method, (x, y), boxes) in enumerate(maps):
            heatmap = explained.geometry.upsample(explained.maps[slot].float().cpu().numpy())
            hottest = boxes[0] if boxes else None
            hottest_mask = region_mask((height, width), hottest) if hottest else np.zeros((height, width), bool)
            for region in regions:
                row = {
                    "frame": frame.index, "time": round(frame.time, 6),
                    "object": region.object_id, "label": region.label,
                    "class": explained.classes[0], "class_label": self.class_name(explained.classes[0]),
                    "probability": round(explained.probabilities[0], 6), "top1": explained.top[0][0],
                    "share": round(mask_energy_share(heatmap, region.mask), 6),
                    "pointing": bool(region.mask[y, x]),
                    "iou": round(mask_iou(hottest_mask, region.mask), 6),
                    "peak": [x, y], "region": [round(v, 1) for v in region.box],
                    "map_box": [round(v, 1) for v in hottest] if hottest else None,
                    **({"method": method} if method else {}),
                }
                self.rows.append(row)
                failed |= (self.thresholds.min_share is not None and row["share"] < self.thresholds.min_share) or (
                    self.thresholds.min_pointing is not None and not row["pointing"])
        if failed and self.failing_video is not None:
            self.failing_video.write(rendered)

    def close(self) -> None:
        if self.failing_video is not None:
            self.failing_video.close()


def expand_sources(specs: Iterable[str]) -> list[str]:
    """Globs (quoted, for the shell not to expand them) and folders of clips become their files; a folder
    of images stays one source; anything else (a file, URL, lavfi graph) is kept as it is."""
    sources: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            clips = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
                           and not p.name.startswith("."))
            sources += clips or [spec]
        elif not path.exists() and glob.has_magic(spec):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise StreamcamError(f"no file matches {spec}")
            sources += matches
        else:
            sources.append(spec)
    return sources


def check(sources: str | Path | Iterable[str | Path], roi: str | RegionSpec, *, target: str | None = None,
          min_share: float | None = None, min_pointing: float | None = 0.8, failing_output: Path | None = None,
          config: RunConfig | None = None,
          on_clip: Callable[[str], contextlib.AbstractContextManager[Callable | None]] | None = None,
          engines: api.Engines | None = None, handle_signals: bool = True, **options: object) -> CheckReport:
    """Check that the maps of `sources` fall inside `roi` (see roi.py for the forms it takes).

    `target` is the class to explain (name or index; default each frame's top-1). `options` are
    RunConfig fields (model, weights, labels, method, layer, device, ...); by default maps are aligned to
    the layer's receptive fields, where they are most accurate. `failing_output` receives the annotated
    frames that fail: a video for one source, else a folder with one video per clip. `on_clip(source)`
    may return a context manager that yields a progress callback for that clip's run. `engines` keeps
    models from clip to clip (api.Engines); with `handle_signals` (the command's main thread), Ctrl-C
    and SIGTERM end the check with a report of how far it got.
    """
    source_list = expand_sources([str(sources)] if isinstance(sources, (str, Path)) else map(str, sources))
    if not source_list:
        raise StreamcamError("no source to check")
    regions = load_roi(roi) if isinstance(roi, str) else roi
    thresholds = Thresholds(min_share, min_pointing)
    base = dataclasses.replace(config) if config else RunConfig(align="receptive-field")
    for name, value in options.items():
        if not hasattr(base, name):
            raise StreamcamError(f"check() got an unknown option {name!r}")
        setattr(base, name, value)
    base.target, base.boxes, base.show = target, True, False
    if regions.needs_motion and base.motion is None:
        base.motion = "auto"

    video_paths = [_failing_video_path(failing_output, source, index, len(source_list))
                   for index, source in enumerate(source_list)]
    for path in filter(None, video_paths):
        check_output(path, "")
    report = CheckReport([], thresholds, target)
    with _interruptible(handle_signals) as interrupted:
        for source, video_path in zip(source_list, video_paths):
            report.interrupted_by = report.interrupted_by or interrupted.signal
            if report.interrupted_by is not None:  # the clips after an interruption are not checked at all
                report.clips.append(ClipReport(source, [], summarize([]), [], incomplete="not checked: interrupted"))
                continue
            clip_config = dataclasses.replace(base, source=source)
            sink, incomplete = _check_clip(clip_config, regions, thresholds, video_path, on_clip, interrupted, engines)
            report.interrupted_by = interrupted.signal
            report.clips.append(_clip_report(source, sink, thresholds, video_path, target is not None, incomplete))
    return report


def _check_clip(config: RunConfig, regions: RegionSpec, thresholds: Thresholds, video_path: Path | None,
                on_clip, interrupted: _Interruption, engines: api.Engines | None) -> tuple[CheckSink, str | None]:
    """Run one clip with a CheckSink; the sink, and why the clip was not seen to its end (None if it was)."""
    sinks: list[CheckSink] = []

    def make_sinks(opened: Source, class_name: Callable[[int], str]) -> list[Sink]:
        video = VideoFileSink(video_path, opened.videos) if video_path else None
        sinks.append(CheckSink(regions, thresholds, class_name, video))
        return sinks

    def checked() -> CheckSink:
        return sinks[0] if sinks else CheckSink(regions, thresholds, str)  # the run ended before making it

    with on_clip(config.source) if on_clip else contextlib.nullcontext() as on_tick:
        try:
            interrupted.raising = True  # while the model loads, a signal stops the clip (api.run's own, later)
            if interrupted.signal is not None:
                raise _Interrupted(interrupted.signal)
            result = api.run(config, extra_sinks=make_sinks, on_tick=_first_tick_ends(interrupted, on_tick),
                             engines=engines, handle_signals=interrupted.handled)
        except _Interrupted as stop:  # before the clip's frames flowed (loading the model): nothing seen
            return checked(), f"interrupted ({stop.name}) before its first frame"
        except RunFailed as error:
            seen = error.result.stats.written if error.result is not None else 0
            return checked(), f"{error} (after {seen} frames)"
        finally:
            interrupted.raising = False
    if result.interrupted_by is not None:
        interrupted.signal = result.interrupted_by
    if result.complete:
        return checked(), None
    of = f" of {result.expected_frames}" if result.expected_frames else ""
    return checked(), f"{result.stop_reason} after {result.stats.written}{of} frames"


def _first_tick_ends(interrupted: _Interruption, on_tick):
    """The run's progress callback: once frames flow, api.run's signal handling (and then only the note of
    a signal) takes over from stopping the start-up."""
    def tick(pipeline):
        interrupted.raising = False
        if on_tick is not None:
            on_tick(pipeline)

    return tick


class _Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal = signal.Signals(signum)
        self.name = "Ctrl-C" if signum == signal.SIGINT else self.signal.name


@dataclass
class _Interruption:
    signal: signal.Signals | None = None
    handled: bool = True  # Ctrl-C and SIGTERM are ours to handle (the main thread of a command)
    raising: bool = False  # a signal now also stops what is under way (a clip's model loading)


@contextlib.contextmanager
def _interruptible(handle_signals: bool):
    """Between clips, and while a clip's model loads, Ctrl-C or SIGTERM ends the check with a report
    (api.run handles them itself while frames flow): the signal is noted, and only a clip starting up is
    stopped by it, so that reports are never cut short. Signals are the main thread's only."""
    interruption = _Interruption(handled=handle_signals and threading.current_thread() is threading.main_thread())
    if not interruption.handled:
        yield interruption
        return

    def handler(signum, frame):
        interruption.signal = signal.Signals(signum)
        if interruption.raising:
            raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interruption
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _clip_report(source: str, sink: CheckSink, thresholds: Thresholds, video: Path | None,
                 explained_target: bool, incomplete: str | None) -> ClipReport:
    """The clip's summary and failures; with several methods, the first method's summary and objects,
    each method's summary beside it, and every method's failures."""
    by_method: dict[str | None, list[dict[str, object]]] = {}
    for row in sink.rows:
        by_method.setdefault(row.get("method"), []).append(row)
    first = next(iter(by_method.values()), [])
    # With a --class every frame explains that class, and how often it is also the top-1 is worth knowing.
    target = first[0]["class"] if explained_target and first else None
    summary = summarize(first, target)
    failures, methods = thresholds.failures(summary), {}
    if len(by_method) > 1:
        methods = {method: summarize(rows, target) for method, rows in by_method.items()}
        failures = [f"{method}: {reason}" for method, method_summary in methods.items()
                    for reason in thresholds.failures(method_summary)]
    # Annotated objects are test cases of their own: by id, else by class.
    groups: dict[str, list[dict[str, object]]] = {}
    for row in first:
        if row["object"] or row["label"]:
            groups.setdefault(str(row["object"] or row["label"]), []).append(row)
    objects = []
    for key in sorted(groups):
        rows = groups[key]
        label = rows[0]["label"]
        name = (f"object {key}" + (f" ({label})" if label else "")) if rows[0]["object"] else key
        object_summary = summarize(rows, target)
        objects.append({"name": name, "summary": object_summary, "failures": thresholds.failures(object_summary)})
    return ClipReport(source, sink.rows, summary, failures, objects, video if video and video.exists() else None,
                      incomplete, sink.frames_seen, methods)


def _failing_video_path(output: Path | None, source: str, index: int, count: int) -> Path | None:
    """`output` itself for one source and a video name; else `output/<clip>_failing.mp4`."""
    if output is None:
        return None
    if count == 1 and output.suffix.lower() in VIDEO_CODECS:
        return output
    output.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem if Path(source).exists() else f"source{index + 1}"
    return output / f"{stem}_failing.mp4"
