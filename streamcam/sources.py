"""Where frames come from: video files, image folders, stream URLs, cameras and lavfi graphs.

`open_source(spec)` decides from the spec; every source yields uint8 frames with their timestamps and
knows whether it is live (drop stale frames, never build latency) or finite (drop nothing). Frames are
BGR, or, when the pipeline computes on a GPU (`AVSource.keep_yuv`), the decoder's own yuv420p planes
(I420), which the GPU converts: on the CPU that skips swscale, and with NVDEC (`decoder="nvdec"`) the
frames never leave the GPU.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import platform
import queue
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import cv2
import numpy as np
import torch
from av.codec.hwaccel import HWAccel

from .errors import RunFailed, StreamcamError
from .yuv import I420, as_bgr, nv12_to_i420, yuv_matrix

log = logging.getLogger("streamcam")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp"}
# Live decoding: no input buffering, low-delay decoding, RTSP over TCP (no smeared frames on loss).
LIVE_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay"}
OPEN_TIMEOUT = (5.0, 5.0)  # seconds to open, and to wait for data while reading
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between reconnection attempts, then every 4 s
LIVE_TIME_BASE = Fraction(1, 1000)  # live timestamps: milliseconds on the capture clock
DECODERS = ("auto", "software", "nvdec")


@dataclass
class Frame:
    index: int  # 0-based position among the frames this source delivered
    image: np.ndarray | I420  # (H,W,3) uint8 BGR, or the decoder's planes (on the GPU after NVDEC)
    pts: int  # presentation timestamp in time_base units
    time_base: Fraction
    captured: float  # time.monotonic() when the frame left the decoder
    name: str | None = None  # file name, for image sources

    @property
    def time(self) -> float:
        """Seconds since the start of the source."""
        return float(self.pts * self.time_base)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.image.shape[:2]

    @property
    def layout(self) -> tuple:
        """Frames with the same layout can share a batch: same size, same pixel format and matrix."""
        if isinstance(self.image, I420):
            return "i420", self.image.matrix, self.shape, isinstance(self.image.data, torch.Tensor)
        return "bgr", self.shape

    def bgr(self) -> np.ndarray:
        """The frame as a (H,W,3) BGR uint8 array on the host."""
        return as_bgr(self.image)


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
    damaged_packets: int = 0  # packets the demuxer flagged corrupt or the decoder rejected
    missing_seconds: float = 0.0  # how much shorter the decodable video was than its header says
    stalled_since: float | None = None  # time.monotonic() when a live source lost its feed, while it is lost

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


class AVSource(Source):
    """Anything FFmpeg opens: files, URLs, cameras, lavfi graphs.

    A live source that can be reopened (`reopen`: a stream or camera) survives drops: when its feed ends
    or fails, it reconnects with backoff while `stalled_since` is set, and raises RunFailed once it has
    been gone for `reconnect_timeout` seconds.
    """

    def __init__(self, container: av.container.InputContainer, description: str, live: bool, with_audio: bool,
                 reopen: Callable[[], av.container.InputContainer] | None = None, reconnect_timeout: float = 30.0):
        self.description = description
        self.live = live
        self.reopen = reopen
        self.reconnect_timeout = reconnect_timeout
        self.keep_yuv = False  # yield yuv420p frames as I420 planes instead of converting them to BGR
        self._attach(container)
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
        self._live_start: float | None = None  # capture clock of the first live frame
        self._reading = False  # the capture thread is inside the container; close() must wait for it
        self._close_requested = False

    def _attach(self, container: av.container.InputContainer) -> None:
        keep_ffmpeg_errors()  # damage is counted from them
        self.container = container
        if not container.streams.video:
            container.close()
            hint = " (nothing readable: an MP4 cut short before its index was written cannot be decoded)" \
                if not container.streams else ""
            raise StreamcamError(f"{self.description} has no video stream{hint}")
        self.stream = container.streams.video[0]
        if self.stream.codec_context is None:
            container.close()
            raise StreamcamError(f"{self.description}: its video codec is unknown to this FFmpeg build (no decoder)")
        # No frame threading: it adds a frame of delay per thread, and on damaged input it drops frames
        # around a broken packet without reporting it (measured: 17 of 19 decodable frames, no error).
        self.stream.thread_type = "SLICE"

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        stop = stop or threading.Event()
        self._reading = True
        index = 0
        try:
            while True:
                for frame in self._decode(index):
                    yield frame
                    index += 1
                if self.reopen is None or stop.is_set() or not self._reconnect(stop):
                    return
        finally:
            self._reading = False
            if self.audio:
                self.audio.packets.put(None)
            if self._close_requested:
                self.container.close()

    def _decode(self, first_index: int) -> Iterator[Frame]:
        """Frames until the end of the input or a read error. Broken packets are counted and skipped;
        timestamps that jump back (concatenated segments) are shifted to continue where they were."""
        streams = [self.stream] + ([self.audio.stream] if self.audio else [])
        time_base = self.stream.time_base
        origin_pts = round(self.origin / time_base) if time_base else 0
        step = round(1 / (self.info.fps * time_base)) if self.info.fps and time_base else 1  # one frame
        index, shift, last_pts = first_index, 0, None
        decoder = self.stream.codec_context.name
        try:
            for packet in self.container.demux(streams):
                if self.audio and packet.stream is self.audio.stream:
                    if packet.dts is not None:
                        self.audio.packets.put(packet)
                    continue
                # Damage shows as a flag from the demuxer, an exception, or (concealed errors) only as
                # the decoder's error log while the packet decodes. Slice threads log from FFmpeg's own
                # threads, so the capture is global, filtered by the decoder's name.
                with av.logging.Capture(local=False) as ffmpeg_log:
                    try:
                        decoded = packet.decode()
                    except av.error.InvalidDataError:
                        decoded = []
                        ffmpeg_log.append((av.logging.ERROR, decoder, "invalid data"))
                if packet.is_corrupt or any(level <= av.logging.ERROR and name == decoder for level, name, _ in ffmpeg_log):
                    self.damaged_packets += 1
                for frame in decoded:
                    captured = time.monotonic()
                    if self.live:
                        pts = self._live_pts(captured)
                    else:
                        pts = (frame.pts if frame.pts is not None else index) - origin_pts + shift
                        if last_pts is not None and pts <= last_pts:
                            shift += last_pts + step - pts
                            pts = last_pts + step
                        last_pts = pts
                    yield Frame(index, self._image(frame), pts, self.info.time_base, captured)
                    index += 1
        except av.error.FFmpegError as error:
            if self.reopen is not None:  # a dropped stream or camera: the caller reconnects
                log.debug("reading %s failed: %s", self.description, error)
            elif self.live:
                raise
            else:  # a file that cannot be demuxed further: keep what was decoded
                self.damaged_packets += 1
                log.debug("demuxing %s stopped: %s", self.description, error)
        if not self.live and last_pts is not None:
            self.missing_seconds = _missing_seconds(self.container, self.stream, float((last_pts + step) * time_base))

    def _image(self, frame: av.VideoFrame) -> np.ndarray | I420:
        matrix = yuv_matrix(frame)
        if frame.format.name == "cuda" and frame.sw_format.name in ("nv12", "p010le") and matrix:
            # NVDEC: copied on the GPU into an I420 buffer of our own at once, since FFmpeg's pool of
            # decoder surfaces is small and holding its frames would stall the decoder. FFmpeg copies
            # decoded surfaces on CUDA's legacy default stream, which torch's current stream is in this
            # thread, so this copy runs after the decoder's.
            return I420(i420_from_dlpack(frame), matrix)
        if self.keep_yuv and frame.format.name == "yuv420p" and matrix:
            return I420(frame.to_ndarray(), matrix)
        # Anything else (hardware frames of other formats are downloaded first); multithreaded swscale
        # is slower here.
        return frame.to_ndarray(format="bgr24", threads=1)

    def _live_pts(self, captured: float) -> int:
        """Milliseconds on the capture clock since the first frame: a stall becomes a gap in the video."""
        if self._live_start is None:
            self._live_start = captured
        return round((captured - self._live_start) * 1000)

    def _reconnect(self, stop: threading.Event) -> bool:
        """Reopen a lost stream or camera with backoff. True when it is back, False when asked to stop;
        RunFailed when it stays away for `reconnect_timeout` seconds."""
        self.stalled_since = time.monotonic()
        self.container.close()
        log.warning("%s: lost the feed; reconnecting (giving up after %g s)", self.description, self.reconnect_timeout)
        attempt, reason = 0, "the feed ended"
        while (gone := time.monotonic() - self.stalled_since) < self.reconnect_timeout:
            if stop.wait(min(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)], self.reconnect_timeout - gone)):
                return False
            attempt += 1
            try:
                self._attach(self.reopen())
            except StreamcamError as error:
                reason = str(error)
                continue
            log.warning("%s: reconnected after %.1f s", self.description, time.monotonic() - self.stalled_since)
            self.stalled_since = None
            return True
        raise RunFailed(f"{self.description} lost: no feed for {gone:.0f} s, {attempt} reconnection attempts ({reason}); "
                        "--reconnect-timeout sets how long to wait")

    def close(self) -> None:
        """Close now, or, while the capture thread is still inside the container, as soon as it leaves."""
        if self._reading:
            self._close_requested = True
        else:
            self.container.close()


class ImageSource(Source):
    """A single image or a folder of images, in name order."""

    def __init__(self, paths: list[Path], description: str):
        self.paths = paths
        first = _read_image(paths[0])
        self.info = VideoInfo(description, first.shape[1], first.shape[0], None, Fraction(1), len(paths), live=False)

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            yield Frame(index, _read_image(path), index, Fraction(1), time.monotonic(), name=path.name)


def i420_from_dlpack(frame: av.VideoFrame) -> torch.Tensor:
    """An NV12 or P010 frame's planes, shared through DLPack (on the GPU for NVDEC), repacked as I420
    where they are. PyAV refuses the stream that torch.from_dlpack(plane) would pass, so the planes are
    exported without one."""
    y, uv = (torch.from_dlpack(plane.__dlpack__()) for plane in frame.planes[:2])
    return nv12_to_i420(y, uv)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StreamcamError(f"cannot read image {path}")
    return image


def keep_ffmpeg_errors() -> None:
    """PyAV drops FFmpeg's log by default; keep its errors, which say what went wrong (captured with
    av.logging.Capture, else logged as "libav.*", which the CLI shows with --debug)."""
    if av.logging.get_level() is None:
        av.logging.set_level(av.logging.ERROR)


def _missing_seconds(container: av.container.InputContainer, stream, decoded_until: float) -> float:
    """Seconds of video the header promises beyond what was decoded (0 when it cannot tell, or all is there).
    The container's duration counts only when the video is its only stream (audio may run longer)."""
    if stream.duration is not None and stream.time_base:
        promised = float(stream.duration * stream.time_base)
    elif container.duration and len(container.streams) == 1:
        promised = container.duration / av.time_base
    else:
        return 0.0
    missing = promised - decoded_until
    frame = 1 / float(stream.average_rate) if stream.average_rate else 0.1
    return missing if missing > max(2 * frame, 0.01 * promised) else 0.0


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
    reconnect_timeout: float = 30.0,
    decoder: str = "software",
    gpu: int = 0,
) -> Source:
    """Open a source from what the user typed:

    - `lavfi:testsrc2=size=640x480:rate=30` a synthetic source (an FFmpeg filter graph), live when the
      graph paces itself with `realtime`;
    - `0`, `/dev/video0` (or a name, on Windows) a camera;
    - `rtsp://...`, `http(s)://...`, ... a stream;
    - a folder of images, an image, or a video file.

    Live streams and cameras that drop are reopened for up to `reconnect_timeout` seconds. Files and
    streams are decoded by NVDEC on CUDA device `gpu` with `decoder` "nvdec", and with "auto" when it
    works here (else on the CPU, said in one line).
    """
    if spec.startswith("lavfi:"):
        graph = spec[len("lavfi:"):]
        # With the realtime filter the graph is paced like a camera, so it is live; without it, frames
        # are generated on demand like an endless file: nothing is dropped.
        return AVSource(_open(graph, f"lavfi graph {graph!r}", format="lavfi"), spec, "realtime" in graph, False)
    if spec.isdigit() or spec.startswith("/dev/video"):
        return open_camera(spec, camera_size, camera_fps, reconnect_timeout)
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", spec)
    if scheme:
        name = scheme.group(1).lower()
        options = dict(LIVE_OPTIONS, **({"rtsp_transport": "tcp"} if name.startswith("rtsp") else {}))
        def reopen() -> av.container.InputContainer:
            return _open_decoding(spec, f"stream {spec}", decoder, gpu, options=options, timeout=OPEN_TIMEOUT)

        container = reopen()
        # An http(s) URL may be a file (it has a duration) or a live stream (HLS live, MJPEG: no duration).
        live = name in LIVE_SCHEMES or not container.duration
        return AVSource(container, spec, live, with_audio, reopen=reopen if live else None,
                        reconnect_timeout=reconnect_timeout)
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
    return AVSource(_open_decoding(spec, spec, decoder, gpu), spec, False, with_audio)


