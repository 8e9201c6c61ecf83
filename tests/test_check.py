"""`streamcam check`: heatmap tests against known boxes, with the report's numbers recomputed here."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import streamcam
from media import decoded_frames, probe, streamcam_cli
from streamcam import Explainer, load_model
from streamcam.demo.run import write_clip
from streamcam.demo.scenes import CLASSES
from streamcam.metrics import boxes_from_map, mask_iou, region_mask


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-second demo clip (each object class in turn) and its per-frame boxes as annotations."""
    folder = tmp_path_factory.mktemp("check")
    clip = folder / "drive.mp4"
    truth = write_clip(clip, seconds=2.0, seed=3)
    objects = []
    for frame, (cls, (x0, y0, x1, y1)) in enumerate(truth):
        objects.append({"frame": frame, "box": [x0, y0, x1 + 1, y1 + 1], "class": CLASSES[cls], "id": cls})
    annotations = folder / "boxes.json"
    annotations.write_text(json.dumps(objects))
    return clip, annotations


def test_check_passes_on_the_objects_boxes_and_its_numbers_are_right(scene_clip, tmp_path):
    clip, annotations = scene_clip
    report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"
    result = streamcam_cli("check", str(clip), "--roi", str(annotations), "--model", "demo", "--min-share", "0.2",
                           "--report", str(report_path), "--junit", str(junit_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"]
    rows = report["clips"][0]["frames"]
    objects = json.loads(annotations.read_text())
    assert len(rows) == len(objects)

    # The same maps, computed here from the decoded frames with the engine directly.
    loaded = load_model("demo", device="cpu")
    frames = decoded_frames(clip)
    x = loaded.preprocess(torch.from_numpy(np.stack(frames)), bgr=True)
    maps = Explainer(loaded, "gradcam", align="receptive-field")(x).maps.numpy()
    height, width = frames[0].shape[:2]
    for row, obj, heatmap in zip(rows, objects, maps):
        full = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
        x0, y0, x1, y1 = obj["box"]
        inside = np.zeros((height, width), bool)
        inside[y0:y1, x0:x1] = True
        assert row["share"] == pytest.approx(full[inside].sum() / full.sum(), abs=2e-3)
        peak_y, peak_x = np.unravel_index(heatmap.argmax(), heatmap.shape)
        peak = (int((peak_x + 0.5) * width / heatmap.shape[1]), int((peak_y + 0.5) * height / heatmap.shape[0]))
        assert row["pointing"] == bool(inside[peak[1], peak[0]])
        hottest = boxes_from_map(heatmap, 0.5)[0]
        scale = (width / heatmap.shape[1], height / heatmap.shape[0]) * 2
        hottest_mask = region_mask((height, width), tuple(v * s for v, s in zip(hottest, scale)))
        assert row["iou"] == pytest.approx(mask_iou(hottest_mask, inside), abs=0.02)
    summary = report["clips"][0]["summary"]
    assert summary["pointing"] == pytest.approx(np.mean([row["pointing"] for row in rows]), abs=1e-6)
    assert summary["share"] == pytest.approx(np.mean([row["share"] for row in rows]), abs=1e-5)

    # JUnit: one test case per annotated object (the four classes), none failing.
    suite = ET.parse(junit_path).getroot().find("testsuite")
    names = [case.get("name") for case in suite.iter("testcase")]
    assert suite.get("failures") == "0" and len(names) == 4
    assert all(name.startswith(str(clip)) for name in names) and any("(car)" in name for name in names)


def test_check_fails_on_a_corner_the_object_never_visits(scene_clip, tmp_path):
    clip, _ = scene_clip
    report_path, junit_path, failing = tmp_path / "report.json", tmp_path / "junit.xml", tmp_path / "failing.mp4"
    result = streamcam_cli("check", str(clip), "--roi", "0,0,0.15,0.15", "--model", "demo",
                           "--report", str(report_path), "--junit", str(junit_path), "-o", str(failing))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert not report["passed"] and report["clips"][0]["failures"][0].startswith("pointing 0.")
    assert ET.parse(junit_path).getroot().find("testsuite").get("failures") == "1"
    failing_frames = sum(not row["pointing"] for row in report["clips"][0]["frames"])
    assert probe(failing)["frames"] == failing_frames > 0


def test_an_impossible_threshold_fails(scene_clip, tmp_path):
    clip, annotations = scene_clip
    result = streamcam_cli("check", str(clip), "--roi", str(annotations), "--model", "demo", "--min-share", "1.5")
    assert result.returncode == 1
    assert "mean share" in result.stdout and "< 1.5" in result.stdout


def test_usage_errors_exit_2(scene_clip):
    clip, _ = scene_clip
    result = streamcam_cli("check", str(clip), "--roi", "left half", "--model", "demo")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --roi 'left half': give x0,y0,x1,y1 (pixels, or fractions of the frame), a mask image, an "
        "annotations file (.json, .csv), or motion"
    ]


def test_python_api_over_a_folder_of_clips_with_a_mask_and_a_class(scene_clip, tmp_path):
    clip, _ = scene_clip
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(clip.read_bytes())
    mask = np.zeros((90, 160), np.uint8)
    mask[45:, :] = 255  # the lower half: the road, where every object stands
    cv2.imwrite(str(tmp_path / "road.png"), mask)
    report = streamcam.check(folder, roi=str(tmp_path / "road.png"), target="car", model="demo", device="cpu",
                             min_pointing=0.5, max_frames=12)
    assert [Path(c.source).name for c in report.clips] == ["a.mp4", "b.mp4"]
    assert report.summary["clips"] == 2 and report.summary["frames"] == 24
    assert all(row["class_label"] == "car" for clip in report.clips for row in clip.rows)
    assert report.clips[0].summary["accuracy"] == report.clips[1].summary["accuracy"]
    assert report.passed, report.failures()


def test_a_check_stopped_before_the_end_of_its_clip_never_passes(scene_clip, tmp_path):
    """A run that did not see every frame (Ctrl-C, a CI runner's SIGTERM) is incomplete: it fails, in the
    report and in JUnit, whatever its numbers so far."""
    import contextlib

    clip, annotations = scene_clip

    @contextlib.contextmanager
    def stop_after_20(source):
        def on_tick(pipeline):
            if pipeline.stats.written >= 20:
                pipeline.stop("interrupted (Ctrl-C)")

        yield on_tick

    report = streamcam.check(clip, roi=str(annotations), model="demo", device="cpu", on_clip=stop_after_20)
    clip_report = report.clips[0]
    assert not report.passed and not clip_report.passed
    assert clip_report.incomplete.startswith("interrupted (Ctrl-C) after ") and clip_report.incomplete.endswith(" of 60 frames")
    assert not clip_report.failures  # its numbers would have passed: only incompleteness fails it
    report.write_junit(tmp_path / "junit.xml")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("errors") == suite.get("tests") != "0" and suite.get("failures") == "0"
    assert all(case.find("error") is not None for case in suite.iter("testcase"))


def test_sigterm_during_a_check_exits_143_and_reports_the_clip_incomplete(tmp_path):
    """An endless source, checked until the CI runner sends SIGTERM."""
    import signal
    import time

    report_path, junit_path = tmp_path / "report.json", tmp_path / "junit.xml"
    process = subprocess.Popen(
        ["streamcam", "check", "lavfi:testsrc2=size=160x120:rate=25", "--roi", "0,0,1,1", "--model", "resnet18",
         "--weights", "none", "--input-size", "64", "--min-pointing", "0", "--report", str(report_path),
         "--junit", str(junit_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # the model loads and frames flow
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "incomplete" in out and "passed" not in out.splitlines()[-1]
    report = json.loads(report_path.read_text())
    assert not report["passed"] and not report["complete"]
    assert re.match(r"interrupted \(SIGTERM\) after \d+ frames", report["clips"][0]["incomplete"])
    assert ET.parse(junit_path).getroot().find("testsuite").get("errors") == "1"
