from __future__ import annotations

import torch

from .base import LayerEvidence, LayerMethod


class LayerCAM(LayerMethod):
    name = "layercam"
    summary = "LayerCAM (Jiang et al. 2021): positive gradients times activations, per position"

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        return (evidence.gradients.clamp_min(0) * evidence.activations.unsqueeze(1)).sum(dim=2)
