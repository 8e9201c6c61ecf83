"""The Explainer: a batch of normalised images in, heatmaps for the chosen classes out, on the model's device.

How the gradients are obtained decides the speed (docs/architecture.md):
- layer feeds only global average pooling + Linear (ResNet's layer4): d logit_c / d A = W[c] / (h*w)
  everywhere, so one forward pass under inference_mode gives everything; no backward at all;
- any other layer: the trunk runs without autograd, the head records a graph from the layer's output,
  and `torch.autograd.grad` differentiates with respect to that output only. Parameters are frozen, so
  no parameter gradient is ever computed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import StreamcamError, unknown_name
from ..models import LoadedModel
from ..plan import autocast, resolve_precision
from .base import CamMethod, LayerEvidence, LayerMethod
from .cells import CellCentres, CellsNotPlaced, derive_cell_centres
from .compiled import CompiledForward
from .layers import LayerShape, check_layer, find_linear_head, num_classes_of, resolve_layer
from .layout import Layout
from .maps import ALIGNMENTS, normalize_maps
from .methods import make_method
from .session import LayerTap, eval_mode, frozen_parameters
from .targets import Targets, resolve_targets

log = logging.getLogger("streamcam")


@dataclass(frozen=True)
class Explanation:
    """Heatmaps for one batch. With one class per image, maps are (B,H,W) and targets (B,); with topk=k
    (or k targets per image) they are (B,k,H,W) and (B,k)."""

    maps: torch.Tensor  # float32 in [0,1], at the input's resolution
    raw: torch.Tensor  # float32, at the layer's resolution, before ReLU and normalisation
    logits: torch.Tensor  # (B, classes) float32
    targets: torch.Tensor  # int64 class indices
    class_names: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def probabilities(self) -> torch.Tensor:
        """(B, classes) softmax of the logits."""
        return self.logits.softmax(dim=-1)

    @property
    def target_probabilities(self) -> torch.Tensor:
        """Probability of each explained class, shaped like `targets`."""
        flat = self.targets.reshape(self.targets.shape[0], -1)
        return self.probabilities.gather(1, flat).reshape(self.targets.shape)

    @property
    def labels(self) -> list:
        """Names (or indices, when the model has no names) of the explained classes, shaped like targets."""
        def name(index: int) -> str | int:
            return self.class_names[index] if self.class_names else index

        indices = self.targets.tolist()
        return [[name(i) for i in row] if isinstance(row, list) else name(row) for row in indices]


class Explainer:
    """Explain a classifier's decisions with a CAM `method` at `layer`.

    `model` is an nn.Module or what `load_model` returned (then class names come with it). `layer` is a
    dotted module name ("layer4", "layer3.5"); the default is the last feature map before global pooling.
    `precision` "auto" runs the network in bf16 (fp16 on older GPUs) on CUDA and on CPUs with bf16
    instructions, else in fp32 (plan.py); maps are always computed in fp32. `align` places layer cells
    when upsampling: "image" (pytorch-grad-cam's maps) or "receptive-field" (cells where they look,
    measured once; cam/cells.py). A layer whose output is channels-last (B,h,w,C), as Swin's stages
    are, or a grid of tokens (ViT's encoder) is seen as such and explained as (B,C,h,w) (layout.py).
    `compile` compiles the forward pass
    (cam/compiled.py) where no backward is needed: True, or the batch size to compile for (smaller
    batches are padded to it). Method options go in `options` (smoothgrad: n, sigma; scorecam:
    batch_size).

    The explainer holds no hooks between calls and restores eval/train and requires_grad flags, so the
    model can be used for plain inference in between.
    """

    def __init__(
        self,
        model: nn.Module | LoadedModel,
        method: str | CamMethod = "gradcam",
        layer: str | None = None,
        precision: str = "auto",
        *,
        class_names: Sequence[str] | None = None,
        align: str = "image",
        compile: bool | int = False,
        **options: object,
    ):
        if isinstance(model, LoadedModel):
            class_names = class_names if class_names is not None else model.class_names
            model = model.model
        self.model = model
        self.method = make_method(method, options)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        if align not in ALIGNMENTS:
            raise unknown_name("alignment", align, ALIGNMENTS)
        self.align = align
        self.layer: str | None = None
        self._head = None
        self._layout = Layout("nchw", 0, (0, 0))
        self.cell_centres: CellCentres | None = None  # where the layer's cells sit, for align receptive-field
        if isinstance(self.method, LayerMethod):
            self.layer, module = resolve_layer(model, layer)
            shape = check_layer(model, self.layer, module)
            self.num_classes, self._layout = shape.num_classes, shape.layout
            if shape.layout.kind == "nchw":
                self._head = find_linear_head(model, module, shape.layout.channels)
            self._tap = LayerTap(module)
            if align == "receptive-field":
                self._place_cells(shape)
            if self.method.needs_linear_head and self._head is None:
                raise StreamcamError(
                    f"{self.method.name} needs a layer that feeds global average pooling and the final "
                    f"Linear layer, and {self.layer!r} does not; use gradcam there"
                )
        elif layer is not None:
            raise StreamcamError(f"{self.method.name} explains input pixels and takes no layer")
        else:
            self.num_classes = num_classes_of(model)
        self._compiled = None
        if compile:
            if not self._inference_only:
                raise StreamcamError(
                    "--compile speeds up explanations without a backward pass: at the layer that feeds global "
                    "average pooling and the final Linear layer (the default), or with scorecam; "
                    f"{self.method.name} at {self.layer or 'the input'} needs gradients"
                )
            self._compiled = CompiledForward(model, self.layer, self.device, batch_size=int(compile))

    def _place_cells(self, shape: LayerShape) -> None:
        try:
            self.cell_centres = derive_cell_centres(self.model, self.layer, shape.probe_size, shape.layout.cells)
        except CellsNotPlaced as reason:
            log.warning("--align receptive-field: cannot place the cells of %s (%s); placing them as --align image "
                        "does", self.layer, reason)
            self.align = "image"

    @property
    def _inference_only(self) -> bool:
        """No autograd anywhere in a call: the analytic path, or a method that needs no gradients."""
        return isinstance(self.method, LayerMethod) and (self.analytic or not self.method.needs_gradients)

    @property
    def analytic(self) -> bool:
        """True when gradients come from the classifier's weights, with no backward pass."""
        return self._head is not None

    def __call__(self, x: torch.Tensor, targets: Targets = None, *, topk: int | None = None) -> Explanation:
        """Explain a normalised float batch x (B,3,H,W).

        targets: None for each image's top-1 class; one class index or name for all images; a list or
        tensor of B of them; a list of B lists of k; or topk=k for each image's k most likely classes.
        """
        x = self._check_input(x)
        # Under inference_mode (the analytic path) requires_grad flags do not matter; elsewhere frozen
        # parameters keep backward from ever computing a parameter gradient.
        frozen = contextlib.nullcontext() if self._inference_only else frozen_parameters(self.model)
        with eval_mode(self.model), frozen:
            if isinstance(self.method, LayerMethod):
                raw, logits, indices, multi = self._explain_layer(x, targets, topk)
            else:
                raw, logits, indices, multi = self._explain_pixels(x, targets, topk)
        maps = normalize_maps(raw, tuple(x.shape[-2:]), self.cell_centres)
        if not multi:
            maps, raw, indices = maps[:, 0], raw[:, 0], indices[:, 0]
        return Explanation(maps, raw, logits, indices, self.class_names)

    def _explain_layer(self, x: torch.Tensor, targets: Targets, topk: int | None):
        needs_gradients = self.method.needs_gradients and not self.analytic
        activations, logits = self._layer_forward(x, needs_gradients)
        indices, multi = resolve_targets(targets, topk, logits.detach(), self.class_names)
        gradients = self._target_gradients(logits, activations, indices) if needs_gradients else None
        layer_output = activations.detach()
        activations = self._layout.to_nchw(layer_output)  # NHWC and tokens as (B,C,h,w); gradients (B,K,...) alike
        gradients = None if gradients is None else self._layout.to_nchw(gradients, lead=2)
        with torch.inference_mode():
            activations = activations.float()
            head_weights = None
            if self.analytic:
                head_weights = self._head.linear.weight.float()[indices]  # (B,K,C)
                if self.method.needs_gradients:
                    gradients = self._analytic_gradients(head_weights, activations)
            evidence = LayerEvidence(x, activations, indices, gradients, head_weights, self._logits_of,
                                     logits.detach().float(), self._head.linear if self.analytic else None,
                                     functools.partial(self._logits_from_features, x, layer_output))
            raw = self.method.raw_maps(evidence)
        return raw, logits.detach().float(), indices, multi

    def _layer_forward(self, x: torch.Tensor, needs_gradients: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(the layer's activation, the logits). The trunk never needs a graph; with `needs_gradients`
        the tap turns autograd on for the head, from the layer's output."""
        trunk_mode = torch.no_grad() if needs_gradients else torch.inference_mode()
        with trunk_mode, autocast(self.device, self.precision):
            if self._compiled is not None:
                return self._compiled(x)
            with self._tap.attached(), self._tap.capture(grad=needs_gradients) as tap:
                logits = self.model(x)
                return tap.activation, logits

    def _logits_from_features(self, x: torch.Tensor, layer_output: torch.Tensor, index: int,
                              features: torch.Tensor) -> torch.Tensor:
        """The rest of the network on substitute activations (N,C,h,w) of image `index`: the trunk runs on
        that image once and the layer's output is replaced by the whole batch, as Recipro-CAM's authors do.
        A network that mixes the trunk's tensors with the layer's after it gets the image N times instead."""
        substitute = self._layout.from_nchw(features, layer_output[index:index + 1])

        def replace(module, inputs, output):
            return substitute.to(output.dtype)

        handle = self._tap.module.register_forward_hook(replace)
        try:
            with torch.inference_mode(), autocast(self.device, self.precision):
                try:
                    logits = self.model(x[index:index + 1])
                except RuntimeError:  # shapes of batch 1 and N met after the layer
                    logits = None
                if logits is None or logits.shape[0] != features.shape[0]:
                    logits = self.model(x[index:index + 1].expand(features.shape[0], *x.shape[1:]))
        finally:
            handle.remove()
        return logits.float()

    def _explain_pixels(self, x: torch.Tensor, targets: Targets, topk: int | None):
        logits = self._logits_of(x)
        indices, multi = resolve_targets(targets, topk, logits, self.class_names)
        raw = self.method.raw_maps(x, indices, self._input_gradients)
        return raw.detach(), logits, indices, multi

    @staticmethod
    def _analytic_gradients(head_weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
        """d logit / d A for Linear(GAP(A)): the class's weight row spread evenly over the h*w positions.
        (B,K,C,h,w) as an expanded view; nothing is materialised."""
        height, width = activations.shape[-2:]
        per_position = head_weights / (height * width)
        return per_position[..., None, None].expand(*per_position.shape, height, width)

    def _input_gradients(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad(), autocast(self.device, self.precision):
            logits = self.model(inputs)
        return self._target_gradients(logits, inputs, targets)

    @staticmethod
    def _target_gradients(logits: torch.Tensor, wrt: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """d logits[b, targets[b,k]] / d wrt[b] for every k: (B,K,*wrt.shape[1:]) fp32.

        Summing the scores over the batch is exact because images do not interact in eval mode.
        """
        count = targets.shape[1]
        gradients = []
        for k in range(count):
            score = logits.gather(1, targets[:, k:k + 1]).sum()
            (gradient,) = torch.autograd.grad(score, wrt, retain_graph=k < count - 1, allow_unused=True)
            gradients.append(torch.zeros_like(wrt) if gradient is None else gradient)
        return torch.stack(gradients, dim=1).float()

    def _logits_of(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.model(inputs).float()

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise StreamcamError(f"expected a normalised float batch shaped (B,3,H,W), got {shape}")
        return x.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        path = "analytic" if self.analytic else "autograd"
        where = f", layer={self.layer!r} ({path})" if self.layer else ""
        return f"Explainer(method={self.method.name!r}{where}, precision={self.precision!r}, device={self.device})"
