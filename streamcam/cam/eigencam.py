from __future__ import annotations

import torch

from .base import LayerEvidence, LayerMethod


def first_component(maps: torch.Tensor) -> torch.Tensor:
    """(N,C,h,w) -> (N,h,w): each map's projection on the first principal component of its positions
    (positions are samples, channels are features, centred per channel), as pytorch-grad-cam's
    get_2d_projection. An SVD's sign is arbitrary; it is fixed so that the projection correlates
    positively with the channels' mean map (a choice of streamcam: the peers leave it to LAPACK)."""
    samples = torch.nan_to_num(maps.float()).flatten(2).transpose(1, 2)  # (N, h·w, C)
    samples = samples - samples.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(samples, full_matrices=False)
    projection = samples @ vh[:, 0, :, None]  # (N, h·w, 1)
    mean_map = maps.float().mean(dim=1).flatten(1)
    mean_map = mean_map - mean_map.mean(dim=1, keepdim=True)
    sign = torch.sign((projection[..., 0] * mean_map).sum(dim=1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (projection[..., 0] * sign[:, None]).reshape(maps.shape[0], *maps.shape[2:])


class EigenCAM(LayerMethod):
    """Class-agnostic and gradient-free (Muhammad & Yeasin 2020): the first principal component of the
    activations. The method the peers suggest for models without usable gradients (detectors)."""

    name = "eigencam"
    summary = "EigenCAM (Muhammad & Yeasin 2020): first principal component of the activations; class-agnostic"
    needs_gradients = False

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        projection = first_component(evidence.activations)  # (B,h,w), the same for every class
        return projection[:, None].expand(-1, evidence.targets.shape[1], -1, -1)


class EigenGradCAM(LayerMethod):
    """EigenCAM of gradient × activation: class-specific (pytorch-grad-cam's EigenGradCAM)."""

    name = "eigengradcam"
    summary = "EigenGradCAM: first principal component of gradient x activation"

    def raw_maps(self, evidence: LayerEvidence) -> torch.Tensor:
        weighted = evidence.gradients * evidence.activations[:, None]  # (B,K,C,h,w)
        batch, classes = weighted.shape[:2]
        return first_component(weighted.flatten(0, 1)).reshape(batch, classes, *weighted.shape[-2:])
