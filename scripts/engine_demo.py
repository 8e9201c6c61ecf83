"""Run the engine once on a generated picture and save the overlay as a PNG (no network, no camera).

    scripts/with-env python scripts/engine_demo.py [OUTPUT.png]

The model is a ResNet-18 with random weights (ImageNet weights cannot be downloaded offline), so the
heatmap shows the machinery working, not what a trained model looks at.
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import torch

from streamcam import Explainer, load_model
from streamcam.render import overlay


def generated_picture(height: int = 360, width: int = 640) -> np.ndarray:
    """A road-like RGB picture: sky, asphalt, lane marks and two coloured objects."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[: height // 2] = (135, 175, 225)
    picture[height // 2:] = (70, 70, 75)
    for x in range(0, width, 80):
        cv2.line(picture, (x, height * 3 // 4), (x + 40, height * 3 // 4), (235, 235, 235), 6)
    cv2.rectangle(picture, (420, 170), (540, 250), (200, 30, 30), -1)
    cv2.circle(picture, (170, 230), 40, (240, 200, 20), -1)
    return picture


def main() -> None:
    output = sys.argv[1] if len(sys.argv) > 1 else "engine_demo.png"
    torch.manual_seed(0)
    loaded = load_model("resnet18", "none", device="auto")
    explainer = Explainer(loaded, method="gradcam")
    picture = generated_picture()
    started = time.perf_counter()
    result = explainer(loaded.preprocess(picture, device=loaded.device))
    seconds = time.perf_counter() - started
    heatmap = result.maps[0].cpu().numpy()
    side_by_side = np.concatenate([picture, overlay(picture, heatmap)], axis=1)
    cv2.imwrite(output, cv2.cvtColor(side_by_side, cv2.COLOR_RGB2BGR))
    print(f"{explainer}: class {result.targets.item()} explained in {seconds * 1000:.0f} ms")
    print(f"wrote {output} (picture | Grad-CAM overlay)")


if __name__ == "__main__":
    main()
