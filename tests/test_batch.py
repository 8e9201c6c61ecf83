"""`streamcam batch` on Ray: one local Ray (2 CPUs) shared by these tests, as Ray advises, and a
two-node cluster on this machine for the test that needs one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import streamcam
from media import probe, write_clip
from streamcam import api
from streamcam.config import RunConfig

ray = pytest.importorskip("ray")
FAST = {"model": "resnet18", "weights": "none", "input_size": 64}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Two cars' clips in folders, one with audio and variable timing, and one broken file."""
    root = tmp_path_factory.mktemp("archive")
    (root / "car1").mkdir()
    (root / "car2").mkdir()
    write_clip(root / "car1" / "0001.mp4", frames=24, audio=True)
    write_clip(root / "car1" / "0002.mkv", frames=12, pts=[0, 40, 80, 200, 240, 280, 320, 360, 400, 440, 480, 520],
               time_base=__import__("fractions").Fraction(1, 1000))
    write_clip(root / "car2" / "0001.mp4", frames=18, size=(128, 96))
    (root / "car2" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    return root


def test_every_clip_is_processed_as_run_would_and_a_broken_one_is_recorded(local_ray, archive, tmp_path):
    report = streamcam.batch([str(archive)], tmp_path / "out", log=True, **FAST)
    states = {clip["name"]: clip["state"] for clip in report.clips}
    assert states == {"car1/0001.mp4": "done", "car1/0002.mkv": "done", "car2/0001.mp4": "done",
                      "car2/broken.mp4": "failed"}
    broken = next(clip for clip in report.clips if clip["state"] == "failed")
    assert broken["error"].startswith("cannot open") and "\n" not in broken["error"]
    for name in ("car1/0001", "car1/0002", "car2/0001"):
        source = next(archive.glob(f"{name}.*"))
        single = api.run(RunConfig(source=str(source), output=tmp_path / "single.mp4", **FAST), handle_signals=False)
        ours, theirs = probe(tmp_path / "out" / f"{name}.mp4"), probe(tmp_path / "single.mp4")
        assert ours["frames"] == theirs["frames"] == single.stats.written
        assert ours["times"] == pytest.approx(theirs["times"], abs=1e-6) and ours["audio"] == theirs["audio"]
        assert len((tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()) == ours["frames"]
    assert probe(tmp_path / "out" / "car1" / "0001.mp4")["audio"]
    stored = json.loads((tmp_path / "out" / "report.json").read_text())
    assert stored["engine"] == "ray" and stored["ray_version"] == ray.__version__ and stored["workers"] == 1
    assert stored["totals"]["done"] == 3 and stored["totals"]["failed"] == 1 and stored["totals"]["frames"] == 54
    assert (tmp_path / "out" / "report.csv").read_text().count("\n") == 5
    assert not list((tmp_path / "out" / ".partial").iterdir())


def test_a_rerun_skips_what_is_done_and_force_redoes_it(local_ray, archive, tmp_path, monkeypatch):
    good = [str(archive / "car1"), str(archive / "car2" / "0001.mp4")]
    monkeypatch.chdir(tmp_path)  # a relative --out: the workers started elsewhere must write here
    started = time.monotonic()
    first = streamcam.batch(good, "out", **FAST)
    assert (tmp_path / "out" / "car1" / "0001.mp4").exists()
    first_seconds = time.monotonic() - started
    started = time.monotonic()
    again = streamcam.batch(good, tmp_path / "out", **FAST)
    assert time.monotonic() - started < 0.3 * first_seconds
    assert again.totals["cached"] == 3 and again.workers == 0 and again.passed
    assert [clip["frames"] for clip in again.clips] == [clip["frames"] for clip in first.clips]
    changed = streamcam.batch(good, tmp_path / "out", **{**FAST, "alpha": 0.7})  # other options: redone
    assert changed.totals["cached"] == 0
    forced = streamcam.batch(good, tmp_path / "out", force=True, **{**FAST, "alpha": 0.7})
    assert forced.totals["cached"] == 0 and forced.totals["frames"] == 54


def test_a_worker_killed_in_the_middle_of_a_clip_is_restarted_and_the_clip_completed(local_ray, tmp_path):
    clip = write_clip(tmp_path / "long.mp4", frames=240, size=(320, 240))
    out = tmp_path / "out"
    killed: list[int] = []
    finished = threading.Event()

    def kill_the_writer():
        while not finished.is_set() and not killed:
            partials = list((out / ".partial").glob("long.*.mp4")) if (out / ".partial").is_dir() else []
            if partials:  # opened at the first frame: the clip is under way
                time.sleep(0.5)
                pid = int(partials[0].name.split(".")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_writer)
    killer.start()
    try:
        report = streamcam.batch([str(clip)], out, **FAST)
    finally:
        finished.set()
        killer.join()
    assert killed, "the worker was never seen writing"
    assert report.clips[0]["state"] == "done" and probe(out / "long.mp4")["frames"] == 240
    assert not list((out / ".partial").iterdir())  # the dead worker's half file is gone, and never got a final name


def test_check_with_a_region_per_clip_reports_the_pass_rate_and_junit(local_ray, tmp_path):
    from streamcam.demo.run import write_clip as write_scene

    (tmp_path / "clips").mkdir()
    (tmp_path / "rois").mkdir()
    for name, seed in (("a", 3), ("b", 5)):
        truth = write_scene(tmp_path / "clips" / f"{name}.mp4", seconds=1.0, seed=seed)
        boxes = [{"frame": i, "box": [x0, y0, x1 + 1, y1 + 1]} for i, (_, (x0, y0, x1, y1)) in enumerate(truth)]
        (tmp_path / "rois" / f"{name}.json").write_text(json.dumps(boxes))
    # b's region is the wrong corner: its check fails
    (tmp_path / "rois" / "b.json").write_text(json.dumps([{"frame": i, "box": [0, 0, 20, 20]} for i in range(30)]))
    (tmp_path / "clips" / "c.mp4").write_bytes(b"broken")
    report = streamcam.batch([str(tmp_path / "clips")], tmp_path / "out", video=False, model="demo", device="cpu",
                             check={"roi": str(tmp_path / "rois" / "{stem}.json"), "min_pointing": 0.8})
    assert {clip["name"]: clip.get("passed") for clip in report.clips} == {"a.mp4": True, "b.mp4": False, "c.mp4": None}
    assert report.totals["pass_rate"] == pytest.approx(1 / 3, abs=1e-3) and not report.passed  # the broken clip too
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")  # the broken one: an error
    assert not list((tmp_path / "out").glob("*.mp4"))  # --no-video: the check only


def streamcam_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["streamcam", *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["batch", "{archive}"], "Missing option '--out'"),
    (["batch", "{archive}/nothing*.mp4", "--out", "{out}"], "no clip found"),
    (["batch", "{archive}", "--out", "{out}", "--alpha", "3"], "--alpha must be between 0 and 1"),
    (["batch", "{archive}", "--out", "{out}", "--check"], "--check needs --roi"),
    (["batch", "{archive}", "--out", "{archive}/car1"], "is inside the source folder"),  # outputs over the sources
])
def test_usage_errors_exit_2_before_ray_starts(archive, tmp_path, args, message):
    started = time.monotonic()
    result = streamcam_cli(*(a.format(archive=archive, out=tmp_path / "out") for a in args))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_two_nodes_share_the_clips_and_the_report_says_which_ran_each(archive, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        result = streamcam_cli("batch", str(archive / "car1"), str(archive / "car2"), "--out", str(tmp_path / "out"),
                               "--address", cluster.address, "--model", "resnet18", "--weights", "none",
                               "--input-size", "64")
    finally:
        cluster.shutdown()
    assert result.returncode == 1, result.stderr  # the broken clip
    assert "broken.mp4" in result.stdout and "2 workers on 2 nodes" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["nodes"]) == 2 and report["workers"] == 2
    assert len({clip["node"] for clip in report["clips"] if clip["state"] == "done"}) == 2


LOCAL_RAY_STOP = """
import ray
from streamcam.fleet import connected

shutdown = ray.shutdown
running = {}

def watched_shutdown(*args, **kwargs):  # which of them still runs when Ray's own shutdown begins
    running.update({kind: process.poll() is None for kind, process in processes.items()})
    shutdown(*args, **kwargs)

ray.shutdown = watched_shutdown
with connected(None):
    node = ray._private.worker._global_node
    processes = {kind: node.all_processes[kind][0].process for kind in ("monitor", "gcs_server")}
print(running["monitor"], running["gcs_server"])
"""


def test_a_local_ray_stops_its_autoscaler_monitor_while_the_gcs_still_runs(tmp_path):
    # ray.shutdown stops the GCS first, and the monitor then spends its 1 s grace period failing to
    # report to it: a third of Ray's overhead in a batch. In a process of its own: the module's Ray
    # must not be running.
    result = subprocess.run([sys.executable, "-c", LOCAL_RAY_STOP], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True"]  # the monitor already stopped, the GCS still up
