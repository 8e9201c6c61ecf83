from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerEvidence, LayerMethod, require_positive

_ABLATED_BELOW = 1e7  # a layer with negative values: its ablated channel goes this far below its minimum


@dataclass
class AblationCAM(LayerMethod):
    """Gradient-free (Desai & Ramaswamy 2020): a channel's weight is the drop of the class's score when
    that channel is ablated (zeroed; for a layer with negative values set far below its minimum, as
    pytorch-grad-cam does), relative to the score. Where the layer feeds GAP and a Linear layer the
    drops are one matrix product; elsewhere the ablated copies go through the rest of the network in
    batches of `batch_size`."""

    batch_size: int = 32

    name = "ablationcam"
    summary = "Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the score drop when they are removed"
    needs_gradients = False

    def __post_init__(self) -> None:
        require_positive(self.name, batch_size=self.batch_size)

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        activations, targets = evidence.activations, evidence.targets
        original = evidence.logits.gather(1, targets)  # (B,K)
        lowest = activations.flatten(1).amin(dim=1)
        ablated_value = torch.where(lowest >= 0, torch.zeros_like(lowest), lowest - _ABLATED_BELOW)  # (B,)
        if evidence.head is not None:  # the logit moves by W[k,c] times the change of channel c's mean
            change = ablated_value[:, None] - activations.mean(dim=(2, 3))  # (B,C)
            ablated = original[:, :, None] + evidence.head.weight.float()[targets] * change[:, None, :]
        else:
            ablated = torch.stack([self._scores(evidence, b, float(ablated_value[b]))[:, targets[b]].T
                                   for b in range(activations.shape[0])])  # (B,K,C)
        weights = (original[:, :, None] - ablated) / original[:, :, None]
        return torch.einsum("bkc,bchw->bkhw", weights, activations)

    def _scores(self, evidence: LayerEvidence, index: int, value: float) -> torch.Tensor:
        """(C, classes): the network's logits with each channel ablated in turn."""
        features = evidence.activations[index]
        channels = features.shape[0]
        scores = []
        for start in range(0, channels, self.batch_size):
            chunk = features[None].repeat(min(self.batch_size, channels - start), 1, 1, 1)
            chunk[torch.arange(chunk.shape[0]), torch.arange(start, start + chunk.shape[0])] = value
            scores.append(evidence.head_of(index, chunk))
        return torch.cat(scores)
