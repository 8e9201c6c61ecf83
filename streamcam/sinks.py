"""Where rendered frames go: a video file (PyAV), a folder of images, a contact sheet, a JSONL log. The
window, which also takes keys, is in window.py.

Every sink is opened before the run, written from one thread, and closed in a `finally`, so that a run
that stops early still leaves a playable video and a complete log of what was processed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import queue
import struct
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import cv2
import numpy as np

from .errors import RunFailed, StreamcamError
from .explain import ExplainedFrame
from .sources import IMAGE_SUFFIXES, AudioTrack, VideoInfo, keep_ffmpeg_errors
from .yuv import AVCOL_SPC, I420, as_bgr, matrix_of

log = logging.getLogger("streamcam")

# Extension -> (encoder, pixel format). H.264 plays everywhere; WebM needs VP9.
VIDEO_CODECS = {
    ".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "libx264",
    ".avi": "libx264", ".ts": "libx264", ".webm": "libvpx-vp9",
}


ENCODERS = ("auto", "libx264", "nvenc")


@functools.lru_cache(maxsize=None)
def probe_encoder(codec: str) -> str | None:
    """None when `codec` encodes a frame here, else why it does not. Hardware encoders must be tried:
    FFmpeg lists NVENC whenever it was built with it, and many NVIDIA GPUs (H100, A100) have none.
    Once per process: the hardware does not change, and FFmpeg explains a failure only the first time."""
    keep_ffmpeg_errors()
    with av.logging.Capture() as ffmpeg_log:
        try:
            context = av.CodecContext.create(codec, "w")
            context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
            context.time_base = Fraction(1, 30)
            frame = av.VideoFrame(256, 256, "yuv420p")
            frame.pts = 0
            context.encode(frame)
            context.encode(None)
        except (av.error.FFmpegError, ValueError) as error:
            # FFmpeg's own words ("Cannot load libcuda.so.1") say more than the error code.
            errors = [message.strip() for level, _, message in ffmpeg_log if level <= av.logging.ERROR]
            return errors[0] if errors else getattr(error, "strerror", None) or str(error)
    return None


def choose_h264_encoder(requested: str, on_gpu: bool) -> str:
    """The H.264 encoder for --encoder: libx264, or NVENC when asked for, or (auto) when the model runs on
    a GPU and a one-frame probe succeeds. An unavailable NVENC under auto falls back with one line."""
    if requested == "libx264" or (requested == "auto" and not on_gpu):
        return "libx264"
    problem = probe_encoder("h264_nvenc")
    if problem is None:
        return "h264_nvenc"
    if requested == "nvenc":
        raise StreamcamError(f"--encoder nvenc: NVENC cannot encode here ({problem}); use --encoder libx264 or auto")
    log.warning("NVENC cannot encode here (%s); encoding with libx264", problem)
    return "libx264"


@dataclass
class RenderedFrame:
    explained: ExplainedFrame
    image: np.ndarray | I420  # the picture to show or write: BGR uint8, or I420 from the device renderer

    def bgr(self) -> np.ndarray:
        return as_bgr(self.image)


class Sink(ABC):
    @abstractmethod
    def write(self, rendered: RenderedFrame) -> None: ...

    def close(self) -> None:
        """Finish the file. Idempotent."""


def check_output(output: Path, source: str, log: bool = False) -> None:
    """Fail before any work starts: unknown extension, missing or unwritable folder, output == input.
    A log (`log=True`) may have any name; a video or image output is judged by its extension."""
    suffix = output.suffix.lower()
    if not log and suffix and suffix not in VIDEO_CODECS and suffix not in IMAGE_SUFFIXES:
        raise StreamcamError(
            f"cannot write {output}: unknown extension {suffix!r}; use {', '.join(VIDEO_CODECS)} "
            "(or a folder for images)"
        )
    is_folder = not log and not suffix
    folder = output if is_folder else output.parent
    if not is_folder and not folder.is_dir():
        raise StreamcamError(f"cannot write {output}: folder {folder} does not exist")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:  # really try: permission bits do not tell (root, read-only mounts, ACLs)
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise StreamcamError(f"cannot write {output}: {existing} is not writable ({error.strerror})") from None
    source_path = Path(source)
    if source_path.exists() and output.exists() and output.resolve() == source_path.resolve():
        raise StreamcamError(f"the output {output} is the input; choose another name")


# MP4/MOV are written fragmented, a fragment at least every second: a killed process or a full disk
# leaves a file that plays up to its last fragment (a plain MP4 is unplayable until its index is written
# at the very end). delay_moov writes the header with the first fragment, once the encoder's B-frame
# delay is known, so the first frame still starts at 0 (in sync with the audio). MKV, WebM, AVI and TS
# are playable as they are written.
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "frag_duration": "1000000"}
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class VideoFileSink(Sink):
    """An encoded video. Files keep the source's time base and timestamps (VFR stays VFR); live sources
    get capture-clock timestamps, so dropped frames become gaps, not speed-up. The source's audio is
    copied, interleaved by timestamp. A frame of another size than the first (a resolution change
    mid-stream) is letterboxed into the output's size.
    """

    def __init__(self, path: Path, info: VideoInfo, *, audio: AudioTrack | None = None, crf: int = 23,
                 preset: str | None = None, h264_encoder: str = "libx264"):
        self.path = path
        self.info = info
        self.audio = audio
        self.codec = VIDEO_CODECS.get(path.suffix.lower(), "libx264")
        if self.codec == "libx264":
            self.codec = h264_encoder
        self.crf = crf
        self.preset = preset or ("ultrafast" if info.live else "veryfast")
        self.container: av.container.OutputContainer | None = None
        self.stream = None
        self.audio_stream = None
        self.size: tuple[int, int] | None = None  # (width, height) fixed by the first frame, made even
        self.matrix = "bt601"  # of the output's YUV: the first frame's
        self.last_pts: int | None = None
        self.last_time = 0.0
        self.pending_audio: av.Packet | None = None
        self.audio_done = audio is None
        self.frames_written = 0
        self.resized_warned = False

    def write(self, rendered: RenderedFrame) -> None:
        with self._stop_when_disk_full():
            self._write(rendered)
        self.frames_written += 1

    def _write(self, rendered: RenderedFrame) -> None:
        image = rendered.image
        if self.container is None:
            self._open(image.shape[1], image.shape[0], matrix_of(image))
        if not (isinstance(image, I420) and image.shape == self.size[::-1] and image.matrix == self.matrix):
            image = self._to_i420(self._fit(rendered.bgr(), rendered.explained.frame.index))
        frame = image.video_frame()
        source_frame = rendered.explained.frame
        # Timestamps must rise strictly for the encoder; a broken source could repeat one.
        pts = source_frame.pts if self.last_pts is None else max(source_frame.pts, self.last_pts + 1)
        frame.pts, frame.time_base = pts, self.info.time_base
        self.last_pts, self.last_time = pts, float(pts * self.info.time_base)
        self._mux_audio_until(self.last_time)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is None:
            return
        with self._stop_when_disk_full():
            try:
                for packet in self.stream.encode(None):  # the encoder's tail: without it the last frames are lost
                    self.container.mux(packet)
                # Audio to the end of the video (plus one frame's worth, so the last frame is not silent).
                self._mux_audio_until(self.last_time + 1 / float(self.info.fps or 30), wait=True)
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
            if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
                _cut_after_last_fragment(self.path)
            raise RunFailed(f"disk full: stopped writing {self.path} after {self.frames_written} frames; what was "
                            "written plays (up to its last second)") from None

    def _open(self, width: int, height: int, matrix: str) -> None:
        self.size = (width + width % 2, height + height % 2)  # yuv420p needs even sizes
        self.matrix = matrix
        options = dict(FRAGMENTED_MP4) if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
        try:
            self.container = av.open(str(self.path), "w", options=options)
        except av.error.FFmpegError as error:
            raise StreamcamError(f"cannot write {self.path}: {error.strerror or error}") from None
        rate = self.info.fps or Fraction(30)
        stream = self.container.add_stream(self.codec, rate=rate, options=self._codec_options(rate))
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.colorspace = AVCOL_SPC[matrix]  # players then convert with the right matrix
        # Reuse the source's time base so its timestamps survive exactly (VFR, 29.97, ...).
        stream.time_base = stream.codec_context.time_base = self.info.time_base
        self.stream = stream
        if self.audio is not None:
            codec = self.audio.stream.codec_context.name
            if codec in self.container.supported_codecs:
                self.audio_stream = self.container.add_stream_from_template(self.audio.stream)
            else:
                log.warning("the %s audio cannot be copied into %s; the output has no sound", codec, self.path.suffix)
                self.audio_done = True

    def _codec_options(self, rate: Fraction) -> dict[str, str]:
        if self.codec == "libvpx-vp9":  # constant quality, fast realtime mode
            return {"crf": str(self.crf + 10), "b:v": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        if self.codec == "h264_nvenc":  # constant quality at the CRF's value; low-latency tuning when live
            options = {"preset": "p4", "tune": "ll" if self.info.live else "hq", "rc": "vbr", "cq": str(self.crf),
                       "b:v": "0"}
        else:
            options = {"crf": str(self.crf), "preset": self.preset}
        if self.info.live:
            options["g"] = str(max(1, round(2 * float(rate))))  # a keyframe, hence a fragment, every 2 s
        return options

    def _to_i420(self, bgr: np.ndarray) -> I420:
        """A BGR picture in the output's YUV."""
        if self.matrix == "bt601":  # OpenCV's SIMD conversion: ten times faster than swscale's
            return I420(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420))
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p", dst_colorspace="itu709")
        return I420(frame.to_ndarray(), self.matrix)

    def _fit(self, image: np.ndarray, index: int) -> np.ndarray:
        """Make a frame the output's size: pad odd sizes by one edge pixel; letterbox other sizes (the
        source changed resolution), keeping their aspect ratio."""
        width, height = self.size
        if image.shape[1] == width and image.shape[0] == height:
            return image
        if image.shape[1] in (width, width - 1) and image.shape[0] in (height, height - 1):
            return cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1], cv2.BORDER_REPLICATE)
        if not self.resized_warned:
            log.warning("the source changed resolution at frame %d (%dx%d, was %dx%d): letterboxed into the output",
                        index, image.shape[1], image.shape[0], width, height)
            self.resized_warned = True
        scale = min(width / image.shape[1], height / image.shape[0])
        fitted = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                            interpolation=cv2.INTER_AREA)
        top, left = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
        return cv2.copyMakeBorder(fitted, top, height - fitted.shape[0] - top, left, width - fitted.shape[1] - left,
                                  cv2.BORDER_CONSTANT)

    def _mux_audio_until(self, seconds: float, wait: bool = False) -> None:
        """Copy the audio packets that play before `seconds`, in order.

        While frames flow, only packets already demuxed are taken: waiting for more could deadlock with
        a capture thread blocked on a full frame queue. At the end (`wait`) the capture thread has
        finished or is finishing, so the rest can be waited for.
        """
        while not self.audio_done:
            if self.pending_audio is not None:
                packet, self.pending_audio = self.pending_audio, None
            else:
                try:
                    packet = self.audio.packets.get(timeout=5) if wait else self.audio.packets.get_nowait()
                except queue.Empty:
                    return
            if packet is None:
                self.audio_done = True
                return
            start = float(packet.pts * packet.time_base) - self.audio.origin if packet.pts is not None else 0.0
            if start > seconds:
                self.pending_audio = packet
                return
            if self.audio_stream is not None:
                shift = round(self.audio.origin / packet.time_base)
                packet.pts = None if packet.pts is None else packet.pts - shift
                packet.dts = None if packet.dts is None else packet.dts - shift
                packet.stream = self.audio_stream
                self.container.mux(packet)


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


