"""Is a map faithful? Whether the pixels a map marks are the ones the model's score depends on.

For an input x, its class c and its map E(x) in [0,1] at the input's resolution, with s = the softmax
probability of c:
- Average Drop: max(0, s(x) - s(x*E)) / s(x); Increase in Confidence: s(x*E) > s(x) (Chattopadhyay et
  al. 2018). The map masks the normalised input, as torchcam's ClassificationMetric does.
- Coherency: (Pearson(E(x), E(x*E(x))) + 1) / 2; Complexity: mean |E(x)|; ADCC: the harmonic mean of
  coherency, 1 - complexity and 1 - average drop, from their means (Poppi et al. 2021, aimagelab/ADCC).
- Deletion and insertion AUC (Petsiuk et al. 2018): pixels in the map's order (hottest first) are
  replaced by a baseline, or revealed on it, `steps` at a time; the area under s over the fraction
  changed. The baseline is zeros of the normalised input (the dataset's mean colour) or a blur of the
  image, as in RISE; ranks, steps and the trapezoid follow torchcam's DeletionInsertionMetric.

Everything is batched on the model's device: the masked copies of a whole batch go through the model
together, `copies_per_pass` at a time (not a loop per image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import StreamcamError
from .plan import autocast

BASELINES = ("zeros", "blur")
METRICS = ("average_drop", "increase_in_confidence", "coherency", "complexity", "adcc", "deletion_auc",
           "insertion_auc")
_EPSILON = 1e-7  # torchcam's, so a score of 0 cannot divide by zero
# Masked copies per forward pass. On this project's 2-core CPU, 16 took 440 ms per frame (ResNet-18,
# 400x224, 20 steps), 64 took 568 and 8 took 486; a GPU may want more.
COPIES_PER_PASS = 16


@dataclass(frozen=True)
class Faithfulness:
    """Means over the evaluated images (floats), with each image's values in `per_image` (tensors (N,),
    under the same names; ADCC is defined on the means only)."""

    average_drop: float
    increase_in_confidence: float
    coherency: float
    complexity: float
    adcc: float
    deletion_auc: float
    insertion_auc: float
    per_image: dict[str, torch.Tensor] = field(repr=False)

    @classmethod
    def from_images(cls, per_image: dict[str, torch.Tensor]) -> Faithfulness:
        means = {name: float(values.float().mean()) for name, values in per_image.items()}
        return cls(**means, adcc=adcc(means["average_drop"], means["coherency"], means["complexity"]),
                   per_image=per_image)

    @staticmethod
    def combine(parts: list[Faithfulness]) -> Faithfulness:
        """One result over several batches."""
        names = parts[0].per_image
        return Faithfulness.from_images({name: torch.cat([part.per_image[name] for part in parts]) for name in names})

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in METRICS}


def adcc(average_drop: float, coherency: float, complexity: float) -> float:
    """3 / (1/coherency + 1/(1 - complexity) + 1/(1 - average drop)); 0 when any term is 0."""
    terms = (coherency, 1 - complexity, 1 - average_drop)
    return 0.0 if min(terms) <= 0 else 3 / sum(1 / term for term in terms)


def class_scores(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, precision: str,
                 copies_per_pass: int = COPIES_PER_PASS) -> torch.Tensor:
    """(N,) softmax probability of each image's class, at the given precision, softmax in fp32."""
    scores = []
    with torch.inference_mode(), autocast(x.device, precision):
        for start in range(0, x.shape[0], copies_per_pass):
            logits = model(x[start:start + copies_per_pass]).float()
            scores.append(logits.softmax(dim=-1).gather(1, classes[start:start + copies_per_pass, None])[:, 0])
    return torch.cat(scores)


def average_drop(scores: torch.Tensor, masked_scores: torch.Tensor) -> torch.Tensor:
    return torch.relu(scores - masked_scores) / (scores + _EPSILON)


def increase_in_confidence(scores: torch.Tensor, masked_scores: torch.Tensor) -> torch.Tensor:
    return (masked_scores > scores).float()


