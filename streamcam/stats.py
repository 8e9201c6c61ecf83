"""Counting and timing a run: frames per stage, FPS, capture-to-output latency, the end summary."""

from __future__ import annotations

import collections
import threading
import time
from array import array
from dataclasses import dataclass, field

import numpy as np

STAGES = ("decode", "explain", "render", "write")
# Why a frame that was read was not written:
# - stale: a live run's newer frame replaced it before a stage took it (newest wins);
# - limit: it came after --max-frames;
# - stopping: it was in flight when the run was stopped or aborted (Ctrl-C, a failure).
DROP_REASONS = ("stale", "limit", "stopping")


class FpsMeter:
    """Frames per second over the last `window` seconds."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self.times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.times.append(now)
        while len(self.times) > 2 and now - self.times[0] > self.window:
            self.times.popleft()

    def fps(self) -> float | None:
        if len(self.times) < 2 or self.times[-1] == self.times[0]:
            return None
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


@dataclass
class RunStats:
    """read, explained and written are each counted by one pipeline thread only (and read by the main
    thread for progress); drops come from several, under a lock. At the end, read = written + dropped."""

    read: int = 0
    explained: int = 0
    written: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    started: float = field(default_factory=time.monotonic)
    first_output: float | None = None
    finished: float | None = None
    latencies: array = field(default_factory=lambda: array("d"))  # seconds, capture -> output, per frame
    recent_latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    stage_frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    output_fps: FpsMeter = field(default_factory=FpsMeter)
    _drop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def drop(self, reason: str, count: int = 1) -> None:
        with self._drop_lock:
            self.drops[reason] += count

    def dropped_as(self, reason: str):
        """A callback counting drops of one reason (for the hand-offs)."""
        return lambda count: self.drop(reason, count)

    def account_for_the_rest(self, reason: str) -> None:
        """At the end of a run: frames read but neither written nor dropped yet were in a stage's hands
        (or a hand-off) when the run stopped."""
        if (rest := self.read - self.written - self.dropped) > 0:
            self.drop(reason, rest)

    def timed(self, stage: str, seconds: float, frames: int = 1) -> None:
        self.stage_seconds[stage] += seconds
        self.stage_frames[stage] += frames

    def output(self, captured: float) -> None:
        """A frame reached the end of the pipeline."""
        now = time.monotonic()
        self.first_output = self.first_output or now
        self.written += 1
        self.latencies.append(now - captured)
        self.recent_latencies.append(now - captured)
        self.output_fps.tick(now)

    def average_fps(self) -> float | None:
        """Output frames per second from the first output to the end: start-up excluded."""
        end = self.finished or time.monotonic()
        if self.first_output is None or self.written < 2 or end <= self.first_output:
            return None
        return (self.written - 1) / (end - self.first_output)

    def latency_ms(self, percentile: float, recent: bool = False) -> float | None:
        """Capture-to-output latency percentile over the run, or over the last 100 frames."""
        values = self.recent_latencies if recent else self.latencies
        return 1000 * float(np.percentile(np.asarray(values), percentile)) if len(values) else None

    def stage_ms(self, stage: str) -> float | None:
        frames = self.stage_frames[stage]
        return 1000 * self.stage_seconds[stage] / frames if frames else None

    def summary(self) -> list[tuple[str, str]]:
        """(label, value) rows for the end-of-run table."""
        elapsed = (self.finished or time.monotonic()) - self.started
        fps = self.average_fps()
        frames = f"read {self.read} · explained {self.explained} · written {self.written} · dropped {self.dropped}"
        if self.dropped:
            frames += " (" + ", ".join(f"{reason} {n}" for reason, n in self.drops.items() if n) + ")"
        rows = [("frames", frames), ("time", f"{elapsed:.1f} s" + (f" · {fps:.1f} fps after start-up" if fps else ""))]
        p50, p95 = self.latency_ms(50), self.latency_ms(95)
        if p50 is not None:
            rows.append(("latency", f"p50 {p50:.0f} ms · p95 {p95:.0f} ms, capture to output"))
        per_stage = [f"{stage} {ms:.1f} ms" for stage in STAGES if (ms := self.stage_ms(stage)) is not None]
        if per_stage:
            rows.append(("per frame", " · ".join(per_stage)))
        return rows
