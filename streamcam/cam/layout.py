"""How a layer's output holds its map, seen from its shapes, and the reshape to (B,C,h,w) that CAMs use.

- "nchw": a CNN's feature map (B,C,h,w);
- "nhwc": channels last (B,h,w,C), as Swin's stages give it;
- "tokens": a transformer's (B, [class token +] h·w, C), as ViT's encoder gives it; the class token is
  left out of the map. This is pytorch-grad-cam's `reshape_transform`, found instead of written.

With probes at two input sizes, the dimensions that grow with the input are the spatial ones. A model
that takes one input size only (ViT, MaxViT) gets one probe: its 4-D outputs are read as NCHW, and its
3-D outputs as tokens when their count is a square grid (with or without one class token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    kind: str  # "nchw", "nhwc" or "tokens"
    channels: int
    cells: tuple[int, int]  # (h, w) for the probe's input
    class_token: bool = False  # tokens: the first one is the class token

    def to_nchw(self, tensor: torch.Tensor, lead: int = 1) -> torch.Tensor:
        """The layer's output (or its gradients), with `lead` leading dimensions (B, or B,K), as (...,C,h,w)."""
        if self.kind == "nchw":
            return tensor
        if self.kind == "nhwc":
            return tensor.movedim(-1, lead)
        tokens = tensor[..., 1:, :] if self.class_token else tensor
        side = math.isqrt(tokens.shape[-2])
        grid = tokens.reshape(*tokens.shape[:-2], side, tokens.shape[-2] // side, tokens.shape[-1])
        return grid.movedim(-1, lead)

    def from_nchw(self, features: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """(N,C,h,w) features back in the layer's layout; tokens take the class token of `original` (1, ...)."""
        if self.kind == "nchw":
            return features
        if self.kind == "nhwc":
            return features.permute(0, 2, 3, 1)
        tokens = features.flatten(2).transpose(1, 2)
        if self.class_token:
            tokens = torch.cat([original[:1, :1].expand(features.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens


def _square(count: int) -> int | None:
    side = math.isqrt(count)
    return side if side >= 2 and side * side == count else None


def layout_of(shapes: list[torch.Size]) -> Layout | None:
    """The layout of an output with these shapes, one per probe size; None when it is not a map."""
    first = shapes[0]
    grown = [d for d in range(1, len(first)) if any(shape[d] != first[d] for shape in shapes[1:])]
    two_sizes = len(shapes) > 1
    if len(first) == 4:
        if (grown == [2, 3] or not two_sizes) and min(first[2:]) >= 2:
            return Layout("nchw", int(first[1]), (int(first[2]), int(first[3])))
        if grown == [1, 2] and min(first[1:3]) >= 2:
            return Layout("nhwc", int(first[3]), (int(first[1]), int(first[2])))
        return None
    if len(first) == 3 and (grown == [1] or not two_sizes):
        count = int(first[1])
        for class_token, patches in ((False, count), (True, count - 1)):
            if (side := _square(patches)) is not None:
                return Layout("tokens", int(first[2]), (side, side), class_token)
    return None
