"""Find explainable layers of a CNN by running it on probe images, and recognise a GAP -> Linear head.

Torchvision models do not share one structure (ResNet's `layer4 -> avgpool -> fc`, EfficientNet's
`features -> avgpool -> classifier[1]`, ...), so instead of a table of families we watch one small
forward pass (at two sizes, to see which dimensions are spatial): every module that returns a spatial
feature map exactly once is a candidate layer, and the last one before global pooling is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StreamcamError, unknown_name
from .session import eval_mode

PROBE_SIZE = 128  # small enough to be cheap, large enough for Inception (>= 75) and 5 stride-2 stages
PROBE_GROWTH = 32  # a second probe, this much larger, tells the spatial dimensions from the others
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass(frozen=True)
class FeatureLayer:
    name: str
    channels: int
    stride: int  # input pixels per feature-map cell
    aliases: tuple[str, ...] = ()  # other modules returning the same tensor (layer4.2 for layer4)
    channels_last: bool = False  # outputs (B,h,w,C), as Swin's stages do; CAMs permute it to (B,C,h,w)


@dataclass(frozen=True)
class LinearHead:
    """The layer's map reaches the logits only through global average pooling and this Linear layer."""

    linear: nn.Linear


@dataclass(frozen=True)
class LayerShape:
    """What a probe of the explained layer found."""

    channels: int
    channels_last: bool
    num_classes: int
    cells: tuple[int, int]  # the map's (h, w) for a PROBE_SIZE² input


def _spatial_layout(small: torch.Size, large: torch.Size) -> bool | None:
    """Whether a 4-D output is channels-last, from its shapes for two input sizes: the dimensions that grow
    with the input are the spatial ones. None when it is not a spatial map at all."""
    if len(small) != 4 or len(large) != 4:
        return None
    grown = [d for d in (1, 2, 3) if small[d] != large[d]]
    if grown == [2, 3] and min(small[2:]) >= 2:
        return False
    if grown == [1, 2] and min(small[1:3]) >= 2:
        return True
    return None


def feature_layers(model: nn.Module, max_depth: int | None = None) -> list[FeatureLayer]:
    """Modules that output a spatial map (B,C,h,w), or (B,h,w,C), with h, w > 1, called once per forward,
    in the order they finish (forward hooks fire on return, so a container comes right after its last
    child). Which dimensions are spatial is seen, not guessed: they are the ones that grow with the input.

    Several names can return the same tensor (`layer4` and `layer4.2`); the shortest name is kept.
    Pooling layers are skipped: their output is a summary, not a place in the image.
    """
    named = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, _POOLING)]
    small, calls, order = _record_outputs(model, named, PROBE_SIZE)
    large, _, _ = _record_outputs(model, named, PROBE_SIZE + PROBE_GROWTH)

    names_by_output: dict[int, list[str]] = {}  # id(output tensor) -> names, in finishing order
    layouts: dict[str, bool] = {}
    for name in order:
        out = small[name]
        if calls[name] != 1 or not isinstance(out, torch.Tensor) or not isinstance(large.get(name), torch.Tensor):
            continue
        if max_depth is not None and name.count(".") >= max_depth:
            continue
        layout = _spatial_layout(out.shape, large[name].shape)
        if layout is not None:
            layouts[name] = layout
            names_by_output.setdefault(id(out), []).append(name)

    layers = []
    for names in sorted(names_by_output.values(), key=lambda names: order.index(names[-1])):
        shortest = min(names, key=len)
        out, channels_last = small[shortest], layouts[shortest]
        width, channels = (out.shape[2], out.shape[3]) if channels_last else (out.shape[3], out.shape[1])
        stride = max(1, round(PROBE_SIZE / width))
        layers.append(FeatureLayer(shortest, channels, stride, tuple(n for n in names if n != shortest), channels_last))
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
    """The module for a dotted `name`, or the default: the last feature layer before global pooling."""
    if name is None:
        layers = feature_layers(model)
        if not layers:
            raise StreamcamError(
                f"{type(model).__name__} has no convolutional feature map to explain (CNNs only)"
            )
        name = layers[-1].name
    try:
        module = model.get_submodule(name)
    except AttributeError:
        valid = [layer.name for layer in feature_layers(model, max_depth=2)]
        raise unknown_name("layer", name, valid, hint="(`streamcam layers MODEL` lists them)") from None
    if module is model:
        raise StreamcamError("the layer must be a submodule of the model, not the whole model")
    return name, module


def check_layer(model: nn.Module, name: str, module: nn.Module) -> LayerShape:
    """Probe forwards at two input sizes: `module` must yield one spatial map per forward, whose spatial
    dimensions (the ones that grow with the input) tell NCHW from channels-last."""
    shapes, logits = [], None
    for size in (PROBE_SIZE, PROBE_SIZE + PROBE_GROWTH):
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
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise StreamcamError(f"layer {name!r} outputs {shape}, not a (B,C,H,W) feature map")
        shapes.append(out.shape)
    channels_last = _spatial_layout(*shapes)
    if channels_last is None:
        raise StreamcamError(f"layer {name!r} outputs {tuple(shapes[0])}, whose dimensions do not grow with the "
                             "input as an image's do; pick a layer with a spatial feature map (`streamcam layers`)")
    shape = shapes[0]
    channels, cells = (shape[3], shape[1:3]) if channels_last else (shape[1], shape[2:])
    return LayerShape(int(channels), channels_last, int(logits.shape[-1]), tuple(int(n) for n in cells))


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


def _probe_forward(model: nn.Module, size: int = PROBE_SIZE) -> object:
    """One forward pass of two random images in eval mode, under whatever hooks the caller set."""
    device = next(model.parameters()).device
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with eval_mode(model), torch.inference_mode():
            return model(probe)
    except Exception as error:  # noqa: BLE001 - any failure of the user's model, said in one line
        raise StreamcamError(f"{type(model).__name__} failed on a probe image: {error}") from None
