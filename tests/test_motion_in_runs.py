"""--motion in runs: the log's motion_share, the HUD line, and `streamcam check --roi motion`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from media import streamcam_cli
from streamcam.demo.run import write_clip
from streamcam.render import OpenCVRenderer


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """A demo clip: a still camera, one object at a time moving across the road."""
    clip = tmp_path_factory.mktemp("motion") / "drive.mp4"
    write_clip(clip, seconds=1.0, seed=11)
    return clip


@pytest.fixture(scope="module")
def still_scene(tmp_path_factory):
    """A folder of 12 copies of one demo frame: nothing moves."""
    from streamcam.demo.scenes import demo_clip

    first, _, _ = next(demo_clip(320, 180, 30, 0.1, seed=11))
    folder = tmp_path_factory.mktemp("still")
    for index in range(12):
        cv2.imwrite(str(folder / f"{index:03d}.png"), first)
    return folder


def test_the_log_has_each_frames_motion_share(drive, tmp_path):
    log = tmp_path / "log.jsonl"
    done = streamcam_cli("run", str(drive), "--model", "demo", "--motion", "still", "--log", str(log),
                         "--align", "receptive-field")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 30
    assert rows[0]["motion_share"] == 0  # no previous frame: nothing is known to move
    shares = [row["motion_share"] for row in rows[1:]]
    assert all(0 <= share <= 1 for share in shares)
    assert np.mean(shares) > 0.3  # the demo model looks at the object, and the object is what moves
    assert not any(row["camera_moving"] for row in rows)


def test_check_roi_motion_passes_where_the_model_looks_at_the_mover(drive, tmp_path):
    report = tmp_path / "report.json"
    done = streamcam_cli("check", str(drive), "--roi", "motion", "--model", "demo", "--min-pointing", "0.6",
                         "--report", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    clip = json.loads(report.read_text())["clips"][0]
    assert clip["summary"]["frames"] >= 25  # every frame but the first, where nothing is known to move yet
    assert clip["summary"]["pointing"] >= 0.6


def test_check_roi_motion_on_a_clip_where_nothing_moves_does_not_pass(still_scene, tmp_path):
    done = streamcam_cli("check", str(still_scene), "--roi", "motion", "--model", "demo", "--motion", "still")
    assert done.returncode == 1, done.stdout + done.stderr


def test_the_hud_says_how_much_of_the_map_is_on_motion():
    from types import SimpleNamespace

    explained = SimpleNamespace(classes=[1], probabilities=[0.9], top=[(1, 0.9)], methods=None,
                                motion=SimpleNamespace(shares=[0.62]))
    shown = OpenCVRenderer(lambda c: "car", hud_motion=True)._label_lines(explained)
    hidden = OpenCVRenderer(lambda c: "car")._label_lines(explained)
    assert shown == ["car 90%", "on motion 62%"] and hidden == ["car 90%"]


def test_a_bad_motion_mode_is_one_line(drive, tmp_path):
    done = streamcam_cli("run", str(drive), "--model", "demo", "--motion", "sideways", "--log", str(tmp_path / "l"))
    assert done.returncode == 2 and "unknown motion mode" in done.stderr and "Traceback" not in done.stderr
