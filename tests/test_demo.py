"""The bundled demo model, the scene generator, the training script and `streamcam demo`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from media import probe
from streamcam import Explainer, load_model
from streamcam.demo.model import CHECKPOINT, INPUT_SIZE
from streamcam.demo.scenes import CLASSES, OBJECT_CLASSES, demo_clip, random_scene
from streamcam.metrics import pointing_hit

REPO = Path(__file__).resolve().parent.parent


def test_bundled_checkpoint_is_small_and_self_describing():
    assert CHECKPOINT.stat().st_size <= 25e6
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    assert checkpoint["class_names"] == list(CLASSES) and checkpoint["input_size"] == INPUT_SIZE
    assert checkpoint["training"]["held_out_accuracy"] >= 0.95
    loaded = load_model("demo", device="cpu")
    assert loaded.class_names == CLASSES and loaded.preprocess.short_side == INPUT_SIZE
    assert loaded.weights == "bundled demo training"


def test_scenes_are_reproducible_and_boxes_fit():
    first = [random_scene(np.random.default_rng(3), 284, 160) for _ in range(3)]
    again = [random_scene(np.random.default_rng(3), 284, 160) for _ in range(3)]
    for (a, cls_a, box_a), (b, cls_b, box_b) in zip(first, again):
        assert np.array_equal(a, b) and cls_a == cls_b and box_a == box_b
    rng = np.random.default_rng(0)
    for cls in range(len(CLASSES)):
        image, label, box = random_scene(rng, 284, 160, cls)
        assert image.shape == (160, 284, 3) and label == cls
        if cls < OBJECT_CLASSES:
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 < 284 and 0 <= y0 < y1 < 160
        else:
            assert box is None


def test_demo_clip_shows_every_object_class_in_turn():
    frames = list(demo_clip(320, 180, fps=10, seconds=2))
    assert len(frames) == 20
    assert [cls for _, cls, _ in frames] == sorted(cls for _, cls, _ in frames)
    assert {cls for _, cls, _ in frames} == set(range(OBJECT_CLASSES))


def test_demo_model_classifies_and_points_at_the_object():
    loaded = load_model("demo", device="cpu")
    rng = np.random.default_rng(99)
    scenes = [random_scene(rng, 284, 160, cls % OBJECT_CLASSES) for cls in range(60)]
    x = loaded.preprocess(np.stack([image for image, _, _ in scenes]), bgr=True)
    labels = [cls for _, cls, _ in scenes]
    result = Explainer(loaded, "gradcam", align="receptive-field")(x, labels)
    accuracy = (result.logits.argmax(1) == torch.tensor(labels)).float().mean().item()
    pointing = np.mean([pointing_hit(m, box) for m, (_, _, box) in zip(result.maps, scenes)])
    assert accuracy >= 0.95
    assert pointing >= 0.9
    # The pixel-grid alignment pytorch-grad-cam uses shifts the coarse layer4 map by half a cell and
    # misses small objects; receptive-field alignment must be the better of the two.
    image_aligned = Explainer(loaded, "gradcam", align="image")(x, labels)
    image_pointing = np.mean([pointing_hit(m, box) for m, (_, _, box) in zip(image_aligned.maps, scenes)])
    assert pointing > image_pointing


def test_training_script_is_reproducible(tmp_path):
    def train(name):
        output = tmp_path / name
        subprocess.run([sys.executable, str(REPO / "scripts" / "train_demo_model.py"), "--steps", "2",
                        "--batch-size", "4", "--eval-images", "8", "--output", str(output)],
                       check=True, capture_output=True, timeout=300)
        return output

    first, second = train("a.pt"), train("b.pt")
    a, b = (torch.load(path, weights_only=True)["state_dict"] for path in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = load_model("demo", first, device="cpu")
    assert loaded.class_names == CLASSES


def test_streamcam_demo_end_to_end(tmp_path):
    done = subprocess.run(["streamcam", "demo", "--seconds", "2", "--no-show", "-o", str(tmp_path / "demo.mp4")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert probe(tmp_path / "demo.mp4")["frames"] == 60
    assert (tmp_path / "demo_sheet.png").stat().st_size > 10_000
    pointing = re.search(r"inside the object's box on (\d+)%", done.stdout)
    assert pointing and int(pointing.group(1)) >= 80
