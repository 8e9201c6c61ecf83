"""Where rendered frames go: a folder of images, a contact sheet, a JSONL log, and (video_sink.py) a
video file. The window, which also takes keys, is in window.py.

Every sink is opened before the run, written from one thread, and closed once (`Outputs`), so that a run
that stops early still leaves a playable video and a complete log of what was processed. A sink says
which files it really wrote: a summary never names a file that is not there.
"""

from __future__ import annotations

import errno
import json
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from .controls import settings_changes
from .errors import RunFailed, StreamcamError
from .formats import IMAGE_SUFFIXES, VIDEO_CODECS
from .render import RenderedFrame

DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class Sink(ABC):
    @abstractmethod
    def write(self, rendered: RenderedFrame) -> None: ...

    def close(self) -> None:
        """Finish the file. Idempotent."""

    def written(self) -> list[Path]:
        """The files this sink has written (none before its first frame, or when it had nothing to write)."""
        return []


class Outputs:
    """A run's sinks. Written from the writer thread, closed exactly once by whoever gets there first: the
    writer at the end, or the main thread after a failure. A close waits for a write in progress, so a
    file is never closed under its writer."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks
        self._lock = threading.Lock()
        self._closed = False

    def write(self, rendered: RenderedFrame) -> bool:
        """Write to every sink; False when the outputs were closed already (nothing written)."""
        with self._lock:
            if self._closed:
                return False
            for sink in self.sinks:
                sink.write(rendered)
            return True

    def close(self) -> None:
        """Close every sink, even when one fails; raise the first failure."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            errors = []
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as error:  # noqa: BLE001 - close the others, then report
                    errors.append(error)
        if errors:
            raise errors[0]

    def written(self) -> list[Path]:
        return [path for sink in self.sinks for path in sink.written()]


def check_output(output: Path, source: object, log: bool = False) -> None:
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
    if isinstance(source, (str, Path)):
        source_path = Path(source)
        if source_path.exists() and output.exists() and output.resolve() == source_path.resolve():
            raise StreamcamError(f"the output {output} is the input; choose another name")


class ImageSink(Sink):
    """Rendered frames as images: into a folder, named like the input images (PNG unless the input was
    JPEG), or, for a single-image input, into the one file named by the output."""

    def __init__(self, target: Path):
        self.target = target
        self.single_file = target.suffix.lower() in IMAGE_SUFFIXES
        self.count = 0
        if not self.single_file:
            target.mkdir(parents=True, exist_ok=True)

    def write(self, rendered: RenderedFrame) -> None:
        path = self.target if self.single_file else self.target / self._name(rendered.frame)
        if not cv2.imwrite(str(path), rendered.bgr()):
            raise StreamcamError(f"cannot write {path}")
        self.count += 1

    def written(self) -> list[Path]:
        return [self.target] if self.count else []

    @staticmethod
    def _name(frame) -> str:
        name = frame.name or f"frame_{frame.index:06d}.png"
        if frame.stream:
            name = f"stream{frame.stream}_{name}"
        return name if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg") else Path(name).stem + ".png"


