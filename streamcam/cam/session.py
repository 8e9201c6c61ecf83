"""Temporary changes to a model while it is explained, all undone on exit.

After an explanation the model must behave exactly as before: same train/eval flags, same
`requires_grad` flags, no hooks left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm uses running stats, dropout is off); restores each module's own flag."""
    training = [module for module in model.modules() if module.training]
    for module in training:
        module.training = False
    try:
        yield
    finally:
        for module in training:
            module.training = True


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter records autograd history, so backward never computes a parameter gradient."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


class LayerTap:
    """A forward hook on the explained layer that captures its output.

    With `grad=True` it also makes the rest of the forward pass record autograd history starting at the
    layer: the trunk before it ran without a graph, so the model is split at the layer and backward only
    goes through the head.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.activation: torch.Tensor | None = None
        self.armed = False
        self.grad = False

    @contextlib.contextmanager
    def attached(self) -> Iterator[LayerTap]:
        handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()
            self.activation = None
            self.armed = False

    @contextlib.contextmanager
    def capture(self, grad: bool) -> Iterator[LayerTap]:
        self.armed, self.grad, self.activation = True, grad, None
        try:
            yield self
        finally:
            self.armed = False

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        if not self.armed:
            return None
        if self.grad:
            torch.set_grad_enabled(True)  # restored by the caller's torch.no_grad() on exit
            self.activation = output.detach().requires_grad_(True)
            # A copy goes on: the next module may work in place (SqueezeNet's ReLU(inplace=True)), which
            # a tensor that autograd differentiates with respect to must not undergo.
            return self.activation.clone()
        self.activation = output
        return output
