"""Layers as the model has them: where their cells sit in the input (--align receptive-field), and
channels-last outputs (Swin's stages), measured from the model rather than assumed."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from streamcam import Explainer, load_model
from streamcam.cam.layers import feature_layers


class Unpadded(nn.Module):
    """Two unpadded 3x3 convolutions of stride 2 (as Inception's stem has): cell i of the second is
    centred on input pixel 4i + 3, not 4i as in padded networks. All-positive weights: an activation is
    the sum of the input over the cell's receptive field."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.head):
                layer.weight.fill_(0.1)
                layer.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def test_receptive_field_alignment_places_cells_where_the_model_has_them():
    model = Unpadded().eval()
    explainer = Explainer(model, "gradcam", layer="conv2", align="receptive-field", precision="fp32")
    # A bright dot on pixel (27, 43) = (4*6 + 3, 4*10 + 3): cells (6, 10) see it whole, so the map peaks there,
    # and the upsampled map must peak on the dot itself.
    x = torch.zeros(1, 3, 64, 64)
    x[0, :, 26:29, 42:45] = 1.0
    heatmap = explainer(x, 0).maps[0]
    assert divmod(int(heatmap.argmax()), 64) == (27, 43)
    assert explainer.cell_centres.offset == (3.0, 3.0) and explainer.cell_centres.stride == (4, 4)
    image = Explainer(model, "gradcam", layer="conv2", precision="fp32")(x, 0).maps[0]
    assert divmod(int(image.argmax()), 64) != (27, 43)  # the image reading misplaces it


@pytest.mark.parametrize("name, layer, offset", [("resnet18", "layer4", 0.0), ("vgg16", "features", 15.5),
                                                 ("inception_v3", "Mixed_7c", 37.0)])
def test_cell_centres_of_torchvision_families(name, layer, offset):
    """ResNet pads by half its kernels (0); VGG's 2x2 max pools put centres at 15.5, as the image
    reading does; Inception's unpadded stem and reductions add up to 37 pixels at Mixed_7c."""
    loaded = load_model(name, "none", device="cpu")
    explainer = Explainer(loaded, layer=layer, align="receptive-field")
    assert explainer.cell_centres.offset == (offset, offset) and explainer.cell_centres.stride == (32, 32)


def test_cells_that_cannot_be_placed_fall_back_to_the_image_reading_with_a_line(caplog):
    swin = torchvision.models.swin_t(weights=None).eval()
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        explainer = Explainer(swin, layer="features.5", align="receptive-field")
    assert explainer.align == "image" and explainer.cell_centres is None
    assert [r.getMessage() for r in caplog.records if "cannot place the cells of features.5" in r.getMessage()]


def test_a_channels_last_layer_is_explained_as_pytorch_grad_cam_with_a_reshape_does():
    """Swin's stages output (B,h,w,C). Read as (B,C,H,W) they gave silent garbage; pytorch-grad-cam's
    users write a reshape_transform for them. Here it needs nothing."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    swin = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ours = Explainer(swin, "gradcam", layer="features.5", precision="fp32")(x, [3, 7]).maps
    with GradCAM(model=swin, target_layers=[swin.features[5]], reshape_transform=lambda t: t.permute(0, 3, 1, 2)) as cam:
        expected = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(7)]))
    assert ours.std() > 0.05
    assert (ours - expected).abs().max() < 1e-3


def test_channels_last_layers_are_listed_with_their_channels():
    layers = {layer.name: layer for layer in feature_layers(torchvision.models.swin_t(weights=None).eval())}
    assert layers["features.5"].layout.kind == "nhwc" and layers["features.5"].channels == 384
    assert layers["permute"].layout.kind == "nchw" and layers["permute"].channels == 768
