"""Generated media for tests: small clips written with PyAV (with audio, VFR, odd sizes, ...)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_square(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame with a bright square that moves with the frame index, over a gradient."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 2] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    side = max(4, min(width, height) // 4)
    x = (index * 5) % max(1, width - side)
    y = (index * 3) % max(1, height - side)
    image[y:y + side, x:x + side] = (250, 250, 40)
    return image


def write_clip(path: Path, frames: int = 24, size: tuple[int, int] = (160, 120), fps: int = 24,
               audio: bool = False, pts: list[int] | None = None, time_base: Fraction | None = None,
               codec: str = "libx264", pix_fmt: str = "yuv420p", faststart: bool = False) -> Path:
    """Write a clip. `pts` (in `time_base`) gives variable frame timing; `audio` adds a 440 Hz AAC tone;
    `faststart` puts an MP4's index before the data."""
    width, height = size
    container = av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {})
    video = container.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    if time_base is not None:
        video.time_base = video.codec_context.time_base = time_base
    sound = None
    if audio:
        sound = container.add_stream("aac", rate=44100)
        sound.layout = "mono"
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(moving_square(index, width, height), format="rgb24")
        frame.pts = pts[index] if pts is not None else index
        frame.time_base = time_base if time_base is not None else Fraction(1, fps)
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    if sound is not None:
        samples = int(44100 * frames / fps)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, start
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    container.close()
    return path


def write_dual_camera(path: Path, frames: int = 12, sizes: tuple = ((160, 120), (128, 96)), fps: int = 24,
                      data: str | None = None) -> Path:
    """A dual-camera dashcam file: two video streams (front, rear) and, with `data` (a codec such as "klv"
    or "bin_data"), a data stream of one packet per frame, as GPS tracks are stored."""
    container = av.open(str(path), "w")
    cameras = []
    for width, height in sizes:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        cameras.append(stream)
    track = container.add_data_stream(data) if data else None
    for index in range(frames):
        for stream in cameras:
            frame = av.VideoFrame.from_ndarray(moving_square(index, stream.width, stream.height), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        if track is not None:
            packet = av.Packet(f"GPS fix {index}".encode())
            packet.stream, packet.time_base = track, Fraction(1, 90000)
            packet.pts = packet.dts = index * 90000 // fps
            container.mux(packet)
    for stream in cameras:
        container.mux(stream.encode(None))
    container.close()
    return path


def streams_of(path: Path) -> list[dict]:
    """Each stream of a file: type, codec, size (video), and its packets' times in seconds."""
    with av.open(str(path)) as container:
        found = [{"type": s.type, "codec": s.codec_context.name if s.codec_context else None,
                  "size": (s.codec_context.width, s.codec_context.height) if s.type == "video" else None, "times": []}
                 for s in container.streams]
        for packet in container.demux():
            if packet.pts is not None:
                found[packet.stream.index]["times"].append(float(packet.pts * packet.time_base))
    return found


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every video frame of `path`, as BGR uint8."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def probe(path: Path) -> dict:
    """What a player would see: video frame count, size, average fps, frame times, audio presence."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        times = [float(frame.pts * frame.time_base) for frame in container.decode(video)]
        return {
            "frames": len(times),
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "fps": video.average_rate,
            "times": times,
            "audio": len(container.streams.audio) > 0,
            "codec": video.codec_context.name,
        }


def serve_stream(port: int, seconds: float, size: tuple[int, int] = (160, 120), fps: int = 25) -> None:
    """A live MPEG-TS stream over TCP: wait for one client on `port`, send `seconds` of frames in real
    time, then hang up. Run it in a subprocess (`python tests/media.py serve PORT SECONDS`) to play a
    camera or encoder that can be unplugged."""
    import time

    container = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
    video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)})
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    started = time.monotonic()
    for index in range(int(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(moving_square(index, *size), format="rgb24")
        frame.pts, frame.time_base = index, Fraction(1, fps)
        for packet in video.encode(frame):
            container.mux(packet)
        time.sleep(max(0.0, started + (index + 1) / fps - time.monotonic()))
    for packet in video.encode(None):
        container.mux(packet)
    container.close()


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "serve":
        serve_stream(int(sys.argv[2]), float(sys.argv[3]))


def streamcam_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed `streamcam` command, as a user runs it."""
    return subprocess.run(["streamcam", *args], capture_output=True, text=True, timeout=timeout)
