"""Rendering: the GPU path (torch, tested here on the CPU) draws what the OpenCV path draws."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from media import moving_square
from streamcam.explain import ExplainedFrame
from streamcam.render import OpenCVRenderer, TorchRenderer, colormap_lut, overlay
from streamcam.sources import Frame


def explained(width=320, height=180, maps=1):
    image = np.ascontiguousarray(moving_square(3, width, height)[..., ::-1])
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 45), torch.linspace(0, 1, 80), indexing="ij")
    heat = torch.stack([torch.exp(-((xs - 0.3 * (k + 1)) ** 2 + (ys - 0.5) ** 2) * 8) for k in range(maps)])
    frame = Frame(0, image, 0, Fraction(1, 30), 0.0)
    top = [(7, 0.6), (3, 0.3), (1, 0.05)][:maps]
    return ExplainedFrame(frame, heat, [c for c, _ in top], [p for _, p in top], top, (96, 90))


def name(index):
    return f"class {index}"


@pytest.mark.parametrize("view, size", [("overlay", (180, 320)), ("side", (180, 640)), ("grid", (180, 640))])
def test_torch_and_opencv_renderers_agree(view, size):
    item = explained(maps=2 if view == "grid" else 1)
    options = {"view": view, "alpha": 0.5, "colormap": "turbo", "top_k": 2}
    cv_image = OpenCVRenderer(name, **options).render(item, fps=29.97)
    torch_image = TorchRenderer(name, torch.device("cpu"), **options).render(item, fps=29.97)
    assert cv_image.shape == torch_image.shape == (*size, 3) and cv_image.dtype == np.uint8
    difference = np.abs(cv_image.astype(int) - torch_image.astype(int))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4


def test_overlay_colours_follow_the_map():
    frame = np.zeros((100, 200, 3), np.uint8)
    heat = np.zeros((100, 200), np.float32)
    heat[:, 100:] = 1.0
    blended = overlay(frame, heat, alpha=1.0, colormap="jet")
    lut = colormap_lut("jet")
    assert (blended[50, 20] == lut[0]).all() and (blended[50, 180] == lut[255]).all()


def test_labels_are_drawn_legibly_in_the_corners():
    item = explained()
    plain = OpenCVRenderer(name, alpha=0.5).overlays(item.frame.image, item.maps)[0]
    labelled = OpenCVRenderer(name, alpha=0.5, top_k=3).render(item, fps=12.5)
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
