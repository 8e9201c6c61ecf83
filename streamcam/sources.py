"""Where frames come from: video files, image folders, stream URLs, cameras and lavfi graphs.

`open_source(spec)` decides from the spec; every source yields BGR uint8 frames with their timestamps
and knows whether it is live (drop stale frames, never build latency) or finite (drop nothing).
"""

from __future__ import annotations

import math
import platform
import queue
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import StreamcamError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp"}
# Live decoding: no input buffering, low-delay decoding, RTSP over TCP (no smeared frames on loss).
LIVE_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay"}
OPEN_TIMEOUT = (5.0, 5.0)  # seconds to open, and to wait for data while reading
LIVE_TIME_BASE = Fraction(1, 1000)  # live timestamps: milliseconds on the capture clock


@dataclass
class Frame:
    index: int  # 0-based position among the frames this source delivered
    image: np.ndarray  # (H,W,3) uint8 BGR
    pts: int  # presentation timestamp in time_base units
    time_base: Fraction
    captured: float  # time.monotonic() when the frame left the decoder
    name: str | None = None  # file name, for image sources

    @property
    def time(self) -> float:
        """Seconds since the start of the source."""
        return float(self.pts * self.time_base)


@dataclass(frozen=True)
class VideoInfo:
    description: str
    width: int
    height: int
    fps: Fraction | None
    time_base: Fraction
    frame_count: int | None  # None when unknown (live sources, some containers)
    live: bool


class AudioTrack:
    """A file's audio stream, copied into the output untouched: the capture thread queues its packets
    as it demuxes them, the writer muxes them in timestamp order with the video."""

    def __init__(self, stream: av.audio.stream.AudioStream, origin: float):
        self.stream = stream
        self.origin = origin  # seconds subtracted from every timestamp, as for video
        self.packets: queue.SimpleQueue[av.Packet | None] = queue.SimpleQueue()  # None marks the end


class Source(ABC):
    info: VideoInfo
    audio: AudioTrack | None = None
    damaged_packets: int = 0

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Decode frames in order; runs on the capture thread."""

    def close(self) -> None:
        """Release the device or file. Idempotent."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AVSource(Source):
    """Anything FFmpeg opens: files, URLs, cameras, lavfi graphs."""

    def __init__(self, container: av.container.InputContainer, description: str, live: bool, with_audio: bool):
        self.container = container
        if not container.streams.video:
            container.close()
            raise StreamcamError(f"{description} has no video stream")
        self.stream = container.streams.video[0]
        # Frame threading decodes several frames at once: fast, but each frame waits for the batch,
        # so only files use it.
        self.stream.thread_type = "AUTO" if not live else "SLICE"
        self.live = live
        # Timestamps start at zero: the container's start time is subtracted from video and audio alike.
        start = container.start_time  # microseconds, None when unknown
        self.origin = start / av.time_base if start is not None and start > 0 else 0.0
        if with_audio and not live and container.streams.audio:
            self.audio = AudioTrack(container.streams.audio[0], self.origin)
        codec = self.stream.codec_context
        fps = self.stream.average_rate or self.stream.guessed_rate
        self.info = VideoInfo(
            description=description,
            width=codec.width,
            height=codec.height,
            fps=Fraction(fps) if fps else None,
            time_base=LIVE_TIME_BASE if live else Fraction(self.stream.time_base),
            frame_count=None if live else _frame_count(self.stream, container, fps),
            live=live,
        )

    def frames(self) -> Iterator[Frame]:
        streams = [self.stream] + ([self.audio.stream] if self.audio else [])
        origin_pts = round(self.origin / self.stream.time_base) if self.stream.time_base else 0
        index = 0
        live_start: float | None = None
        try:
            for packet in self.container.demux(streams):
                if self.audio and packet.stream is self.audio.stream:
                    if packet.dts is not None:
                        self.audio.packets.put(packet)
                    continue
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    self.damaged_packets += 1
                    continue
                for frame in decoded:
                    captured = time.monotonic()
                    if self.live:
                        live_start = captured if live_start is None else live_start
                        pts = round((captured - live_start) * 1000)
                    else:
                        pts = (frame.pts if frame.pts is not None else index) - origin_pts
                    image = frame.to_ndarray(format="bgr24", threads=1)  # multithreaded swscale is slower here
                    yield Frame(index, image, pts, self.info.time_base, captured)
                    index += 1
        finally:
            if self.audio:
                self.audio.packets.put(None)

    def close(self) -> None:
        self.container.close()


