"""What does `streamcam evaluate` cost per frame, against explaining alone? In one run.

    scripts/with-env python scripts/bench_evaluate.py        # writes docs/benchmarks.md

For each model and method, round-robin on the same batch: the explainer alone (what `run` pays), and
the explainer plus every faithfulness metric (what `evaluate` pays: the masked image, the map of the
masked image for coherency, and 2 x (steps - 1) + 1 deletion/insertion copies per frame, batched).
"""

from __future__ import annotations

import argparse
import functools

import torch

import benchlib  # scripts/ is on sys.path as this script's directory
from streamcam import Explainer, load_model
from streamcam.evaluation import faithfulness_of
from streamcam.faithfulness import COPIES_PER_PASS
from streamcam.plan import resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,resnet18,resnet50")
    parser.add_argument("--methods", default="gradcam,reciprocam,layercam")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps (default 20, as evaluate)")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per row (default 3)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)
    print(benchlib.machine(device), f"precision {precision}", flush=True)
    rows = []
    for model_name in args.models.split(","):
        loaded = load_model(model_name, "pretrained" if model_name == "demo" else "none", device=device)
        height = loaded.preprocess.short_side
        x = torch.randn(args.batch, 3, height, round(height * 16 / 9 / 8) * 8)  # a 16:9 frame's model input
        for method in args.methods.split(","):
            explainer = Explainer(loaded, method)
            calls = {"explain": functools.partial(explainer, x),
                     "evaluate": functools.partial(faithfulness_of, explainer, x, steps=args.steps)}
            medians = benchlib.interleaved_medians(calls, device, min_seconds=args.seconds)
            per_frame = {name: 1000 * seconds / args.batch for name, seconds in medians.items()}
            rows.append([model_name, f"{x.shape[-1]}×{x.shape[-2]}", method, f"{per_frame['explain']:.1f}",
                         f"{per_frame['evaluate']:.1f}", f"{per_frame['evaluate'] / per_frame['explain']:.1f}×"])
            print("  ".join(rows[-1]), flush=True)

    copies = 2 * (args.steps - 1) + 1
    body = (f"Batch {args.batch}, random input of a 16:9 frame at each model's input size, precision {precision}, "
            f"{args.steps} deletion/insertion steps ({copies} masked copies per frame, scored in passes of {COPIES_PER_PASS}). "
            "\"evaluate\" includes the explanation itself; ms are per frame, the median over ≥5 round-robin rounds "
            f"and ≥{args.seconds:g} s.\n\n"
            + benchlib.markdown_table(["model", "input", "method", "explain ms/frame", "evaluate ms/frame",
                                       "evaluate / explain"], rows))
    print()
    print(body)
    if not args.no_record:
        benchlib.record(f"bench_evaluate:cpu-{precision}", f"Evaluate: the cost of the faithfulness metrics (CPU, {precision})",
                        body, device)
        print(f"\nrecorded in {benchlib.REPO / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
