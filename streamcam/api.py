"""Run a whole job from a RunConfig: open the source, load the model, build the sinks, run the pipeline.

    from streamcam.api import run
    from streamcam.config import RunConfig
    result = run(RunConfig(source="dashcam.mp4", output=Path("out.mp4"), model="resnet50"))
    print(result.stats.summary())
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
from .models import load_model, resolve_device
from .pipeline import Pipeline, PipelineOptions
from .render import OpenCVRenderer, TorchRenderer
from .sinks import (IMAGE_SUFFIXES, ContactSheetSink, ImageSink, JsonlLog, Sink, VideoFileSink, check_output,
                    choose_h264_encoder)
from .sources import AVSource, ImageSource, Source, open_source
from .stats import RunStats
from .window import Window, display_problem

log = logging.getLogger("streamcam")


@dataclass
class RunResult:
    stats: RunStats
    source: str
    outputs: list[Path] = field(default_factory=list)
    stop_reason: str | None = None  # why the run ended before its source did, if it did
    interrupted_by: signal.Signals | None = None  # SIGINT (Ctrl-C) or SIGTERM, when one stopped the run
    expected_frames: int | None = None


SinkFactory = Callable[[Source, Callable[[int], str]], list[Sink]]


def frames_stay_on_device(device: torch.device) -> bool:
    """The GPU path: frames are uploaded once as the decoder's YUV, rendered on the device and downloaded
    once as the encoder's YUV. On a CPU, OpenCV's uint8 routines render faster than torch."""
    return device.type == "cuda"


def run(config: RunConfig, *, on_tick: Callable[[Pipeline], None] | None = None,
        handle_signals: bool = True, extra_sinks: SinkFactory | None = None) -> RunResult:
    """Run `config` to the end of its source or until stopped. Ctrl-C / SIGTERM stop reading and finish
    cleanly (a second Ctrl-C abandons the frames in flight); outputs are always closed and playable.
    `extra_sinks(source, class_name)` adds sinks of the caller's (e.g. `streamcam check`'s)."""
    config.validate()
    if config.output is not None:
        check_output(config.output, config.source)
    if config.log is not None:
        check_output(config.log, config.source, log=True)
    if config.contact_sheet is not None:
        check_output(config.contact_sheet, config.source)
    window_problem = display_problem() if config.show else None
    if window_problem and config.output is None and config.log is None:
        raise StreamcamError(f"cannot show a window: {window_problem}; give -o/--output or --log to run without one")
    if (not config.show and config.output is None and config.log is None and config.contact_sheet is None
            and extra_sinks is None):
        raise StreamcamError("nothing to do: give -o/--output, --log, --contact-sheet or --show")

    camera_size = parse_size(config.camera_size) if config.camera_size else None
    device = resolve_device(config.device)
    on_device = frames_stay_on_device(device)
    if config.decoder == "nvdec" and device.type != "cuda":
        raise StreamcamError("--decoder nvdec hands decoded frames to a model on the GPU; it needs --device cuda")
    with contextlib.ExitStack() as resources:
        source = resources.enter_context(open_source(
            config.source, camera_size=camera_size, camera_fps=config.camera_fps,
            reconnect_timeout=config.reconnect_timeout,
            decoder=config.decoder if device.type == "cuda" else "software", gpu=device.index or 0))
        if isinstance(source, AVSource):
            source.keep_yuv = on_device
        loaded = load_model(config.model, config.weights, labels=config.labels, device=device,
                            input_size=config.input_size)
        batch_size = config.batch_size or (1 if source.info.live else 4)
        explainer = Explainer(loaded, config.method, layer=config.layer, precision=config.precision, align=config.align,
                              compile=config.compile and batch_size)
        frames = FrameExplainer(loaded, explainer, target=config.target, top_k=config.top_k,
                                grid=config.view == "grid", smooth=config.smooth,
                                boxes=config.box_threshold_value() if config.boxes else None)
        look = {"view": config.view, "alpha": config.alpha, "colormap": config.colormap, "top_k": config.top_k}
        renderer = (TorchRenderer(frames.class_name, device, **look) if on_device
                    else OpenCVRenderer(frames.class_name, **look))
        sinks = _open_sinks(config, source, frames.class_name, loaded.device)
        for sink in sinks:
            resources.callback(sink.close)
        if extra_sinks is not None:
            for sink in extra_sinks(source, frames.class_name):
                resources.callback(sink.close)
                sinks.append(sink)
        window = None
        if config.show:
            if window_problem:
                log.warning("no window: %s; running without one", window_problem)
            else:
                window = Window(f"streamcam: {source.info.description}")
                resources.callback(window.close)

        pipeline = Pipeline(source, frames, renderer, sinks, PipelineOptions(batch_size, config.max_frames), window)
        result = RunResult(pipeline.stats, source.info.description,
                           [p for p in (config.output, config.log, config.contact_sheet) if p is not None])
        expected = source.info.frame_count
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
            if damage := source.damage_report():
                log.warning(damage)
    return result


def _open_sinks(config: RunConfig, source: Source, class_name, device: torch.device) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if config.log is not None:
            sinks.append(JsonlLog(config.log, class_name))
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
                encoder = choose_h264_encoder(config.encoder, on_gpu=device.type == "cuda")
                sinks.append(VideoFileSink(output, source.info, audio=source.audio, crf=config.crf, preset=config.preset,
                                           h264_encoder=encoder))
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
