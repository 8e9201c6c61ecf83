"""Shared by the benchmark scripts: timing, machine description, and recording tables in docs/."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def interleaved_medians(
    calls: dict[str, Callable[[], object]], device: torch.device, min_rounds: int = 5, min_seconds: float = 2.0, warmup: bool = True
) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin (A B C A B C ...) so that drift in
    the machine's speed (other processes, turbo, thermal) hits all of them alike. CUDA work is timed
    with CUDA events."""
    if warmup:
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    started = time.perf_counter()
    while min(map(len, times.values())) < min_rounds or time.perf_counter() - started < min_seconds:
        for name, call in calls.items():
            times[name].append(_time_one(call, device))
    return {name: statistics.median(values) for name, values in times.items()}


def _time_one(call: Callable[[], object], device: torch.device) -> float:
    if device.type != "cuda":
        begin = time.perf_counter()
        call()
        return time.perf_counter() - begin
    begin_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin_event.record()
    call()
    end_event.record()
    torch.cuda.synchronize()
    return begin_event.elapsed_time(end_event) / 1000


def machine(device: torch.device) -> str:
    """One line naming the hardware and the software versions that matter for speed."""
    if device.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        hardware = f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{hardware}; torch {torch.__version__}; Python {platform.python_version()}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(section: str, title: str, body: str, device: torch.device, path: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace (or append) the section between markers named `section` in `path` (docs/benchmarks.md)."""
    command = "python " + " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    stamp = datetime.date.today().isoformat()
    block = (
        f"<!-- {section} -->\n## {title}\n\n"
        f"Measured {stamp} on {machine(device)}.\nCommand: `{command}`\n\n{body}\n<!-- /{section} -->"
    )
    new_file = f"# {path.stem.capitalize()}\n\nTables written by the scripts in `scripts/`; rerun them to refresh.\n"
    text = path.read_text() if path.exists() else new_file
    pattern = re.compile(rf"<!-- {re.escape(section)} -->.*?<!-- /{re.escape(section)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class ThreadCpu:
    """CPU seconds per thread of this process, read from /proc (Linux) every `every` seconds while a run
    goes, so that threads which end before it does still count. Python threads are known by name; the
    rest (x264's frame and lookahead threads, torch's OpenMP workers, decoder slice threads, OpenCV's
    workers) are counted together as "native". `mark()` starts the steady state (after the warm-up)."""

    def __init__(self, every: float = 0.1):
        self.every = every
        self.seen: dict[int, tuple[str, float]] = {}  # thread id -> (name, CPU seconds so far)
        self.marked: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_until_stopped, name="cpu-sampler", daemon=True)

    def __enter__(self) -> ThreadCpu:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self._sample()

    def mark(self) -> None:
        self._sample()
        with self._lock:
            self.marked = dict(self.seen)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        names = {thread.native_id: thread.name for thread in threading.enumerate()}
        ticks = os.sysconf("SC_CLK_TCK")
        with self._lock:
            for tid in map(int, os.listdir("/proc/self/task")):
                try:
                    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:  # the thread ended between the listing and the read
                    continue
                name = self.seen[tid][0] if tid in self.seen else names.get(tid, "native")
                self.seen[tid] = (name, (int(fields[11]) + int(fields[12])) / ticks)  # utime + stime

    def per_frame_ms(self, frames: int, whole_run: bool = False) -> dict[str, float]:
        """CPU milliseconds per frame since the mark (or since the start), by thread name (the sampler's
        left out), and the total."""
        totals: dict[str, float] = {}
        marked = {} if whole_run else self.marked
        for tid, (name, seconds) in self.seen.items():
            if name != "cpu-sampler":
                spent = seconds - marked.get(tid, (name, 0.0))[1]
                totals[name] = totals.get(name, 0.0) + 1000 * spent / max(1, frames)
        return {**totals, "total": sum(totals.values())}
