"""Shared fixtures: small random-weight models whose maps are not degenerate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamcam import load_model, plan


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


@pytest.fixture(autouse=True)
def fp32_on_every_cpu(monkeypatch):
    """precision="auto" picks bf16 on CPUs with bf16 instructions. Tests run at fp32 whatever CPU runs
    them (in this process): parity with pytorch-grad-cam is defined at fp32, and results must not depend
    on the CI machine's CPU. test_engine checks the choice itself."""
    monkeypatch.setattr(plan, "cpu_has_bf16", lambda: False)


@pytest.fixture(scope="session")
def resnets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: spread_batchnorm(load_model(name, "none", device="cpu").model) for name in ("resnet18", "resnet50")}


@pytest.fixture
def batch() -> torch.Tensor:
    """Two non-square normalised images (H != W catches transposed sizes)."""
    return torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(1))
