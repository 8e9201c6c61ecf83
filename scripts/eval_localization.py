"""How well do the heatmaps point at the object, and how faithful are they? Every method, on generated scenes.

    scripts/with-env python scripts/eval_localization.py            # writes docs/fidelity.md

With the bundled demo model, on held-out procedural scenes whose object boxes are known:
- pointing game: share of scenes where the map's peak is inside the object's box;
- energy-based pointing game: mean share of the map's mass inside the box;
both for the true class, at layer4 and layer3. Then faithfulness (streamcam.evaluate: Average Drop,
Increase in Confidence, ADCC, deletion and insertion) on the same scenes, and motion share on the demo's
moving clip. Then flicker (mean absolute frame-to-frame map change) on that clip, without and with
--smooth, and the pointing game there (frames whose top-1 class is right). The text after the
"written by hand" marker in the output is kept.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import benchlib  # scripts/ is on sys.path as this script's directory
from streamcam import METHODS, Explainer, load_model
from streamcam.cam.maps import ALIGNMENTS, normalize_maps
from streamcam.demo.run import FPS, HEIGHT, WIDTH
from streamcam.demo.scenes import OBJECT_CLASSES, demo_clip, random_scene
from streamcam.evaluation import faithfulness_of
from streamcam.explain import FrameExplainer
from streamcam.faithfulness import Faithfulness
from streamcam.metrics import energy_share, flicker, pointing_hit
from streamcam.motion import MotionMask, motion_share
from streamcam.picture import BgrPicture
from streamcam.sources import Frame

SLOW = {"scorecam": 20}  # one forward pass per channel: fewer scenes
FAITHFUL_SLOW = {"scorecam": 10, "smoothgrad": 40}  # evaluate explains twice (x, and x masked by its map)
MOTION_EVERY = {"scorecam": 24, "smoothgrad": 8}  # of the clip's frames, every n-th; others every 4th
BY_HAND = "<!-- written by hand: scripts/eval_localization.py keeps what follows -->"


def scenes(loaded, count: int, seed: int):
    """Scenes rendered at the model's input size: images (N,3,h,w), labels, boxes in input pixels."""
    height = loaded.preprocess.short_side
    width = round(height * 16 / 9 / 2) * 2
    rng = np.random.default_rng(seed)
    images, labels, boxes = zip(*[random_scene(rng, width, height, int(rng.integers(OBJECT_CLASSES)))
                                  for _ in range(count)])
    return loaded.preprocess(np.stack(images), bgr=True), list(labels), list(boxes)


def localisation_rows(loaded, count: int, seed: int, batch: int = 20) -> list[list[object]]:
    """Pointing game and energy share per method and layer, with maps upsampled both ways (--align)."""
    x, labels, boxes = scenes(loaded, count, seed)
    rows = []
    for name in METHODS:
        layers = [None] if name in ("saliency", "smoothgrad") else (["layer4"] if name == "cam" else ["layer4", "layer3"])
        for layer in layers:
            explainer = Explainer(loaded, name, layer=layer)
            # The same raw maps, placed both ways: receptive-field placement measures the cells once.
            placements = {"image": None}
            if layer is not None:
                placements["receptive-field"] = Explainer(loaded, name, layer=layer, align="receptive-field").cell_centres
            n = min(count, SLOW.get(name, count))
            started = time.monotonic()
            scores = {align: ([], []) for align in ALIGNMENTS}
            for start in range(0, n, batch):
                result = explainer(x[start:start + batch], labels[start:start + batch])
                for align in ALIGNMENTS:
                    maps = result.maps if align == "image" or layer is None else \
                        normalize_maps(result.raw[:, None], tuple(x.shape[-2:]), placements[align])[:, 0]
                    for i, heatmap in enumerate(maps):
                        scores[align][0].append(pointing_hit(heatmap, boxes[start + i]))
                        scores[align][1].append(energy_share(heatmap, boxes[start + i]))
            seconds = time.monotonic() - started
            cells = [f"{np.mean(scores[a][k]):.3f}" for k in (0, 1) for a in ALIGNMENTS]
            rows.append([name, layer or "input pixels", n, *cells, f"{1000 * seconds / n:.0f}"])
            print("  ".join(map(str, rows[-1])), flush=True)
    return rows


