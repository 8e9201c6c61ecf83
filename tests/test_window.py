"""The window sink under a virtual X server (Xvfb), driven by real key presses (xdotool)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from media import write_clip

FAST = ["--model", "resnet18", "--weights", "none", "--input-size", "64"]
LIVE = "lavfi:testsrc2=size=160x120:rate=15,realtime"


@pytest.fixture(scope="module")
def display():
    """A private Xvfb display; skipped where Xvfb is not installed (CI installs it: see .ci/run)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb xdotool)")
    number = 90 + os.getpid() % 100
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{number}")
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def streamcam(args, display, cwd, **kwargs):
    env = dict(os.environ, DISPLAY=display)
    return subprocess.Popen(["streamcam", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_window_shows_a_file_to_its_end(display, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=8)
    process = streamcam(["run", str(clip), "--show", *FAST], display, tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "written 8" in out


def press(display, key):
    env = dict(os.environ, DISPLAY=display)
    window = subprocess.run(["xdotool", "search", "--name", "streamcam"], env=env, capture_output=True, text=True)
    for window_id in window.stdout.split():
        subprocess.run(["xdotool", "key", "--window", window_id, key], env=env, check=False)
    return bool(window.stdout.split())


def wait_for_window(display, timeout=60.0):
    env = dict(os.environ, DISPLAY=display)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["xdotool", "search", "--name", "streamcam"], env=env, capture_output=True).stdout.strip():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed")
def test_keys_snapshot_then_quit_a_live_source(display, tmp_path):
    process = streamcam(["run", LIVE, "--show", "-o", str(tmp_path / "live.mp4"), *FAST], display, tmp_path)
    try:
        assert wait_for_window(display), "the window never appeared"
        time.sleep(1.0)
        press(display, "s")
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob("streamcam-*.png")) and time.monotonic() < deadline:
            time.sleep(0.1)
        press(display, "q")
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "window closed" in out
    assert list(tmp_path.glob("streamcam-*.png")), "s saves a snapshot"
    assert (tmp_path / "live.mp4").stat().st_size > 0


def test_without_a_display_the_run_continues_without_a_window(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=3)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run(["streamcam", "run", str(clip), "--show", "--log", str(tmp_path / "log.jsonl"), *FAST],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "no window: no display (DISPLAY is not set)" in done.stderr
    alone = subprocess.run(["streamcam", "run", str(clip), "--show", *FAST], env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2
    assert alone.stderr.strip().splitlines() == [
        "error: cannot show a window: no display (DISPLAY is not set); give -o/--output, --log or --serve to run "
        "without one"
    ]
