from __future__ import annotations

import torch

from .base import LayerEvidence, LayerMethod


class GradCAMElementWise(LayerMethod):
    """Grad-CAM before the channel sum: the positive part of gradient × activation, summed over channels
    (pytorch-grad-cam's GradCAMElementWise)."""

    name = "gradcam-elementwise"
    summary = "Grad-CAM element-wise: positive gradient x activation, summed over channels"

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        return (evidence.gradients * evidence.activations[:, None]).clamp_min(0).sum(dim=2)