def faithfulness_rows(loaded, count: int, seed: int, clip_seconds: float, batch: int = 20) -> list[list[object]]:
    """Per method (layer4, or input pixels): faithfulness and pointing on held-out scenes for the true
    class, and motion share on the moving clip (still camera) for the top-1 class."""
    x, labels, boxes = scenes(loaded, count, seed)
    clip = [image for image, _, _ in demo_clip(WIDTH, HEIGHT, FPS, clip_seconds, seed=7)]
    clip_x = loaded.preprocess(np.stack(clip), bgr=True)
    moving, masks = MotionMask("still"), []
    for image in clip:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        masks.append(moving(cv2.resize(gray, tuple(reversed(clip_x.shape[-2:])), interpolation=cv2.INTER_AREA)))
    rows = []
    for name in METHODS:
        layer = None if name in ("saliency", "smoothgrad") else "layer4"
        explainer = Explainer(loaded, name, layer=layer, align="receptive-field")
        n = min(count, FAITHFUL_SLOW.get(name, count))
        started = time.monotonic()
        parts, hits = [], []
        for start in range(0, n, batch):
            chunk, chunk_labels = x[start:min(start + batch, n)], labels[start:min(start + batch, n)]
            explanation = explainer(chunk, chunk_labels)
            parts.append(faithfulness_of(explainer, chunk, explanation=explanation))
            hits += [pointing_hit(heatmap, boxes[start + i]) for i, heatmap in enumerate(explanation.maps)]
        seconds = time.monotonic() - started
        frames = list(range(1, len(clip), MOTION_EVERY.get(name, 4)))  # frame 0 has no previous frame
        shares = []
        for start in range(0, len(frames), batch):
            chosen = frames[start:start + batch]
            shares += [motion_share(heatmap, masks[i]) for i, heatmap in zip(chosen, explainer(clip_x[chosen]).maps)]
        result = Faithfulness.combine(parts)
        rows.append([name, layer or "input pixels", n, *(f"{getattr(result, key):.3f}" for key in (
            "average_drop", "increase_in_confidence", "coherency", "complexity", "adcc", "deletion_auc",
            "insertion_auc")), f"{np.mean(hits):.3f}", f"{np.mean(shares):.3f} ({len(frames)})",
            f"{1000 * seconds / n:.0f}"])
        print("  ".join(map(str, rows[-1])), flush=True)
    return rows


