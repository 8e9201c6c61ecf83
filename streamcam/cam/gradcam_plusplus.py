from __future__ import annotations

import torch

from .base import ChannelWeightedMethod, LayerEvidence

_EPS = 1e-6  # pytorch-grad-cam's; it dominates when gradients are tiny, so parity needs the same value


class GradCAMPlusPlus(ChannelWeightedMethod):
    name = "gradcam++"
    summary = "Grad-CAM++ (Chattopadhyay et al. 2018): positive gradients weighted per position"

    def channel_weights(self, evidence: LayerEvidence) -> torch.Tensor:
        grads = evidence.gradients  # (B,K,C,h,w)
        activation_sums = evidence.activations.sum(dim=(-2, -1), keepdim=True).unsqueeze(1)
        grads_2 = grads * grads
        # Eq. 19 of the paper, with the ReLU of eq. 7: alphas only where the gradient is non-zero.
        alphas = grads_2 / (2 * grads_2 + activation_sums * grads_2 * grads + _EPS)
        alphas = torch.where(grads != 0, alphas, torch.zeros_like(alphas))
        return (grads.clamp_min(0) * alphas).sum(dim=(-2, -1))
