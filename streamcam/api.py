"""Run a whole job from a RunConfig: plan it, open the source, load the model, build the sinks, run.

    from streamcam.api import run
    from streamcam.config import RunConfig
    result = run(RunConfig(source="dashcam.mp4", output=Path("out.mp4"), model="resnet50"))
    print(result.stats.summary())

`source` may also be a Source (sources.py) or any iterable of frames (BGR arrays, Pictures or Frames).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cam import Explainer
from .config import RunConfig, parse_size
from .errors import RunFailed, StreamcamError
from .explain import FrameExplainer
from .formats import IMAGE_SUFFIXES
from .models import LoadedModel, load_model
from .pipeline import Pipeline
from .plan import Decoding, RunPlan, cuda_stream, plan_decoding, resolve_device
from .render import OpenCVRenderer, Renderer, TorchRenderer
from .sinks import ContactSheetSink, ImageSink, JsonlLog, Outputs, Sink
from .sources import ImageSource, IterableSource, Source, open_source
from .stats import RunStats
from .video_sink import VideoFileSink
from .window import Window, display_problem

log = logging.getLogger("streamcam")


@dataclass
class RunResult:
    stats: RunStats
    source: str
    outputs: list[Path] = field(default_factory=list)  # the files the run really wrote
    stop_reason: str | None = None  # why the run ended before its source did, if it did
    interrupted_by: signal.Signals | None = None  # SIGINT (Ctrl-C) or SIGTERM, when one stopped the run
    expected_frames: int | None = None
    streams: str | None = None  # which streams were read, when the source has several
    damage: str | None = None  # what could not be decoded, in one line (also logged as a warning)

    @property
    def complete(self) -> bool:
        """The run saw its whole source, or as much of it as --max-frames asked for."""
        return self.stop_reason is None or self.stop_reason.startswith("--max-frames")


SinkFactory = Callable[[Source, Callable[[int], str]], list[Sink]]


class Engines:
    """Models and their explainers, kept from run to run: a worker that processes clip after clip (a
    batch) loads torch's model and probes its layers once. An explainer keeps nothing of a run."""

    def __init__(self):
        self._loaded: dict[tuple, LoadedModel] = {}
        self._explainers: dict[tuple, Explainer] = {}

    def get(self, config: RunConfig, device: torch.device, batch_size: int) -> tuple[LoadedModel, list[Explainer]]:
        """The model, and an explainer per method of config.method."""
        model_key = (config.model, str(config.weights), str(config.labels), str(device), config.input_size)
        if model_key not in self._loaded:
            self._loaded[model_key] = load_model(config.model, config.weights, labels=config.labels, device=device,
                                                 input_size=config.input_size)
        loaded = self._loaded[model_key]
        explainers = []
        for method in config.methods:
            options = config.options_of(method)
            key = (*model_key, method, repr(sorted(options.items())), config.layer, config.precision, config.align,
                   config.compile and batch_size)
            if key not in self._explainers:
                self._explainers[key] = Explainer(loaded, method, layer=config.layer, precision=config.precision,
                                                  align=config.align, compile=config.compile and batch_size, **options)
            explainers.append(self._explainers[key])
        return loaded, explainers


