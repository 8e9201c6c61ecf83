"""An archive through `streamcam batch` against a shell loop of `streamcam run`, in one run.

    scripts/with-env python scripts/bench_batch.py             # 8 clips of 720p, 10 s each; docs/benchmarks.md

Three paths over the same clips, with the same options (ResNet-18, random weights, short side 168,
x264 veryfast, CRF 23): a loop of `streamcam run` processes, one per clip (each imports torch and loads
the model); `streamcam batch --workers 1`; `streamcam batch` with its default worker count. Reported:
the fleet's frames per second, the start-up cost per clip (wall time beyond the frames at the
steady-state speed of one `streamcam run`), and where the batch's wall time went, Ray's share apart.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # scripts/ is on sys.path as this script's directory
from benchmark import make_clip

OPTIONS = ["--model", "resnet18", "--weights", "none", "--input-size", "168", "--preset", "veryfast", "--crf", "23",
           "--encoder", "libx264"]


def timed(command: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stdout


def shell_loop(clips: list[Path], out: Path) -> dict:
    out.mkdir()
    walls, steady = [], []
    for clip in clips:
        wall, stdout = timed(["streamcam", "run", str(clip), "-o", str(out / clip.name), *OPTIONS])
        walls.append(wall)
        steady.append(float(re.search(r"([\d.]+) fps after start-up", stdout).group(1)))
    return {"wall": sum(walls), "steady_fps": statistics.median(steady)}


def batch(clips: list[Path], out: Path, workers: int | None) -> dict:
    wall, _ = timed(["streamcam", "batch", *map(str, clips), "--out", str(out), *OPTIONS,
                     *(["--workers", str(workers)] if workers else [])])
    report = json.loads((out / "report.json").read_text())
    return {"wall": wall, "workers": report["workers"], "timings": report["timings"], "seconds": report["totals"]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--no-record", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="streamcam-bench-batch-") as folder:
        root = Path(folder)
        clips = []
        for index in range(args.clips):
            clips.append(root / "clips" / f"clip{index}.mp4")
            clips[-1].parent.mkdir(exist_ok=True)
            make_clip(clips[-1], (width, height), round(args.seconds * 30))
        frames = args.clips * round(args.seconds * 30)
        loop = shell_loop(clips, root / "loop")
        one = batch(clips, root / "one", workers=1)
        default = batch(clips, root / "default", workers=None)
    steady = frames / loop["steady_fps"]  # the frames alone, at one run's steady-state speed
    rows = []
    for name, result in [("shell loop of `streamcam run`", loop), ("`streamcam batch --workers 1`", one),
                         (f"`streamcam batch` (default: {default['workers']} worker(s))", default)]:
        rows.append([name, f"{frames / result['wall']:.1f}", f"{result['wall']:.1f}",
                     f"{(result['wall'] - steady) / args.clips:.2f}", f"{loop['wall'] / result['wall']:.2f}×"])
    table = benchlib.markdown_table(["path", "fleet FPS", "wall s", "start-up s per clip", "× loop"], rows)
    imports, _ = timed([sys.executable, "-c", "import streamcam"])  # what a new worker process imports
    notes = []
    for label, result in (("--workers 1", one), ("default", default)):
        timings = result["timings"]
        command_start = result["wall"] - result["seconds"]  # the command's own start: Python, streamcam, Ray's import
        between = result["seconds"] - timings["ray_start"] - timings["ray_stop"] - timings["clips"] / result["workers"]
        ray_share = timings["ray_start"] + timings["ray_stop"] + max(0.0, between - imports)
        notes.append(f"batch {label}: {result['wall']:.1f} s wall = the command's start {command_start:.1f} s + Ray's "
                     f"start {timings['ray_start']:.1f} s + clips {timings['clips'] / result['workers']:.1f} s per worker "
                     f"(model loads included) + Ray's stop {timings['ray_stop']:.1f} s + {between:.1f} s between (workers "
                     f"starting, which import torch and streamcam: {imports:.1f} s in a new process; scheduling; "
                     f"results). Ray's own share: {ray_share:.1f} s, {100 * ray_share / result['wall']:.1f} % of the wall time")
    text = (f"{args.clips} clips of {args.size}, {args.seconds:g} s at 30 fps ({frames} frames); ResNet-18, random "
            f"weights, short side 168, libx264 veryfast CRF 23; one run of each path, in this order. The loop's "
            f"steady state is {loop['steady_fps']:.1f} fps (median over its clips).\n\n{table}\n\n"
            + "\n".join(f"- {note}" for note in notes))
    print(text)
    if not args.no_record:
        import torch

        benchlib.record("batch:cpu", "Batch: an archive on Ray (CPU)", text, torch.device("cpu"))


if __name__ == "__main__":
    main()
