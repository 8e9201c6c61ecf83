from __future__ import annotations

import torch

from .base import ChannelWeightedMethod, LayerEvidence


class CAM(ChannelWeightedMethod):
    """Needs no gradient at all: the classifier's weights are the channel weights. Only defined for the
    layer that feeds global average pooling and the final Linear layer (where it equals Grad-CAM)."""

    name = "cam"
    summary = "CAM (Zhou et al. 2016): channels weighted by the classifier's weights; last layer only"
    needs_gradients = False
    needs_linear_head = True

    def channel_weights(self, evidence: LayerEvidence) -> torch.Tensor:
        return evidence.head_weights
