"""Which pixels move in each frame, to ask whether a heatmap looks at what moves.

Each frame is compared with the previous one at `work_width` (resized with area averaging, which also
averages sensor noise, then lightly blurred); the mask is scaled back to the frame with nearest-neighbour.

1. Dense optical flow from the current frame to the previous one (OpenCV's DIS). Its vectors sit on the
   pixels of the current frame, so the mask marks where a mover is now, not where it was.
2. The camera's own motion: a similarity (shift, rotation, zoom: cv2.estimateAffinePartial2D) fitted with
   RANSAC to the flow on a grid of points, which leaves the movers out as outliers. A homography would add
   perspective, but its freedom let a mover near a corner bend the fit. "still" skips the fit (a fixed
   camera); "auto" keeps it only when it moves a corner of the frame by more than CAMERA_MOTION_PX, and
   says which in `camera_moving`.
3. Two cues, with the camera's motion taken out:
   - moved: the residual flow (flow minus the camera's flow) is longer than `min_flow` work pixels. It
     covers a mover's current position, a flat-coloured inside too (DIS carries flow in from the edges),
     but it spills a few pixels past the outline, as DIS matches 8x8 patches.
   - changed: |frame - previous frame warped by the camera's motion| > `noise` grey levels: sharp and blind
     to sensor noise, but it marks old and new positions together, and only the edges of a flat mover.
   Each moving region (specks opened away, gaps closed, holes filled) is cut to the convex hull of its
   changed pixels: that removes the spill, where nothing changed, and keeps a flat inside, which the hull
   of its changed edges spans. A moving region where nothing changed is flow noise, and is dropped.
4. The ghost: the background a mover has just uncovered has no match in the previous frame, so DIS gives
   it the mover's flow, and it changed: both cues mark it. A pixel is kept only if the place its residual
   flow says it came from was marked (or changed) too: for the mover's current position that place is its
   old one; for the ghost it is the background behind. A fast mover (a third of its size per frame and
   more) keeps some ghost, where the flow of the uncovered background is smoothed.
Pixels the previous frame did not see (they entered with a pan) are never marked: nothing says how they moved.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .cam.base import require_positive
from .errors import StreamcamError, unknown_name
from .metrics import mask_energy_share

MOTION_MODES = ("auto", "still", "moving")
CAMERA_MOTION_PX = 0.5  # "auto": the camera moves when its motion shifts a frame corner further (work pixels)
GRID_STEP = 8  # work pixels between the points the camera's motion is fitted to
MIN_WORK_WIDTH = 32  # DIS needs a few 8x8 patches per side
MIN_WORK_HEIGHT = 16


def _disc(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


SPECKS = _disc(3)  # opening with it removes isolated pixels of noise
GAPS = _disc(7)  # closing with it bridges the gaps in a mover's flow


class MotionMask:
    """Feed it consecutive greyscale frames; it returns which pixels move in each."""

    def __init__(self, mode: str = "auto", noise: float = 15.0, min_flow: float = 1.0, work_width: int = 320):
        if mode not in MOTION_MODES:
            raise unknown_name("motion mode", mode, MOTION_MODES)
        require_positive("MotionMask", noise=noise, min_flow=min_flow)
        if isinstance(work_width, bool) or not isinstance(work_width, int) or work_width < MIN_WORK_WIDTH:
            raise StreamcamError(f"MotionMask: work_width must be an integer >= {MIN_WORK_WIDTH}, got {work_width!r}")
        self.mode, self.noise, self.min_flow, self.work_width = mode, float(noise), float(min_flow), work_width
        self.camera_moving = mode == "moving"  # what the last frame decided; fixed unless mode is "auto"
        # ULTRAFAST has no variational refinement, whose smoothing wiped out movers of a few work pixels.
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_ULTRAFAST)
        self._previous: np.ndarray | None = None  # the last frame, at work size and blurred
        self._grid = np.zeros((0, 0, 2), np.float32)  # (h,w,2) x, y of every work pixel, made once per size

    def reset(self) -> None:
        """Forget the previous frame (after a seek or a reconnect): the next frame is a first frame."""
        self._previous = None

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """(H,W) uint8 frame -> (H,W) bool mask of its moving pixels; all False for a first frame."""
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise StreamcamError(f"MotionMask: expected an (H,W) uint8 grey frame, got {gray.dtype} {gray.shape}")
        height, width = gray.shape
        work_size = (self.work_width, max(MIN_WORK_HEIGHT, round(height * self.work_width / width)))
        frame = cv2.GaussianBlur(cv2.resize(gray, work_size, interpolation=cv2.INTER_AREA), (3, 3), 0)
        previous, self._previous = self._previous, frame
        if previous is None or previous.shape != frame.shape:  # a first frame, or the stream changed size
            return np.zeros((height, width), bool)
        if self._grid.shape[:2] != frame.shape:
            xs, ys = np.meshgrid(np.arange(work_size[0], dtype=np.float32), np.arange(work_size[1], dtype=np.float32))
            self._grid = np.dstack([xs, ys])
        flow = self._flow.calc(frame, previous, None)  # each pixel's displacement to where it was before
        mask = self._moving(frame, previous, flow)
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)

    def _camera_motion(self, flow: np.ndarray) -> np.ndarray | None:
        """The 2x3 map from current to previous pixel positions that the camera's own motion explains, or
        None for a camera that does not move (in "auto", this decides `camera_moving`)."""
        if self.mode == "still":
            return None
        start = GRID_STEP // 2
        points = self._grid[start::GRID_STEP, start::GRID_STEP].reshape(-1, 2)
        targets = points + flow[start::GRID_STEP, start::GRID_STEP].reshape(-1, 2)
        # inliers: the points whose flow the camera's motion explains to within min_flow
        model, _ = cv2.estimateAffinePartial2D(points, targets, method=cv2.RANSAC, ransacReprojThreshold=self.min_flow)
        if self.mode == "auto":
            height, width = flow.shape[:2]
            corners = np.float32([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]])[:, None]
            shift = 0.0 if model is None else np.linalg.norm(cv2.transform(corners, model) - corners, axis=-1).max()
            self.camera_moving = bool(shift > CAMERA_MOTION_PX)
            if not self.camera_moving:
                return None
        return model  # None also when the fit failed (a featureless frame): then there is nothing to take out

    def _moving(self, frame: np.ndarray, previous: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """(h,w) uint8 0/1 mask at work size."""
        model = self._camera_motion(flow)
        if model is None:
            places, seen, warped = self._grid, np.ones(frame.shape, bool), previous
        else:  # where the camera's motion alone puts each pixel in the previous frame
            height, width = frame.shape
            places = cv2.transform(self._grid.reshape(-1, 1, 2), model).reshape(height, width, 2)
            seen = (places[..., 0] >= 0) & (places[..., 0] <= width - 1)
            seen &= (places[..., 1] >= 0) & (places[..., 1] <= height - 1)
            warped = cv2.remap(previous, places[..., 0], places[..., 1], cv2.INTER_LINEAR)
        residual = self._grid + flow - places  # the flow the camera's motion does not explain
        moved = ((np.hypot(residual[..., 0], residual[..., 1]) > self.min_flow) & seen).astype(np.uint8)
        changed = ((cv2.absdiff(frame, warped) > self.noise) & seen).astype(np.uint8)
        moved = _trim_to_change(_clean(moved), cv2.morphologyEx(changed, cv2.MORPH_OPEN, SPECKS))
        came_from = self._grid + residual  # in this frame's coordinates: the camera's motion is out
        occupied = moved | _fill_holes(cv2.morphologyEx(changed, cv2.MORPH_CLOSE, GAPS))
        return _clean(moved & cv2.remap(occupied, came_from[..., 0], came_from[..., 1], cv2.INTER_NEAREST))


def _clean(mask: np.ndarray) -> np.ndarray:
    """A uint8 0/1 mask without specks, its gaps closed and its holes filled."""
    return _fill_holes(cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, SPECKS), cv2.MORPH_CLOSE, GAPS))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """A uint8 0/1 mask with the holes in its regions filled (where a flat mover's flow or change fell short)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _trim_to_change(moved: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Each region of `moved` cut to the convex hull of its `changed` pixels (uint8 0/1 masks)."""
    trimmed = np.zeros_like(moved)
    count, labels, boxes, _ = cv2.connectedComponentsWithStats(moved)
    for label in range(1, count):
        x, y, width, height, _ = boxes[label]
        window = np.s_[y:y + height, x:x + width]
        region = (labels[window] == label).astype(np.uint8)
        points = cv2.findNonZero(changed[window] & region)
        if points is None:
            continue
        hull = np.zeros_like(region)
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
        trimmed[window] |= hull & region
    return trimmed


def motion_share(heatmap: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> float:
    """The share of a non-negative (H,W) map's energy on the moving pixels of an (H,W) bool mask, which is
    resized to the map with nearest-neighbour when their sizes differ; 0.0 for an all-zero map."""
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().float().cpu().numpy()
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    heatmap, mask = np.asarray(heatmap, np.float32), np.asarray(mask, bool)
    if heatmap.ndim != 2 or mask.ndim != 2:
        raise StreamcamError(f"motion_share: expected an (H,W) map and mask, got {heatmap.shape} and {mask.shape}")
    if mask.shape != heatmap.shape:
        size = (heatmap.shape[1], heatmap.shape[0])
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return mask_energy_share(heatmap, mask)
