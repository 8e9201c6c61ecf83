"""`--serve` in real runs, as a user starts them: the URL, a slow viewer that must not slow the run, the
token off loopback, Ctrl-C, and a port that is taken."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from media import decoded_frames, write_clip

FAST = ["--model", "resnet18", "--weights", "none", "--input-size", "64"]
FPS_LABEL = (40, 120)  # (height, width) of the top right corner that holds it, at 640x480
TRAINED = ["--model", "demo"]  # bundled weights: two processes explain alike (random weights would differ)


class ServedRun:
    """`streamcam run ... --serve HOST:0` in a process of its own; the URL read from what it prints."""

    def __init__(self, *args: str, host: str = "127.0.0.1"):
        self.process = subprocess.Popen(["streamcam", "run", *args, "--serve", f"{host}:0"], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        for line in self.process.stderr:
            self.stderr.append(line)
            if match := re.search(r"live view at (http://\S+)", line):
                self.url = match.group(1)
                break
        else:
            raise AssertionError(f"no live view URL in:\n{''.join(self.stderr)}")
        self.port = int(re.search(r":(\d+)/", self.url).group(1))

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?token={token}" if token else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stdout, "".join(self.stderr) + stderr


def stalled_viewer(port: int) -> socket.socket:
    """A viewer of the stream that reads nothing: its socket's buffers fill, and then it takes no frame."""
    viewer = socket.socket()
    viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    viewer.connect(("127.0.0.1", port))
    viewer.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: streamcam\r\n\r\n")
    return viewer


def wait_for_viewers(run: ServedRun, count: int) -> None:
    deadline = time.monotonic() + 30
    while json.loads(run.get("/health")[1])["viewers"] < count:
        assert time.monotonic() < deadline, "the viewer never connected"
        time.sleep(0.05)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "latency_ms"} for row in rows]


def test_a_stalled_viewer_changes_nothing_in_a_files_output(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=120, size=(640, 480), audio=True)  # long enough for the viewer to join early
    outputs = {}
    for case in ("alone", "stalled"):
        out, log = tmp_path / f"{case}.mp4", tmp_path / f"{case}.jsonl"
        run = ServedRun(str(clip), "-o", str(out), "--log", str(log), "--crf", "0", *TRAINED)  # lossless
        viewer = stalled_viewer(run.port) if case == "stalled" else None
        if viewer:
            wait_for_viewers(run, 1)
        code, _, stderr = run.finish()
        assert code == 0, stderr
        if viewer:
            viewer.close()
        outputs[case] = (decoded_frames(out), without_timing([json.loads(line) for line in log.read_text().splitlines()]))
    (frames_alone, rows_alone), (frames_stalled, rows_stalled) = outputs["alone"], outputs["stalled"]
    assert len(frames_alone) == len(frames_stalled) == 120 and rows_alone == rows_stalled
    # Pixel for pixel, but for the FPS label at the top right, whose figure depends on the run's timing.
    for alone, stalled in zip(frames_alone, frames_stalled):
        alone[:FPS_LABEL[0], -FPS_LABEL[1]:] = stalled[:FPS_LABEL[0], -FPS_LABEL[1]:] = 0
        assert np.array_equal(alone, stalled)


def test_a_stalled_viewer_does_not_slow_a_live_run(tmp_path):
    source = "lavfi:testsrc2=size=640x480:rate=30,realtime"
    summaries = {}
    for case in ("alone", "stalled"):
        log = tmp_path / f"{case}.jsonl"
        run = ServedRun(source, "--log", str(log), "--max-frames", "150", *FAST)
        viewer = stalled_viewer(run.port) if case == "stalled" else None
        if viewer:
            wait_for_viewers(run, 1)
        code, stdout, stderr = run.finish()
        assert code == 0, stderr
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        seconds = rows[-1]["time"] - rows[0]["time"]
        summaries[case] = {"fps": (len(rows) - 1) / seconds, "frames": len(rows)}
        if viewer:
            viewer.settimeout(2)
            received = b""
            with contextlib.suppress(OSError):
                while chunk := viewer.recv(1 << 20):
                    received += chunk
            viewer.close()
            summaries[case]["parts"] = received.count(b"Content-Type: image/jpeg")
    alone, stalled = summaries["alone"], summaries["stalled"]
    assert alone["frames"] == stalled["frames"] == 150
    assert stalled["fps"] >= 0.9 * alone["fps"], summaries
    assert stalled["parts"] < stalled["frames"], summaries  # the viewer was skipped past frames: it did stall


def test_off_loopback_the_url_carries_a_token_and_a_warning_says_who_can_watch(tmp_path):
    run = ServedRun("lavfi:testsrc2=size=160x120:rate=15,realtime", "--log", str(tmp_path / "log.jsonl"),
                    "--max-frames", "60", *FAST, host="0.0.0.0")
    token = re.search(r"\?token=(\S+)", run.url).group(1)
    assert run.get("/health")[0] == 401
    assert run.get("/health", token)[0] == 200
    code, _, stderr = run.finish()
    assert code == 0
    warning = [line for line in stderr.splitlines() if "sees the camera" in line]
    assert len(warning) == 1 and "0.0.0.0" in warning[0] and "Traceback" not in stderr


def test_ctrl_c_closes_the_outputs_and_the_server(tmp_path):
    out = tmp_path / "out.mp4"
    run = ServedRun("lavfi:testsrc2=size=160x120:rate=15,realtime", "-o", str(out), *FAST)
    deadline = time.monotonic() + 30
    while json.loads(run.get("/health")[1])["frames"]["written"] < 10:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run.process.send_signal(signal.SIGINT)
    code, stdout, stderr = run.finish()
    assert code == 130 and "Traceback" not in stderr
    assert len(decoded_frames(out)) >= 10  # the video is complete and plays
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", run.port), timeout=2).close()  # nobody listens any more


def test_a_port_in_use_is_one_clear_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(["streamcam", "run", "lavfi:testsrc2=size=160x120:rate=15", "--max-frames", "5",
                                 "--log", str(tmp_path / "log.jsonl"), "--serve", str(port), *FAST],
                                capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"cannot serve the live view on 127.0.0.1:{port}" in errors[0]
    assert not Path(tmp_path / "log.jsonl").exists() or Path(tmp_path / "log.jsonl").stat().st_size == 0
