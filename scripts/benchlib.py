"""Shared by the benchmark scripts: timing, machine description, and recording tables in docs/."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
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
