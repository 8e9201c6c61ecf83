"""Motion masks on generated clips whose true mover mask is known: a fixed and a panning camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from streamcam.errors import StreamcamError
from streamcam.metrics import mask_iou
from streamcam.motion import MotionMask, motion_share

SIZE = (398, 224)  # (W, H): not a multiple of the work width, so masks are scaled back to the frame
MOVER = (56, 44)  # (w, h) of the moving object
SETTLE = 2  # frames left out of the scores: the first has no previous frame


def texture(rng: np.random.Generator, height: int, width: int, sigma: float, low: float, high: float) -> np.ndarray:
    """Smoothed random noise spread over [low, high] grey levels: detail for the flow to follow."""
    noise = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), sigma)
    return low + (noise - noise.min()) / (noise.max() - noise.min()) * (high - low)


def clip(camera_step: tuple[float, float] = (0, 0), zoom: float = 0.0, mover_step: tuple[int, int] = (3, 2),
         flat: bool = False, frames: int = 12, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, the mover's true mask) per frame: a textured (or `flat`) object moving by `mover_step` px a
    frame over a textured scene with shapes, seen by a camera that pans by `camera_step` px and zooms by
    `zoom` a frame, with sensor noise of 2 grey levels."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    margin = 100  # the scene is larger than the frame, so a pan never runs off it
    scene = texture(rng, height + 2 * margin, width + 2 * margin, 3.0, 40, 200)
    for _ in range(12):
        x, y, size, grey = (int(v) for v in rng.integers((0, 0, 5, 0), (width + margin, height + margin, 20, 256)))
        if rng.random() < 0.5:
            cv2.circle(scene, (x, y), size, grey, -1)
        else:
            cv2.rectangle(scene, (x, y), (x + 2 * size, y + size), grey, -1)
    mover_width, mover_height = MOVER
    look = np.full((mover_height, mover_width), 235.0, np.float32) if flat else texture(
        rng, mover_height, mover_width, 1.5, 90, 255)
    frames_and_masks = []
    for index in range(frames):
        scale = 1 + zoom * index
        # frame pixel p shows scene pixel (p - centre) / scale + centre + margin + camera_step * index
        shift_x = width / 2 - scale * (width / 2 + margin + camera_step[0] * index)
        shift_y = height / 2 - scale * (height / 2 + margin + camera_step[1] * index)
        frame = cv2.warpAffine(scene, np.float32([[scale, 0, shift_x], [0, scale, shift_y]]), SIZE)
        x, y = 60 + mover_step[0] * index, 70 + mover_step[1] * index
        frame[y:y + mover_height, x:x + mover_width] = look
        truth = np.zeros((height, width), bool)
        truth[y:y + mover_height, x:x + mover_width] = True
        frame = np.clip(frame + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8)
        frames_and_masks.append((frame, truth))
    return frames_and_masks


STILL = clip()
FLAT = clip(flat=True, mover_step=(4, 0), seed=1)  # sideways: its top and bottom edges never change
PAN = clip(camera_step=(5, 1.5), zoom=0.004, mover_step=(3, -1), seed=2)  # the mover crosses the pan


def run(motion: MotionMask, frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[float], list[bool]]:
    """IoU with the truth and the camera decision, per frame after SETTLE."""
    ious, camera = [], []
    for index, (frame, truth) in enumerate(frames):
        mask = motion(frame)
        assert mask.shape == truth.shape and mask.dtype == bool
        if index >= SETTLE:
            ious.append(mask_iou(mask, truth))
            camera.append(motion.camera_moving)
    return ious, camera


@pytest.mark.parametrize("mode", ["still", "auto"])
def test_still_camera_masks_the_mover(mode):
    ious, camera = run(MotionMask(mode), STILL)
    assert np.mean(ious) >= 0.7, ious
    assert not any(camera)


def test_a_flat_mover_is_covered_not_only_its_edges():
    """Frame differences see only a flat object's edges; its inside must be in the mask too."""
    ious, _ = run(MotionMask("still"), FLAT)
    assert np.mean(ious) >= 0.7, ious


