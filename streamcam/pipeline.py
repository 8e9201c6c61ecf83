"""Decode, explain, render and write at once: one thread per stage, linked by hand-offs.

    capture ──► explain ──► render ──► write (video, images, log)
                                   └─► display ──► window (main thread)

- A file run never loses a frame: hand-offs block when full, and back-pressure paces the reader.
- A live run never builds latency: every hand-off keeps its newest frames and drops the oldest (counted
  as stale). The explain stage takes up to --batch-size of the newest frames at once. The window gets
  each rendered frame as it is made, whatever the encoder is doing, and a slow encoder drops stale
  frames from the recording instead of holding the window (or the capture) back.
- `stop()` (Ctrl-C, q, --max-frames, a lost stream) stops reading; what is in flight is still written,
  then the outputs are closed. `abort()` (a second Ctrl-C, a failing stage, an exception on the main
  thread) leaves the frames in flight and closes the outputs at once. An exception in any stage is
  re-raised on the main thread, after every stage has stopped and the outputs are closed, once.
- Every frame read is accounted for: read = written + dropped, each drop with its reason (stats.py).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .controls import LOOK_SETTINGS, LiveControls
from .errors import RunFailed
from .explain import FrameExplainer
from .plan import RunPlan
from .render import RenderedFrame, Renderer
from .sinks import Outputs
from .sources import Source
from .stats import RunStats
from .window import Window

_POLL = 0.1  # seconds: every blocking wait wakes this often to notice an abort


class Handoff:
    """Items from one stage to the next, at most `capacity` of them. When full, a `newest_wins` hand-off
    (live) drops its oldest item and calls `on_stale`; otherwise `put` waits for room. `close()` marks
    the end: the reader still gets what is left, then None."""

    def __init__(self, capacity: int, newest_wins: bool, on_stale: Callable[[int], None] | None = None):
        self.capacity = capacity
        self.newest_wins = newest_wins
        self.on_stale = on_stale or (lambda count: None)
        self.items: collections.deque = collections.deque()
        self.closed = False  # the writer's end: no more items
        self.abandoned = False  # the reader's end: it has exited, so a put must not wait for it
        self._changed = threading.Condition()

    def put(self, item: object, aborting: threading.Event) -> bool:
        """Hand `item` on; False when it cannot be delivered (aborting, or the reader has exited)."""
        with self._changed:
            while len(self.items) >= self.capacity and not self.newest_wins:
                if aborting.is_set() or self.abandoned:
                    return False
                self._changed.wait(_POLL)
            if len(self.items) >= self.capacity:
                self.items.popleft()
                self.on_stale(1)
            self.items.append(item)
            self._changed.notify_all()
            return True

    def take(self, most: int, aborting: threading.Event, timeout: float | None = None) -> list | None:
        """Up to `most` items (the oldest first), waiting for one; None at the end or on abort, [] when
        `timeout` seconds pass without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self.items:
                if self.closed or aborting.is_set():
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    return []
                self._changed.wait(_POLL if deadline is None else max(0.0, min(_POLL, deadline - time.monotonic())))
            if aborting.is_set():
                return None
            batch = [self.items.popleft() for _ in range(min(most, len(self.items)))]
            self._changed.notify_all()
            return batch

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def abandon(self) -> None:
        with self._changed:
            self.abandoned = True
            self._changed.notify_all()


@dataclass
class _Control:
    stopping: threading.Event = field(default_factory=threading.Event)  # stop reading, drain, close
    aborting: threading.Event = field(default_factory=threading.Event)  # drop everything, close now
    paused: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)


