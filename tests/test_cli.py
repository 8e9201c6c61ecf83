"""The installed `streamcam` command: listings, and one clear line for user errors."""

from __future__ import annotations

import subprocess


def streamcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["streamcam", *args], capture_output=True, text=True, timeout=120)


def test_models_lists_torchvision_classifiers():
    result = streamcam("models")
    assert result.returncode == 0
    assert {"resnet18", "resnet50", "resnet152", "efficientnet_b0"} <= set(result.stdout.split())


def test_layers_lists_feature_maps_with_the_default_last():
    result = streamcam("layers", "resnet18")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[-1].split()[:3] == ["layer4", "512", "32"] and "layer4.1" in lines[-1]


def test_methods_lists_every_method():
    result = streamcam("methods")
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["gradcam", "cam", "gradcam++", "layercam", "hirescam", "xgradcam", "scorecam", "saliency", "smoothgrad"]


def test_unknown_model_is_one_line_on_stderr_without_traceback():
    result = streamcam("layers", "resnet5")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'resnet5'; did you mean resnet50, resnet152, resnet34? (`streamcam models` lists them)"
    ]
