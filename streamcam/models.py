"""Load a torchvision classifier with its preprocessing and class names.

`load_model("resnet50")` uses torchvision's weights API (the model, its normalisation and its categories
travel together); `weights="none"` gives random weights; a path loads a checkpoint (state_dict or saved
module) with optional labels.
"""

from __future__ import annotations

import functools
import json
import pickle
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from . import yuv
from .errors import StreamcamError, WeightsUnavailableError, unknown_name
from .plan import resizes_in_uint8, resolve_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 224
# Wrappers that prefix every state_dict key: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_CLASS_NAME_KEYS = ("class_names", "classes", "categories", "labels")


DEMO_MODEL = "demo"


def available_models() -> list[str]:
    """"demo" (bundled, offline) and torchvision's image classification models."""
    return [DEMO_MODEL] + sorted(torchvision.models.list_models(module=torchvision.models))


@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB frames -> the normalised float batch the model expects.

    The whole frame is resized so that its short side is `short_side`, keeping the aspect ratio and
    never cropping, so that the heatmap covers everything in the frame. A model that takes one input
    size only (`fixed`: ViT, MaxViT) gets the frame letterboxed into a `fixed` x `fixed` square: resized
    whole (aspect kept, as the weights' own resize-and-crop keeps it, but nothing cut), between bars of
    the mean colour (zero, normalised). `content` says where the frame is in the input.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    short_side: int = DEFAULT_INPUT_SIZE
    fixed: int | None = None

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the model input for a frame of this size."""
        if self.fixed:
            return self.fixed, self.fixed
        return self.content(height, width)[2:]

    def content(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the frame in the model input: all of it, unless letterboxed."""
        if not self.fixed:
            scale = self.short_side / min(height, width)
            return 0, 0, max(1, round(height * scale)), max(1, round(width * scale))
        scale = self.fixed / max(height, width)
        inner = max(1, round(height * scale)), max(1, round(width * scale))
        return (self.fixed - inner[0]) // 2, (self.fixed - inner[1]) // 2, *inner

    def __call__(
        self, frames: torch.Tensor | np.ndarray, device: torch.device | str | None = None, bgr: bool = False
    ) -> torch.Tensor:
        """(B,H,W,3) or (H,W,3) uint8 RGB (BGR with bgr=True, as OpenCV and the pipeline keep frames)
        -> (B,3,h,w) float32 on `device` (default: where the frames are)."""
        batch = torch.as_tensor(frames)
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
            raise StreamcamError(
                f"expected uint8 RGB frames shaped (B,H,W,3), got {batch.dtype} {tuple(batch.shape)}"
            )
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        box = self.content(*batch.shape[1:3])
        images = self._shrink(batch.permute(0, 3, 1, 2), box[2:]).float()  # (B,3,h,w); channels-last in memory
        if bgr:
            images = images.flip(1)  # after the resize: fewer pixels
        return self._letterbox(self._normalise(images), box)

    def i420(self, frames: torch.Tensor, matrix: str = "bt601") -> torch.Tensor:
        """(B, H*3/2, W) uint8 I420 frames (see yuv.py) -> (B,3,h,w) float32 RGB, normalised, on the
        frames' device. The planes are resized to the model input first and converted to RGB there: both
        steps are linear, so the order changes nothing but rounding, and the conversion touches 1/20 of
        the pixels of a 1080p frame."""
        y, u, v = yuv.planes(frames)
        box = self.content(*y.shape[-2:])
        luma = self._shrink(y[:, None], box[2:])
        chroma = self._shrink(torch.stack([u, v], dim=1), box[2:])
        return self._letterbox(self._normalise(yuv.yuv_to_rgb(torch.cat([luma, chroma], dim=1).float(), matrix)), box)

    def _letterbox(self, images: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        if not self.fixed:
            return images
        top, left, height, width = box
        return F.pad(images, (left, self.fixed - width - left, top, self.fixed - height - top))

    def _shrink(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B,C,H,W) uint8 -> `size`, antialiased bilinear. On a CPU in uint8, which torch vectorises:
        1 ms for a 720p frame instead of 11 ms in float."""
        if tuple(size) == tuple(images.shape[-2:]):
            return images
        if not resizes_in_uint8(images.device):
            images = images.float()
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float RGB in 0..255 -> (x / 255 - mean) / std."""
        mean, std = _normalisation(self.mean, self.std, images.device)
        return (images / 255.0 - mean) / std


@functools.cache
def _normalisation(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as (1,3,1,1) tensors on `device`, made once: building them from host values for
    every batch would be a blocking copy that waits for the GPU."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


@dataclass(frozen=True)
class LoadedModel:
    """A classifier in eval mode on its device, with the preprocessing and class names that match it."""

    name: str
    model: nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...] | None
    weights: str  # what was loaded, for logs and summaries: "imagenet (IMAGENET1K_V2)", "none", a path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_model(
    name: str,
    weights: str | Path = "pretrained",
    *,
    labels: str | Path | None = None,
    device: str | torch.device = "auto",
    input_size: int | None = None,
) -> LoadedModel:
    """Build model `name` ("demo" or a torchvision classifier) with `weights`:

    - "pretrained": torchvision's ImageNet weights (downloaded once, then cached), or for "demo" the
      bundled checkpoint trained on procedural driving scenes; "imagenet" says the same explicitly;
    - "none": random initialisation;
    - a path: a checkpoint, either a state_dict (possibly wrapped or prefixed) or a saved module.

    `labels` is a text file with one class name per line, or a JSON list (or {index: name}); it
    overrides names stored in the checkpoint or the weights' metadata. `input_size` is the short side
    frames are resized to; by default the size the checkpoint was trained at, else 224.
    """
    if name not in available_models():
        raise unknown_name("model", name, available_models(), hint="(`streamcam models` lists them)")
    if input_size is not None and input_size < 32:
        raise StreamcamError(f"input size {input_size} is too small; CNNs need a short side of at least 32")
    target = resolve_device(device)
    build = _builder(name)
    weights_str = str(weights)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    class_names, trained_size = None, None
    if weights_str in ("pretrained", "imagenet") and name != DEMO_MODEL:
        model, class_names, description, mean, std = _load_imagenet(name)
    elif weights_str == "imagenet":
        raise StreamcamError("the demo model has no ImageNet weights; use --weights pretrained (its own), none or PATH")
    elif weights_str == "pretrained":
        from .demo.model import CHECKPOINT

        model, class_names, trained_size = _load_checkpoint(name, build, CHECKPOINT)
        description = "bundled demo training"
    elif weights_str == "none":
        model, description = build(None), "none"
    else:
        model, class_names, trained_size = _load_checkpoint(name, build, Path(weights_str))
        description = weights_str
    if labels is not None:
        class_names = read_labels(labels)
    num_classes = _num_classes(model)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise StreamcamError(f"{len(class_names)} class names for a model with {num_classes} outputs")
    # channels_last: oneDNN (CPU) and cuDNN tensor cores (GPU) run NHWC convolutions faster; on this
    # project's 2-core CPU it measured 1.1-1.45x for ResNet-18/50 (docs/benchmarks.md).
    model = model.eval().to(target, memory_format=torch.channels_last)
    short_side = input_size or trained_size or DEFAULT_INPUT_SIZE
    from .cam.layers import fixed_input_size  # here: cam imports this module

    return LoadedModel(name, model, Preprocess(mean, std, short_side, fixed_input_size(model)), class_names, description)


def _builder(name: str):
    """A function num_classes -> the untrained architecture (None: the architecture's default)."""
    if name == DEMO_MODEL:
        from .demo.model import build_demo_model
        from .demo.scenes import CLASSES

        return lambda num_classes: build_demo_model(num_classes or len(CLASSES))
    return lambda num_classes: torchvision.models.get_model(name, weights=None, **({"num_classes": num_classes} if num_classes else {}))


def _load_imagenet(name: str):
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsUnavailableError(
            f"cannot download the ImageNet weights for {name} ({reason}); pass --weights PATH to a "
            "checkpoint file, or use the bundled offline model: --model demo"
        ) from None
    transforms = weights.transforms()
    description = f"imagenet ({weights.name})"
    return model, tuple(weights.meta["categories"]), description, tuple(transforms.mean), tuple(transforms.std)


def _load_checkpoint(name: str, build, path: Path) -> tuple[nn.Module, tuple[str, ...] | None, int | None]:
    """The model, class names and training input size (when the checkpoint records them)."""
    if not path.is_file():
        raise StreamcamError(f"weights file not found: {path} (use pretrained, none or a checkpoint path)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # A whole pickled nn.Module needs full unpickling, which runs code from the file. The user
        # named this file as their model, so it is trusted like any code they run.
        loaded = _torch_load(path, weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many types for files that are not checkpoints
        raise StreamcamError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {error})") from None

    class_names, input_size = None, None
    if isinstance(loaded, dict):
        class_names = next((tuple(loaded[k]) for k in _CLASS_NAME_KEYS if k in loaded), None)
        input_size = loaded.get("input_size") if isinstance(loaded.get("input_size"), int) else None
        for key in ("state_dict", "model_state_dict", "model"):
            if key in loaded and isinstance(loaded[key], (dict, nn.Module)):
                loaded = loaded[key]
                break
    if isinstance(loaded, nn.Module):
        return loaded.float(), class_names, input_size
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise StreamcamError(f"{path} holds neither a state_dict nor a model")

    # fp16 checkpoints (like the bundled one) are widened: precision is chosen at run time (autocast).
    state = {_strip_wrapper_prefix(k): v.float() if v.is_floating_point() else v for k, v in loaded.items()}
    head_weight = state.get(f"{_classifier_name(build(None))}.weight")
    model = build(head_weight.shape[0] if head_weight is not None else None)
    mismatch = _first_mismatch(model.state_dict(), state)
    if mismatch:
        raise StreamcamError(f"checkpoint {path} does not fit {name}: {mismatch}")
    model.load_state_dict(state)
    return model, class_names, input_size


def _torch_load(path: Path, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # noqa: BLE001 - as above
        raise StreamcamError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {error})") from None


def _strip_wrapper_prefix(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _first_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """Describe the first key (in the model's order) that is missing, extra or of the wrong shape."""
    for key, tensor in expected.items():
        if key not in given:
            return f"missing key {key!r}"
        if tuple(given[key].shape) != tuple(tensor.shape):
            return f"key {key!r} has shape {tuple(given[key].shape)}, the model needs {tuple(tensor.shape)}"
    extra = [key for key in given if key not in expected]
    return f"unexpected key {extra[0]!r}" if extra else None


def _classifier_name(model: nn.Module) -> str | None:
    """The last Linear layer: the one whose outputs are the class scores in torchvision classifiers."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def _num_classes(model: nn.Module) -> int | None:
    name = _classifier_name(model)
    return model.get_submodule(name).out_features if name else None


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file (one per line) or JSON (a list, or a {index: name} mapping)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise StreamcamError(f"cannot read labels file {path}: {error.strerror or error}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise StreamcamError(f"labels file {path} is not valid JSON: {error}") from None
        if isinstance(data, dict):
            try:
                data = [data[k] for k in sorted(data, key=int)]
            except ValueError:
                raise StreamcamError(f"labels file {path}: JSON object keys must be class indices") from None
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise StreamcamError(f"labels file {path}: expected a JSON list of names")
        return tuple(data)
    names = tuple(line.strip() for line in text.splitlines())
    while names and not names[-1]:
        names = names[:-1]
    return names