class Pipeline:
    def __init__(self, plan: RunPlan, source: Source, explainer: FrameExplainer, renderer: Renderer,
                 outputs: Outputs, window: Window | None = None):
        self.plan = plan
        self.source = source
        self.explainer = explainer
        self.renderer = renderer
        self.outputs = outputs
        self.window = window
        self.stats = RunStats()
        self.control = _Control()
        stale = self.stats.dropped_as("stale")
        live = plan.live
        # Live: room for one batch of the newest frames between capture and explain, and for a few
        # rendered frames while the encoder catches up; files: a few frames, bounding memory.
        self.frames = Handoff(plan.batch_size if live else plan.queue_size, live, stale)
        self.explained = Handoff(max(plan.batch_size, plan.queue_size), live, stale)
        self.rendered = Handoff(plan.queue_size, live, stale)
        self.display = Handoff(1, newest_wins=True) if window else None
        self.controls: LiveControls | None = None  # live controls (the live view's page), when served
        self.stop_reason: str | None = None
        self._limit_reached = False

    # ----- control, from the main thread -------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Stop reading new frames; frames in flight are still processed and written."""
        if not self.control.stopping.is_set():
            self.stop_reason = reason
            self.control.stopping.set()

    def abort(self, reason: str) -> None:
        """Stop now: frames in flight are dropped; the outputs are still closed, so they stay playable."""
        if not self.control.aborting.is_set():
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
        """Run to the end of the source (or a stop); `on_tick` is called on the main thread for progress.
        Whatever happens, including an exception on the main thread, every stage stops and the outputs
        are closed once before this returns or raises."""
        stages = [threading.Thread(target=self._guard, args=(stage, reads), name=stage.__name__.strip("_"), daemon=True)
                  for stage, reads in ((self._capture, None), (self._explain, self.frames),
                                       (self._render, self.explained), (self._write, self.rendered))]
        for thread in stages:
            thread.start()
        writer = stages[-1]
        next_tick = 0.0
        finished = False
        try:
            while writer.is_alive():
                if self.window:
                    self._show_latest()
                else:
                    writer.join(timeout=_POLL / 2)
                if on_tick and time.monotonic() >= next_tick:
                    on_tick(self)
                    next_tick = time.monotonic() + tick_seconds
            finished = True
        except BaseException as error:
            self.abort(f"{type(error).__name__} on the main thread")
            raise
        finally:
            # After an abort, a stage may be inside a long forward pass; it notices the abort when it
            # returns and, as a daemon thread, never holds up the exit.
            for thread in stages:
                thread.join(timeout=1 if self.control.aborting.is_set() else 10)
            try:
                self.outputs.close()  # once: a no-op when the writer closed them, as it does at the end
            except Exception as error:  # noqa: BLE001 - reported below, unless another error came first
                self.control.errors.append(error)
            self.stats.finished = time.monotonic()
            self.stats.account_for_the_rest("limit" if self._limit_reached else "stopping")
        if on_tick and finished:
            on_tick(self)
        if self.control.errors:
            raise self.control.errors[0]
        return self.stats

    def _show_latest(self) -> None:
        shown = self.display.take(1, self.control.aborting, timeout=0.005)
        if shown:
            self.window.show(shown[0].bgr())
        elif self.source.stalled_since is not None:
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

    def _guard(self, stage: Callable[[], None], reads: Handoff | None) -> None:
        """Run a stage; its exception stops the whole pipeline and reaches the main thread. A source
        that is lost for good (RunFailed) only stops reading: the frames already read are finished.
        When the stage ends, what it reads from is abandoned, so that its writer never waits for it."""
        try:
            stage()
        except BaseException as error:  # noqa: BLE001 - re-raised on the main thread
            self.control.errors.append(error)
            if isinstance(error, RunFailed) and stage == self._capture:
                self.stop("the source was lost")
            else:
                self.abort(f"the {threading.current_thread().name} stage failed")
        finally:
            if reads is not None:
                reads.abandon()

    # ----- stages --------------------------------------------------------------------------------------
    def _capture(self) -> None:
        # A file stops reading at --max-frames; a live source drops frames, so the explain stage counts.
        limit = None if self.plan.live else self.plan.max_frames
        started = time.perf_counter()
        try:
            for frame in self.source.frames(self.control.stopping):
                self.stats.timed("decode", time.perf_counter() - started)
                self.stats.read += 1
                if self.control.stopping.is_set() or not self.frames.put(frame, self.control.aborting):
                    break
                if limit is not None and self.stats.read >= limit:
                    break
                started = time.perf_counter()
        finally:
            self.frames.close()

    def _explain(self) -> None:
        limit = self.plan.max_frames
        try:
            while (batch := self.frames.take(self.plan.batch_size, self.control.aborting)) is not None:
                if limit is not None and len(batch) > limit - self.stats.explained:
                    self.stats.drop("limit", len(batch) - (limit - self.stats.explained))
                    batch = batch[: limit - self.stats.explained]
                while self.control.paused.is_set() and not self.control.stopping.is_set():
                    if self.controls:  # a change while paused is answered, and shows when the run resumes
                        self.controls.apply_pending(batch[0].index)
                    time.sleep(_POLL)
                if self.controls:
                    self.controls.apply_pending(batch[0].index)
                started = time.perf_counter()
                results = self.explainer(batch)
                if self.controls:
                    for result in results:  # each frame says what it was made with: any of them may be dropped
                        result.settings = self.controls.in_force
                self.stats.timed("explain", time.perf_counter() - started, len(batch))
                self.stats.explained += len(batch)
                for result in results:
                    if not self.explained.put(result, self.control.aborting):
                        return
                if limit is not None and self.stats.explained >= limit:
                    self._limit_reached = True
                    self.stop(f"--max-frames {limit} reached")
                    return
        finally:
            self.explained.close()

    def _render(self) -> None:
        look = self.controls.in_force if self.controls else None
        try:
            while (taken := self.explained.take(1, self.control.aborting)) is not None:
                started = time.perf_counter()
                if taken[0].settings is not look:  # a live change: this frame is the first with it
                    look = taken[0].settings
                    self.renderer.restyle(**{name: look[name] for name in LOOK_SETTINGS})
                rendered = self.renderer.render(taken[0], self.stats.output_fps.fps())
                self.stats.timed("render", time.perf_counter() - started)
                if self.display is not None and rendered.frame.stream == 0:  # the window shows the first camera
                    self.display.put(rendered, self.control.aborting)
                if not self.rendered.put(rendered, self.control.aborting):
                    return
        finally:
            self.rendered.close()

    def _write(self) -> None:
        try:
            while (taken := self.rendered.take(1, self.control.aborting)) is not None:
                rendered: RenderedFrame = taken[0]
                started = time.perf_counter()
                if not self.outputs.write(rendered):  # closed under us after a failure elsewhere
                    return
                self.stats.timed("write", time.perf_counter() - started)
                self.stats.output(rendered.frame.captured)
        except BaseException:
            with contextlib.suppress(Exception):  # the write's error is the one to report
                self.outputs.close()
            raise
        self.outputs.close()
