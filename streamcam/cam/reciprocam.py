from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerEvidence, LayerMethod, require_positive

# The authors' 3x3 spread of a position over its neighbours (sybyun/ReciproCAM, `_mosaic_feature`).
_GAUSSIAN = torch.tensor([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])


@dataclass
class ReciproCAM(LayerMethod):
    """Gradient-free (Byun & Lee 2022, arXiv 2209.14074): for each of the layer's h·w positions, a copy of
    the activations that keeps only that position (all channels; with `gaussian`, spread over its 3x3
    neighbourhood as the authors offer), zero elsewhere; the rest of the network scores the copies as one
    batch, and each copy's softmax probability of the class is that position's value.

    Where the layer feeds global average pooling and a Linear layer (ResNet's layer4), the rest of the
    network on a copy is that Linear layer on the position's features times the spread's weight / (h·w):
    one matrix product for the whole map. Elsewhere the copies go through the network in batches of
    `batch_size`."""

    gaussian: bool = False
    batch_size: int = 64

    name = "reciprocam"
    summary = "Recipro-CAM (Byun & Lee 2022): each position alone, scored by the rest of the network; no gradients"
    needs_gradients = False

    def __post_init__(self) -> None:
        require_positive(self.name, batch_size=self.batch_size)

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        activations, targets = evidence.activations, evidence.targets
        batch, channels, height, width = activations.shape
        spread = self.spread(height, width, activations.device)  # (h·w copies, h, w)
        if evidence.head is not None:
            weight = evidence.head.weight.float()
            bias = evidence.head.bias.float() if evidence.head.bias is not None else 0.0
            pooled = activations.flatten(2).transpose(1, 2) * (spread.sum(dim=(1, 2)) / (height * width))[:, None]
            logits = pooled @ weight.T + bias  # (B, h·w, classes)
        else:
            logits = torch.stack([self._scores(evidence, b, spread) for b in range(batch)])
        probabilities = logits.softmax(dim=-1).gather(2, targets[:, None, :].expand(-1, height * width, -1))
        return probabilities.transpose(1, 2).reshape(batch, targets.shape[1], height, width)

    def _scores(self, evidence: LayerEvidence, index: int, spread: torch.Tensor) -> torch.Tensor:
        """(h·w, classes): the rest of the network on image `index`'s copies, batch after batch."""
        features = evidence.activations[index].flatten(1)  # (C, h·w): copy k carries position k's features
        return torch.cat([
            evidence.head_of(index, torch.einsum("cn,nyx->ncyx", features[:, start:start + self.batch_size],
                                                 spread[start:start + self.batch_size]))
            for start in range(0, spread.shape[0], self.batch_size)
        ])

    def spread(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(h·w, h, w): copy k = i·w + j weighs position (i, j) by 1, or by the 3x3 Gaussian around it."""
        one_hot = torch.eye(height * width, device=device).reshape(height * width, height, width)
        if not self.gaussian:
            return one_hot
        kernel = _GAUSSIAN.to(device)[None, None]
        return torch.nn.functional.conv2d(one_hot[:, None], kernel, padding=1)[:, 0]  # edges clipped, as the authors'