class ContactSheetSink(Sink):
    """A PNG of `count` frames spread evenly over what it received, in a grid, each stamped with its time.

    The run's length need not be known: the frames received are sampled at a stride that doubles
    whenever twice `count` are kept, so memory stays bounded by 2 * count thumbnails. It counts the frames
    it receives, not the source's frame numbers, which have gaps when a live run drops frames. Only the
    first camera of a source with several is sampled.
    """

    def __init__(self, path: Path, count: int = 8, columns: int = 4, thumbnail_width: int = 480):
        self.path, self.count, self.columns, self.width = path, count, columns, thumbnail_width
        self.stride = 1
        self.received = 0
        self.kept: list[tuple[int, float, np.ndarray]] = []  # (number received, time, thumbnail)
        self.wrote = False

    def write(self, rendered: RenderedFrame) -> None:
        if rendered.frame.stream:
            return
        number, self.received = self.received, self.received + 1
        if number % self.stride:
            return
        image = rendered.bgr()
        height = max(2, round(image.shape[0] * self.width / image.shape[1]))
        self.kept.append((number, rendered.frame.time,
                          cv2.resize(image, (self.width, height), interpolation=cv2.INTER_AREA)))
        if len(self.kept) >= 2 * self.count:
            self.stride *= 2
            self.kept = [item for item in self.kept if item[0] % self.stride == 0]

    def written(self) -> list[Path]:
        return [self.path] if self.wrote else []

    def close(self) -> None:
        if not self.kept:
            return
        picks = np.linspace(0, len(self.kept) - 1, min(self.count, len(self.kept))).round().astype(int)
        tiles = []
        for _, seconds, thumbnail in (self.kept[i] for i in picks):
            tile = thumbnail.copy()
            cv2.putText(tile, f"{seconds:.1f} s", (8, tile.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 2, cv2.LINE_AA)
            tiles.append(tile)
        height = max(tile.shape[0] for tile in tiles)
        tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % self.columns)
        rows = [np.concatenate(tiles[r:r + self.columns], axis=1) for r in range(0, len(tiles), self.columns)]
        self.kept = []
        if not cv2.imwrite(str(self.path), np.concatenate(rows, axis=0)):
            raise StreamcamError(f"cannot write {self.path}")
        self.wrote = True


def _boxes(boxes) -> list[list[float]]:
    return [[round(v, 1) for v in box] for box in boxes]


def log_row(rendered: RenderedFrame, class_name, cameras: int = 1, changed: dict | None = None) -> dict[str, object]:
    """A rendered frame's row of the --log: what was explained, where the map peaks, how late it is, and
    the live changes first written with it. The live view's events are these rows too."""
    explained = rendered.explained
    frame = explained.frame

    def named(index: int, probability: float) -> dict[str, object]:
        return {"class": index, "label": class_name(index), "probability": round(probability, 6)}

    row = {
        "frame": frame.index,
        "time": round(frame.time, 6),
        "top": [named(c, p) for c, p in explained.top],
        "explained": named(explained.classes[0], explained.probabilities[0]),
        "peak": {"x": explained.peak[0], "y": explained.peak[1]},
        "latency_ms": round(1000 * (time.monotonic() - frame.captured), 2),
    }
    if cameras > 1:
        row["stream"] = frame.stream
    if explained.boxes is not None:
        row["boxes"] = _boxes(explained.boxes)
    motion = explained.motion
    if motion is not None:
        row["motion_share"] = round(motion.shares[0], 4)
        row["camera_moving"] = motion.camera_moving
    if explained.methods:
        row["methods"] = [{"method": m.method, "peak": {"x": m.peak[0], "y": m.peak[1]}, "ms": round(m.ms, 2),
                           **({"boxes": _boxes(m.boxes)} if m.boxes is not None else {}),
                           **({"motion_share": round(motion.shares[slot], 4)} if motion is not None else {})}
                          for slot, m in enumerate(explained.methods)]
    if changed:
        row["changed"] = changed
    if frame.name:
        row["file"] = frame.name
    return row


class JsonlLog(Sink):
    """One JSON object per frame, flushed as it is written, so a stopped run keeps every row. With
    several cameras, each row says which (`stream`)."""

    def __init__(self, path: Path, class_name, cameras: int = 1):
        self.path = path
        self.class_name = class_name
        self.cameras = cameras
        self.rows = 0
        self._settings: dict | None = None  # the live settings of the last row
        try:
            self.file = path.open("w", encoding="utf-8")
        except OSError as error:
            raise StreamcamError(f"cannot write log {path}: {error.strerror or error}") from None

    def write(self, rendered: RenderedFrame) -> None:
        settings = rendered.explained.settings
        row = log_row(rendered, self.class_name, self.cameras, settings_changes(self._settings, settings))
        self._settings = settings
        frame = rendered.frame
        try:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise RunFailed(f"disk full: stopped writing {self.path} at frame {frame.index}") from None
        self.rows += 1

    def written(self) -> list[Path]:
        return [self.path]  # created when the run starts: an empty log says that no frame was processed

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as error:  # every row was flushed as it was written
            if error.errno not in DISK_FULL:
                raise