@pytest.mark.parametrize("flat", [False, True])
def test_the_place_the_mover_just_left_is_left_out(flat):
    """A difference also marks where the mover was (its ghost): at 16 px a frame, a quarter of the union
    of its old and new boxes for a 56 px wide mover."""
    motion, ious, outside = MotionMask("still"), [], []
    for index, (frame, truth) in enumerate(clip(mover_step=(16, 0), flat=flat, frames=10, seed=4)):
        mask = motion(frame)
        if index >= SETTLE:
            ious.append(mask_iou(mask, truth))
            outside.append((mask & ~truth).sum() / max(1, mask.sum()))
    assert np.mean(ious) >= 0.7, ious
    assert np.mean(outside) < 0.18, outside


@pytest.mark.parametrize("mode", ["moving", "auto"])
def test_panning_camera_masks_the_mover(mode):
    ious, camera = run(MotionMask(mode), PAN)
    assert np.mean(ious) >= 0.7, ious
    assert all(camera)


def test_without_the_camera_motion_taken_out_a_pan_moves_everything():
    """The "moving" branch's compensation is what finds the mover: "still" marks the panning scene."""
    ious, _ = run(MotionMask("still"), PAN)
    assert np.mean(ious) < 0.2, ious


def test_a_scene_where_nothing_moves_has_an_empty_mask():
    motion = MotionMask("auto")
    marked = [motion(frame).mean() for frame, _ in clip(mover_step=(0, 0), frames=6)]
    assert max(marked) < 0.005, marked
    assert not motion.camera_moving


def gaussian(shape: tuple[int, int], centre: tuple[float, float], sigma: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    return torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))


def test_motion_share_is_high_on_the_mover_and_low_on_the_background():
    motion = MotionMask("auto")
    for frame, _ in PAN[:6]:
        mask = motion(frame)
    truth = PAN[5][1]
    ys, xs = np.nonzero(truth)
    on_mover = gaussian(truth.shape, (xs.mean(), ys.mean()), 10)
    on_background = gaussian(truth.shape, (320, 180), 10)
    assert motion_share(on_mover, mask) > 0.7
    assert motion_share(on_background, mask) < 0.2
    assert motion_share(on_mover.numpy(), torch.from_numpy(mask)) == pytest.approx(motion_share(on_mover, mask))


def test_motion_share_resizes_the_mask_and_is_zero_for_an_empty_map():
    mask = np.zeros((40, 80), bool)
    mask[:, :20] = True  # the left quarter, at 4x the map's size
    heatmap = torch.ones(10, 20)
    heatmap[:, 10:] = 0  # the left half, so half its mass lies in the left quarter
    assert motion_share(heatmap, mask) == pytest.approx(0.5)
    assert motion_share(np.ones((10, 20)), mask) == pytest.approx(0.25)
    assert motion_share(torch.zeros(10, 20), mask) == 0.0


def test_the_first_frame_and_a_reset_give_an_empty_mask():
    motion = MotionMask("still")
    (first, _), (second, _), (third, _) = STILL[:3]
    mask = motion(first)
    assert mask.shape == first.shape and not mask.any()
    assert motion(second).any()
    motion.reset()
    assert not motion(third).any()
    assert motion(STILL[3][0]).any()
    resized = motion(cv2.resize(STILL[4][0], (200, 112)))  # the stream changed size: a first frame again
    assert resized.shape == (112, 200) and not resized.any()


@pytest.mark.parametrize("options", [{"mode": "stil"}, {"noise": 0}, {"min_flow": -1.0}, {"work_width": 0},
                                     {"work_width": 320.5}])
def test_bad_arguments_raise_one_clear_error(options):
    with pytest.raises(StreamcamError) as error:
        MotionMask(**options)
    message = str(error.value)
    assert "\n" not in message
    if "mode" in options:
        assert "did you mean still?" in message and "auto, still, moving" in message
    else:
        assert next(iter(options)) in message


def test_a_frame_that_is_not_grey_is_refused():
    with pytest.raises(StreamcamError, match="uint8 grey frame"):
        MotionMask()(np.zeros((8, 8, 3), np.uint8))
