"""Heatmap tests for a model project's pytest suite: fail the build when the model is right for the
wrong reason. Copy this file, swap in your model, your clips and your regions.

Here the model is streamcam's bundled demo model and the data are generated road scenes whose object
boxes are known, so the file runs anywhere, offline:

    scripts/with-env python -m pytest examples/
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import streamcam
from streamcam.demo.run import write_clip
from streamcam.demo.scenes import CLASSES, OBJECT_CLASSES, random_scene
from streamcam.metrics import energy_share, pointing_hit


@pytest.fixture(scope="module")
def model():
    return streamcam.load_model("demo", device="cpu")  # yours: load_model("resnet50", "my_model.pt", labels=...)


def test_each_class_is_recognised_by_looking_at_the_object(model):
    """Over held-out images: the map of the true class peaks on the object (pointing game) and holds a
    fair share of its energy, for every class. Rates, not every image: maps are coarse."""
    rng = np.random.default_rng(2024)
    scenes = [random_scene(rng, 284, 160, cls % OBJECT_CLASSES) for cls in range(48)]  # the model's input size
    x = model.preprocess(torch.from_numpy(np.stack([image for image, _, _ in scenes])), bgr=True)
    explanation = streamcam.Explainer(model, "gradcam", align="receptive-field")(x, [cls for _, cls, _ in scenes])
    for cls in range(OBJECT_CLASSES):
        hits, shares = [], []
        for heatmap, (_, scene_cls, box) in zip(explanation.maps, scenes):
            if scene_cls == cls:
                hits.append(pointing_hit(heatmap, box))
                shares.append(energy_share(heatmap, box))
        assert np.mean(hits) >= 0.9, f"the {CLASSES[cls]} maps peak on the {CLASSES[cls]} in {np.mean(hits):.0%}"
        assert np.mean(shares) >= 0.3, f"the {CLASSES[cls]} maps hold {np.mean(shares):.0%} inside its box"


def test_on_a_clip_the_map_follows_the_annotated_objects(model, tmp_path):
    """Per clip: `streamcam.check` with per-frame boxes, as `streamcam check` runs it in CI."""
    clip = tmp_path / "drive.mp4"
    truth = write_clip(clip, seconds=1.0, seed=11)
    boxes = [{"frame": i, "box": [x0, y0, x1 + 1, y1 + 1], "class": CLASSES[cls]}
             for i, (cls, (x0, y0, x1, y1)) in enumerate(truth)]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    report = streamcam.check(clip, roi=str(tmp_path / "boxes.json"), model="demo", device="cpu",
                             min_pointing=0.9, min_share=0.2)
    assert report.passed, "\n".join(report.failures())
