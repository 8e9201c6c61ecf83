"""The annotated video: rendered frames encoded with PyAV, with the source's timing and copied streams.

Files keep the source's time base and timestamps (VFR stays VFR); live sources get capture-clock
timestamps, so dropped frames become gaps, not speed-up. A source with several cameras gets one video
stream per camera. The source's audio, data (GPS tracks) and subtitle streams are copied where the
container can hold them, interleaved by time; the ones it cannot hold are named in one line each. A
frame of another size than its stream's (a resolution change mid-stream) is letterboxed into it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
from av.bitstream import BitStreamFilterContext

from . import yuv
from .decoding import CopiedTrack
from .errors import RunFailed, StreamcamError
from .formats import FRAGMENTED, FRAGMENTED_MP4, VIDEO_CODECS
from .picture import BgrPicture, Picture
from .plan import Encoding
from .render import RenderedFrame
from .sinks import DISK_FULL, Sink
from .sources import VideoInfo

log = logging.getLogger("streamcam")


class _Camera:
    """One output video stream: its encoder, size, matrix and last timestamp."""

    def __init__(self, stream: av.video.stream.VideoStream, info: VideoInfo, matrix: str):
        self.stream, self.info, self.matrix = stream, info, matrix
        self.size = (stream.width, stream.height)
        self.last_pts: int | None = None
        self.resized_warned = False


class VideoFileSink(Sink):
    """An encoded video with one stream per camera of `videos`. `sizes` are the pictures' (width, height)
    per camera as the renderer makes them; a camera's stream takes its first picture's size, or, for
    cameras yet to deliver one when the file opens, its planned size."""

    def __init__(self, path: Path, videos: tuple[VideoInfo, ...], *, copied: list[CopiedTrack] = (),
                 encoding: Encoding = Encoding(), sizes: list[tuple[int, int]] | None = None):
        self.path = path
        self.videos = videos
        self.copied = list(copied)
        self.encoding = encoding
        codec = VIDEO_CODECS.get(path.suffix.lower(), "libx264")
        self.codec = encoding.h264 if codec == "libx264" else codec
        self.sizes = sizes or [(info.width, info.height) for info in videos]
        self.container: av.container.OutputContainer | None = None
        self.cameras: list[_Camera] = []
        self.copies: dict[CopiedTrack, av.stream.Stream] = {}  # copied track -> its output stream
        self.filters: dict[CopiedTrack, BitStreamFilterContext] = {}  # ADTS AAC -> MP4's AAC
        self.pending: dict[CopiedTrack, av.Packet] = {}  # a packet that plays after the video written so far
        self.copies_done: set[CopiedTrack] = set()
        self.last_time = 0.0
        self.frames_written = 0
        self.opened = False

    def write(self, rendered: RenderedFrame) -> None:
        with self._stop_when_disk_full():
            self._write(rendered)
        self.frames_written += 1

    def written(self) -> list[Path]:
        return [self.path] if self.opened and self.path.exists() else []

    def _write(self, rendered: RenderedFrame) -> None:
        frame = rendered.frame
        if self.container is None:
            self._open(frame.stream, rendered.picture)
        camera = self.cameras[frame.stream]
        video_frame = self._fit(camera, rendered.picture, frame.index).video_frame(camera.matrix)
        # Timestamps must rise strictly for the encoder; a broken source could repeat one.
        pts = frame.pts if camera.last_pts is None else max(frame.pts, camera.last_pts + 1)
        video_frame.pts, video_frame.time_base = pts, camera.info.time_base
        camera.last_pts = pts
        self.last_time = max(self.last_time, float(pts * camera.info.time_base))
        self._mux_copies_until(self.last_time)
        for packet in camera.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is None:
            return
        with self._stop_when_disk_full():
            try:
                for camera in self.cameras:  # the encoders' tails: without them the last frames are lost
                    for packet in camera.stream.encode(None):
                        self.container.mux(packet)
                # Copied streams to the end of the video (plus a frame's worth, so the last frame is not silent).
                self._mux_copies_until(self.last_time + 1 / float(self.videos[0].fps or 30), wait=True)
            finally:
                if self.container is not None:
                    self.container.close()
                    self.container = None

    @contextlib.contextmanager
    def _stop_when_disk_full(self) -> Iterator[None]:
        """A full disk (or file size limit) ends the run with a clear message; the file is closed without
        writing more, and the fragments already written stay playable."""
        try:
            yield
        except OSError as error:  # PyAV's errno errors are OSErrors too
            if error.errno not in DISK_FULL:
                raise
            if self.container is not None:
                with contextlib.suppress(OSError):
                    self.container.close()
                self.container = None
            if self.path.suffix.lower() in FRAGMENTED:
                _cut_after_last_fragment(self.path)
            raise RunFailed(f"disk full: stopped writing {self.path} after {self.frames_written} frames; what was "
                            "written plays (up to its last second)") from None

    def _open(self, first_camera: int, first: Picture) -> None:
        options = dict(FRAGMENTED_MP4) if self.path.suffix.lower() in FRAGMENTED else {}
        try:
            self.container = av.open(str(self.path), "w", options=options)
        except av.error.FFmpegError as error:
            raise StreamcamError(f"cannot write {self.path}: {error.strerror or error}") from None
        self.opened = True
        for k, info in enumerate(self.videos):
            width, height = (first.shape[1], first.shape[0]) if k == first_camera else self.sizes[k]
            self.cameras.append(self._add_video(info, width, height, first.matrix))
        for track in self.copied:
            if self._holds(track):
                self.copies[track] = self.container.add_stream_from_template(track.stream)
                if self.path.suffix.lower() in FRAGMENTED and _is_adts(track.stream):
                    self._convert_adts(track)
            else:
                log.warning("%s cannot hold the source's %s; it is left out", self.path.suffix, track.description)

    def _convert_adts(self, track: CopiedTrack) -> None:
        """AAC from MPEG-TS carries its configuration in an ADTS header on every packet; MP4 needs it once,
        in the stream's header, which a fragmented MP4 writes before any packet (so FFmpeg's automatic
        conversion comes too late). Take it from the first packet's header when it has been demuxed
        already, else from the stream's parameters; and strip the headers."""
        first = self.pending.get(track)
        if first is None:
            with contextlib.suppress(queue.Empty):
                first = self.pending[track] = track.packets.get(timeout=0.5)
        header = bytes(first) if first is not None else b""
        self.copies[track].codec_context.extradata = (_audio_specific_config(header) if _is_adts_header(header)
                                                      else _audio_specific_config_of(track.stream))
        self.filters[track] = BitStreamFilterContext("aac_adtstoasc", track.stream)

    def _add_video(self, info: VideoInfo, width: int, height: int, matrix: str) -> _Camera:
        rate = info.fps or Fraction(30)
        stream = self.container.add_stream(self.codec, rate=rate, options=self.encoding.options(self.codec, rate))
        stream.width, stream.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
        stream.pix_fmt = "yuv420p"
        stream.codec_context.colorspace = yuv.AVCOL_SPC[matrix]  # players then convert with the right matrix
        # Reuse the source's time base so its timestamps survive exactly (VFR, 29.97, ...).
        stream.time_base = stream.codec_context.time_base = info.time_base
        return _Camera(stream, info, matrix)

    def _holds(self, track: CopiedTrack) -> bool:
        """Whether this container format can store the track: tried on a header written in memory, since
        FFmpeg refuses a stream only when the real file's header is written, and the whole file with it."""
        return _format_holds(self.container.format.name, self.codec, track.stream)

    def _fit(self, camera: _Camera, picture: Picture, index: int) -> Picture:
        """A picture of the camera's stream size: odd sizes padded by one edge pixel; other sizes (the source
        changed resolution) letterboxed, keeping their aspect ratio."""
        width, height = camera.size
        if picture.shape == (height, width):
            return picture
        image = picture.bgr()
        if image.shape[1] in (width, width - 1) and image.shape[0] in (height, height - 1):
            return BgrPicture(cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1],
                                                 cv2.BORDER_REPLICATE))
        if not camera.resized_warned:
            log.warning("the source changed resolution at frame %d (%dx%d, was %dx%d): letterboxed into the output",
                        index, image.shape[1], image.shape[0], width, height)
            camera.resized_warned = True
        scale = min(width / image.shape[1], height / image.shape[0])
        fitted = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                            interpolation=cv2.INTER_AREA)
        top, left = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
        return BgrPicture(cv2.copyMakeBorder(fitted, top, height - fitted.shape[0] - top, left,
                                             width - fitted.shape[1] - left, cv2.BORDER_CONSTANT))

    def _mux_copies_until(self, seconds: float, wait: bool = False) -> None:
        """Copy the packets of copied streams that play before `seconds`, in order.

        While frames flow, only packets already demuxed are taken: waiting for more could deadlock with
        a capture thread blocked on a full frame queue. At the end (`wait`) the capture thread has
        finished or is finishing, so the rest can be waited for.
        """
        for track in self.copied:
            while track not in self.copies_done:
                packet = self.pending.pop(track, None)
                if packet is None:
                    try:
                        packet = track.packets.get(timeout=5) if wait else track.packets.get_nowait()
                    except queue.Empty:
                        break
                if packet is None:
                    self.copies_done.add(track)
                    break
                if float(packet.pts * packet.time_base) > seconds:
                    self.pending[track] = packet
                    break
                if track in self.copies:
                    time_base = packet.time_base
                    for out in self.filters[track].filter(packet) if track in self.filters else [packet]:
                        out.stream, out.time_base = self.copies[track], time_base
                        self.container.mux(out)


