"""Shared fixtures: small random-weight models whose maps are not degenerate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamcam import load_model


def spread_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random init leaves BatchNorm at mean 0 / var 1 / weight 1, which makes CAMs nearly flat and
    comparisons meaningless. Give the running stats and affine terms a realistic spread."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def resnets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: spread_batchnorm(load_model(name, "none", device="cpu").model) for name in ("resnet18", "resnet50")}


@pytest.fixture
def batch() -> torch.Tensor:
    """Two non-square normalised images (H != W catches transposed sizes)."""
    return torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(1))
