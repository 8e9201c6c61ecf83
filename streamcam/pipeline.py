"""Decode, explain, render and write at once: one thread per stage, linked by bounded queues.

    capture ──► explain ──► render ──► write (video, images, log)
                                   └─► display slot ──► window (main thread)

- A finite source (file, images) never loses a frame: queues block, and back-pressure paces the reader.
- A live source (camera, stream, lavfi) never builds latency: capture hands over through a one-slot
  "newest frame wins" buffer, and the frames it replaces are counted as dropped.
- `stop()` (Ctrl-C, q, --max-frames, a lost stream) stops reading; what is in flight is still written,
  then every sink is closed. `abort()` (a second Ctrl-C, a failing stage) closes the sinks at once and
  leaves the frames in flight. An exception in any stage is re-raised on the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import RunFailed
from .explain import FrameExplainer
from .render import Renderer
from .sinks import RenderedFrame, Sink
from .sources import Source
from .stats import RunStats
from .window import Window

_END = object()  # end of stream, passed down the stages
_POLL = 0.1  # seconds: every blocking queue call wakes this often to notice a stop or a failure


class LatestSlot:
    """A one-item hand-off where a newer item replaces an unread one (live sources, the display)."""

    def __init__(self):
        self._item: object = None
        self._full = False
        self._condition = threading.Condition()
        self.replaced = 0

    def put(self, item: object) -> None:
        with self._condition:
            if self._full and self._item is not _END:
                self.replaced += 1
            if not (self._full and self._item is _END):  # the end marker is never overwritten
                self._item, self._full = item, True
            self._condition.notify()

    def get(self, timeout: float) -> object:
        with self._condition:
            if not self._full and not self._condition.wait_for(lambda: self._full, timeout):
                raise queue.Empty
            self._full = False
            return self._item

    def get_nowait(self) -> object:
        return self.get(timeout=0)


@dataclass
class PipelineOptions:
    batch_size: int = 1
    max_frames: int | None = None
    queue_size: int = 4  # frames buffered between stages: bounds memory (a 4K frame is 25 MB)


@dataclass
class _Control:
    stopping: threading.Event = field(default_factory=threading.Event)  # stop reading, drain, close
    aborting: threading.Event = field(default_factory=threading.Event)  # drop everything, close now
    paused: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)


class Pipeline:
    def __init__(self, source: Source, explainer: FrameExplainer, renderer: Renderer, sinks: list[Sink],
                 options: PipelineOptions | None = None, window: Window | None = None):
        self.source = source
        self.explainer = explainer
        self.renderer = renderer
        self.sinks = sinks
        self.options = options or PipelineOptions()
        self.window = window
        self.stats = RunStats()
        self.control = _Control()
        live = source.info.live
        self.frames: queue.Queue | LatestSlot = LatestSlot() if live else queue.Queue(self.options.queue_size)
        self.explained: queue.Queue = queue.Queue(self.options.queue_size)
        self.rendered: queue.Queue = queue.Queue(self.options.queue_size)
        self.display = LatestSlot() if window else None
        self.stop_reason: str | None = None

    @property
    def dropped(self) -> int:
        """Live frames replaced by newer ones before the explain stage took them."""
        return self.frames.replaced if isinstance(self.frames, LatestSlot) else 0

    # ----- control, from the main thread -------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Stop reading new frames; frames in flight are still processed and written."""
        if not self.control.stopping.is_set():
            self.stop_reason = reason
            self.control.stopping.set()

    def abort(self, reason: str) -> None:
        """Stop now: frames in flight are dropped; sinks are still closed so outputs stay playable."""
        self.stop_reason = reason
        self.control.stopping.set()
        self.control.aborting.set()

    def toggle_pause(self) -> bool:
        if self.control.paused.is_set():
            self.control.paused.clear()
        else:
            self.control.paused.set()
        return self.control.paused.is_set()

    # ----- running -------------------------------------------------------------------------------------
    def run(self, on_tick: Callable[[Pipeline], None] | None = None, tick_seconds: float = 0.2) -> RunStats:
        """Run to the end of the source (or a stop); `on_tick` is called on the main thread for progress."""
        stages = [
            threading.Thread(target=self._guard, args=(self._capture,), name="capture", daemon=True),
            threading.Thread(target=self._guard, args=(self._explain,), name="explain", daemon=True),
            threading.Thread(target=self._guard, args=(self._render,), name="render", daemon=True),
            threading.Thread(target=self._guard, args=(self._write,), name="write", daemon=True),
        ]
        # Who reads each queue: a put into a full queue whose reader has exited must not wait forever.
        self._consumers = {id(self.frames): stages[1], id(self.explained): stages[2], id(self.rendered): stages[3]}
        for thread in stages:
            thread.start()
        writer = stages[-1]
        next_tick = 0.0
        try:
            while writer.is_alive():
                if self.window:
                    self._show_latest()
                else:
                    writer.join(timeout=_POLL / 2)
                if on_tick and time.monotonic() >= next_tick:
                    on_tick(self)
                    next_tick = time.monotonic() + tick_seconds
        finally:
            # After an abort, a stage may be inside a long forward pass; it notices the abort when it
            # returns and, as a daemon thread, never holds up the exit.
            for thread in stages:
                thread.join(timeout=1 if self.control.aborting.is_set() else 10)
            self.stats.finished = time.monotonic()
            self.stats.dropped = self.dropped
            if on_tick:
                on_tick(self)
        if self.control.errors:
            raise self.control.errors[0]
        return self.stats

    def _show_latest(self) -> None:
        try:
            item = self.display.get(timeout=0.005)
            if item is not _END:
                self.window.show(item.bgr())
        except queue.Empty:
            if self.source.stalled_since is not None:
                self.window.show_stalled(time.monotonic() - self.source.stalled_since)
        action = self.window.poll(1)
        if action == "quit":
            self.stop("window closed")
        elif action == "pause":
            self.toggle_pause()
        elif action == "snapshot":
            path = self.window.snapshot()
            if path:
                print(f"snapshot saved to {path}", flush=True)

    def _guard(self, stage: Callable[[], None]) -> None:
        """Run a stage; its exception stops the whole pipeline and reaches the main thread. A source
        that is lost for good (RunFailed) only stops reading: the frames already read are finished."""
        try:
            stage()
        except BaseException as error:  # noqa: BLE001 - re-raised on the main thread
            self.control.errors.append(error)
            if isinstance(error, RunFailed) and stage == self._capture:
                self.stop("the source was lost")
            else:
                self.abort(f"the {threading.current_thread().name} stage failed")

    # ----- stages --------------------------------------------------------------------------------------
    def _capture(self) -> None:
        limit = None if self.source.info.live else self.options.max_frames  # live: the explain stage counts
        started = time.perf_counter()
        try:
            for frame in self.source.frames(self.control.stopping):
                self.stats.timed("decode", time.perf_counter() - started)
                self.stats.read += 1
                if self.control.stopping.is_set() or not self._put(self.frames, frame):
                    break
                if limit is not None and self.stats.read >= limit:
                    break
                started = time.perf_counter()
        finally:
            self._put(self.frames, _END, final=True)

    def _explain(self) -> None:
        done = False
        try:
            while not done:
                batch = []
                item = self._get(self.frames)
                while item is not None and item is not _END:
                    batch.append(item)
                    if len(batch) >= self.options.batch_size:
                        break
                    item = self._get_nowait(self.frames)
                done = item is _END or item is None and self.control.aborting.is_set()
                if self.options.max_frames is not None:
                    batch = batch[: max(0, self.options.max_frames - self.stats.explained)]
                if batch:
                    while self.control.paused.is_set() and not self.control.stopping.is_set():
                        time.sleep(_POLL)
                    started = time.perf_counter()
                    results = self.explainer(batch)
                    self.stats.timed("explain", time.perf_counter() - started, len(batch))
                    self.stats.explained += len(batch)
                    for result in results:
                        if not self._put(self.explained, result):
                            return
                if self.options.max_frames is not None and self.stats.explained >= self.options.max_frames:
                    self.stop(f"--max-frames {self.options.max_frames} reached")
                    done = True
        finally:
            self._put(self.explained, _END, final=True)

    def _render(self) -> None:
        try:
            while (explained := self._get(self.explained)) is not _END and explained is not None:
                started = time.perf_counter()
                image = self.renderer.render(explained, self.stats.output_fps.fps())
                self.stats.timed("render", time.perf_counter() - started)
                rendered = RenderedFrame(explained, image)
                if self.display:
                    self.display.put(rendered)
                if not self._put(self.rendered, rendered):
                    return
        finally:
            self._put(self.rendered, _END, final=True)
            if self.display:
                self.display.put(_END)

    def _write(self) -> None:
        try:
            while (rendered := self._get(self.rendered)) is not _END and rendered is not None:
                started = time.perf_counter()
                for sink in self.sinks:
                    sink.write(rendered)
                self.stats.timed("write", time.perf_counter() - started)
                self.stats.output(rendered.explained.frame.captured)
        finally:
            close_error = self._close_sinks()  # when writing failed, that error is the one to report
        if close_error:
            raise close_error

    def _close_sinks(self) -> Exception | None:
        """Close every sink, even when one fails; return the first failure."""
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:  # noqa: BLE001 - close the others, then report
                errors.append(error)
        return errors[0] if errors else None

    # ----- queue helpers: every wait wakes up to notice a stop or failure ------------------------------------
    def _put(self, target: queue.Queue | LatestSlot, item: object, final: bool = False) -> bool:
        """Hand `item` on; False if it cannot be delivered (aborting, or the consumer has exited).
        The end marker (final) always gets through, making room if nobody will read the queue."""
        if isinstance(target, LatestSlot):
            target.put(item)
            return True
        while True:
            if self.control.aborting.is_set() and not final:
                return False
            try:
                target.put(item, timeout=_POLL)
                return True
            except queue.Full:
                consumer_gone = not self._consumers[id(target)].is_alive()
                if consumer_gone and not final:
                    return False
                if consumer_gone or self.control.aborting.is_set():
                    _discard_one(target)

    def _get(self, source: queue.Queue | LatestSlot) -> object | None:
        """The next item, or None once the pipeline aborts."""
        while not self.control.aborting.is_set():
            try:
                return source.get(timeout=_POLL)
            except queue.Empty:
                continue
        return None

    def _get_nowait(self, source: queue.Queue | LatestSlot) -> object | None:
        try:
            return source.get_nowait()
        except queue.Empty:
            return None


def _discard_one(target: queue.Queue) -> None:
    try:
        target.get_nowait()
    except queue.Empty:
        pass
