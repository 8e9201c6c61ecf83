"""`streamcam evaluate`: every method's faithfulness over a clip's frames, in a table, JSON and CSV."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time

import numpy as np
import pytest

import streamcam
from media import streamcam_cli
from streamcam.config import RunConfig
from streamcam.demo.run import write_clip
from streamcam.demo.scenes import CLASSES
from streamcam.evaluation import REPORT_KEYS, evaluate_sources, sampled_indices


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """A 1-second demo clip (30 frames, a still camera, objects moving) and its boxes."""
    folder = tmp_path_factory.mktemp("evaluate")
    clip = folder / "drive.mp4"
    truth = write_clip(clip, seconds=1.0, seed=5)
    boxes = [{"frame": i, "box": [x0, y0, x1 + 1, y1 + 1], "class": CLASSES[cls]}
             for i, (cls, (x0, y0, x1, y1)) in enumerate(truth)]
    (folder / "boxes.json").write_text(json.dumps(boxes))
    return clip, folder / "boxes.json"


def test_the_cli_reports_every_metric_for_every_method(drive, tmp_path):
    clip, boxes = drive
    report, table = tmp_path / "report.json", tmp_path / "report.csv"
    done = streamcam_cli("evaluate", str(clip), "--model", "demo", "--method", "gradcam,reciprocam", "--sample", "6",
                         "--roi", str(boxes), "--steps", "4", "--report", str(report), "--csv", str(table),
                         "--align", "receptive-field")
    assert done.returncode == 0, done.stderr
    assert "gradcam" in done.stdout and "reciprocam" in done.stdout and "ADCC" in done.stdout
    document = json.loads(report.read_text())
    assert document["frames"] == 6 and document["complete"] is True
    for method in ("gradcam", "reciprocam"):
        row = document["methods"][method]
        assert set(REPORT_KEYS) <= set(row)
        assert all(isinstance(row[key], float) for key in REPORT_KEYS), row
        assert 0 <= row["average_drop"] <= 1 and 0 <= row["adcc"] <= 1 and 0 <= row["complexity"] <= 1
        assert row["pointing"] >= 0.8  # the demo model looks at its objects (docs/fidelity.md)
        assert row["motion_share"] > 0.3  # and the objects are what moves
        assert row["frames"] == 6
    rows = list(csv.DictReader(table.open()))
    assert [row["method"] for row in rows] == ["gradcam", "reciprocam"]
    assert float(rows[0]["adcc"]) == pytest.approx(document["methods"]["gradcam"]["adcc"])


def test_the_clip_figures_are_the_batch_metrics_of_its_frames(drive):
    """evaluate_sources over every frame = streamcam.evaluate over the same model inputs."""
    from streamcam.sources import open_source

    clip, _ = drive
    config = RunConfig(model="demo", method="gradcam", precision="fp32")
    report = evaluate_sources([str(clip)], config, sample=None, steps=4, batch_size=8)
    loaded = streamcam.load_model("demo", device="cpu")
    with open_source(str(clip)) as source:
        frames = [frame.picture.bgr() for frame in source.frames()]
    x = loaded.preprocess(np.stack(frames), bgr=True)
    direct = streamcam.evaluate(loaded, x, method="gradcam", precision="fp32", steps=4)
    row = report.rows()[0]
    assert row["frames"] == len(frames) == 30
    for key in ("average_drop", "coherency", "complexity", "adcc", "deletion_auc", "insertion_auc"):
        assert row[key] == pytest.approx(getattr(direct, key), abs=2e-3), key
    assert row["pointing"] is None and row["motion_share"] is None  # no --roi, --motion off


def test_sampling_spreads_frames_over_the_clip():
    assert sampled_indices(100, 5) == {0, 25, 50, 74, 99}
    assert sampled_indices(3, 10) == {0, 1, 2}
    assert sampled_indices(None, 4) == {0, 1, 2, 3}  # a stream: the first ones
    assert sampled_indices(100, None) is None


@pytest.mark.parametrize("args, message", [
    (["--method", "nosuch"], "unknown method"),
    (["--sample", "0"], "sample must be at least 1"),
    (["--motion", "sideways"], "unknown motion mode"),
    (["--baseline", "grey"], "unknown baseline"),
])
def test_usage_errors_are_one_line_and_exit_2(drive, args, message):
    clip, _ = drive
    done = streamcam_cli("evaluate", str(clip), "--model", "demo", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_clip_is_one_line(tmp_path):
    done = streamcam_cli("evaluate", str(tmp_path / "nope.mp4"), "--model", "demo")
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr


def test_images_of_several_sizes_and_a_damaged_clip(drive, tmp_path):
    """A folder of images of two sizes is evaluated whole (one size per batch, no motion: the images are
    not a clip), and a damaged clip is one line while the others are measured; the exit code is 1."""
    import cv2

    from streamcam.demo.scenes import demo_clip

    clip, _ = drive
    folder = tmp_path / "images"
    folder.mkdir()
    for index, (image, _, _) in enumerate(demo_clip(320, 180, 30, 0.2, seed=2)):
        cv2.imwrite(str(folder / f"{index:02d}.png"), image if index % 2 else cv2.resize(image, (256, 192)))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(clip.read_bytes()[:2000])
    report = tmp_path / "report.json"
    done = streamcam_cli("evaluate", str(folder), str(damaged), str(clip), "--model", "demo", "--sample", "3",
                         "--steps", "2", "--report", str(report))
    assert done.returncode == 1, done.stderr
    assert "damaged.mp4" in done.stderr and "Traceback" not in done.stderr
    document = json.loads(report.read_text())
    assert document["frames"] == 3 + 3 and document["clips_done"] == 3 and document["complete"] is False
    assert [error["source"] for error in document["errors"]] == [str(damaged)]
    assert document["methods"]["gradcam"]["motion_share"] is not None  # from the clip's frames only


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_evaluation_prints_its_figures_and_how_far_it_got(tmp_path, stop, code):
    report = tmp_path / "report.json"
    process = subprocess.Popen(["streamcam", "evaluate", "lavfi:testsrc2=size=320x180:rate=30", "--model", "demo",
                                "--steps", "2", "--batch-size", "2", "--report", str(report)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr.readline().startswith("evaluating lavfi:")  # the model is loaded: frames flow
    time.sleep(3)
    process.send_signal(stop)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "Traceback" not in err
    frames = int(re.search(r"interrupted after (\d+) frames, 0 of 1 clips", out).group(1))
    document = json.loads(report.read_text())
    assert document["complete"] is False and document["frames"] == frames > 0
    assert document["methods"]["gradcam"]["frames"] >= frames - 2
