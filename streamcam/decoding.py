"""Decoding with FFmpeg (PyAV): files, streams, cameras and lavfi graphs, one or several cameras each.

- Timing: files keep their own timestamps, from zero. Every stream of a source runs on one clock
  (`Timeline`): where timestamps jump back (concatenated segments), video, audio and data are all
  shifted alike, so they stay in sync. A stream without timestamps (a raw .h264) is timed by its frame
  rate, or by `--fps`. Live sources are timed by the capture clock, so a stall is a gap, not a speed-up.
- Copied streams (audio, data such as GPS tracks, subtitles) are queued as packets on that clock, for
  the video sink to mux untouched.
- Damage: packets the demuxer flags, that fail to decode, or whose decoding logs an FFmpeg error are
  counted; the decoding goes on.
- Live streams and cameras that drop are reopened with backoff while `stalled_since` is set.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import av.logging
import torch
from av.codec.hwaccel import HWAccel

from .errors import RunFailed, StreamcamError
from .picture import decoded_picture
from .plan import Decoding
from .sources import Frame, Source, VideoInfo
from .timeline import ASSUMED_FPS, StreamClock, Timeline

log = logging.getLogger("streamcam")

RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between reconnection attempts, then every 4 s
LIVE_TIME_BASE = Fraction(1, 1000)  # live timestamps: milliseconds on the capture clock
_AVFMT_NOTIMESTAMPS = 0x80  # a container format without timestamps (raw H.264, HEVC, MJPEG, ...)


class CopiedTrack:
    """A stream copied into the output untouched (audio, data such as GPS tracks, subtitles). The capture
    thread queues its packets with timestamps on the source's clock; the writer muxes them in time
    order with the video."""

    def __init__(self, stream: av.stream.Stream):
        self.stream = stream
        self.packets: queue.SimpleQueue[av.Packet | None] = queue.SimpleQueue()  # None marks the end
        self.last_dts: int | None = None  # of the last packet queued, on the source's clock

    @property
    def description(self) -> str:
        codec = self.stream.codec_context.name if self.stream.codec_context else self.stream.name
        return f"{self.stream.type} stream {self.stream.index} ({codec})"


class AVSource(Source):
    """Anything FFmpeg opens: files, URLs, cameras, lavfi graphs.

    `video_stream` selects the camera (its position among the video streams) or "all" of them. A live
    source that can be reopened (`reopen`: a stream or camera) survives drops: when its feed ends or
    fails, it reconnects with backoff while `stalled_since` is set, and raises RunFailed once it has
    been gone for `reconnect_timeout` seconds.
    """

    def __init__(self, container: av.container.InputContainer, description: str, live: bool, copy_streams: bool, *,
                 decoding: Decoding, reopen: Callable[[], av.container.InputContainer] | None = None,
                 reconnect_timeout: float = 30.0, video_stream: int | str = 0, fps: float | None = None):
        self.description = description
        self.live = live
        self.decoding = decoding
        self.reopen = reopen
        self.reconnect_timeout = reconnect_timeout
        self.selection = video_stream
        self._attach(container)
        self._warn_left_out()
        # Timestamps start at zero: the container's start time is subtracted from every stream alike.
        start = container.start_time  # microseconds, None when unknown
        self.timeline = Timeline(Fraction(start, av.time_base) if start is not None and start > 0 else Fraction(0))
        self._copied = [] if live else [CopiedTrack(s) for s in container.streams
                                        if copy_streams and s.type in ("audio", "data", "subtitle")]
        stamped = not container.format.flags & _AVFMT_NOTIMESTAMPS
        self._clocks, infos = [], []
        for stream in self.streams:
            guessed = stream.average_rate or stream.guessed_rate
            rate = Fraction(guessed) if guessed else None
            if not stamped:
                rate = self._rate_without_timestamps(stream, rate, fps)
            elif fps:
                log.warning("--fps times streams without timestamps only; %s has its own", description)
            clock = StreamClock(stream, rate, stamped)
            self._clocks.append(clock)
            codec = stream.codec_context
            infos.append(VideoInfo(description=description, width=codec.width, height=codec.height, fps=rate,
                                   time_base=LIVE_TIME_BASE if live else clock.time_base,
                                   frame_count=None if live else _frame_count(stream, container, rate),
                                   live=live, index=stream.index))
        self._videos = tuple(infos)
        self.info = infos[0]
        self._live_start: float | None = None  # capture clock of the first live frame
        self._reading = False  # the capture thread is inside the container; close() must wait for it
        self._close_requested = False
        self._closing = threading.Lock()

    @property
    def videos(self) -> tuple[VideoInfo, ...]:
        return self._videos

    @property
    def copied(self) -> list[CopiedTrack]:
        return self._copied

    def _rate_without_timestamps(self, stream, rate: Fraction | None, fps: float | None) -> Fraction:
        kind = f"a raw {stream.codec_context.name} stream"
        if fps:
            return Fraction(fps).limit_denominator(1001)
        if rate:
            log.warning("%s has no timestamps (%s): timed at %g fps, the rate it gives; --fps sets another",
                        self.description, kind, float(rate))
            return rate
        log.warning("%s has no timestamps and no frame rate (%s): timed at %g fps; --fps sets the right one",
                    self.description, kind, float(ASSUMED_FPS))
        return ASSUMED_FPS

    def _attach(self, container: av.container.InputContainer) -> None:
        keep_ffmpeg_errors()  # damage is counted from them
        self.container = container
        videos = _cameras(container)
        if not videos:
            container.close()
            hint = " (nothing readable: an MP4 cut short before its index was written cannot be decoded)" \
                if not container.streams else ""
            raise StreamcamError(f"{self.description} has no video stream{hint}")
        if self.selection == "all":
            self.streams = videos
        elif int(self.selection) < len(videos):
            self.streams = [videos[int(self.selection)]]
        else:
            container.close()
            raise StreamcamError(f"--video-stream {self.selection}: {self.description} has {len(videos)} video "
                                 f"stream{'s' * (len(videos) != 1)} (0..{len(videos) - 1})")
        for stream in self.streams:
            if stream.codec_context is None:
                container.close()
                raise StreamcamError(f"{self.description}: its video codec is unknown to this FFmpeg build (no decoder)")
            # No frame threading: it adds a frame of delay per thread, and on damaged input it drops
            # frames around a broken packet without reporting it (measured: 17 of 19 decodable frames).
            stream.thread_type = "SLICE"

    def _warn_left_out(self) -> None:
        videos = _cameras(self.container)
        left_out = [s for s in videos if s not in self.streams]
        if left_out:
            log.warning("%s has %d video streams; explaining %s only (--video-stream all explains each): left out %s",
                        self.description, len(videos), _name(self.streams[0]), ", ".join(map(_name, left_out)))

    def streams_report(self) -> str | None:
        if len(_cameras(self.container)) < 2 and not self._copied:
            return None
        return ", ".join([f"video {_name(stream)}" for stream in self.streams] + [t.description for t in self._copied])

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        stop = stop or threading.Event()
        with self._closing:
            self._reading = True
        counts = [0] * len(self.streams)
        errors = _DecoderErrors({stream.codec_context.name for stream in self.streams})
        try:
            with errors.attached():
                while True:
                    yield from self._decode(counts, errors)
                    if self.reopen is None or stop.is_set() or not self._reconnect(stop):
                        return
        finally:
            for track in self._copied:
                track.packets.put(None)
            with self._closing:
                self._reading = False
                close = self._close_requested
            if close:
                self.container.close()

    def _decode(self, counts: list[int], errors: _DecoderErrors) -> Iterator[Frame]:
        """Frames until the end of the input or a read error. Broken packets are counted and skipped."""
        positions = {stream: k for k, stream in enumerate(self.streams)}
        copied = {track.stream: track for track in self._copied}
        try:
            for packet in self.container.demux(self.streams + list(copied)):
                if packet.stream in copied:
                    self._queue_copy(copied[packet.stream], packet)
                    continue
                k = positions[packet.stream]
                self._enter_timeline(k, packet)
                before = errors.count
                try:
                    decoded, broken = packet.decode(), False
                except av.error.FFmpegError:  # this packet; the next may decode
                    decoded, broken = [], True
                if broken or packet.is_corrupt or errors.count > before:
                    self.damaged_packets += 1
                yield from self._frames(k, decoded, counts)
        except av.error.FFmpegError as error:
            if self.reopen is not None:  # a dropped stream or camera: the caller reconnects
                log.debug("reading %s failed: %s", self.description, error)
            elif self.live:
                raise
            else:  # a file that cannot be demuxed further: keep what was decoded, and what the decoders hold
                self.damaged_packets += 1
                log.debug("demuxing %s stopped: %s", self.description, error)
                for k, stream in enumerate(self.streams):
                    with contextlib.suppress(av.error.FFmpegError):
                        yield from self._frames(k, stream.codec_context.decode(None), counts)
        clock = self._clocks[0]
        if not self.live and clock.last_out is not None:
            decoded_until = float((clock.last_out + clock.step) * clock.time_base)
            self.missing_seconds = _missing_seconds(self.container, self.streams[0], decoded_until)

    def _frames(self, k: int, decoded: list[av.VideoFrame], counts: list[int]) -> Iterator[Frame]:
        for frame in decoded:
            captured = time.monotonic()
            pts = self._live_pts(captured) if self.live else self._file_pts(k, frame)
            picture = decoded_picture(frame, self.decoding.keep_yuv)
            yield Frame(counts[k], picture, pts, self._videos[k].time_base, captured, stream=k)
            counts[k] += 1

    def _enter_timeline(self, k: int, packet: av.Packet) -> None:
        clock = self._clocks[k]
        if self.live or not clock.stamped or packet.pts is None or packet.dts is None:
            return
        time_base = clock.time_base
        segment = self.timeline.segment(("video", k), packet.dts * time_base, (packet.duration or clock.step) * time_base)
        clock.in_decoder.append((packet.pts, segment))

    def _file_pts(self, k: int, frame: av.VideoFrame) -> int:
        """A file frame's timestamp, from 0 on the source's clock, in its stream's time base: its own, or,
        where it has none (raw streams, a decoder that lost one), one frame after the last."""
        clock = self._clocks[k]
        if clock.stamped and frame.pts is not None:
            out = round((frame.pts * clock.time_base + self.timeline.offsets[clock.segment_of(frame.pts)]) / clock.time_base)
        else:
            out = 0 if clock.last_out is None else clock.last_out + clock.step
        if clock.last_out is not None and out <= clock.last_out:  # a broken file's repeated time: a frame later
            out = clock.last_out + clock.step
        clock.last_out = out
        return out

    def _queue_copy(self, track: CopiedTrack, packet: av.Packet) -> None:
        """Place a copied stream's packet on the source's clock, keeping its pts - dts (B-frame delay)."""
        if packet.dts is None or packet.pts is None:
            return  # FFmpeg's flush packets, and packets no muxer could place
        time_base = Fraction(packet.time_base)
        segment = self.timeline.segment(("copy", track.stream.index), packet.dts * time_base,
                                        (packet.duration or 0) * time_base)
        shift = round(self.timeline.offsets[segment] / time_base)
        if track.last_dts is not None and packet.dts + shift <= track.last_dts:  # rounding at a segment's start
            shift += track.last_dts + 1 - (packet.dts + shift)
        packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
        track.last_dts = packet.dts
        track.packets.put(packet)

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
        with self._closing:
            if self._reading:
                self._close_requested = True
                return
        self.container.close()


def _cameras(container: av.container.InputContainer) -> list:
    """The container's video streams, but cover art (an MP4's attached picture, one still frame)."""
    return [stream for stream in container.streams.video if not stream.disposition & av.stream.Disposition.attached_pic]


def _name(stream) -> str:
    codec = stream.codec_context
    return f"stream {stream.index} ({codec.width}x{codec.height} {codec.name})" if codec else f"stream {stream.index}"


class _DecoderErrors(logging.Handler):
    """Counts FFmpeg's error messages of the source's decoders as PyAV logs them ("libav.h264", ...),
    without taking them from anyone: they still reach every other handler (the console with --debug).
    FFmpeg's slice threads log through PyAV's callback too, while the packet they decode is decoded."""

    def __init__(self, decoders: set[str]):
        super().__init__(logging.ERROR)
        self.loggers = [logging.getLogger(f"libav.{name}") for name in sorted(decoders)]
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        for logger in self.loggers:
            logger.addHandler(self)
        try:
            yield
        finally:
            for logger in self.loggers:
                logger.removeHandler(self)


def keep_ffmpeg_errors() -> None:
    """PyAV drops FFmpeg's log by default; keep its errors, which say what went wrong (logged as
    "libav.*", which the CLI shows with --debug, and counted as damage for decoders)."""
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


def open_decoding(file: str, description: str, decoding: Decoding, **kwargs: object) -> av.container.InputContainer:
    """Open a file or stream whose video `decoding.decoder` decodes: "software", "nvdec", or "auto"
    (NVDEC when it can be opened here). Codecs NVDEC lacks fall back to software decoding inside FFmpeg."""
    if decoding.decoder == "software":
        return open_container(file, description, **kwargs)
    # FFmpeg decodes in torch's CUDA context (current_ctx), so torch can read the frames. Its default for
    # frames that stay on the GPU, the primary context with flags of its own, is refused once torch has
    # started the GPU (PyAV #2339): in any process that ran a model before opening this source.
    nvdec = HWAccel("cuda", allow_software_fallback=True, is_hw_owned=True, options={"primary_ctx": "0", "current_ctx": "1"})
    try:
        with _torch_context_current(decoding.gpu):
            return av.open(file, hwaccel=nvdec, **kwargs)
    except av.error.FFmpegError as error:
        reason = error.strerror or type(error).__name__
    container = open_container(file, description, **kwargs)  # a file that cannot be opened at all fails here
    if decoding.decoder == "nvdec":
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


def open_container(file: str, description: str, **kwargs: object) -> av.container.InputContainer:
    try:
        return av.open(file, **kwargs)
    except av.error.FFmpegError as error:
        reason = error.strerror or type(error).__name__
        if error.errno == errno.EBUSY:
            reason += " (is another program using it?)"
        raise StreamcamError(f"cannot open {description}: {reason}") from None
