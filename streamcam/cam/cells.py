"""Where a layer's cells sit in the input image, for placing its upsampled maps (`align`).

- "image" (pytorch-grad-cam and most tools): the map is a small image covering the input, so cell i is
  centred at (i + 0.5) * stride - 0.5.
- "receptive-field": cell i is centred where its receptive field is, at offset + i * stride. Both are
  derived from the model, not assumed: its graph is traced (torch.fx, as torchvision's feature
  extraction does) from the input to the layer, and every convolution and pooling window on the way
  moves the centre by ((kernel - 1) / 2 * dilation - padding) of its input's cells. ResNet's convolutions
  pad by half their kernel, so there the offset is 0 and the "image" reading puts maps 15.5 pixels too
  far right and down at layer4; VGG's and ConvNeXt's 2x2 downsampling puts the centres at 15.5, where
  the image reading has them; Inception-v3's unpadded stem moves them right and down. The derivation is
  checked against the layer's real size; where it cannot be made (a model torch.fx cannot trace, token
  layers), maps are placed as with "image", and the Explainer says so in one line.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CellCentres:
    """Cell (i, j) of a layer is centred at input pixel (offset_y + i * stride_y, offset_x + j * stride_x)."""

    offset: tuple[float, float]  # (y, x) in input pixels
    stride: tuple[int, int] | None = None  # (y, x) input pixels per cell; None: from the map's size


class CellsNotPlaced(Exception):
    """Why a layer's cells cannot be placed."""


@dataclass(frozen=True)
class _Axis:
    """Along one axis: input pixels per cell, the centre of cell 0, and the number of cells."""

    stride: float
    offset: float
    size: int

    def through(self, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> _Axis:
        span = (self.size + 2 * padding - dilation * (kernel - 1) - 1) / stride
        size = (math.ceil(span) if ceil else math.floor(span)) + 1
        return _Axis(self.stride * stride, self.offset + self.stride * ((kernel - 1) / 2 * dilation - padding), size)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _module_window(module: nn.Module) -> tuple | None:
    """(kernel, stride, padding, dilation, ceil_mode) pairs of a convolution or pooling module, else None."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return None
    kernel, dilation = _pair(module.kernel_size), _pair(getattr(module, "dilation", 1))
    if isinstance(module.padding, str):  # "same" keeps the centre; "valid" is no padding
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)) if module.padding == "same" else (0, 0)
    else:
        padding = _pair(module.padding)
    return kernel, _pair(module.stride or module.kernel_size), padding, dilation, getattr(module, "ceil_mode", False)


def _through(axes: tuple[_Axis, _Axis], window: tuple) -> tuple[_Axis, _Axis]:
    kernel, stride, padding, dilation, ceil = window
    return tuple(axis.through(kernel[k], stride[k], padding[k], dilation[k], ceil) for k, axis in enumerate(axes))


def _through_module(axes: tuple[_Axis, _Axis], module: nn.Module) -> tuple[_Axis, _Axis]:
    """A module the tracer keeps whole (torchvision's Conv2dNormActivation, SqueezeExcitation, ...): a
    sequence of layers is followed layer by layer; anything else keeps the geometry (the size check
    catches a module that does not)."""
    window = _module_window(module)
    if window is not None:
        return _through(axes, window)
    if isinstance(module, nn.Sequential):
        for child in module:
            axes = _through_module(axes, child)
    return axes


def _function_window(node) -> tuple | None:
    """The window of a functional pooling call (Inception's F.max_pool2d and F.avg_pool2d)."""
    if node.target not in (F.max_pool2d, F.avg_pool2d, torch._C._nn.avg_pool2d):
        return None
    names = ["kernel_size", "stride", "padding"] + (["dilation"] if node.target is F.max_pool2d else [])
    given = dict(zip(names, node.args[1:]), **node.kwargs)
    kernel = _pair(given["kernel_size"])
    return (kernel, _pair(given.get("stride") or kernel), _pair(given.get("padding", 0)),
            _pair(given.get("dilation", 1)), bool(given.get("ceil_mode", False)))


def derive_cell_centres(model: nn.Module, layer: str, probe_size: int, cells: tuple[int, int]) -> CellCentres:
    """The layer's cell centres, from its graph; `cells` is the layer's real (h, w) for a probe_size² input,
    which the derivation must reproduce. CellsNotPlaced says why it cannot."""
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        with warnings.catch_warnings():  # torchvision's note on train and eval mode nodes
            warnings.simplefilter("ignore")
            traced = create_feature_extractor(model, return_nodes={layer: "cells"})
    except Exception as error:  # noqa: BLE001 - torch.fx raises many types for code it cannot trace
        raise CellsNotPlaced(f"torch.fx cannot trace the model ({type(error).__name__})") from None
    modules = dict(traced.named_modules())
    start = _Axis(1.0, 0.0, probe_size)
    axes: dict[object, tuple[_Axis, _Axis]] = {}
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            axes[node] = (start, start)
        elif node.op == "output":
            found = axes.get(node.args[0]["cells"])
        else:
            inputs = [axes[arg] for arg in node.all_input_nodes if arg in axes]
            if not inputs:
                continue
            if node.op == "call_module":
                axes[node] = _through_module(inputs[0], modules[node.target])
            elif node.op == "call_function" and (window := _function_window(node)) is not None:
                axes[node] = _through(inputs[0], window)
            else:  # element-wise, concatenation, permutes, ...: the first spatial input's geometry
                axes[node] = inputs[0]
    if found is None or (found[0].size, found[1].size) != tuple(cells):
        derived = f"{found[0].size}x{found[1].size}" if found else "nothing"
        raise CellsNotPlaced(f"its graph gives {derived} cells where the layer has {cells[0]}x{cells[1]} (an "
                             "operation changes the map's size in a way this cannot follow)")
    return CellCentres((found[0].offset, found[1].offset), (round(found[0].stride), round(found[1].stride)))


def stride(pixels: int, cells: int) -> int:
    """Input pixels per cell, from sizes alone: CNN strides are powers of two (unpadded layers lose cells)."""
    return 2 ** round(math.log2(pixels / cells))


def upsample_at_cells(maps: torch.Tensor, size: tuple[int, int], centres: CellCentres) -> torch.Tensor:
    """(B,K,h,w) -> (B,K,H,W): bilinear sampling where input pixel p reads cell (p - offset) / stride,
    edges clamped."""
    (height, width), (rows, columns) = size, maps.shape[-2:]
    strides = centres.stride or (stride(height, rows), stride(width, columns))

    def positions(pixels: int, cells: int, offset: float, step: int) -> torch.Tensor:
        cell = (torch.arange(pixels, device=maps.device, dtype=torch.float32) - offset) / step
        return cell * 2 / (cells - 1) - 1 if cells > 1 else torch.zeros_like(cell)  # [-1, 1] over centres

    ys, xs = torch.meshgrid(positions(height, rows, centres.offset[0], strides[0]),
                            positions(width, columns, centres.offset[1], strides[1]), indexing="ij")
    flat = maps.reshape(-1, 1, rows, columns)
    grid = torch.stack([xs, ys], dim=-1).expand(flat.shape[0], height, width, 2)
    sampled = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.reshape(*maps.shape[:-2], height, width)
