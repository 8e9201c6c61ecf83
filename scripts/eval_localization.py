"""How well do the heatmaps point at the object? Every method, at layer4 and layer3, on generated scenes.

    scripts/with-env python scripts/eval_localization.py            # writes docs/fidelity.md

With the bundled demo model, on held-out procedural scenes whose object boxes are known:
- pointing game: share of scenes where the map's peak is inside the object's box;
- energy-based pointing game: mean share of the map's mass inside the box;
both for the true class. Then flicker (mean absolute frame-to-frame map change) on the demo's moving
clip, without and with --smooth, and the pointing game there (frames whose top-1 class is right).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import benchlib  # scripts/ is on sys.path as this script's directory
from streamcam import METHODS, Explainer, load_model
from streamcam.cam.maps import ALIGNMENTS, normalize_maps
from streamcam.demo.run import FPS, HEIGHT, WIDTH
from streamcam.demo.scenes import OBJECT_CLASSES, demo_clip, random_scene
from streamcam.explain import FrameExplainer
from streamcam.metrics import energy_share, flicker, pointing_hit
from streamcam.picture import BgrPicture
from streamcam.sources import Frame

SLOW = {"scorecam": 40}  # one forward pass per channel: fewer scenes


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
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the moving clip for flicker")
    parser.add_argument("--smooth", default="0,0.3,0.6", help="smoothing factors to compare (default 0,0.3,0.6)")
    parser.add_argument("--output", type=Path, default=benchlib.REPO / "docs" / "fidelity.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model("demo", device="cpu")
    print(f"demo model on {benchlib.machine(torch.device('cpu'))}", flush=True)
    localisation = localisation_rows(loaded, args.scenes, args.seed)
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
    args.output.write_text(text.replace("{box_share}", f"{box_share:.1%}"))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