def open_camera(spec: str, size: tuple[int, int] | None, fps: float | None, reconnect_timeout: float = 30.0) -> AVSource:
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
    def reopen() -> av.container.InputContainer:
        return _open(file, f"camera {spec} ({file})", format=fmt, options=options, timeout=OPEN_TIMEOUT)

    return AVSource(reopen(), f"camera {spec}", live=True, with_audio=False, reopen=reopen,
                    reconnect_timeout=reconnect_timeout)


def _open_decoding(file: str, description: str, decoder: str, gpu: int, **kwargs: object) -> av.container.InputContainer:
    """Open a file or stream whose video `decoder` decodes: "software", "nvdec", or "auto" (NVDEC when
    it can be opened here). Codecs NVDEC lacks fall back to software decoding inside FFmpeg."""
    if decoder == "software":
        return _open(file, description, **kwargs)
    # FFmpeg decodes in torch's CUDA context (current_ctx), so torch can read the frames. Its default for
    # frames that stay on the GPU, the primary context with flags of its own, is refused once torch has
    # started the GPU (PyAV #2339): in any process that ran a model before opening this source.
    nvdec = HWAccel("cuda", allow_software_fallback=True, is_hw_owned=True, options={"primary_ctx": "0", "current_ctx": "1"})
    try:
        with _torch_context_current(gpu):
            return av.open(file, hwaccel=nvdec, **kwargs)
    except av.error.FFmpegError as error:
        reason = error.strerror or type(error).__name__
    container = _open(file, description, **kwargs)  # a file that cannot be opened at all fails here, clearly
    if decoder == "nvdec":
        container.close()
        raise StreamcamError(f"--decoder nvdec: NVDEC cannot decode {description} here ({reason}); "
                             "use --decoder software or auto")
    _warn_once(f"NVDEC cannot decode here ({reason}); decoding on the CPU")
    return container


@contextlib.contextmanager
def _torch_context_current(gpu: int) -> Iterator[None]:
    """Torch's context for CUDA device `gpu` current in this thread (where av.open creates the decoder's
    device context). Without a usable GPU, nothing: FFmpeg then finds no context and says so."""
    if not torch.cuda.is_available() or gpu >= torch.cuda.device_count():
        yield
        return
    with torch.cuda.device(gpu):
        torch.zeros(1, device=f"cuda:{gpu}")  # a kernel launch makes the context current here
        yield


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def _open(file: str, description: str, **kwargs: object) -> av.container.InputContainer:
    try:
        return av.open(file, **kwargs)
    except av.error.FFmpegError as error:
        reason = error.strerror or type(error).__name__
        if error.errno == errno.EBUSY:
            reason += " (is another program using it?)"
        raise StreamcamError(f"cannot open {description}: {reason}") from None