class ImageSink(Sink):
    """Rendered frames as images: into a folder, named like the input images (PNG unless the input was
    JPEG), or, for a single-image input, into the one file named by the output."""

    def __init__(self, target: Path):
        self.target = target
        self.single_file = target.suffix.lower() in IMAGE_SUFFIXES
        if not self.single_file:
            target.mkdir(parents=True, exist_ok=True)

    def write(self, rendered: RenderedFrame) -> None:
        path = self.target if self.single_file else self.target / self._name(rendered.explained.frame)
        if not cv2.imwrite(str(path), rendered.bgr()):
            raise StreamcamError(f"cannot write {path}")

    @staticmethod
    def _name(frame) -> str:
        name = frame.name or f"frame_{frame.index:06d}.png"
        return name if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg") else Path(name).stem + ".png"


class ContactSheetSink(Sink):
    """A PNG of `count` frames spread evenly over the run, in a grid, each stamped with its time.

    The run's length need not be known: frames are sampled at a stride that doubles whenever twice
    `count` are kept, so memory stays bounded by 2 * count thumbnails.
    """

    def __init__(self, path: Path, count: int = 8, columns: int = 4, thumbnail_width: int = 480):
        self.path, self.count, self.columns, self.width = path, count, columns, thumbnail_width
        self.stride = 1
        self.kept: list[tuple[int, float, np.ndarray]] = []  # (frame index, time, thumbnail)

    def write(self, rendered: RenderedFrame) -> None:
        frame = rendered.explained.frame
        if frame.index % self.stride:
            return
        image = rendered.bgr()
        height = max(2, round(image.shape[0] * self.width / image.shape[1]))
        self.kept.append((frame.index, frame.time, cv2.resize(image, (self.width, height), interpolation=cv2.INTER_AREA)))
        if len(self.kept) >= 2 * self.count:
            self.stride *= 2
            self.kept = [item for item in self.kept if item[0] % self.stride == 0]

    def close(self) -> None:
        if not self.kept:
            return
        picks = np.linspace(0, len(self.kept) - 1, min(self.count, len(self.kept))).round().astype(int)
        tiles = []
        for index, seconds, thumbnail in (self.kept[i] for i in picks):
            tile = thumbnail.copy()
            cv2.putText(tile, f"{seconds:.1f} s", (8, tile.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 2, cv2.LINE_AA)
            tiles.append(tile)
        height = max(tile.shape[0] for tile in tiles)
        tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % self.columns)
        rows = [np.concatenate(tiles[r:r + self.columns], axis=1) for r in range(0, len(tiles), self.columns)]
        if not cv2.imwrite(str(self.path), np.concatenate(rows, axis=0)):
            raise StreamcamError(f"cannot write {self.path}")
        self.kept = []


