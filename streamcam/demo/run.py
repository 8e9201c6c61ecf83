"""`streamcam demo`: the whole product, offline, on a generated driving clip with known boxes.

1. generate a clip of a car, a pedestrian, a traffic sign and a cyclist moving through road scenes;
2. run the full pipeline on it with the bundled demo model (decode, explain, render, encode), with
   maps placed at the layer cells' receptive fields (--align receptive-field: see cam/maps.py);
3. score what it did against the known boxes: accuracy, and the pointing game on every frame.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .. import api
from ..config import RunConfig
from ..window import display_problem
from .scenes import CLASSES, demo_clip

WIDTH, HEIGHT, FPS = 640, 360, 30


@dataclass
class DemoResult:
    run: api.RunResult
    video: Path
    contact_sheet: Path
    accuracy: float
    pointing: float  # share of correctly classified frames whose map peak is inside the object's box
    frames: int
    seconds: float


def write_clip(path: Path, seconds: float, seed: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Encode the generated clip (H.264) and return each frame's (class, box)."""
    truth = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index, (image, cls, box) in enumerate(demo_clip(WIDTH, HEIGHT, FPS, seconds, seed)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
            truth.append((cls, box))
        for packet in stream.encode(None):
            container.mux(packet)
    return truth


def run_demo(output: Path = Path("demo.mp4"), *, seconds: float = 8.0, show: bool | None = None,
             device: str = "auto", method: str = "gradcam", smooth: float = 0.3, seed: int = 7,
             on_tick=None, serve: dict[str, object] | None = None) -> DemoResult:
    """Generate, explain and score. `show=None` opens a window when there is a display; `serve` (the
    RunConfig's serve, serve_token and serve_max_clients) shows it in browsers too."""
    started = time.monotonic()
    contact_sheet = output.with_name(output.stem + "_sheet.png")
    with tempfile.TemporaryDirectory(prefix="streamcam-demo-") as folder:
        clip = Path(folder) / "scene.mp4"
        truth = write_clip(clip, seconds, seed)
        log = Path(folder) / "frames.jsonl"
        config = RunConfig(
            source=str(clip), output=output, log=log, contact_sheet=contact_sheet, model="demo",
            method=method, align="receptive-field", top_k=2, smooth=smooth, device=device,
            show=display_problem() is None if show is None else show, **(serve or {}),
        )
        result = api.run(config, on_tick=on_tick)
        rows = [json.loads(line) for line in log.read_text().splitlines()]
    result.outputs = [output, contact_sheet]

    correct = hits = 0
    for row in rows:
        cls, (x0, y0, x1, y1) = truth[row["frame"]]
        if row["explained"]["class"] == cls:
            correct += 1
            hits += x0 <= row["peak"]["x"] <= x1 and y0 <= row["peak"]["y"] <= y1
    return DemoResult(result, output, contact_sheet, correct / max(1, len(rows)), hits / max(1, correct),
                      len(rows), time.monotonic() - started)


__all__ = ["CLASSES", "DemoResult", "run_demo"]
