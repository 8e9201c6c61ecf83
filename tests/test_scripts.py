"""The benchmark scripts keep working: each runs end to end on tiny inputs (their figures are not checked
here; docs/benchmarks.md has real runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from media import decoded_frames, write_clip

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """Run scripts/NAME without recording its tables; it must succeed."""
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args, "--no-record"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_end_to_end_benchmark_runs_every_case_and_prints_its_tables():
    done = run_script("benchmark.py", "--sizes", "160x96", "--frames", "24", "--models", "resnet18",
                      "--live-size", "160x96", "--live-seconds", "2")
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 160x96")]
    assert [row.split("|")[2].strip() for row in rows] == [
        "bare transcode (codec ceiling)", "naive pytorch-grad-cam loop, ResNet-18", "zero-overhead pipeline, resnet18",
        "zero-overhead pipeline, resnet18, encoding streamcam's frames", "streamcam, resnet18",
        "zero-overhead pipeline, resnet18: latency capture → encoded",
        "streamcam, resnet18: latency capture → rendered frame",
        "resnet18",  # the stage table
        "resnet18", "resnet18", "resnet18",  # the CPU table: the zero-overhead pipeline (on both frames), streamcam
        "resnet18",  # x264 alone
    ]
    ratios = [row.split("|")[6].strip() for row in rows[:7]]
    assert ratios[2] == "1.00×" and ratios[4].startswith("**") and ratios[6].startswith("p95 **")
    cpu_rows = [row.split("|") for row in rows[8:11]]
    assert [row[3].strip() for row in cpu_rows] == ["zero-overhead", "zero-overhead, streamcam's frames", "streamcam"]
    assert all(float(row[10]) > 0 for row in cpu_rows)  # CPU ms per frame, all threads
    assert "MB after a third of the clip" in done.stdout and "frames written" in done.stdout


def test_the_benchmarks_live_streamcam_run_encodes_as_a_users_live_run_and_its_bound():
    """The live rows compare like with like: streamcam's live case, a user's live run and the zero-overhead
    pipeline plan the same encoder (a live run's ultrafast); files keep the other cases' veryfast."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPTS))
    from streamcam.config import RunConfig
    from streamcam.plan import plan_encoding

    cpu = torch.device("cpu")
    live = "lavfi:testsrc2=size=160x96:rate=30,realtime"
    users_live_run = plan_encoding(RunConfig(source=live, output=Path("live.mp4")), cpu, live=True)
    assert plan_encoding(benchmark.streamcam_config(live, "live.mp4", "cpu"), cpu, live=True) == users_live_run
    assert users_live_run.preset == "ultrafast"
    file_run = plan_encoding(benchmark.streamcam_config("clip.mp4", "out.mp4", "cpu"), cpu, live=False)
    assert (file_run.preset, file_run.crf) == (benchmark.ENCODER["preset"], int(benchmark.ENCODER["crf"]))


def test_the_benchmarks_streamcam_runs_make_the_same_maps_so_its_recording_is_the_frames_it_times(tmp_path):
    """The bound that encodes streamcam's frames reads them from another run (a lossless recording): with
    random weights, both runs must draw the same ones, or their maps, and x264's work, differ."""
    write_clip(tmp_path / "clip.mp4", frames=12, size=(160, 96))
    recordings = []
    for run in range(2):
        recordings.append(tmp_path / f"run{run}.mkv")
        kwargs = {"clip": str(tmp_path / "clip.mp4"), "output": str(recordings[-1]), "device": "cpu", "lossless": True}
        done = subprocess.run([sys.executable, str(SCRIPTS / "benchmark.py"), "--case", "streamcam",
                               "--kwargs", json.dumps(kwargs)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    first, second = (decoded_frames(path) for path in recordings)
    below_the_labels = np.s_[40:]  # the FPS label differs between runs
    assert len(first) == len(second) == 12
    assert all(np.array_equal(a[below_the_labels], b[below_the_labels]) for a, b in zip(first, second))


def test_serve_benchmark_measures_the_run_with_0_1_and_8_viewers():
    done = run_script("bench_serve.py", "--size", "160x96", "--frames", "60", "--repeats", "1", "--no-browser")
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "×" in line][1:]
    assert [row[0].strip() for row in rows] == ["no server", "`--serve`, no viewer", "`--serve`, 1 viewer",
                                                "`--serve`, 8 viewers"]
    assert float(rows[2][5]) > 0 and float(rows[3][5]) > 0  # the viewers got JPEGs


def test_engine_benchmark_times_every_method_against_pytorch_grad_cam():
    done = run_script("bench_engine.py", "--models", "resnet18", "--batches", "1", "--size", "64", "--seconds", "0.1",
                      "--precision", "fp32")
    methods = [line.split("|")[3].strip() for line in done.stdout.splitlines() if line.startswith("| resnet18 |")]
    assert methods[:2] == ["gradcam", "cam"] and "scorecam" in methods and methods[-1] == "gradcam"  # layer3 last
    assert "precision fp32" in done.stdout


def test_batch_benchmark_runs_the_three_paths():
    done = run_script("bench_batch.py", "--clips", "2", "--seconds", "0.5", "--size", "160x96")
    paths = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ") and "×" in line][1:]
    assert paths == ["shell loop of `streamcam run`", "`streamcam batch --workers 1`",
                     "`streamcam batch` (default: 1 worker(s))"]
    assert done.stdout.count("Ray's own share") == 2


def test_evaluate_benchmark_times_explain_and_evaluate():
    done = run_script("bench_evaluate.py", "--models", "demo", "--methods", "gradcam", "--batch", "2", "--steps", "4",
                      "--seconds", "0.1")
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| demo |")]
    assert len(rows) == 1 and rows[0][2].strip() == "gradcam"
    assert float(rows[0][4]) > float(rows[0][3])  # evaluating includes explaining, and more
