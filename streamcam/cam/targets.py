"""Which class each map explains: the top-1, the top-k, or what the caller names (indices or names).

Strict like torchcam: an explicit list must have one entry per image, and every class must exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from ..errors import StreamcamError, unknown_name

Targets = int | str | Sequence[int | str] | Sequence[Sequence[int | str]] | torch.Tensor | None


def resolve_targets(
    targets: Targets, topk: int | None, logits: torch.Tensor, class_names: Sequence[str] | None
) -> tuple[torch.Tensor, bool]:
    """(B,K) int64 class indices on the logits' device, and whether the caller asked for K maps per
    image (topk, or a 2-D target list) rather than one."""
    batch, classes = logits.shape
    if topk is not None:
        if targets is not None:
            raise StreamcamError("give either targets or topk, not both")
        if not 1 <= topk <= classes:
            raise StreamcamError(f"topk must be between 1 and {classes} (the number of classes), got {topk}")
        return logits.topk(topk, dim=1).indices, True
    if targets is None:
        return logits.argmax(dim=1, keepdim=True), False

    if isinstance(targets, torch.Tensor):
        if targets.ndim > 2 or targets.is_floating_point():
            raise StreamcamError(f"targets must be integer class indices, shaped (B,) or (B,K); got {targets.dtype} {tuple(targets.shape)}")
        targets = targets.tolist()
    if isinstance(targets, (Integral, str)):  # one class for the whole batch
        targets = [targets] * batch
    if len(targets) != batch:
        raise StreamcamError(f"{len(targets)} targets for a batch of {batch} images; give one per image")
    multi = all(isinstance(t, Sequence) and not isinstance(t, str) for t in targets)
    rows = [list(t) if multi else [t] for t in targets]
    if multi and len({len(row) for row in rows}) != 1:
        raise StreamcamError("every image needs the same number of targets")
    indices = [[class_index(t, classes, class_names) for t in row] for row in rows]
    return torch.tensor(indices, dtype=torch.int64, device=logits.device), multi


def class_index(target: int | str, classes: int, class_names: Sequence[str] | None) -> int:
    """A class by index, by name, or by an index written as digits ("417", as the command line gives it)."""
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, str):
        if class_names is None:
            raise StreamcamError(f"class {target!r} given by name, but the model has no class names; use indices")
        try:
            return list(class_names).index(target)
        except ValueError:
            raise unknown_name("class", target, class_names) from None
    if isinstance(target, bool) or not isinstance(target, Integral):
        raise StreamcamError(f"a target must be a class index or name, got {target!r}")
    if not 0 <= target < classes:
        raise StreamcamError(f"class index {target} is out of range for a model with {classes} classes")
    return int(target)
