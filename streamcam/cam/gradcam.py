from __future__ import annotations

import torch

from .base import ChannelWeightedMethod, LayerEvidence


class GradCAM(ChannelWeightedMethod):
    name = "gradcam"
    summary = "Grad-CAM (Selvaraju et al. 2017): channels weighted by their mean gradient"

    def channel_weights(self, evidence: LayerEvidence) -> torch.Tensor:
        return evidence.gradients.mean(dim=(-2, -1))
