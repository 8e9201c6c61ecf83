"""Awkward media, bad input, faults during a run: every case works, or fails with one clear line.

Media are generated (PyAV) and damaged by cutting or overwriting bytes; signals go to a `streamcam`
subprocess; a dropped stream is a local MPEG-TS server (tests/media.py serve) that is stopped.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from media import probe, write_clip
from streamcam.api import run as run_config
from streamcam.config import RunConfig

FAST = ["--model", "resnet18", "--weights", "none", "--input-size", "64"]
MEDIA = Path(__file__).with_name("media.py")


def streamcam(*args: str, timeout: float = 120, **popen: object) -> subprocess.CompletedProcess:
    return subprocess.run(["streamcam", *args], capture_output=True, text=True, timeout=timeout, **popen)


def run(source: Path | str, **options: object):
    settings = dict(model="resnet18", weights="none", input_size=64, device="cpu")
    settings.update(options)
    return run_config(RunConfig(source=str(source), **settings), handle_signals=False)


def decodable_frames(path: Path) -> int:
    """Frames PyAV can decode from `path`, skipping what it cannot: the count streamcam must match."""
    count = 0
    with av.open(str(path)) as container:
        try:
            for packet in container.demux(container.streams.video[0]):
                try:
                    count += len(packet.decode())
                except av.error.InvalidDataError:
                    pass
        except av.error.FFmpegError:
            pass
    return count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- awkward but legitimate media: exit 0, every frame processed, the output plays ----------------------

@pytest.mark.parametrize(
    "name, options",
    [
        ("tiny.mp4", dict(size=(16, 16))),
        ("odd.mkv", dict(size=(33, 17), codec="ffv1")),
        ("single.mp4", dict(frames=1)),
        ("ten_bit.mp4", dict(pix_fmt="yuv420p10le")),
        ("gray.mp4", dict(pix_fmt="gray")),
        ("gray16.mkv", dict(codec="ffv1", pix_fmt="gray16le")),
        ("vp9.webm", dict(codec="libvpx-vp9")),
        ("mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p")),
        ("ffv1.mkv", dict(codec="ffv1")),
        ("clip.ts", dict()),
    ],
)
def test_awkward_media_are_processed_completely(tmp_path, name, options):
    clip = write_clip(tmp_path / name, frames=options.pop("frames", 12), **options)
    result = run(clip, output=tmp_path / "out.mp4")
    written = probe(tmp_path / "out.mp4")
    source = probe(clip)
    assert result.stats.written == written["frames"] == source["frames"]
    assert (written["width"], written["height"]) == (source["width"] + source["width"] % 2,
                                                    source["height"] + source["height"] % 2)
    # Same timing; streamcam starts the output at 0 where a container starts later (MPEG-TS).
    assert np.allclose(written["times"], np.subtract(source["times"], source["times"][0]), atol=0.002)


def test_a_resolution_change_mid_stream_is_letterboxed_and_keeps_time(tmp_path):
    # Two MPEG-TS segments cat'ed together: the second is 16:9 and its timestamps start again.
    first = write_clip(tmp_path / "a.ts", frames=12, size=(160, 120))
    second = write_clip(tmp_path / "b.ts", frames=12, size=(320, 180))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    run(joined, output=tmp_path / "out.mp4", alpha=0.0)
    written = probe(tmp_path / "out.mp4")
    assert (written["frames"], written["width"], written["height"]) == (24, 160, 120)
    steps = np.diff(written["times"])
    assert np.all(steps > 0.03) and np.all(steps < 0.05), "the second segment continues at the frame rate"
    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # 320x180 into 160x120 is 160x90 with 15-pixel black bars; the first segment fills the frame.
    assert frames[-1][:12, 40:120].max() < 30 and frames[-1][60, 40:120].max() > 100
    assert frames[0][:12, 40:120].max() > 100


def test_4k_memory_is_bounded_by_the_queues_not_the_clip_length(tmp_path, monkeypatch):
    from streamcam import decoding, sources

    alive = {"now": 0, "most": 0}
    lock = threading.Lock()

    class CountedFrame(sources.Frame):
        def __post_init__(self):
            with lock:
                alive["now"] += 1
                alive["most"] = max(alive["most"], alive["now"])

        def __del__(self):
            with lock:
                alive["now"] -= 1

    monkeypatch.setattr(decoding, "Frame", CountedFrame)
    result = run("lavfi:testsrc2=size=3840x2160:rate=24", output=tmp_path / "out.mp4", max_frames=60, batch_size=4)
    assert result.stats.written == probe(tmp_path / "out.mp4")["frames"] == 60
    # Three queues of 4, a batch of 4, and one frame in each stage's hands: never the whole clip.
    assert alive["most"] <= 3 * 4 + 4 + 4, alive


def frame_starts(data: bytes) -> list[int]:
    """Offsets of the MPEG-TS packets that start a PES packet of the video (PID 0x100): one per frame."""
    return [i for i in range(0, len(data) - 187, 188) if data[i + 1] & 0x40 and ((data[i + 1] & 0x1F) << 8 | data[i + 2]) == 0x100]


def damaged(tmp_path: Path, kind: str) -> Path:
    if kind == "truncated TS":
        clip = write_clip(tmp_path / "clip.ts", frames=48)
        data = clip.read_bytes()
        # Cut where a frame starts. A cut inside a frame leaves it partial, which FFmpeg's slice-threaded
        # decoder reports only sometimes (a racy warning), and which is damage rather than a shorter file.
        starts = frame_starts(data)
        data = data[: min(starts, key=lambda i: abs(i - 0.6 * len(data)))]
    elif kind == "truncated MP4":
        clip = write_clip(tmp_path / "clip.mp4", frames=48, faststart=True)  # the index first, as on the web
        data = clip.read_bytes()[: int(clip.stat().st_size * 0.6)]
    elif kind == "truncated MKV":
        clip = write_clip(tmp_path / "clip.mkv", frames=48, codec="ffv1")
        data = clip.read_bytes()[: int(clip.stat().st_size * 0.6)]
    elif kind == "corrupt TS":
        clip = write_clip(tmp_path / "clip.ts", frames=48)
        buffer = bytearray(clip.read_bytes())
        # Garbage over the first TS packet of every 6th frame (its PES header): those frames are lost
        # whatever the decoder's threads do. Noise elsewhere in the data is concealed by the decoder, and
        # once in a while no frame was lost at all.
        rng = np.random.default_rng(0)
        for start in frame_starts(buffer)[6::6]:
            buffer[start + 4:start + 188] = rng.integers(0, 256, 184, dtype=np.uint8).tobytes()
        data = bytes(buffer)
    damaged_clip = clip.with_name("damaged" + clip.suffix)
    damaged_clip.write_bytes(data)
    return damaged_clip


@pytest.mark.parametrize("kind, warning", [
    ("truncated MP4", "damaged packet"),
    ("truncated MKV", "s before the length its header gives (truncated?)"),
    ("corrupt TS", "damaged packet"),
    # MPEG-TS has no length in a header: cut at a packet boundary, it is a shorter file, not a damaged one.
    ("truncated TS", None),
])
def test_damaged_files_keep_what_decodes_and_warn_once(tmp_path, kind, warning):
    clip = damaged(tmp_path, kind)
    expected = decodable_frames(clip)
    assert 5 < expected < 48
    result = streamcam("run", str(clip), "-o", str(tmp_path / "out.mp4"), *FAST)
    assert result.returncode == 0, result.stderr
    assert probe(tmp_path / "out.mp4")["frames"] == expected
    warnings = [line for line in result.stderr.splitlines() if "is damaged" in line]
    assert len(warnings) == (warning is not None) and all(warning in line for line in warnings), result.stderr
    if kind == "truncated MKV":  # the missing time it reports is the frames that are not there
        missing = float(re.search(r"ends (\d+\.\d) s before", warnings[0]).group(1))
        assert missing == pytest.approx((48 - expected) / 24, abs=0.06)
    assert "Traceback" not in result.stderr


# ----- bad input: exit 2, one line on stderr, no traceback -------------------------------------------------

def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    clip = write_clip(tmp_path / "in.mp4", frames=3)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    avi = write_clip(tmp_path / "mjpeg.avi", frames=3, codec="mjpeg", pix_fmt="yuvj420p")
    (tmp_path / "unknown_codec.avi").write_bytes(avi.read_bytes().replace(b"MJPG", b"ZQZQ"))
    checkpoint = tmp_path / "resnet18.pt"
    import torch
    from torchvision.models import resnet18

    torch.save(resnet18(num_classes=7).state_dict(), checkpoint)
    out = str(tmp_path / "out.mp4")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("alpha: [0.5\n")
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text("alpha: 0.5\ncolour: red\n")
    return {
        "missing file": (["run", str(tmp_path / "nope.mp4"), "-o", out], "no such file or folder"),
        "empty file": (["run", str(tmp_path / "empty.mp4"), "-o", out], "is empty"),
        "random bytes": (["run", str(tmp_path / "random.mp4"), "-o", out], "cannot open"),
        "text named .mp4": (["run", str(tmp_path / "text.mp4"), "-o", out], "cannot open"),
        "unsupported codec": (["run", str(tmp_path / "unknown_codec.avi"), "-o", out], "video codec is unknown to this FFmpeg build"),
        "missing folder": (["run", str(clip), "-o", str(tmp_path / "no" / "out.mp4")], "does not exist"),
        "unwritable folder": (["run", str(clip), "-o", "/proc/out.mp4"], "/proc is not writable"),
        "output is the input": (["run", str(clip), "-o", str(clip)], "is the input"),
        "unreachable stream": (["run", f"tcp://127.0.0.1:{free_port()}", "-o", out], "Connection refused"),
        "unknown model": (["run", str(clip), "-o", out, "--model", "resnet5"], "unknown model 'resnet5'; did you mean"),
        "unknown layer": (["run", str(clip), "-o", out, "--layer", "layer9"], "unknown layer 'layer9'"),
        "unknown class": (["run", str(clip), "-o", out, "--model", "demo", "--target", "bus"], "unknown class 'bus'"),
        "unknown colormap": (["run", str(clip), "-o", out, "--colormap", "rainbow"], "valid: jet, turbo, inferno, viridis"),
        "unknown method": (["run", str(clip), "-o", out, "--method", "gradcam3"], "unknown method 'gradcam3'"),
        "bad YAML": (["run", str(clip), "-o", out, "--config", str(bad_yaml)], "bad.yaml"),
        "unknown config key": (["run", str(clip), "-o", out, "--config", str(unknown_key)], "unknown.yaml line 2: unknown key 'colour'"),
        "checkpoint that does not fit": (["run", str(clip), "-o", out, "--model", "resnet50", "--weights", str(checkpoint)],
                                         "does not fit resnet50: key 'layer1.0.conv1.weight' has shape"),
    }


BAD_INPUTS = ["missing file", "empty file", "random bytes", "text named .mp4", "unsupported codec", "missing folder",
              "unwritable folder", "output is the input", "unreachable stream", "unknown model", "unknown layer",
              "unknown class", "unknown colormap", "unknown method", "bad YAML", "unknown config key",
              "checkpoint that does not fit"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, case):
    args, message = bad_inputs(tmp_path)[case]
    default_fast = [] if "--model" in args else ["--model", "resnet18", "--weights", "none"]
    result = streamcam(*args, *default_fast)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = streamcam("run", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "out.mp4"), "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "no such file or folder" in result.stderr


def test_a_busy_camera_says_so(monkeypatch):
    import errno

    from streamcam import decoding, sources
    from streamcam.errors import StreamcamError

    def busy(*args, **kwargs):
        raise av.error.OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(decoding.av, "open", busy)
    with pytest.raises(StreamcamError, match=r"cannot open camera 0 .*: Device or resource busy \(is another program"):
        sources.open_source("0")


# ----- faults during a run ------------------------------------------------------------------------------------

def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(["streamcam", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(log: Path, rows: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"{log} never reached {rows} rows")


def test_sigterm_finishes_the_output_and_reports_how_far_it_got(tmp_path):
    output, log = tmp_path / "out.mp4", tmp_path / "log.jsonl"
    process = start("run", "lavfi:testsrc2=size=320x240:rate=25", "-o", str(output), "--log", str(log), *FAST)
    wait_for_rows(log, 20)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    written = int(re.search(r"written (\d+)", out).group(1))
    assert "interrupted (SIGTERM)" in out and "Traceback" not in err
    assert written >= 20 and probe(output)["frames"] == written == log.read_text().count("\n")


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    # A model slow enough that one batch takes many seconds: the second Ctrl-C must not wait for it.
    log = tmp_path / "log.jsonl"
    process = start("run", "lavfi:testsrc2=size=1280x720:rate=25", "--log", str(log), "--model", "resnet152",
                    "--weights", "none", "--input-size", "720", "--batch-size", "4")
    deadline = time.monotonic() + 90
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # inside the first forward pass
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    out, err = process.communicate(timeout=60)
    assert time.monotonic() - interrupted < 5, "the second Ctrl-C waited for the model"
    assert process.returncode == 130, err
    assert "interrupted (Ctrl-C twice)" in out and "Traceback" not in err


def test_sigkill_during_a_live_recording_leaves_a_playable_file(tmp_path):
    output, log = tmp_path / "live.mp4", tmp_path / "log.jsonl"
    process = start("run", "lavfi:testsrc2=size=320x240:rate=25,realtime", "-o", str(output), "--log", str(log), *FAST)
    wait_for_rows(log, 75)  # three seconds: a fragment is closed every second
    deadline = time.monotonic() + 30
    while output.stat().st_size < 128 * 1024 and time.monotonic() < deadline:  # on disk, past the write buffer
        time.sleep(0.1)
    process.kill()
    process.communicate(timeout=30)
    rows = log.read_text().count("\n")
    frames = decodable_frames(output)  # the fragment being written when it was killed is cut short
    assert 25 <= frames <= rows, (frames, rows)


def test_disk_full_stops_with_a_clear_message_and_a_playable_file(tmp_path):
    output = tmp_path / "out.mp4"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed, as on a full disk

    result = streamcam("run", "lavfi:testsrc2=size=640x360:rate=25", "-o", str(output), "--crf", "5",
                       "--max-frames", "400", *FAST, preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: disk full: stopped writing") and "Traceback" not in result.stderr
    written = int(re.search(r"written (\d+)", result.stdout).group(1))
    frames = probe(output)["frames"]  # decodes to the end without an error: cut after the last whole fragment
    assert 10 <= frames <= written < 400


def test_a_dropped_stream_reconnects_then_gives_up_keeping_the_output(tmp_path):
    port = free_port()
    output, log = tmp_path / "out.mp4", tmp_path / "log.jsonl"

    def serve(seconds: float) -> subprocess.Popen:
        server = subprocess.Popen([sys.executable, str(MEDIA), "serve", str(port), str(seconds)])
        time.sleep(1.5)  # listening
        return server

    server = serve(3)
    client = start("run", f"tcp://127.0.0.1:{port}", "-o", str(output), "--log", str(log), "--reconnect-timeout", "8", *FAST)
    server.wait(timeout=60)
    serve(3).wait(timeout=60)  # the stream comes back once, then is gone for good
    out, err = client.communicate(timeout=60)
    assert client.returncode == 1, err
    assert "reconnected after" in err
    assert re.search(r"error: tcp://127\.0\.0\.1:\d+ lost: no feed for 8 s", err), err
    times = [json.loads(line)["time"] for line in log.read_text().splitlines()]
    gap = np.diff(times).max()
    assert gap > 0.5, "the stall is a gap in time, not black frames"
    assert probe(output)["frames"] == len(times) > 25


def test_decoding_leaves_the_other_threads_ffmpeg_messages_alone(tmp_path):
    """Damage is counted from the decoder's own errors; FFmpeg's messages from other threads (the
    encoder and muxer in the writer thread) must still reach the log (`--debug` shows them)."""
    import logging

    from streamcam.sources import open_source

    clip = write_clip(tmp_path / "in.mp4", frames=120, size=(640, 360))
    received: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            received.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logging.getLogger("libav").addHandler(handler)
    sent: list[str] = []
    done = threading.Event()

    def writer_thread():
        while not done.is_set():
            sent.append(f"encoder message {len(sent)}")  # distinct: PyAV folds repeated messages
            av.logging.log(av.logging.ERROR, "libx264", sent[-1])
            time.sleep(0.0005)

    try:
        with open_source(str(clip)) as source:
            other = threading.Thread(target=writer_thread)
            other.start()
            frames = sum(1 for _ in source.frames())
            done.set()
            other.join()
    finally:
        logging.getLogger("libav").removeHandler(handler)
    assert frames == 120 and source.damaged_packets == 0
    assert len(sent) > 50 and [m for m in received if m.startswith("encoder message")] == sent
