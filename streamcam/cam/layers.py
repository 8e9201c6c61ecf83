"""Find explainable layers of a CNN by running it on probe images, and recognise a GAP -> Linear head.

Torchvision models do not share one structure (ResNet's `layer4 -> avgpool -> fc`, EfficientNet's
`features -> avgpool -> classifier[1]`, ...), so instead of a table of families we watch one small
forward pass (at two sizes, to see which dimensions are spatial): every module that returns a spatial
feature map exactly once is a candidate layer, and the last one before global pooling is the default.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StreamcamError, unknown_name
from .layout import Layout, layout_of
from .session import eval_mode, frozen_parameters

PROBE_SIZE = 128  # small enough to be cheap, large enough for Inception (>= 75) and 5 stride-2 stages
PROBE_GROWTH = 32  # a second probe, this much larger, tells the spatial dimensions from the others
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass(frozen=True)
class FeatureLayer:
    name: str
    layout: Layout
    stride: int  # input pixels per feature-map cell
    aliases: tuple[str, ...] = ()  # other modules returning the same tensor (layer4.2 for layer4)

    @property
    def channels(self) -> int:
        return self.layout.channels


@dataclass(frozen=True)
class LinearHead:
    """The layer's map reaches the logits only through global average pooling and this Linear layer."""

    linear: nn.Linear


@dataclass(frozen=True)
class LayerShape:
    """What a probe of the explained layer found."""

    layout: Layout  # its channels and its cells for the first probe size
    num_classes: int
    probe_size: int


_SIZES: weakref.WeakKeyDictionary[nn.Module, tuple[int, ...]] = weakref.WeakKeyDictionary()
_FIXED_SIZES = (224, 256, 299, 384, 518)  # what models that take one input size take (ViT, MaxViT, ...)


def probe_sizes(model: nn.Module) -> tuple[int, ...]:
    """The square input sizes probes use: PROBE_SIZE and a larger one, whose outputs tell the spatial
    dimensions apart; or, for a model whose forward takes one size only (ViT, MaxViT), that size."""
    if model in _SIZES:
        return _SIZES[model]
    try:
        _raw_probe(model, PROBE_SIZE)
        _raw_probe(model, PROBE_SIZE + PROBE_GROWTH)
        sizes = (PROBE_SIZE, PROBE_SIZE + PROBE_GROWTH)
    except Exception as refused:  # noqa: BLE001 - any failure of the user's model: try the sizes models insist on
        sizes = None
        for size in dict.fromkeys((getattr(model, "image_size", None), *_FIXED_SIZES)):
            try:
                if size:
                    _raw_probe(model, size)
                    sizes = (size,)
                    break
            except Exception:  # noqa: BLE001 - the next size
                continue
        if sizes is None:
            raise StreamcamError(f"{type(model).__name__} failed on a probe image: {refused}") from None
    _SIZES[model] = sizes
    return sizes


def fixed_input_size(model: nn.Module) -> int | None:
    """The one input size of a model whose forward takes no other (ViT: 224), else None."""
    sizes = probe_sizes(model)
    return sizes[0] if len(sizes) == 1 else None


def feature_layers(model: nn.Module, max_depth: int | None = None) -> list[FeatureLayer]:
    """Modules that output a spatial map (layout.py: NCHW, NHWC or a grid of tokens) with h, w > 1, called
    once per forward, in the order they finish (forward hooks fire on return, so a container comes right
    after its last child). Which dimensions are spatial is seen, not guessed.

    Several names can return the same tensor (`layer4` and `layer4.2`); the shortest name is kept.
    Pooling layers are skipped: their output is a summary, not a place in the image.
    """
    named = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, _POOLING)]
    sizes = probe_sizes(model)
    probes = [_record_outputs(model, named, size) for size in sizes]
    first, calls, order = probes[0]

    names_by_output: dict[int, list[str]] = {}  # id(output tensor) -> names, in finishing order
    layouts: dict[str, Layout] = {}
    for name in order:
        outputs = [outputs.get(name) for outputs, _, _ in probes]
        if calls[name] != 1 or not all(isinstance(out, torch.Tensor) for out in outputs):
            continue
        if max_depth is not None and name.count(".") >= max_depth:
            continue
        layout = layout_of([out.shape for out in outputs])
        if layout is not None:
            layouts[name] = layout
            names_by_output.setdefault(id(first[name]), []).append(name)

    layers = []
    for names in sorted(names_by_output.values(), key=lambda names: order.index(names[-1])):
        shortest = min(names, key=len)
        layout = layouts[shortest]
        stride = max(1, round(sizes[0] / layout.cells[1]))
        layers.append(FeatureLayer(shortest, layout, stride, tuple(n for n in names if n != shortest)))
    return layers


def _record_outputs(model: nn.Module, named: list[tuple[str, nn.Module]], size: int):
    """(output of each module, how often it ran, the order they finished in) for one probe forward."""
    outputs: dict[str, object] = {}
    calls: dict[str, int] = {}
    order: list[str] = []

    def record(name: str):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in outputs:
                order.append(name)
            outputs[name] = output

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in named]
    try:
        _probe_forward(model, size)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, calls, order


