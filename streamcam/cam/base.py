"""The typed base every CAM method builds on (one small file per method, like pytorch-grad-cam).

The Explainer gathers the evidence (activations, gradients, head weights, a scoring function) on the
model's device; a method only turns that evidence into raw maps. Everything here is torch, in fp32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import StreamcamError


@dataclass(frozen=True)
class LayerEvidence:
    """What a layer method sees, for B images and K explained classes per image."""

    inputs: torch.Tensor  # (B,3,H,W) the normalised model input
    activations: torch.Tensor  # (B,C,h,w) fp32, the layer's output
    targets: torch.Tensor  # (B,K) int64 class indices
    gradients: torch.Tensor | None  # (B,K,C,h,w) fp32, d logit[target] / d activations
    head_weights: torch.Tensor | None  # (B,K,C) fp32 Linear weights of the targets, when the layer feeds GAP -> Linear
    logits_of: Callable[[torch.Tensor], torch.Tensor]  # (N,3,H,W) -> (N,classes) fp32, no graph
    logits: torch.Tensor | None = None  # (B,classes) fp32, of the inputs
    head: nn.Linear | None = None  # the Linear layer after GAP, when the layer feeds GAP -> Linear
    # (image index b, substitute activations (N,C,h,w)) -> (N,classes) fp32: the rest of the network on them
    head_of: Callable[[int, torch.Tensor], torch.Tensor] | None = None


# (inputs (N,3,H,W), targets (N,K)) -> d logit[target] / d inputs, (N,K,3,H,W) fp32
InputGradients = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CamMethod(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]


class LayerMethod(CamMethod):
    """Explains with a layer's feature maps; the raw map has the layer's resolution."""

    needs_gradients: ClassVar[bool] = True
    needs_linear_head: ClassVar[bool] = False

    @abstractmethod
    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        """(B,K,h,w) fp32, before ReLU and normalisation."""


class ChannelWeightedMethod(LayerMethod):
    """map = sum over channels of weight[c] * activation[c]; subclasses only choose the weights."""

    @abstractmethod
    def channel_weights(self, evidence: LayerEvidence) -> torch.Tensor:
        """(B,K,C) fp32."""

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        return torch.einsum("bkc,bchw->bkhw", self.channel_weights(evidence), evidence.activations)


class PixelMethod(CamMethod):
    """Explains with gradients with respect to the input pixels; the raw map has the input's resolution."""

    @abstractmethod
    def raw_maps(self, inputs: torch.Tensor, targets: torch.Tensor, input_gradients: InputGradients) -> torch.Tensor:
        """(B,K,H,W) fp32, before normalisation."""


def require_positive(method: str, **options: float) -> None:
    """Options such as sample counts and batch sizes must be > 0."""
    for option, value in options.items():
        if not value > 0:
            raise StreamcamError(f"{method}: {option} must be > 0, got {value}")
