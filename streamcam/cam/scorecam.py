from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import LayerEvidence, LayerMethod, require_positive


@dataclass
class ScoreCAM(LayerMethod):
    """One forward pass per channel: the input masked by that channel's upsampled, normalised
    activation. Channels are scored in batches of `batch_size` masked images."""

    batch_size: int = 32

    name = "scorecam"
    summary = "Score-CAM (Wang et al. 2020): channels weighted by the score of the input they mask"
    needs_gradients = False

    def __post_init__(self) -> None:
        require_positive(self.name, batch_size=self.batch_size)

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        inputs, activations, targets = evidence.inputs, evidence.activations, evidence.targets
        channels = activations.shape[1]
        weights = []
        for image, image_activations, image_targets in zip(inputs, activations, targets):
            scores = torch.cat([
                evidence.logits_of(image * self._masks(image_activations[start:start + self.batch_size], inputs))
                for start in range(0, channels, self.batch_size)
            ])  # (C, classes)
            weights.append(scores[:, image_targets].T.softmax(dim=-1))  # (K, C)
        return torch.einsum("bkc,bchw->bkhw", torch.stack(weights), activations)

    @staticmethod
    def _masks(channel_maps: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """(n,h,w) -> (n,1,H,W) in [0,1]. align_corners=True, as pytorch-grad-cam's UpsamplingBilinear2d."""
        masks = F.interpolate(channel_maps[:, None], size=inputs.shape[-2:], mode="bilinear", align_corners=True)
        low = masks.amin(dim=(-2, -1), keepdim=True)
        high = masks.amax(dim=(-2, -1), keepdim=True)
        return (masks - low) / (high - low + 1e-8)
