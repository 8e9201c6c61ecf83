"""How a run hands frames on, drops them, accounts for them and ends: live policy, slow stages, batches,
exceptions on the main thread, and the outputs it reports."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from media import probe, write_clip
from streamcam import api
from streamcam.config import RunConfig
from streamcam.explain import FrameExplainer
from streamcam.sinks import Sink

FAST = {"model": "resnet18", "weights": "none", "input_size": 64}
LIVE = "lavfi:testsrc2=size=160x120:rate=30,realtime"
ENDLESS = "lavfi:testsrc2=size=160x120:rate=30"  # generated on demand, like an endless file


def run(source, **options):
    kwargs = {key: options.pop(key) for key in ("on_tick", "extra_sinks") if key in options}
    return api.run(RunConfig(source=str(source), **{**FAST, **options}), handle_signals=False, **kwargs)


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("capture", "explain", "render", "write")]


class CountingSink(Sink):
    """Records what reaches it, and complains when written after it was closed."""

    def __init__(self, seconds_per_frame: float = 0.0):
        self.delay = seconds_per_frame
        self.frames: list = []  # (picture as shown, capture time)
        self.closes = 0
        self.written_after_close = 0

    def write(self, rendered) -> None:
        self.written_after_close += self.closes > 0
        time.sleep(self.delay)
        self.frames.append((rendered.bgr(), rendered.explained.frame.captured))

    def close(self) -> None:
        self.closes += 1


def slow(seconds: float, batches: list | None = None):
    class Slow(FrameExplainer):
        def __call__(self, frames):
            if batches is not None:
                batches.append([frame.index for frame in frames])
            time.sleep(seconds)
            return super().__call__(frames)

    return Slow


@pytest.mark.parametrize("error", [BrokenPipeError, KeyboardInterrupt])
def test_an_exception_on_the_main_thread_stops_every_stage_and_closes_the_outputs_once(tmp_path, error):
    """`on_tick` raising BrokenPipe under `| head`, or Ctrl-C without signal handlers: the exception
    reaches the caller after every stage has stopped and every output was closed, once."""
    counting = CountingSink()

    def on_tick(pipeline):
        if pipeline.stats.written >= 5:
            raise error()

    started = time.monotonic()
    with pytest.raises(error):
        run(ENDLESS, output=tmp_path / "out.mp4", on_tick=on_tick, extra_sinks=lambda source, name: [counting])
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 5
    while stage_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stage_threads(), "a stage kept running after the run raised"
    assert counting.closes == 1 and counting.written_after_close == 0
    assert probe(tmp_path / "out.mp4")["frames"] == len(counting.frames) >= 5  # flushed, and it plays


def accounted(result) -> None:
    stats = result.stats
    assert stats.read == stats.written + stats.dropped, stats
    assert stats.dropped == sum(stats.drops.values())


def test_every_frame_read_is_written_or_dropped_with_its_reason(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "in.mp4", frames=20)
    whole = run(clip, output=tmp_path / "whole.mp4")
    accounted(whole)
    assert whole.stats.read == whole.stats.written == 20 and whole.stats.dropped == 0
    cut = run(clip, log=tmp_path / "cut.jsonl", max_frames=7)
    accounted(cut)
    assert cut.stats.written == 7 and cut.stats.dropped == 0  # a file is not read past the limit

    monkeypatch.setattr(api, "FrameExplainer", slow(0.1))
    live = run(LIVE, log=tmp_path / "live.jsonl", max_frames=15)
    accounted(live)
    assert live.stats.written == 15 == len((tmp_path / "live.jsonl").read_text().splitlines())
    assert live.stats.drops["stale"] > 10 and live.stats.drops["stopping"] == 0

    def stop_soon(pipeline):
        if pipeline.stats.written >= 5:
            pipeline.stop("test")

    stopped = run(LIVE, output=tmp_path / "stopped.mp4", on_tick=stop_soon)
    accounted(stopped)
    assert probe(tmp_path / "stopped.mp4")["frames"] == stopped.stats.written >= 5


def test_the_window_keeps_up_with_the_camera_when_the_encoder_does_not(tmp_path, monkeypatch):
    """Live display and live recording do not hold each other up: with a writer that takes 0.15 s per
    frame (five times the camera's period), the window still shows each frame as soon as it is rendered."""
    shown: list = []  # (picture, when shown)

    class FakeWindow:
        def __init__(self, title):
            pass

        def show(self, image):
            shown.append((image, time.monotonic()))

        def poll(self, wait_ms):
            time.sleep(wait_ms / 1000)

        def close(self):
            pass

    monkeypatch.setattr(api, "Window", FakeWindow)
    monkeypatch.setattr(api, "display_problem", lambda: None)
    writer = CountingSink(seconds_per_frame=0.15)

    def three_seconds(pipeline):
        if time.monotonic() - pipeline.stats.started > 3:
            pipeline.stop("test")

    result = run(LIVE, show=True, log=tmp_path / "log.jsonl", on_tick=three_seconds,
                 extra_sinks=lambda source, name: [writer])
    captured = {id(picture): at for picture, at in writer.frames}
    lags = [when - captured[id(picture)] for picture, when in shown[5:] if id(picture) in captured]
    assert len(shown) > 2 * len(writer.frames), "the window got more frames than the slow writer"
    assert lags and np.median(lags) < 0.25, f"the window lagged {np.median(lags):.2f} s behind the camera"
    accounted(result)
    assert result.stats.drops["stale"] > 0  # the recording skipped frames instead of holding the window


def test_a_live_batch_takes_up_to_batch_size_of_the_newest_frames(tmp_path, monkeypatch):
    batches: list = []
    monkeypatch.setattr(api, "FrameExplainer", slow(0.2, batches))
    result = run(LIVE, log=tmp_path / "log.jsonl", batch_size=4, max_frames=24)
    assert result.stats.written == 24
    sizes = [len(batch) for batch in batches]
    assert max(sizes) == 4 and all(1 <= size <= 4 for size in sizes)
    for batch in batches:  # the newest frames, in order, and never one seen before
        assert batch == sorted(batch)
    flat = [index for batch in batches for index in batch]
    assert len(flat) == len(set(flat))
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert max(row["latency_ms"] for row in rows[4:]) < 1000


def test_the_contact_sheet_samples_the_frames_it_receives(tmp_path, monkeypatch):
    """A live run drops frames, so the frames a sink sees can all be odd-numbered (say): sampling by
    frame number then kept none of them, and no PNG was written."""
    import cv2

    from media import moving_square
    from streamcam.picture import BgrPicture
    from streamcam.sinks import ContactSheetSink
    from streamcam.sources import Frame

    class Rendered:  # what the sink reads of a rendered frame
        def __init__(self, index):
            self.frame = Frame(index, BgrPicture(moving_square(index, 160, 90)), index, 1, 0.0)
            self.explained = self

        def bgr(self):
            return self.frame.picture.bgr()

    sheet = ContactSheetSink(tmp_path / "sheet.png")
    for index in range(1, 100, 2):
        sheet.write(Rendered(index))
    sheet.close()
    image = cv2.imread(str(tmp_path / "sheet.png"))
    assert image is not None and image.shape[1] == 4 * 480 and image.shape[0] == 2 * 270
    assert sheet.written() == [tmp_path / "sheet.png"]


def test_the_outputs_reported_are_the_files_written(tmp_path, monkeypatch):
    """A run abandoned before its first frame was written wrote no video and no contact sheet, and must
    not say it did; the log was created (empty), and says so."""
    monkeypatch.setattr(api, "FrameExplainer", slow(3.0))

    def abandon(pipeline):
        if time.monotonic() - pipeline.stats.started > 0.5:
            pipeline.abort("test")

    result = run(LIVE, output=tmp_path / "out.mp4", contact_sheet=tmp_path / "sheet.png", log=tmp_path / "log.jsonl",
                 on_tick=abandon)
    assert result.stats.written == 0
    assert result.outputs == [tmp_path / "log.jsonl"]
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "sheet.png").exists()


def test_a_write_error_is_the_one_reported_when_closing_fails_too(tmp_path):
    """The disk fills while a frame is written, and then a sink cannot close either: the run's error is
    the write's (a run that failed, exit 1, with its summary), not the close's."""
    from streamcam.errors import RunFailed, StreamcamError

    class FullDisk(Sink):
        def write(self, rendered):
            raise RunFailed("disk full: stopped writing")

        def close(self):
            raise StreamcamError("cannot write sheet.png")

    with pytest.raises(RunFailed, match="disk full"):
        run(write_clip(tmp_path / "in.mp4", frames=8), log=tmp_path / "log.jsonl",
            extra_sinks=lambda source, name: [FullDisk()])


def test_streams_are_copied_only_for_a_video_output(tmp_path, monkeypatch):
    """A file's audio packets wait in a queue for the video sink; with no video output nothing reads them."""
    from streamcam import sources

    opened = []

    def spy(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    real = sources.open_source
    monkeypatch.setattr(api, "open_source", spy)
    clip = write_clip(tmp_path / "in.mp4", frames=8, audio=True)
    run(clip, log=tmp_path / "log.jsonl")
    run(clip, output=tmp_path / "out.mp4")
    assert [len(source.copied) for source in opened] == [0, 1]
