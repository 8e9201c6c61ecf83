"""CAM methods and the Explainer that runs them (one file per method over `base`)."""

from .base import CamMethod, ChannelWeightedMethod, LayerEvidence, LayerMethod, PixelMethod
from .explainer import Explainer, Explanation
from .layers import FeatureLayer, feature_layers
from .methods import METHODS

__all__ = [
    "METHODS",
    "CamMethod",
    "ChannelWeightedMethod",
    "Explainer",
    "Explanation",
    "FeatureLayer",
    "LayerEvidence",
    "LayerMethod",
    "PixelMethod",
    "feature_layers",
]