class JsonlLog(Sink):
    """One JSON object per frame, flushed as it is written, so a stopped run keeps every row."""

    def __init__(self, path: Path, class_name):
        self.path = path
        self.class_name = class_name
        try:
            self.file = path.open("w", encoding="utf-8")
        except OSError as error:
            raise StreamcamError(f"cannot write log {path}: {error.strerror or error}") from None

    def write(self, rendered: RenderedFrame) -> None:
        explained = rendered.explained
        frame = explained.frame
        row = {
            "frame": frame.index,
            "time": round(frame.time, 6),
            "top": [self._class(c, p) for c, p in explained.top],
            "explained": self._class(explained.classes[0], explained.probabilities[0]),
            "peak": {"x": explained.peak[0], "y": explained.peak[1]},
            "latency_ms": round(1000 * (time.monotonic() - frame.captured), 2),
        }
        if explained.boxes is not None:
            row["boxes"] = [[round(v, 1) for v in box] for box in explained.boxes]
        if frame.name:
            row["file"] = frame.name
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise RunFailed(f"disk full: stopped writing {self.path} at frame {frame.index}") from None

    def _class(self, index: int, probability: float) -> dict[str, object]:
        return {"class": index, "label": self.class_name(index), "probability": round(probability, 6)}

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as error:  # every row was flushed as it was written
            if error.errno not in DISK_FULL:
                raise
