"""Soak test: a live source through the whole pipeline for N minutes, watching memory, FPS and latency.

    scripts/with-env python scripts/soak.py --minutes 10        # writes docs/reliability.md

A `lavfi:...,realtime` graph stands in for a camera: it is paced at its frame rate and the pipeline
drops stale frames when it falls behind, exactly as with a camera. Every run writes the annotated video
(fragmented MP4) and the JSONL log, as a recording would, into a temporary folder that is removed at
the end. Every `--every` seconds it prints resident memory (RSS), output FPS and capture-to-output
latency over that interval. The verdict: RSS growth after warm-up (first sample to last) < 5 % and no
upward latency trend (the median of the last third of intervals against the first third).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import benchlib  # scripts/ is on sys.path as this script's directory
from streamcam.api import run
from streamcam.config import RunConfig
from streamcam.plan import resolve_device

RSS_GROWTH_LIMIT = 0.05


def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sampler:
    """on_tick callback: one row per interval, from the pipeline's counters."""

    def __init__(self, every: float):
        self.every = every
        self.started = time.monotonic()
        self.next_sample = self.started + every
        self.last_written = 0
        self.last_dropped = 0
        self.rows: list[dict[str, float]] = []

    def __call__(self, pipeline) -> None:
        now = time.monotonic()
        if now < self.next_sample:
            return
        stats = pipeline.stats
        written, dropped = stats.written, pipeline.dropped
        latencies = np.asarray(stats.latencies[self.last_written:written]) * 1000
        row = {
            "minute": (now - self.started) / 60,
            "rss_mb": rss_mb(),
            "fps": (written - self.last_written) / (now - self.next_sample + self.every),
            "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
            "p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
            "dropped": dropped - self.last_dropped,
        }
        self.rows.append(row)
        print(" · ".join(f"{key} {value:.1f}" for key, value in row.items()), flush=True)
        self.last_written, self.last_dropped = written, dropped
        self.next_sample = now + self.every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument("--source", default="lavfi:testsrc2=size=1280x720:rate=30,realtime")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/reliability.md alone")
    args = parser.parse_args()

    sampler = Sampler(args.every)
    with tempfile.TemporaryDirectory(prefix="streamcam-soak-") as folder:
        config = RunConfig(source=args.source, output=Path(folder) / "soak.mp4", log=Path(folder) / "soak.jsonl",
                           model=args.model, device=args.device, max_frames=None)
        deadline = time.monotonic() + 60 * args.minutes

        def on_tick(pipeline) -> None:
            sampler(pipeline)
            if time.monotonic() >= deadline:
                pipeline.stop(f"{args.minutes:g} minutes elapsed")

        result = run(config, on_tick=on_tick)
    rows = sampler.rows
    if len(rows) < 3:
        raise SystemExit("too few samples for a verdict: run for longer or sample more often")

    # Warm-up: the first interval holds model loading and allocator growth.
    steady = rows[1:]
    growth = steady[-1]["rss_mb"] / steady[0]["rss_mb"] - 1
    third = max(1, len(steady) // 3)
    early_p50 = statistics.median(r["p50_ms"] for r in steady[:third])
    late_p50 = statistics.median(r["p50_ms"] for r in steady[-third:])
    verdict = [
        f"RSS after warm-up: {steady[0]['rss_mb']:.0f} → {steady[-1]['rss_mb']:.0f} MB ({growth:+.1%}; limit +5 %): "
        + ("flat" if growth < RSS_GROWTH_LIMIT else "GROWING"),
        f"latency p50, first third of intervals vs last third: {early_p50:.0f} → {late_p50:.0f} ms: "
        + ("no upward trend" if late_p50 <= early_p50 * 1.1 + 5 else "TRENDING UP"),
        f"frames: {result.stats.written} written, {result.stats.dropped} dropped (live: stale frames are dropped, "
        "never queued)",
    ]
    table = benchlib.markdown_table(
        ["minute", "RSS MB", "FPS", "latency p50 ms", "latency p95 ms", "dropped"],
        [[f"{r['minute']:.1f}", f"{r['rss_mb']:.0f}", f"{r['fps']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}",
          r["dropped"]] for r in rows],
    )
    print(table)
    print("\n".join(verdict))
    if not args.no_record:
        body = (f"Source `{args.source}`, model `{args.model}`, output: fragmented MP4 + JSONL log.\n\n{table}\n\n"
                + "\n".join(f"- {line}" for line in verdict))
        benchlib.record("soak", f"Soak: {args.minutes:g} minutes live", body, resolve_device(args.device),
                        path=benchlib.REPO / "docs" / "reliability.md")


if __name__ == "__main__":
    main()
