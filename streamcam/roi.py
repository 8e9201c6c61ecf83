"""Regions of interest for `streamcam check`: where the heatmap should be, per frame.

    --roi 100,50,400,300         a fixed box in pixels (x0,y0,x1,y1, pixel edges)
    --roi 0.25,0.2,0.75,0.9      the same in fractions of the frame (every value <= 1)
    --roi road_mask.png          a mask image: non-zero pixels are inside (scaled to the frame)
    --roi boxes.json | boxes.csv per-frame boxes, each with an optional class and object id
    --roi motion                 what moves in each frame (motion.py; --motion picks the mask's mode)

Annotation files list objects by frame index (0-based, in decoding order):

    JSON: [{"frame": 0, "box": [x0, y0, x1, y1], "class": "car", "id": 1}, ...]
          or {"0": [{"box": [...], "class": "car"}], "1": [...]}
    CSV:  frame,x0,y0,x1,y1[,class[,id]]   (a header line is optional)

Frames without an annotation (or, for motion, where nothing moves) are not checked.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import StreamcamError
from .metrics import Box, region_mask
from .sources import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Region:
    """One region of one frame, in frame pixels."""

    mask: np.ndarray  # (H,W) bool
    box: Box  # its bounding box, pixel edges
    label: str | None = None  # the annotated class
    object_id: str | None = None  # the annotated object, for one test case per object


class RegionSpec:
    """Gives the regions of each frame (an empty list: the frame is not checked). `moving` is the
    frame's motion mask, at any resolution, when the run computes one."""

    needs_motion = False

    def regions(self, frame_index: int, width: int, height: int, moving: np.ndarray | None = None) -> list[Region]:
        raise NotImplementedError


class MovingPixels(RegionSpec):
    """The pixels that move in the frame: "does the model look at what moves?"."""

    needs_motion = True

    def regions(self, frame_index: int, width: int, height: int, moving: np.ndarray | None = None) -> list[Region]:
        if moving is None or not moving.any():
            return []
        mask = cv2.resize(moving.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        ys, xs = np.nonzero(mask)
        return [Region(mask, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), "motion")]


class FixedBox(RegionSpec):
    def __init__(self, values: tuple[float, float, float, float]):
        x0, y0, x1, y1 = values
        if not (x1 > x0 and y1 > y0):
            raise StreamcamError(f"--roi {','.join(f'{v:g}' for v in values)}: needs x0 < x1 and y0 < y1")
        self.values = values
        self.fractions = all(0 <= v <= 1 for v in values)
        self._cache: dict[tuple[int, int], Region] = {}

    def regions(self, frame_index: int, width: int, height: int, moving: np.ndarray | None = None) -> list[Region]:
        if (width, height) not in self._cache:
            x0, y0, x1, y1 = self.values
            if self.fractions:
                x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
            box = (x0, y0, x1, y1)
            self._cache[(width, height)] = Region(region_mask((height, width), box), box)
        return [self._cache[(width, height)]]


class MaskImage(RegionSpec):
    def __init__(self, path: Path):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise StreamcamError(f"cannot read the mask image {path}")
        if not mask.any():
            raise StreamcamError(f"the mask image {path} is empty (no non-zero pixel)")
        self.mask = mask
        self._cache: dict[tuple[int, int], Region] = {}

    def regions(self, frame_index: int, width: int, height: int, moving: np.ndarray | None = None) -> list[Region]:
        if (width, height) not in self._cache:
            mask = cv2.resize(self.mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0
            ys, xs = np.nonzero(mask)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            self._cache[(width, height)] = Region(mask, box)
        return [self._cache[(width, height)]]


class Annotations(RegionSpec):
    def __init__(self, objects: dict[int, list[tuple[Box, str | None, str | None]]]):
        self.objects = objects

    def regions(self, frame_index: int, width: int, height: int, moving: np.ndarray | None = None) -> list[Region]:
        return [Region(region_mask((height, width), box), box, label, object_id)
                for box, label, object_id in self.objects.get(frame_index, [])]

    @classmethod
    def load(cls, path: Path) -> Annotations:
        try:
            rows = _read_json(path) if path.suffix.lower() == ".json" else _read_csv(path)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            raise StreamcamError(f"cannot read the annotations {path}: {error}") from None
        objects: dict[int, list[tuple[Box, str | None, str | None]]] = {}
        for frame, box, label, object_id in rows:
            if not (box[2] > box[0] and box[3] > box[1]):
                raise StreamcamError(f"annotations {path}, frame {frame}: box {list(box)} needs x0 < x1 and y0 < y1")
            objects.setdefault(frame, []).append((box, label, object_id))
        if not objects:
            raise StreamcamError(f"the annotations {path} have no boxes")
        return cls(objects)


def _read_json(path: Path) -> list[tuple[int, Box, str | None, str | None]]:
    data = json.loads(path.read_text())
    items = data if isinstance(data, list) else [dict(item, frame=int(frame)) for frame, items in data.items() for item in items]
    return [(int(item["frame"]), tuple(float(v) for v in item["box"]), _text(item.get("class")), _text(item.get("id")))
            for item in items]


def _read_csv(path: Path) -> list[tuple[int, Box, str | None, str | None]]:
    rows = []
    with path.open(newline="") as file:
        for row in csv.reader(file):
            if not row or row[0].strip().lower() == "frame":
                continue
            rows.append((int(row[0]), tuple(float(v) for v in row[1:5]), _text(row[5] if len(row) > 5 else None),
                         _text(row[6] if len(row) > 6 else None)))
    return rows


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value).strip()


def load_roi(spec: str) -> RegionSpec:
    """A RegionSpec from what the user typed after --roi."""
    if spec == "motion":
        return MovingPixels()
    path = Path(spec)
    if path.suffix.lower() in IMAGE_SUFFIXES | {".json", ".csv"}:
        if not path.is_file():
            raise StreamcamError(f"--roi {spec}: no such file")
        return MaskImage(path) if path.suffix.lower() in IMAGE_SUFFIXES else Annotations.load(path)
    try:
        values = tuple(float(v) for v in spec.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise StreamcamError(f"--roi {spec!r}: give x0,y0,x1,y1 (pixels, or fractions of the frame), a mask "
                             "image, an annotations file (.json, .csv), or motion")
    return FixedBox(values)
