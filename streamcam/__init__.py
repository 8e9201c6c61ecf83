"""streamcam: see where a vision model looks, live.

    import streamcam
    loaded = streamcam.load_model("resnet50")            # model + preprocessing + class names
    explainer = streamcam.Explainer(loaded, method="gradcam")
    result = explainer(loaded.preprocess(frames_rgb_uint8))
    result.maps      # (B,H,W) float32 in [0,1] on the model's device
"""

from .cam import METHODS, Explainer, Explanation, feature_layers
from .errors import StreamcamError, WeightsUnavailableError
from .models import LoadedModel, Preprocess, available_models, load_model

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
