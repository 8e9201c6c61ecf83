"""The bundled demo model: a small torchvision ResNet trained on the procedural driving scenes.

It exists so that streamcam shows something meaningful with no internet: ImageNet weights cannot be
downloaded everywhere, and random weights only show the machinery. scripts/train_demo_model.py
reproduces it from a seed.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.models.resnet import BasicBlock, ResNet

CHECKPOINT = Path(__file__).with_name("demo_resnet.pt")
INPUT_SIZE = 160  # short side the model was trained at
ARCHITECTURE = "ResNet-10: torchvision ResNet with one BasicBlock per stage"


def build_demo_model(num_classes: int) -> ResNet:
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
