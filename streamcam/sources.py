"""Where frames come from: video files, image folders, stream URLs, cameras, lavfi graphs, or any iterator.

`open_source(spec)` decides from what the user typed. Every source yields frames (a picture with its
timestamp) and knows whether it is live (drop stale frames, never build latency) or finite (drop
nothing). How a video is decoded (software or NVDEC, BGR or the decoder's YUV) is the run plan's
`Decoding`; the decoding itself is in decoding.py.
"""

from __future__ import annotations

import platform
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .errors import StreamcamError
from .formats import IMAGE_SUFFIXES
from .picture import BgrPicture, Picture
from .plan import Decoding

LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp"}
# Live decoding: no input buffering, low-delay decoding, RTSP over TCP (no smeared frames on loss).
LIVE_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay"}
OPEN_TIMEOUT = (5.0, 5.0)  # seconds to open, and to wait for data while reading


@dataclass
class Frame:
    index: int  # 0-based position among the frames of its video stream that the source delivered
    picture: Picture
    pts: int  # presentation timestamp in time_base units, from 0
    time_base: Fraction
    captured: float  # time.monotonic() when the frame left the decoder
    name: str | None = None  # file name, for image sources
    stream: int = 0  # which of the source's video streams (cameras) it is from

    @property
    def time(self) -> float:
        """Seconds since the start of the source."""
        return float(self.pts * self.time_base)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.picture.shape


@dataclass(frozen=True)
class VideoInfo:
    """One video stream of a source, as the outputs need to know it."""

    description: str
    width: int
    height: int
    fps: Fraction | None
    time_base: Fraction
    frame_count: int | None  # None when unknown (live sources, some containers)
    live: bool
    index: int = 0  # the stream's number in its container, for messages ("stream 1")


class Source(ABC):
    info: VideoInfo  # the first (or only) video stream
    damaged_packets: int = 0  # packets the demuxer flagged corrupt or the decoder rejected
    missing_seconds: float = 0.0  # how much shorter the decodable video was than its header says
    stalled_since: float | None = None  # time.monotonic() when a live source lost its feed, while it is lost

    @property
    def videos(self) -> tuple[VideoInfo, ...]:
        """Every video stream the source delivers frames of (Frame.stream indexes this)."""
        return (self.info,)

    @property
    def copied(self) -> list:
        """Streams copied into the output untouched (audio, data, subtitles): decoding.CopiedTrack."""
        return []

    def streams_report(self) -> str | None:
        """One line naming the streams a run reads, when there is more than one."""
        return None

    @abstractmethod
    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Decode frames in order; runs on the capture thread. `stop` ends waits (reconnection)."""

    def damage_report(self) -> str | None:
        """One line on what could not be decoded, or None when everything could."""
        parts = []
        if self.damaged_packets:
            parts.append(f"{self.damaged_packets} damaged packet{'s' * (self.damaged_packets != 1)} "
                         "(their frames were skipped or decoded with errors)")
        if self.missing_seconds:
            parts.append(f"the video ends {self.missing_seconds:.1f} s before the length its header gives (truncated?)")
        return f"{self.info.description} is damaged: {'; '.join(parts)}" if parts else None

    def close(self) -> None:
        """Release the device or file. Idempotent."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageSource(Source):
    """A single image or a folder of images, in name order."""

    def __init__(self, paths: list[Path], description: str):
        self.paths = paths
        first = _read_image(paths[0])
        self.info = VideoInfo(description, first.shape[1], first.shape[0], None, Fraction(1), len(paths), live=False)

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            yield Frame(index, BgrPicture(_read_image(path)), index, Fraction(1), time.monotonic(), name=path.name)