def _is_adts(stream: av.stream.Stream) -> bool:
    return stream.type == "audio" and stream.codec_context.name == "aac" and not stream.codec_context.extradata


def _is_adts_header(data: bytes) -> bool:
    return len(data) >= 7 and data[0] == 0xFF and data[1] & 0xF0 == 0xF0


def _audio_specific_config(adts: bytes) -> bytes:
    """MP4's AudioSpecificConfig (object type, sampling frequency index, channels) from an ADTS header."""
    profile, frequency = adts[2] >> 6, (adts[2] >> 2) & 0x0F
    channels = (adts[2] & 1) << 2 | adts[3] >> 6
    return _config_bytes(profile + 1, frequency, channels)


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_OBJECTS = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4}


def _audio_specific_config_of(stream: av.audio.stream.AudioStream) -> bytes:
    """The same from the stream's parameters, when no packet has come yet."""
    context = stream.codec_context
    rate = min(range(len(_AAC_RATES)), key=lambda i: abs(_AAC_RATES[i] - context.sample_rate))
    return _config_bytes(_AAC_OBJECTS.get(context.profile, 2), rate, min(7, context.channels))


def _config_bytes(object_type: int, frequency: int, channels: int) -> bytes:
    return (object_type << 11 | frequency << 7 | channels << 3).to_bytes(2, "big")


def _format_holds(format_name: str, video_codec: str, stream: av.stream.Stream) -> bool:
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=format_name) as probe:
            video = probe.add_stream(video_codec, rate=25)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
            probe.add_stream_from_template(stream)
            probe.start_encoding()
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def _cut_after_last_fragment(path: Path) -> None:
    """Truncate a fragmented MP4 after its last complete fragment (moof + mdat), so that a file cut
    short mid-fragment (a full disk) ends cleanly; truncating needs no free space."""
    with path.open("r+b") as file:
        size = file.seek(0, os.SEEK_END)
        end = complete = 0
        while end + 8 <= size:
            file.seek(end)
            box_size, kind = struct.unpack(">I4s", file.read(8))
            if box_size == 1:  # a 64-bit size follows
                box_size = struct.unpack(">Q", file.read(8))[0]
            if box_size < 8 or end + box_size > size:
                break
            end += box_size
            if kind != b"moof":  # a fragment header counts only with its data
                complete = end
        file.truncate(complete)