class ImageSource(Source):
    """A single image or a folder of images, in name order."""

    def __init__(self, paths: list[Path], description: str):
        self.paths = paths
        first = _read_image(paths[0])
        self.info = VideoInfo(description, first.shape[1], first.shape[0], None, Fraction(1), len(paths), live=False)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            yield Frame(index, _read_image(path), index, Fraction(1), time.monotonic(), name=path.name)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StreamcamError(f"cannot read image {path}")
    return image


def _frame_count(stream: av.video.stream.VideoStream, container: av.container.InputContainer, fps) -> int | None:
    if stream.frames:
        return stream.frames
    if container.duration and fps:
        return math.ceil(container.duration / av.time_base * fps)
    return None


def open_source(
    spec: str,
    *,
    camera_size: tuple[int, int] | None = None,
    camera_fps: float | None = None,
    with_audio: bool = True,
) -> Source:
    """Open a source from what the user typed:

    - `lavfi:testsrc2=size=640x480:rate=30` a synthetic source (an FFmpeg filter graph), live when the
      graph paces itself with `realtime`;
    - `0`, `/dev/video0` (or a name, on Windows) a camera;
    - `rtsp://...`, `http(s)://...`, ... a stream;
    - a folder of images, an image, or a video file.
    """
    if spec.startswith("lavfi:"):
        graph = spec[len("lavfi:"):]
        # With the realtime filter the graph is paced like a camera, so it is live; without it, frames
        # are generated on demand like an endless file: nothing is dropped.
        return AVSource(_open(graph, f"lavfi graph {graph!r}", format="lavfi"), spec, "realtime" in graph, False)
    if spec.isdigit() or spec.startswith("/dev/video"):
        return open_camera(spec, camera_size, camera_fps)
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", spec)
    if scheme:
        name = scheme.group(1).lower()
        options = dict(LIVE_OPTIONS, **({"rtsp_transport": "tcp"} if name.startswith("rtsp") else {}))
        container = _open(spec, f"stream {spec}", options=options, timeout=OPEN_TIMEOUT)
        # An http(s) URL may be a file (it has a duration) or a live stream (HLS live, MJPEG: no duration).
        live = name in LIVE_SCHEMES or not container.duration
        return AVSource(container, spec, live, with_audio)
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise StreamcamError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(images, f"{len(images)} images in {path}")
    if not path.exists():
        raise StreamcamError(f"no such file or folder: {spec}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([path], str(path))
    if path.stat().st_size == 0:
        raise StreamcamError(f"{spec} is empty")
    return AVSource(_open(spec, spec), spec, False, with_audio)


def open_camera(spec: str, size: tuple[int, int] | None, fps: float | None) -> AVSource:
    """A camera by index or device path, through the platform's capture API."""
    options = {}
    if size:
        options["video_size"] = f"{size[0]}x{size[1]}"
    if fps:
        options["framerate"] = f"{fps:g}"
    system = platform.system()
    if system == "Darwin":
        options.setdefault("framerate", "30")  # avfoundation refuses to open without a frame rate
        file, fmt = f"{spec}:none", "avfoundation"
    elif system == "Windows":
        file, fmt = (spec if spec.startswith("video=") else f"video={spec}"), "dshow"
    else:
        file, fmt = (spec if spec.startswith("/dev/") else f"/dev/video{spec}"), "v4l2"
    container = _open(file, f"camera {spec} ({file})", format=fmt, options=options, timeout=OPEN_TIMEOUT)
    return AVSource(container, f"camera {spec}", live=True, with_audio=False)


def _open(file: str, description: str, **kwargs: object) -> av.container.InputContainer:
    try:
        return av.open(file, **kwargs)
    except av.error.FFmpegError as error:
        reason = error.strerror or type(error).__name__
        raise StreamcamError(f"cannot open {description}: {reason}") from None
