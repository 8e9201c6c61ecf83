"""streamcam's maps must equal pytorch-grad-cam's (the reference implementation) to 1e-3."""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from streamcam import Explainer

REFERENCES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "gradcam-elementwise": GradCAMElementWise,
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


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_ablationcam_equals_pytorch_grad_cam(resnets, layer):
    """At layer4 the score drops come from the Linear head in one product; at layer3 from the network."""
    model = resnets["resnet18"]
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    ours = Explainer(model, method="ablationcam", layer=layer, precision="fp32")(x, [5, 700])
    expected = reference_maps(model, AblationCAM, layer, x, [5, 700])
    assert ours.maps.std() > 0.05
    assert (ours.maps - expected).abs().max() <= TOLERANCE


def eigen_reference(model, method_class, layer, x, targets, activations_times_gradients):
    """pytorch-grad-cam's map, with the sign of its SVD fixed by streamcam's rule (the projection correlates
    positively with the mean map), which its own code leaves to LAPACK: the maps then compare exactly."""
    import numpy as np

    from streamcam.cam.maps import normalize_maps

    with method_class(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        activations = cam.activations_and_grads.activations[0].cpu().numpy()
        if activations_times_gradients:
            activations = activations * cam.activations_and_grads.gradients[0].cpu().numpy()
    projection = get_2d_projection(activations)
    mean_map = activations.mean(axis=1)
    mean_map = mean_map - mean_map.mean(axis=(1, 2), keepdims=True)
    signs = np.sign((projection * mean_map).sum(axis=(1, 2)))
    projection = torch.from_numpy(projection * signs[:, None, None])
    return normalize_maps(projection[:, None], tuple(x.shape[-2:]))[:, 0]


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize("method, method_class", [("eigencam", EigenCAM), ("eigengradcam", EigenGradCAM)])
def test_eigen_methods_equal_pytorch_grad_cam_up_to_the_sign_they_leave_open(resnets, batch, layer, method, method_class):
    model = resnets["resnet50"]
    ours = Explainer(model, method=method, layer=layer, precision="fp32")(batch, [3, 417]).maps
    expected = eigen_reference(model, method_class, layer, batch, [3, 417], method == "eigengradcam")
    assert ours.std() > 0.05
    assert (ours - expected).abs().max() <= TOLERANCE


def reciprocam_reference(model, layer, image, target, gaussian=False):
    """The paper's algorithm, as the authors' code runs it (sybyun/ReciproCAM): a forward hook on the layer
    returns the features followed by one masked copy per position (one position kept, all channels, or
    the position's features spread by the 3x3 Gaussian), and each copy's softmax score of the class is
    that position's value, min-max normalised."""
    kernel = torch.tensor([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])

    def tile(module, inputs, output):
        feature = output[:1]
        _, channels, height, width = feature.shape
        copies = torch.zeros(height * width, channels, height, width)
        for i in range(height):
            for j in range(width):
                if gaussian:
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            if 0 <= i + di < height and 0 <= j + dj < width:
                                copies[i * width + j, :, i + di, j + dj] = feature[0, :, i, j] * kernel[di + 1, dj + 1]
                else:
                    copies[i * width + j, :, i, j] = feature[0, :, i, j]
        return torch.cat([feature, copies])

    handle = model.get_submodule(layer).register_forward_hook(tile)
    try:
        with torch.no_grad():
            scores = model(image[None]).softmax(dim=1)[1:, target]
    finally:
        handle.remove()
    return scores


@pytest.mark.parametrize("model_name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize("gaussian", [False, True], ids=["one-hot", "gaussian"])
def test_reciprocam_equals_the_papers_algorithm(resnets, model_name, layer, gaussian):
    model = resnets[model_name]
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    ours = Explainer(model, method="reciprocam", layer=layer, precision="fp32", gaussian=gaussian)(x, [5, 700])
    for image, target, raw in zip(x, [5, 700], ours.raw):
        expected = reciprocam_reference(model, layer, image, target, gaussian).reshape(raw.shape)
        normalised = [(m - m.min()) / (m.max() - m.min()) for m in (raw, expected)]
        assert normalised[0].std() > 0.05
        assert (normalised[0] - normalised[1]).abs().max() <= 1e-4
