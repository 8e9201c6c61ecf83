from __future__ import annotations

import torch

from .base import ChannelWeightedMethod, LayerEvidence

_EPS = 1e-7


class XGradCAM(ChannelWeightedMethod):
    name = "xgradcam"
    summary = "XGrad-CAM (Fu et al. 2020): gradients weighted by activation share per channel"

    def channel_weights(self, evidence: LayerEvidence) -> torch.Tensor:
        activations = evidence.activations.unsqueeze(1)  # (B,1,C,h,w)
        sums = activations.sum(dim=(-2, -1), keepdim=True)
        return (evidence.gradients * activations / (sums + _EPS)).sum(dim=(-2, -1))
