"""load_model: torchvision names, the three kinds of weights, labels, preprocessing, clear errors."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torchvision

import streamcam
from streamcam import Explainer, StreamcamError, WeightsUnavailableError, load_model


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_resnets_load_with_random_weights_and_explain(name):
    loaded = load_model(name, "none", device="cpu")
    assert loaded.class_names is None and loaded.weights == "none" and not loaded.model.training
    explainer = Explainer(loaded)
    assert explainer.layer == "layer4" and explainer.analytic
    assert explainer(torch.randn(1, 3, 64, 96)).maps.shape == (1, 64, 96)


def test_unknown_model_names_close_matches():
    with pytest.raises(StreamcamError, match="unknown model 'resnet51'; did you mean resnet50"):
        load_model("resnet51", "none")


def test_offline_imagenet_weights_fail_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached

    def offline(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    with pytest.raises(WeightsUnavailableError, match="--weights PATH") as error:
        load_model("resnet18")  # the default: pretrained ImageNet weights
    assert "--model demo" in str(error.value)


def test_cached_imagenet_weights_load_offline_with_their_categories(monkeypatch, tmp_path):
    """The weights API path: torch hub finds the file in its cache and needs no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    loaded = load_model("resnet18", "imagenet", device="cpu")
    assert loaded.class_names[:2] == ("tench", "goldfish") and len(loaded.class_names) == 1000
    assert loaded.weights == "imagenet (IMAGENET1K_V1)"
    assert loaded.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


def test_state_dict_checkpoint_with_text_labels(tmp_path):
    model = torchvision.models.resnet18(num_classes=3)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "labels.txt").write_text("car\npedestrian\nsign\n")
    loaded = load_model("resnet18", tmp_path / "model.pt", labels=tmp_path / "labels.txt", device="cpu")
    assert loaded.class_names == ("car", "pedestrian", "sign")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model.eval()(x), atol=1e-5)
    assert Explainer(loaded)(x, ["sign", "car"]).targets.tolist() == [2, 0]


def test_wrapped_checkpoint_with_embedded_names_and_json_labels(tmp_path):
    model = torchvision.models.resnet18(num_classes=2)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "class_names": ["a", "b"]}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    assert load_model("resnet18", tmp_path / "ckpt.pth", device="cpu").class_names == ("a", "b")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "dog", "0": "cat"}))
    loaded = load_model("resnet18", tmp_path / "ckpt.pth", labels=tmp_path / "labels.json", device="cpu")
    assert loaded.class_names == ("cat", "dog")


def test_saved_module_checkpoint(tmp_path):
    model = torchvision.models.resnet18(num_classes=4).eval()
    torch.save(model, tmp_path / "whole.pt")
    loaded = load_model("resnet18", tmp_path / "whole.pt", device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model(x), atol=1e-5)


def test_checkpoint_errors_name_the_problem(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(StreamcamError, match=r"does not fit resnet50: key 'layer1.0.conv1.weight' has shape"):
        load_model("resnet50", tmp_path / "r18.pt")
    with pytest.raises(StreamcamError, match="weights file not found"):
        load_model("resnet18", tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(StreamcamError, match="is not a PyTorch checkpoint"):
        load_model("resnet18", tmp_path / "junk.pt")
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(StreamcamError, match="2 class names for a model with 1000 outputs"):
        load_model("resnet18", "none", labels=tmp_path / "two.txt")


def test_preprocess_keeps_aspect_and_never_crops():
    loaded = load_model("resnet18", "none", device="cpu", input_size=168)
    frames = torch.full((2, 720, 1280, 3), 128, dtype=torch.uint8)
    x = loaded.preprocess(frames)
    assert x.shape == (2, 3, 168, 299) and x.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(loaded.preprocess.mean)) / torch.tensor(loaded.preprocess.std)
    assert torch.allclose(x[0, :, 50, 100], expected, atol=1e-5)
    portrait = loaded.preprocess(torch.zeros(480, 360, 3, dtype=torch.uint8))
    assert portrait.shape == (1, 3, 224, 168)
    with pytest.raises(StreamcamError, match="uint8 RGB"):
        loaded.preprocess(torch.zeros(2, 3, 64, 64))


def test_demo_weights_are_its_own():
    with pytest.raises(StreamcamError, match="the demo model has no ImageNet weights"):
        load_model("demo", "imagenet")
    assert load_model("demo", "none", device="cpu").class_names is None


def test_public_api_names():
    assert {"gradcam", "cam", "gradcam++", "layercam", "hirescam", "xgradcam", "gradcam-elementwise", "reciprocam",
            "eigencam", "eigengradcam", "ablationcam", "scorecam", "saliency", "smoothgrad"} == set(streamcam.METHODS)
    assert {"demo", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(streamcam.available_models())
