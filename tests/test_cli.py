"""The installed `streamcam` command."""

from __future__ import annotations

import subprocess


def streamcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["streamcam", *args], capture_output=True, text=True, timeout=120)


def test_models_lists_torchvision_classifiers():
    result = streamcam("models")
    assert result.returncode == 0
    assert {"resnet18", "resnet50", "resnet152", "efficientnet_b0"} <= set(result.stdout.split())