def flicker_rows(loaded, seconds: float, smooths: list[float]) -> list[list[object]]:
    clip = list(demo_clip(WIDTH, HEIGHT, FPS, seconds, seed=7))
    frames = [Frame(i, BgrPicture(image), i, 1, 0.0) for i, (image, _, _) in enumerate(clip)]
    rows = []
    for smooth in smooths:
        explain = FrameExplainer(loaded, Explainer(loaded, align="receptive-field"), smooth=smooth)
        results = [result for start in range(0, len(frames), 8) for result in explain(frames[start:start + 8])]
        maps = [result.maps[0] for result in results]
        right = [(result, clip[i]) for i, result in enumerate(results) if result.classes[0] == clip[i][1]]
        scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT]) / torch.tensor([maps[0].shape[1], maps[0].shape[0]] * 2)
        hits = [pointing_hit(result.maps[0], tuple((torch.tensor(box) / scale).tolist())) for result, (_, _, box) in right]
        rows.append([f"{smooth:g}", len(frames), f"{flicker(maps):.4f}", f"{len(right) / len(frames):.3f}", f"{np.mean(hits):.3f}"])
        print("  ".join(map(str, rows[-1])), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200, help="held-out scenes per method (default 200)")
    parser.add_argument("--faithful-scenes", type=int, default=100, help="held-out scenes per method for faithfulness (default 100)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the moving clip for flicker")
    parser.add_argument("--smooth", default="0,0.3,0.6", help="smoothing factors to compare (default 0,0.3,0.6)")
    parser.add_argument("--output", type=Path, default=benchlib.REPO / "docs" / "fidelity.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model("demo", device="cpu")
    print(f"demo model on {benchlib.machine(torch.device('cpu'))}", flush=True)
    localisation = localisation_rows(loaded, args.scenes, args.seed)
    faithfulness = faithfulness_rows(loaded, args.faithful_scenes, args.seed, args.seconds)
    smoothing = flicker_rows(loaded, args.seconds, [float(s) for s in args.smooth.split(",")])

    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    text = f"""# Fidelity: do the heatmaps point at the object?

Measured {datetime.date.today()} with the bundled demo model (input short side
{loaded.preprocess.short_side}) on {benchlib.machine(torch.device('cpu'))}.
Command: `{command}`

## Localisation on held-out scenes

Procedural road scenes (seed {args.seed}, never seen in training), one object each, explained for its
true class. **Pointing game**: share of scenes where the map's peak is inside the object's box.
**Energy**: mean share of the map's mass inside the box (energy-based pointing game); the boxes cover
on average {{box_share}} of the image, which is what a map spread evenly would score. Each is given for
the two ways of upsampling a layer's map (`--align`): `image`, as pytorch-grad-cam (the default), and
`receptive-field`, which puts each cell at its receptive field's centre, half a cell up and left.

{benchlib.markdown_table(["method", "layer", "scenes", "pointing (image)", "pointing (receptive-field)",
                          "energy (image)", "energy (receptive-field)", "ms / scene"], localisation)}

## Faithfulness

`streamcam.evaluate` on the held-out scenes (the first {args.faithful_scenes}, fewer for the slow
methods: "scenes"), for the true class, each method at layer4 (`--align receptive-field`), at the
precision `--precision auto` picks here. **AD** (Average Drop, lower is better) and **IC** (Increase in
Confidence, higher is better): the class's probability on the image multiplied by its own map, as
torchcam's `ClassificationMetric` masks it. **Coherency** (higher is better) and **Complexity** (lower is
better), and **ADCC**, their harmonic mean with 1 − AD (Poppi et al. 2021; higher is better).
**Deletion** (lower is better) and **insertion** (higher is better): the area under the class's
probability as pixels are removed from, or revealed on, a zero baseline (the mean colour), hottest
first, in 20 steps. **Pointing**: the map's peak in the box. **Motion share**: the share of the map's
energy on what moves, on the moving clip below (a still camera, `MotionMask("still")`; frames sampled
over the clip, their count in brackets), for the top-1 class.

{benchlib.markdown_table(["method", "layer", "scenes", "AD", "IC", "coherency", "complexity", "ADCC",
                          "deletion", "insertion", "pointing", "motion share (frames)", "ms / scene"], faithfulness)}

## Flicker on a moving clip

The demo's {args.seconds:g} s clip ({WIDTH}×{HEIGHT}, {FPS} fps, objects moving across the road), run
through the explain stage as `streamcam demo --smooth S` runs it (Grad-CAM, layer4, top-1 class,
`--align receptive-field`).
**Flicker**: mean absolute change of the map from one frame to the next (maps in [0,1]).
**Pointing game**: on the frames whose top-1 class is right.

{benchlib.markdown_table(["--smooth", "frames", "flicker", "top-1 right", "pointing game"], smoothing)}
"""
    _, _, boxes = scenes(loaded, args.scenes, args.seed)
    height = loaded.preprocess.short_side
    width = round(height * 16 / 9 / 2) * 2
    box_share = np.mean([(x1 - x0 + 1) * (y1 - y0 + 1) / (width * height) for x0, y0, x1, y1 in boxes])
    text = text.replace("{box_share}", f"{box_share:.1%}")
    previous = args.output.read_text() if args.output.exists() else ""
    if BY_HAND in previous:
        text += "\n" + previous[previous.index(BY_HAND):]
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