def resolve_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """The module for a dotted `name`, or the default: the last feature layer before global pooling whose
    map the classifier sees. (A ViT's last blocks hand the class token on alone: their patch tokens
    reach no class, so its default is the last block's first norm, as the peers advise.)"""
    if name is None:
        layers = feature_layers(model)
        tokens = [layer for layer in layers if layer.layout.kind == "tokens"]
        seen = _seen_by_the_classifier(model, tokens) if layers and layers[-1].layout.kind == "tokens" else set()
        candidates = [layer for layer in layers if layer.layout.kind != "tokens" or layer.name in seen]
        if not candidates:
            raise StreamcamError(f"{type(model).__name__} has no feature map to explain (CNNs and vision transformers)")
        name = candidates[-1].name
    try:
        module = model.get_submodule(name)
    except AttributeError:
        valid = [layer.name for layer in feature_layers(model, max_depth=2)]
        raise unknown_name("layer", name, valid, hint="(`streamcam layers MODEL` lists them)") from None
    if module is model:
        raise StreamcamError("the layer must be a submodule of the model, not the whole model")
    return name, module


def _seen_by_the_classifier(model: nn.Module, layers: list[FeatureLayer]) -> set[str]:
    """The token layers whose patch tokens the classifier's input depends on: one backward pass from the
    last Linear layer's input (not the logits, which a fresh ViT's zeroed head makes constant)."""
    outputs: dict[str, torch.Tensor] = {}
    features: list[torch.Tensor] = []

    def keep(name: str):
        def hook(module, inputs, output):
            if output.requires_grad:
                output.retain_grad()
                outputs[name] = output
        return hook

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    handles = [model.get_submodule(layer.name).register_forward_hook(keep(layer.name)) for layer in layers]
    if linears:
        handles.append(linears[-1].register_forward_pre_hook(lambda m, inputs: features.append(inputs[0])))
    try:
        with eval_mode(model), frozen_parameters(model), torch.enable_grad():
            logits = model(_probe_images(model, probe_sizes(model)[0]).requires_grad_(True))
            (features[-1] if features else logits).pow(2).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return {layer.name for layer in layers if layer.name in outputs and outputs[layer.name].grad is not None
            and bool(layer.layout.to_nchw(outputs[layer.name].grad).abs().sum() > 0)}


def check_layer(model: nn.Module, name: str, module: nn.Module) -> LayerShape:
    """Probe forwards at the probe sizes: `module` must yield one spatial map per forward (layout.py)."""
    shapes, logits = [], None
    sizes = probe_sizes(model)
    for size in sizes:
        outputs: list[object] = []
        handle = module.register_forward_hook(lambda m, i, o, found=outputs: found.append(o))
        try:
            logits = _probe_forward(model, size)
        finally:
            handle.remove()
        if len(outputs) != 1:
            raise StreamcamError(
                f"layer {name!r} runs {len(outputs)} times per forward pass; pick a block that runs once"
            )
        out = outputs[0]
        if not isinstance(out, torch.Tensor) or out.ndim not in (3, 4):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise StreamcamError(f"layer {name!r} outputs {shape}, not a (B,C,H,W) feature map")
        shapes.append(out.shape)
    layout = layout_of(shapes)
    if layout is None:
        raise StreamcamError(f"layer {name!r} outputs {tuple(shapes[0])}, whose dimensions do not grow with the "
                             "input as an image's do; pick a layer with a spatial feature map (`streamcam layers`)")
    return LayerShape(layout, int(logits.shape[-1]), sizes[0])


def num_classes_of(model: nn.Module) -> int:
    """The number of logits, from a probe forward."""
    return int(_probe_forward(model).shape[-1])


def find_linear_head(model: nn.Module, module: nn.Module, channels: int) -> LinearHead | None:
    """Return the head if the logits are exactly Linear(mean over h,w of the layer's output).

    Verified, not assumed: the layer's output is replaced by random values of both signs and the model's
    logits are compared with Linear(GAP(random)). A ReLU, a second path or any other layer in between
    breaks the equality, and then gradients must come from autograd.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == channels]
    if not linears:
        return None
    linear = linears[-1]
    generator = torch.Generator(device="cpu").manual_seed(0)
    replacement: list[torch.Tensor] = []

    def substitute(m, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            return None
        fake = torch.randn(output.shape, generator=generator).to(output.device, output.dtype)
        replacement.append(fake)
        return fake

    handle = module.register_forward_hook(substitute)
    try:
        logits = _probe_forward(model)
    finally:
        handle.remove()
    if len(replacement) != 1 or not isinstance(logits, torch.Tensor):
        return None
    with torch.inference_mode():
        expected = F.linear(replacement[0].float().mean((2, 3)), linear.weight.float(), _float(linear.bias))
    if logits.shape != expected.shape:
        return None
    tolerance = 1e-4 * (1 + expected.abs().max())
    return LinearHead(linear) if (logits.float() - expected).abs().max() <= tolerance else None


def _float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()


def _probe_images(model: nn.Module, size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)


def _raw_probe(model: nn.Module, size: int) -> object:
    with eval_mode(model), torch.inference_mode():
        return model(_probe_images(model, size))


def _probe_forward(model: nn.Module, size: int | None = None) -> object:
    """One forward pass of two random images in eval mode, under whatever hooks the caller set."""
    size = size or probe_sizes(model)[0]
    try:
        return _raw_probe(model, size)
    except Exception as error:  # noqa: BLE001 - any failure of the user's model, said in one line
        raise StreamcamError(f"{type(model).__name__} failed on a probe image: {error}") from None