def coherency(maps: torch.Tensor, maps_of_masked: torch.Tensor) -> torch.Tensor:
    """(Pearson + 1) / 2 per image; a flat map has no correlation (0), so its coherency is 0.5."""
    a = maps.flatten(1).double()
    b = maps_of_masked.flatten(1).double()
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    spread = a.norm(dim=1) * b.norm(dim=1)
    pearson = torch.where(spread > 0, (a * b).sum(dim=1) / spread.clamp_min(1e-300), torch.zeros_like(spread))
    return ((pearson + 1) / 2).float()


def complexity(maps: torch.Tensor) -> torch.Tensor:
    return maps.abs().flatten(1).mean(dim=1)


def baseline_of(x: torch.Tensor, baseline: str) -> torch.Tensor:
    """What deleted pixels become: zeros of the normalised input, or RISE's blur (11x11, sigma 5)."""
    check_settings(1, baseline, 1)
    if baseline == "zeros":
        return torch.zeros_like(x)
    coordinates = torch.arange(11, device=x.device, dtype=torch.float32) - 5
    kernel = torch.exp(-coordinates ** 2 / (2 * 5.0 ** 2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    blurred = F.conv2d(F.pad(x, (5, 5, 0, 0), mode="reflect"), kernel.view(1, 1, 1, 11).repeat(channels, 1, 1, 1),
                       groups=channels)
    return F.conv2d(F.pad(blurred, (0, 0, 5, 5), mode="reflect"), kernel.view(1, 1, 11, 1).repeat(channels, 1, 1, 1),
                    groups=channels)


def check_settings(steps: int, baseline: str, copies_per_pass: int) -> None:
    """One clear line for a setting out of range, before any work."""
    for name, value in (("steps", steps), ("copies_per_pass", copies_per_pass)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise StreamcamError(f"{name} must be a positive whole number, got {value!r}")
    if baseline not in BASELINES:
        raise StreamcamError(f"unknown baseline {baseline!r}; choose {' or '.join(BASELINES)}")


def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
                       scores: torch.Tensor, *, steps: int = 20, baseline: str = "zeros", precision: str = "fp32",
                       copies_per_pass: int = COPIES_PER_PASS) -> tuple[torch.Tensor, torch.Tensor]:
    """(deletion AUC, insertion AUC), each (N,). `scores` are s(x), the curves' known ends."""
    check_settings(steps, baseline, copies_per_pass)
    batch, positions = x.shape[0], maps[0].numel()
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)  # (N, H*W): 0 for the hottest pixel
    step = -(-positions // steps)
    counts = torch.tensor([*range(0, positions, step), positions], device=x.device)
    fractions = counts.float() / positions
    interior = counts[1:-1]
    # Per image: deletion's interior points, insertion's interior points, then the all-baseline input
    # (deletion's last point and insertion's first).
    changed = torch.cat([interior, interior, counts[-1:]])  # (P,) pixels taken from the hottest first
    revealed = torch.cat([torch.zeros_like(interior, dtype=torch.bool), torch.ones_like(interior, dtype=torch.bool),
                          torch.zeros(1, dtype=torch.bool, device=x.device)])
    base = baseline_of(x, baseline)
    flat_x, flat_base, points = x.flatten(2), base.flatten(2), changed.numel()
    copy_scores = []
    for start in range(0, batch * points, copies_per_pass):  # copies built a pass at a time: memory stays flat
        index = torch.arange(start, min(start + copies_per_pass, batch * points), device=x.device)
        image, point = index // points, index % points
        keep_original = (ranks[image] < changed[point, None]) == revealed[point, None]  # (k, H*W)
        copies = torch.where(keep_original[:, None], flat_x[image], flat_base[image]).view(-1, *x.shape[1:])
        copy_scores.append(class_scores(model, copies, classes[image], precision, copies_per_pass))
    copy_scores = torch.cat(copy_scores).view(batch, points)
    middle, empty = interior.numel(), copy_scores[:, -1:]
    deletion = torch.cat([scores[:, None], copy_scores[:, :middle], empty], dim=1)
    insertion = torch.cat([empty, copy_scores[:, middle:2 * middle], scores[:, None]], dim=1)
    return torch.trapezoid(deletion, fractions, dim=1), torch.trapezoid(insertion, fractions, dim=1)
