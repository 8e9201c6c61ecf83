from __future__ import annotations

import torch

from .base import InputGradients, PixelMethod


class Saliency(PixelMethod):
    name = "saliency"
    summary = "Saliency (Simonyan et al. 2014): |d score / d pixel|, max over colour channels"

    def raw_maps(self, inputs: torch.Tensor, targets: torch.Tensor, input_gradients: InputGradients) -> torch.Tensor:
        return input_gradients(inputs, targets).abs().amax(dim=2)
