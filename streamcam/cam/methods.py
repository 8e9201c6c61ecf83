"""The registry of CAM methods by name, and turning a name plus options into a method object."""

from __future__ import annotations

import dataclasses

from ..errors import StreamcamError, unknown_name
from .base import CamMethod
from .classic_cam import CAM
from .gradcam import GradCAM
from .gradcam_plusplus import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .saliency import Saliency
from .scorecam import ScoreCAM
from .smoothgrad import SmoothGrad
from .xgradcam import XGradCAM

METHODS: dict[str, type[CamMethod]] = {
    method.name: method
    for method in (GradCAM, CAM, GradCAMPlusPlus, LayerCAM, HiResCAM, XGradCAM, ScoreCAM, Saliency, SmoothGrad)
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
    accepted = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(options) - accepted)
    if unknown:
        takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
        raise StreamcamError(f"{method} has no option {', '.join(unknown)}; {takes}")
    return cls(**options)
