from __future__ import annotations

import torch

from .base import LayerEvidence, LayerMethod


class HiResCAM(LayerMethod):
    name = "hirescam"
    summary = "HiResCAM (Draelos & Carin 2020): gradients times activations, per position"

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        return (evidence.gradients * evidence.activations.unsqueeze(1)).sum(dim=2)
