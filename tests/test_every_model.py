"""Every torchvision classifier through load_model, the Explainer and `streamcam run`: fixed-size models
(ViT, MaxViT) letterboxed, token layers reshaped, in-place layers after the explained one."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from media import probe, write_clip
from streamcam import Explainer, api, load_model
from streamcam.config import RunConfig
from streamcam.explain import FrameExplainer
from streamcam.picture import BgrPicture
from streamcam.sources import Frame

MODELS = sorted(torchvision.models.list_models(module=torchvision.models))
FRAME = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)  # 16:9, smaller than any input


def with_live_head(model: nn.Module) -> nn.Module:
    """torchvision initialises some heads to zero (ViT's): every score is then constant and every map
    flat, which says nothing about the map's way. Give such heads random weights."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                module.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    return model


def test_the_list_is_torchvisions_whole_list():
    assert len(MODELS) >= 80


@pytest.mark.parametrize("name", MODELS)
def test_every_classifier_explains_a_frame_with_its_default_layer(name):
    started = time.monotonic()
    torch.manual_seed(0)  # the same random weights whatever ran before
    loaded = load_model(name, "none", device="cpu")
    with_live_head(loaded.model)
    explainer = Explainer(loaded, precision="fp32")
    explained = FrameExplainer(loaded, explainer)([Frame(0, BgrPicture(FRAME), 0, 1, 0.0)])[0]
    heatmap = explained.maps[0]
    assert torch.isfinite(heatmap).all() and heatmap.std() > 1e-3, f"{name} at {explainer.layer}: a flat map"
    # The map covers the frame, at its aspect ratio: a letterboxed input's bars are not part of it.
    assert heatmap.shape[0] / heatmap.shape[1] == pytest.approx(90 / 160, rel=0.03)
    assert time.monotonic() - started < 120


@pytest.mark.parametrize("name, layer", [("vit_b_16", "encoder.layers.encoder_layer_11.ln_1"), ("vit_b_32", None),
                                         ("swin_t", "features.5")])
def test_token_layers_are_explained_as_pytorch_grad_cam_with_a_reshape_does(name, layer):
    """pytorch-grad-cam's users write the reshape by hand (its ViT tutorial's `reshape_transform`, which
    drops the class token); here it is found."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = with_live_head(torchvision.models.get_model(name, weights=None).eval())
    explainer = Explainer(model, "gradcam", layer=layer, precision="fp32")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ours = explainer(x, [3, 7]).maps

    def reshape(tokens):
        if tokens.ndim == 4:  # Swin: (B,h,w,C)
            return tokens.permute(0, 3, 1, 2)
        side = int((tokens.shape[1] - 1) ** 0.5)
        return tokens[:, 1:].reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.get_submodule(explainer.layer)], reshape_transform=reshape) as cam:
        expected = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(7)]))
    assert ours.std() > 0.05 and (ours - expected).abs().max() < 1e-3


def test_a_vit_is_letterboxed_and_its_map_placed_on_the_frame(tmp_path, monkeypatch):
    """ViT-B/16 takes 224 x 224 only: a 16:9 clip runs whole, letterboxed, and keeps its frames and size."""
    monkeypatch.setattr(api, "load_model", lambda *args, **kwargs: _live(load_model(*args, **kwargs)))
    clip = write_clip(tmp_path / "in.mp4", frames=6, size=(192, 108))
    result = api.run(RunConfig(source=str(clip), output=tmp_path / "vit.mp4", log=tmp_path / "vit.jsonl",
                               model="vit_b_16", weights="none"), handle_signals=False)
    written = probe(tmp_path / "vit.mp4")
    assert result.stats.written == written["frames"] == 6 and (written["width"], written["height"]) == (192, 108)
    loaded = load_model("vit_b_16", "none", device="cpu")
    assert loaded.preprocess.fixed == 224 and loaded.preprocess.content(108, 192) == (49, 0, 126, 224)


def _live(loaded):
    with_live_head(loaded.model)
    return loaded


def test_vgg16_runs_end_to_end(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=6, size=(160, 90))
    result = api.run(RunConfig(source=str(clip), output=tmp_path / "vgg.mp4", model="vgg16", weights="none",
                               input_size=64), handle_signals=False)
    written = probe(tmp_path / "vgg.mp4")
    assert result.stats.written == written["frames"] == 6 and (written["width"], written["height"]) == (160, 90)


def test_a_method_that_cannot_apply_is_refused_naming_the_alternative():
    from streamcam.errors import StreamcamError

    with pytest.raises(StreamcamError, match="cam needs a layer that feeds global average pooling.*use gradcam"):
        Explainer(load_model("vgg16", "none", device="cpu"), "cam")


def test_an_in_place_layer_after_the_explained_one_is_no_obstacle():
    """SqueezeNet's default layer feeds a ReLU(inplace=True); autograd refused to go on from it."""
    loaded = load_model("squeezenet1_1", "none", device="cpu")
    result = Explainer(loaded, "gradcam", precision="fp32")(torch.randn(1, 3, 96, 128))
    assert result.maps.std() > 1e-3
