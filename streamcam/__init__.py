"""streamcam: see where a vision model looks, live.

    import streamcam
    loaded = streamcam.load_model("resnet50")            # model + preprocessing + class names
    explainer = streamcam.Explainer(loaded, method="gradcam")
    result = explainer(loaded.preprocess(frames_rgb_uint8))
    result.maps      # (B,H,W) float32 in [0,1] on the model's device
"""

import sys

# OpenCV before PyAV: both wheels bundle libxcb, and when PyAV's copy loads first, creating an OpenCV
# (Qt) window hangs. Loading cv2 first makes windows work; sinks.Window refuses when it is too late.
PYAV_LOADED_BEFORE_OPENCV = "av" in sys.modules and "cv2" not in sys.modules
import cv2  # noqa: E402, F401

from .cam import METHODS, Explainer, Explanation, feature_layers  # noqa: E402
from .errors import StreamcamError, WeightsUnavailableError  # noqa: E402
from .models import LoadedModel, Preprocess, available_models, load_model  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "Explainer",
    "Explanation",
    "LoadedModel",
    "Preprocess",
    "StreamcamError",
    "WeightsUnavailableError",
    "available_models",
    "feature_layers",
    "load_model",
]
