from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import StreamcamError
from .base import InputGradients, PixelMethod, require_positive


@dataclass
class SmoothGrad(PixelMethod):
    """Mean |gradient| over `n` copies of the input with Gaussian noise of standard deviation
    `sigma` times the input's value range (Smilkov et al. recommend 0.1-0.2). Noise is seeded so that
    the same frame gives the same map; `batch_size` bounds the images per forward pass."""

    n: int = 25
    sigma: float = 0.15
    batch_size: int = 32
    seed: int = 0

    name = "smoothgrad"
    summary = "SmoothGrad (Smilkov et al. 2017): saliency averaged over noisy copies of the input"

    def __post_init__(self) -> None:
        require_positive(self.name, n=self.n, batch_size=self.batch_size)
        if not self.sigma >= 0:
            raise StreamcamError(f"{self.name}: sigma must be >= 0, got {self.sigma}")

    def raw_maps(self, inputs: torch.Tensor, targets: torch.Tensor, input_gradients: InputGradients) -> torch.Tensor:
        batch = inputs.shape[0]
        spread = self.sigma * (inputs.amax(dim=(1, 2, 3)) - inputs.amin(dim=(1, 2, 3))).view(batch, 1, 1, 1, 1)
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        per_pass = max(1, self.batch_size // batch)  # noisy copies of each image in one pass
        total = torch.zeros(batch, targets.shape[1], *inputs.shape[1:], device=inputs.device)
        for start in range(0, self.n, per_pass):
            copies = min(per_pass, self.n - start)
            noise = torch.randn((batch, copies, *inputs.shape[1:]), generator=generator, device=inputs.device)
            noisy = (inputs.unsqueeze(1) + spread * noise).flatten(0, 1)
            grads = input_gradients(noisy, targets.repeat_interleave(copies, dim=0))
            total += grads.abs().unflatten(0, (batch, copies)).sum(dim=1)
        return (total / self.n).amax(dim=2)
