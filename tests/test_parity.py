"""streamcam's maps must equal pytorch-grad-cam's (the reference implementation) to 1e-3."""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from streamcam import Explainer

REFERENCES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
}
TOLERANCE = 1e-3


def reference_maps(model, method_class, layer, x, targets):
    wrapped = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
    with method_class(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        maps = cam(input_tensor=x, targets=wrapped)
    return torch.from_numpy(maps)


@pytest.mark.parametrize("model_name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize("method", sorted(REFERENCES))
@pytest.mark.parametrize("explicit_targets", [False, True], ids=["top1", "explicit"])
def test_maps_equal_pytorch_grad_cam(resnets, batch, model_name, layer, method, explicit_targets):
    model = resnets[model_name]
    targets = [3, 417] if explicit_targets else None
    ours = Explainer(model, method=method, layer=layer)(batch, targets)
    expected = reference_maps(model, REFERENCES[method], layer, batch, targets)

    assert ours.maps.shape == expected.shape == (2, 160, 224)
    assert ours.maps.std() > 0.05, "degenerate maps would make the comparison vacuous"
    assert (ours.maps - expected).abs().max() <= TOLERANCE
    if explicit_targets:
        assert ours.targets.tolist() == targets


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_scorecam_equals_pytorch_grad_cam(resnets, layer):
    model = resnets["resnet18"]
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    ours = Explainer(model, method="scorecam", layer=layer, batch_size=64)(x, [5, 700])
    expected = reference_maps(model, ScoreCAM, layer, x, [5, 700])
    assert ours.maps.std() > 0.05
    assert (ours.maps - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("model_name", ["resnet18", "resnet50"])
def test_cam_equals_gradcam_at_last_layer(resnets, batch, model_name):
    model = resnets[model_name]
    cam = Explainer(model, method="cam")(batch, topk=3)
    gradcam = Explainer(model, method="gradcam")(batch, topk=3)
    assert torch.equal(cam.targets, gradcam.targets)
    assert (cam.maps - gradcam.maps).abs().max() <= 1e-5
