"""The registry of CAM methods by name, and turning a name plus options into a method object."""

from __future__ import annotations

import dataclasses

from ..errors import StreamcamError, unknown_name
from .ablationcam import AblationCAM
from .base import CamMethod
from .classic_cam import CAM
from .eigencam import EigenCAM, EigenGradCAM
from .gradcam import GradCAM
from .gradcam_elementwise import GradCAMElementWise
from .gradcam_plusplus import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .reciprocam import ReciproCAM
from .saliency import Saliency
from .scorecam import ScoreCAM
from .smoothgrad import SmoothGrad
from .xgradcam import XGradCAM

METHODS: dict[str, type[CamMethod]] = {
    method.name: method
    for method in (GradCAM, CAM, GradCAMPlusPlus, LayerCAM, HiResCAM, XGradCAM, GradCAMElementWise, ReciproCAM,
                   EigenCAM, EigenGradCAM, AblationCAM, ScoreCAM, Saliency, SmoothGrad)
}


def make_method(method: str | CamMethod, options: dict[str, object]) -> CamMethod:
    """`method` by name with its options (e.g. smoothgrad's n and sigma), or a ready method object."""
    if isinstance(method, CamMethod):
        if options:
            raise StreamcamError(f"options {sorted(options)} given with a ready {method.name} object")
        return method
    if method not in METHODS:
        raise unknown_name("method", method, METHODS)
    cls = METHODS[method]
    accepted = set(method_options(cls))
    unknown = sorted(set(options) - accepted)
    if unknown:
        takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
        raise StreamcamError(f"{method} has no option {', '.join(unknown)}; {takes}")
    return cls(**options)


def method_options(method: type[CamMethod]) -> dict[str, object]:
    """A method's options and their defaults (a method's options are its dataclass fields)."""
    return {f.name: f.default for f in dataclasses.fields(method)} if dataclasses.is_dataclass(method) else {}


def typed_options(method: str, given: dict[str, object]) -> dict[str, object]:
    """Option values as the method's fields type them: "64" -> 64, "true" -> True (command-line text);
    values already of their type (YAML) pass. Unknown names are left for make_method to refuse."""
    defaults = method_options(METHODS[method]) if method in METHODS else {}
    typed = {}
    for option, value in given.items():
        default = defaults.get(option)
        if isinstance(value, str) and isinstance(default, (bool, int, float)):
            typed[option] = _parse(method, option, value, type(default))
        else:
            typed[option] = value
    return typed


def _parse(method: str, option: str, text: str, kind: type) -> object:
    if kind is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise StreamcamError(f"{method}.{option} takes {kind.__name__} values, got {text!r}")