def run(config: RunConfig, *, on_tick: Callable[[Pipeline], None] | None = None,
        handle_signals: bool = True, extra_sinks: SinkFactory | None = None,
        engines: Engines | None = None) -> RunResult:
    """Run `config` to the end of its source or until stopped. Ctrl-C / SIGTERM stop reading and finish
    cleanly (a second Ctrl-C abandons the frames in flight); outputs are always closed and playable.
    `extra_sinks(source, class_name)` adds sinks of the caller's (e.g. `streamcam check`'s); `engines`
    keeps models from run to run."""
    config.validate(extra_outputs=extra_sinks is not None)
    window_problem = display_problem() if config.show else None
    if window_problem and config.output is None and config.log is None and config.serve is None:
        raise StreamcamError(f"cannot show a window: {window_problem}; give -o/--output, --log or --serve to run "
                             "without one")

    device = resolve_device(config.device)
    decoding = plan_decoding(config, device)
    with contextlib.ExitStack() as resources:
        source = _open(config, decoding, resources)
        plan = RunPlan.build(config, device, decoding, source.info)
        engines = engines or Engines()
        loaded, explainers = engines.get(config, device, plan.batch_size)
        frames = FrameExplainer(loaded, explainers, target=config.target, top_k=config.top_k,
                                grid=config.view == "grid", smooth=config.smooth,
                                boxes=config.box_threshold_value() if config.boxes else None,
                                motion=config.motion_settings,
                                stream=cuda_stream(device) if plan.cuda_streams else None)
        renderer = _renderer(config, plan, frames.class_name)
        outputs = Outputs(_open_sinks(config, plan, source, frames.class_name, renderer))
        resources.callback(outputs.close)  # the pipeline closes them; this is for a failure before it runs
        if extra_sinks is not None:
            outputs.sinks += extra_sinks(source, frames.class_name)
        window = None
        if config.show:
            if window_problem:
                log.warning("no window: %s; running without one", window_problem)
            else:
                window = Window(f"streamcam: {source.info.description}")
                resources.callback(window.close)

        pipeline = Pipeline(plan, source, frames, renderer, outputs, window)
        if config.serve is not None:
            from .serve import open_live_view

            open_live_view(config, pipeline, engines, device, plan.batch_size, resources)
        result = RunResult(pipeline.stats, source.info.description, streams=source.streams_report())
        counts = [video.frame_count for video in source.videos]
        expected = sum(counts) if None not in counts else None
        if config.max_frames is not None:
            expected = min(expected, config.max_frames) if expected else config.max_frames
        result.expected_frames = expected
        try:
            with _stop_on_signals(pipeline, result) if handle_signals else contextlib.nullcontext():
                pipeline.run(on_tick)
        except RunFailed as error:
            error.result = result  # how far it got, for the caller's summary
            raise
        finally:
            result.stop_reason = pipeline.stop_reason
            result.outputs = outputs.written()
            if damage := source.damage_report():
                result.damage = damage
                log.warning(damage)
    return result


def _open(config: RunConfig, decoding: Decoding, resources: contextlib.ExitStack) -> Source:
    """The source: opened from what the user typed (and closed at the end), or the caller's own."""
    if isinstance(config.source, Source):
        return config.source
    if not isinstance(config.source, (str, os.PathLike)):
        return IterableSource(config.source, fps=config.fps or 30.0)
    camera_size = parse_size(config.camera_size) if config.camera_size else None
    return resources.enter_context(open_source(
        os.fspath(config.source), decoding=decoding, copy_streams=config.writes_video, camera_size=camera_size,
        camera_fps=config.camera_fps,
        reconnect_timeout=config.reconnect_timeout, video_stream=config.video_stream_value(), fps=config.fps))


def _renderer(config: RunConfig, plan: RunPlan, class_name: Callable[[int], str]) -> Renderer:
    look = {"view": config.view, "alpha": config.alpha, "colormap": config.colormap, "top_k": config.top_k,
            "tiles": len(config.methods) if config.view == "methods" else config.top_k, "hud_motion": config.hud_motion}
    if plan.render_on_device:
        return TorchRenderer(class_name, plan.device, cuda_stream(plan.device) if plan.cuda_streams else None, **look)
    return OpenCVRenderer(class_name, **look)


def _open_sinks(config: RunConfig, plan: RunPlan, source: Source, class_name, renderer: Renderer) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if config.log is not None:
            sinks.append(JsonlLog(config.log, class_name, cameras=len(source.videos)))
        if config.contact_sheet is not None:
            sinks.append(ContactSheetSink(config.contact_sheet))
        if config.output is not None:
            output = config.output
            if output.suffix.lower() in IMAGE_SUFFIXES or not output.suffix:
                if output.suffix and not (isinstance(source, ImageSource) and len(source.paths) == 1):
                    raise StreamcamError(f"{output} is one image, but {source.info.description} has several frames; "
                                         "give a folder or a video file")
                sinks.append(ImageSink(output))
            else:
                sizes = [renderer.output_size(video.width, video.height) for video in source.videos]
                sinks.append(VideoFileSink(output, source.videos, copied=source.copied, encoding=plan.encoding,
                                           sizes=sizes))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


@contextlib.contextmanager
def _stop_on_signals(pipeline: Pipeline, result: RunResult) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: stop reading and finish. Second: abandon frames in flight. Third: exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum, frame) -> None:
        nonlocal count
        count += 1
        result.interrupted_by = signal.Signals(signum)
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if count == 1:
            log.warning("%s: finishing the frames in flight and closing the outputs (again to stop at once)", name)
            pipeline.stop(f"interrupted ({name})")
        elif count == 2:
            pipeline.abort(f"interrupted ({name} twice)")
        else:
            os._exit(130)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