class IterableSource(Source):
    """Frames from a Python iterable: (H,W,3) uint8 BGR arrays, Pictures or Frames, for library users
    whose frames come from elsewhere (a robot's camera API, a simulator). Arrays and pictures are timed
    at `fps`; a live iterable's stale frames are dropped like a camera's, a finite one drops nothing."""

    def __init__(self, items: Iterable[np.ndarray | Picture | Frame], fps: float = 30.0, live: bool = False,
                 description: str = "frames from Python"):
        self.items = iter(items)
        self.first = next(self.items, None)
        if self.first is None:
            raise StreamcamError(f"{description}: the iterable yielded no frame")
        rate = Fraction(fps).limit_denominator(1001)
        time_base = self.first.time_base if isinstance(self.first, Frame) else 1 / rate
        height, width = self._frame(self.first, 0, time_base).shape
        self.info = VideoInfo(description, width, height, rate, time_base, None, live)

    @staticmethod
    def _frame(item: np.ndarray | Picture | Frame, index: int, time_base: Fraction) -> Frame:
        if isinstance(item, Frame):
            return item
        if not isinstance(item, Picture):
            array = np.asarray(item)
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise StreamcamError(f"frame {index}: expected a (H,W,3) uint8 BGR array, got {array.dtype} {array.shape}")
            item = BgrPicture(array)
        return Frame(index, item, index, time_base, time.monotonic())

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        item, index = self.first, 0
        while item is not None and not (stop and stop.is_set()):
            yield self._frame(item, index, self.info.time_base)
            item, index = next(self.items, None), index + 1


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StreamcamError(f"cannot read image {path}")
    return image


def open_source(
    spec: str,
    *,
    decoding: Decoding | None = None,
    camera_size: tuple[int, int] | None = None,
    camera_fps: float | None = None,
    copy_streams: bool = True,
    reconnect_timeout: float = 30.0,
    video_stream: int | str = 0,
    fps: float | None = None,
) -> Source:
    """Open a source from what the user typed:

    - `lavfi:testsrc2=size=640x480:rate=30` a synthetic source (an FFmpeg filter graph), live when the
      graph paces itself with `realtime`;
    - `0`, `/dev/video0` (or a name, on Windows) a camera;
    - `rtsp://...`, `http(s)://...`, ... a stream;
    - a folder of images, an image, or a video file.

    Live streams and cameras that drop are reopened for up to `reconnect_timeout` seconds. `decoding`
    (from the run plan) says how videos decode. `video_stream` picks the camera of a file with several
    (an index, or "all"); `fps` times the frames of a stream that has no timestamps (a raw .h264).
    `copy_streams`: queue a file's audio, data and subtitle packets for a video output to copy (only
    when one will read them: they are kept until it does).
    """
    from .decoding import AVSource, open_container, open_decoding

    decoding = decoding or Decoding()
    video = {"video_stream": video_stream, "fps": fps, "decoding": decoding}
    if spec.startswith("lavfi:"):
        graph = spec[len("lavfi:"):]
        # With the realtime filter the graph is paced like a camera, so it is live; without it, frames
        # are generated on demand like an endless file: nothing is dropped.
        return AVSource(open_container(graph, f"lavfi graph {graph!r}", format="lavfi"), spec, "realtime" in graph,
                        False, **video)
    if spec.isdigit() or spec.startswith("/dev/video"):
        return open_camera(spec, camera_size, camera_fps, reconnect_timeout, decoding)
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", spec)
    if scheme:
        name = scheme.group(1).lower()
        options = dict(LIVE_OPTIONS, **({"rtsp_transport": "tcp"} if name.startswith("rtsp") else {}))

        def reopen():
            return open_decoding(spec, f"stream {spec}", decoding, options=options, timeout=OPEN_TIMEOUT)

        container = reopen()
        # An http(s) URL may be a file (it has a duration) or a live stream (HLS live, MJPEG: no duration).
        live = name in LIVE_SCHEMES or not container.duration
        return AVSource(container, spec, live, copy_streams, reopen=reopen if live else None,
                        reconnect_timeout=reconnect_timeout, **video)
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
    return AVSource(open_decoding(spec, spec, decoding), spec, False, copy_streams, **video)


def open_camera(spec: str, size: tuple[int, int] | None, fps: float | None, reconnect_timeout: float = 30.0,
                decoding: Decoding | None = None) -> Source:
    """A camera by index or device path, through the platform's capture API."""
    from .decoding import AVSource, open_container

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

    def reopen():
        return open_container(file, f"camera {spec} ({file})", format=fmt, options=options, timeout=OPEN_TIMEOUT)

    return AVSource(reopen(), f"camera {spec}", live=True, copy_streams=False, reopen=reopen,
                    reconnect_timeout=reconnect_timeout, decoding=decoding or Decoding())
