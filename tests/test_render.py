"""Rendering: the GPU path (torch, tested here on the CPU) draws what the OpenCV path draws."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from media import moving_square
from streamcam.explain import ExplainedFrame
from streamcam.geometry import MapGeometry
from streamcam.picture import BgrPicture, I420Picture
from streamcam.render import OpenCVRenderer, TorchRenderer, colormap_lut, draw_boxes, draw_text_box, overlay
from streamcam.sources import Frame


def explained(width=320, height=180, maps=1, i420=False, matrix="bt601"):
    """A frame (BGR, or the I420 planes a decoder gives) with `maps` Gaussian heatmaps."""
    bgr = np.ascontiguousarray(moving_square(3, width, height)[..., ::-1])
    picture = I420Picture(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), matrix) if i420 else BgrPicture(bgr)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 45), torch.linspace(0, 1, 80), indexing="ij")
    heat = torch.stack([torch.exp(-((xs - 0.3 * (k + 1)) ** 2 + (ys - 0.5) ** 2) * 8) for k in range(maps)])
    frame = Frame(0, picture, 0, Fraction(1, 30), 0.0)
    on_device = picture.with_data(torch.from_numpy(picture.data))
    top = [(7, 0.6), (3, 0.3), (1, 0.05)][:maps]
    return ExplainedFrame(frame, on_device, heat, MapGeometry((45, 80), (height, width)), [c for c, _ in top],
                          [p for _, p in top], top, (96, 90))


def name(index):
    return f"class {index}"


def as_encoded(picture):
    """What a player shows of a picture: through the encoder's I420."""
    if isinstance(picture, np.ndarray):
        picture = BgrPicture(picture)
    return picture.video_frame(picture.matrix).to_ndarray(format="bgr24")


@pytest.mark.parametrize("view, maps, size", [("overlay", 1, (180, 320)), ("side", 1, (180, 640)),
                                              ("grid", 2, (180, 640)), ("grid", 3, (180, 320))])
@pytest.mark.parametrize("i420", [False, True], ids=["bgr", "i420"])
def test_device_renderer_draws_what_the_opencv_renderer_draws(view, maps, size, i420):
    """The GPU path (torch, in YUV 4:2:0; run here on the CPU) against the CPU path (OpenCV, in BGR),
    compared as a player sees them, after the encoder's conversion to I420."""
    item = explained(maps=maps, i420=i420)
    options = {"view": view, "alpha": 0.5, "colormap": "turbo", "top_k": 2}
    cv_image = OpenCVRenderer(name, **options).render(item, fps=29.97).picture
    torch_image = TorchRenderer(name, torch.device("cpu"), **options).render(item, fps=29.97).picture
    assert isinstance(cv_image, BgrPicture) and isinstance(torch_image, I420Picture)
    assert cv_image.shape == torch_image.shape == size
    difference = np.abs(as_encoded(cv_image).astype(int) - as_encoded(torch_image).astype(int))
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8


def test_device_renderer_keeps_the_frames_colours_exactly_where_alpha_is_zero():
    """Blending in YUV passes the decoder's planes through untouched: no colour conversion round trip."""
    item = explained(i420=True, matrix="bt709")
    picture = TorchRenderer(name, torch.device("cpu"), alpha=0.0).render(item).picture
    assert picture.matrix == "bt709"
    below_label = np.s_[60:, :]
    source_y, picture_y = item.frame.picture.planes()[0], picture.planes()[0]
    assert np.array_equal(picture_y[below_label], source_y[below_label])


def test_odd_sized_frames_are_rendered_on_the_host_at_their_size():
    item = explained(width=161, height=91)
    picture = TorchRenderer(name, torch.device("cpu")).render(item).picture
    assert isinstance(picture, BgrPicture) and picture.bgr().shape == (91, 161, 3)


def test_overlay_colours_follow_the_map():
    frame = np.zeros((100, 200, 3), np.uint8)
    heat = np.zeros((100, 200), np.float32)
    heat[:, 100:] = 1.0
    blended = overlay(frame, heat, alpha=1.0, colormap="jet")
    lut = colormap_lut("jet")
    assert (blended[50, 20] == lut[0]).all() and (blended[50, 180] == lut[255]).all()


def test_labels_are_drawn_legibly_in_the_corners():
    item = explained()
    plain = OpenCVRenderer(name, alpha=0.5).overlays(item)[0]
    labelled = OpenCVRenderer(name, alpha=0.5, top_k=3).render(item, fps=12.5).bgr()
    top_left, top_right, bottom = (np.s_[:20, :40], np.s_[:20, -40:], np.s_[-40:, :])
    assert not np.array_equal(labelled[top_left], plain[top_left])  # class label
    assert not np.array_equal(labelled[top_right], plain[top_right])  # fps
    assert np.array_equal(labelled[bottom], plain[bottom])  # the rest is untouched
    # White text on a darkened box: the box is dark, the text bright, whatever is under it.
    box = labelled[:20, :40].astype(int).sum(axis=2)
    assert (box < 200).mean() > 0.5 and box.max() > 600


def test_label_names_the_explained_class_once():
    item = explained()
    single = OpenCVRenderer(name)._label_lines(item)
    assert single == ["class 7 60%"]
    ranked = OpenCVRenderer(name, top_k=3)._label_lines(item)
    assert ranked == ["1. class 7 60%"]  # explained() has one top class
    item.top = [(7, 0.6), (3, 0.3)]
    assert OpenCVRenderer(name, top_k=2)._label_lines(item) == ["1. class 7 60%", "2. class 3 30%"]
    item.classes, item.probabilities = [9], [0.02]  # a --target outside the top-k
    assert OpenCVRenderer(name, top_k=2)._label_lines(item)[0] == "map: class 9 2.0%"


def test_text_and_boxes_look_alike_on_bgr_and_i420_pictures():
    bgr = np.full((120, 200, 3), (40, 160, 90), np.uint8)
    planar = I420Picture(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420))
    for picture in (BgrPicture(bgr), planar):
        draw_text_box(picture, ["car 97%"])
        draw_boxes(picture, [(100, 40, 180, 110)])
    drawn_on_planes, drawn_in_bgr = planar.bgr().astype(int), as_encoded(bgr).astype(int)
    assert np.abs(drawn_on_planes - drawn_in_bgr).mean() < 2
    assert not np.array_equal(drawn_on_planes[:20, :40], as_encoded(np.full_like(bgr, (40, 160, 90)))[:20, :40])
