"""Faithfulness metrics: against the formulas, recomputed here image by image, and against torchcam 0.5."""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

import streamcam
from streamcam import Explainer
from streamcam.errors import StreamcamError
from streamcam.faithfulness import average_drop, baseline_of, class_scores

STEPS = 8


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(1)
    return small_cnn(), torch.randn(4, 3, 32, 32)


def score(model: nn.Module, image: torch.Tensor, cls: int) -> float:
    with torch.no_grad():
        return float(model(image[None]).softmax(dim=1)[0, cls])


def curve_auc(model, image, heatmap, cls, insertion: bool) -> float:
    """Petsiuk's curve, written out: pixels hottest first, STEPS at a time, against a zero baseline."""
    order = np.argsort(-heatmap.flatten().numpy(), kind="stable")
    positions = order.size
    step = -(-positions // STEPS)
    counts = [*range(0, positions, step), positions]
    values = []
    for count in counts:
        chosen = np.zeros(positions, bool)
        chosen[order[:count]] = True
        chosen = torch.from_numpy(chosen).view(heatmap.shape)
        kept = chosen if insertion else ~chosen
        values.append(score(model, image * kept, cls))
    return float(np.trapezoid(values, np.array(counts) / positions))


@pytest.mark.parametrize("method", ["gradcam", "reciprocam"])
def test_every_metric_against_its_formula(model_and_batch, method):
    model, x = model_and_batch
    result = streamcam.evaluate(model, x, method=method, layer="4", precision="fp32", steps=STEPS)
    explainer = Explainer(model, method, layer="4", precision="fp32")
    explanation = explainer(x)  # the maps evaluate must have measured
    drops, increases, coherencies, complexities, deletions, insertions = [], [], [], [], [], []
    for image, heatmap, cls in zip(x, explanation.maps, explanation.targets.tolist()):
        original, masked = score(model, image, cls), score(model, image * heatmap, cls)
        drops.append(max(0.0, original - masked) / original)
        increases.append(masked > original)
        again = explainer((image * heatmap)[None], [cls]).maps[0]
        coherencies.append((np.corrcoef(heatmap.flatten(), again.flatten())[0, 1] + 1) / 2)
        complexities.append(float(heatmap.abs().mean()))
        deletions.append(curve_auc(model, image, heatmap, cls, insertion=False))
        insertions.append(curve_auc(model, image, heatmap, cls, insertion=True))
    means = [np.mean(v) for v in (drops, increases, coherencies, complexities, deletions, insertions)]
    expected_adcc = 3 / (1 / means[2] + 1 / (1 - means[3]) + 1 / (1 - means[0]))
    got = [result.average_drop, result.increase_in_confidence, result.coherency, result.complexity,
           result.deletion_auc, result.insertion_auc]
    assert got == pytest.approx(means, abs=1e-5)
    assert result.adcc == pytest.approx(expected_adcc, abs=1e-5)
    assert result.per_image["average_drop"].numpy() == pytest.approx(drops, abs=1e-5)
    assert result.per_image["deletion_auc"].numpy() == pytest.approx(deletions, abs=1e-5)
    assert all(isinstance(value, float) for value in result.as_dict().values())


class StreamcamExtractor:
    """streamcam's maps, in the shape torchcam's metrics take a CAM extractor."""

    def __init__(self, explainer: Explainer):
        self.explainer, self.model, self.input = explainer, explainer.model, None

    def __call__(self, class_idx, scores):
        return [self.explainer(self.input, class_idx).maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_the_same_numbers_as_torchcam(model_and_batch, method):
    model, x = model_and_batch
    extractor = StreamcamExtractor(Explainer(model, method, layer="4", precision="fp32"))
    extractor.input = x
    classification = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
    classification.update(x)
    curves = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=STEPS)
    curves.update(x)
    ours = streamcam.evaluate(model, x, method=method, layer="4", precision="fp32", steps=STEPS)
    theirs = {**classification.summary(), **curves.summary()}
    assert ours.average_drop == pytest.approx(theirs["avg_drop"], abs=1e-6)
    assert ours.increase_in_confidence == pytest.approx(theirs["conf_increase"], abs=1e-6)
    assert ours.deletion_auc == pytest.approx(theirs["deletion_auc"], abs=1e-6)
    assert ours.insertion_auc == pytest.approx(theirs["insertion_auc"], abs=1e-6)


class LooksAtTheTopLeft(nn.Module):
    """Class 0's evidence is the top-left quadrant's brightness, and nothing else; class 1 is a constant."""

    def forward(self, x):
        evidence = x[:, :, :16, :16].mean(dim=(1, 2, 3))
        return torch.stack([4 * evidence, torch.zeros_like(evidence)], dim=1)


def test_a_map_on_the_region_the_score_depends_on_drops_less():
    model = LooksAtTheTopLeft()
    x = torch.rand(6, 3, 32, 32) + 0.5
    classes = torch.zeros(6, dtype=torch.long)
    on_region, elsewhere = torch.zeros(6, 32, 32), torch.zeros(6, 32, 32)
    on_region[:, :16, :16] = 1
    elsewhere[:, 16:, 16:] = 1
    scores = class_scores(model, x, classes, "fp32")
    drop_on = average_drop(scores, class_scores(model, x * on_region[:, None], classes, "fp32"))
    drop_off = average_drop(scores, class_scores(model, x * elsewhere[:, None], classes, "fp32"))
    assert float(drop_on.max()) < 1e-6  # the model sees exactly what it saw
    assert float(drop_off.min()) > 0.4  # its evidence is gone: 0.98 -> 0.5


def test_blur_baseline_and_bad_arguments(model_and_batch):
    model, x = model_and_batch
    blurred = baseline_of(x, "blur")
    assert blurred.shape == x.shape and float(blurred.std()) < float(x.std()) / 2  # a blur, not a copy
    blurred_result = streamcam.evaluate(model, x, method="gradcam", layer="4", precision="fp32", steps=4, baseline="blur")
    zeros_result = streamcam.evaluate(model, x, method="gradcam", layer="4", precision="fp32", steps=4)
    assert blurred_result.deletion_auc != zeros_result.deletion_auc
    with pytest.raises(StreamcamError, match="baseline"):
        streamcam.evaluate(model, x, method="gradcam", layer="4", baseline="grey")
    with pytest.raises(StreamcamError, match="one class per image"):
        streamcam.evaluate(model, x, method="gradcam", layer="4", targets=[[0, 1]] * 4)


def test_a_model_in_train_mode_is_measured_in_eval_mode_and_left_as_it_was(model_and_batch):
    """torchvision hands models out in train mode: BatchNorm must use its running statistics for every
    masked copy, and the model's statistics and flags must not change."""
    _, x = model_and_batch
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    expected = streamcam.evaluate(model.eval(), x, method="gradcam", layer="2", precision="fp32", steps=4)
    statistics = model[1].running_mean.clone()
    result = streamcam.evaluate(model.train(), x, method="gradcam", layer="2", precision="fp32", steps=4)
    assert result.as_dict() == pytest.approx(expected.as_dict(), abs=1e-6)
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, statistics) and int(model[1].num_batches_tracked) == 0


@pytest.mark.parametrize("settings, message", [({"copies_per_pass": 0}, "copies_per_pass"), ({"steps": 0}, "steps"),
                                               ({"steps": 2.5}, "steps")])
def test_bad_settings_are_refused_before_any_work(model_and_batch, settings, message):
    model, x = model_and_batch
    with pytest.raises(StreamcamError, match=message):
        streamcam.evaluate(model, x, method="gradcam", layer="4", **settings)
