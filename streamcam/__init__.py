"""streamcam: see where a vision model looks, live.

    import streamcam
    loaded = streamcam.load_model("resnet50")            # model + preprocessing + class names
    explainer = streamcam.Explainer(loaded, method="gradcam")
    result = explainer(loaded.preprocess(frames_rgb_uint8))
    result.maps      # (B,H,W) float32 in [0,1] on the model's device

    report = streamcam.check("drive.mp4", roi="boxes.json", model="demo")   # heatmap tests (checks.py)
    report = streamcam.batch(["archive/"], "out/", model="demo")             # an archive on Ray (batches.py)
    faithful = streamcam.evaluate(loaded, x, method="gradcam")               # Average Drop, ADCC, ... (evaluation.py)
"""

import os
import sys

# OpenMP threads that finish a parallel region spin, waiting for the next, by default. In a pipeline
# the encoder and decoder threads need those cores: passive waiting made the CPU pipeline 5-10 % faster
# here (docs/benchmarks.md). It must be set before torch loads its OpenMP runtime.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# OpenCV before PyAV: both wheels bundle libxcb, and when PyAV's copy loads first, creating an OpenCV
# (Qt) window hangs. Loading cv2 first makes windows work; window.Window refuses when it is too late.
PYAV_LOADED_BEFORE_OPENCV = "av" in sys.modules and "cv2" not in sys.modules
import cv2  # noqa: E402, F401

from .cam import METHODS, Explainer, Explanation, feature_layers  # noqa: E402
from .errors import StreamcamError, WeightsUnavailableError  # noqa: E402
from .models import LoadedModel, Preprocess, available_models, load_model  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str):
    """`streamcam.check`, `batch` and `evaluate` load the video pipeline (and Ray) only when used."""
    if name == "check":
        from .checks import check

        return check
    if name == "CheckReport":
        from .check_report import CheckReport

        return CheckReport
    if name in ("evaluate", "Faithfulness"):
        from . import evaluation

        return getattr(evaluation, name)
    if name in ("batch", "BatchReport"):
        from . import batches

        return getattr(batches, name)
    raise AttributeError(f"module 'streamcam' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "BatchReport",
    "CheckReport",
    "Explainer",
    "Explanation",
    "Faithfulness",
    "LoadedModel",
    "Preprocess",
    "StreamcamError",
    "WeightsUnavailableError",
    "available_models",
    "batch",
    "check",
    "evaluate",
    "feature_layers",
    "load_model",
]
