"""Engine speed: plain inference vs every streamcam method vs pytorch-grad-cam, in one run.

    scripts/with-env python scripts/bench_engine.py                 # CPU, writes docs/benchmarks.md
    scripts/with-env python scripts/bench_engine.py --device cuda   # GPU at bf16/fp16 (auto precision)

Each row times plain inference, the streamcam method and pytorch-grad-cam's version round-robin on the
same input, so "× plain" and "streamcam / pgc" compare calls made under the same machine conditions.
Frames per second are batch size / median seconds per call (CUDA events on a GPU).
"""

from __future__ import annotations

import os

# numpy's BLAS threads spin after each call (pytorch-grad-cam's SVD and array maths) and took the cores
# from whatever was timed next, by up to 4x: keep numpy's BLAS to one thread. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import functools
import time

import torch

import benchlib  # scripts/ is on sys.path as this script's directory
from streamcam import METHODS, Explainer, StreamcamError, load_model
from streamcam.plan import autocast, resolve_precision

# Slow by construction: Score-CAM runs one forward pass per channel (512 for ResNet-18, 2048 for
# ResNet-50) and SmoothGrad n forward+backward passes, so they get one timed call, without warm-up,
# and Score-CAM only where that takes a minute rather than hours (and pytorch-grad-cam's only on ResNet-18).
SLOW_METHODS = {"scorecam", "smoothgrad"}
SCORECAM_CONFIGS = {("resnet18", 1), ("resnet50", 1)}
# pytorch-grad-cam's Score-CAM and Ablation-CAM (one pass of the head per channel and image: 15 s per
# ResNet-18 frame here) only where that takes a minute.
SLOW_REFERENCES = {("scorecam", "resnet18", 1), ("ablationcam", "resnet18", 1)}
SLOW_CALL_SECONDS = 2.0  # a method whose first call takes longer is timed on one call, as the slow ones
SCORECAM_BATCH = 32  # masked images per forward pass, for both implementations
SMOOTHGRAD_SAMPLES = 8
VIT_GRID = 14  # ViT-B/16 at 224: 14x14 patch tokens after the class token


def reference_classes() -> dict[str, type]:
    from pytorch_grad_cam import (
        AblationCAM,
        EigenCAM,
        EigenGradCAM,
        GradCAM,
        GradCAMElementWise,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "hirescam": HiResCAM,
            "xgradcam": XGradCAM, "gradcam-elementwise": GradCAMElementWise, "eigencam": EigenCAM,
            "eigengradcam": EigenGradCAM, "ablationcam": AblationCAM, "scorecam": ScoreCAM}


def vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """The reshape_transform a pytorch-grad-cam user writes for ViT-B/16 (streamcam needs none)."""
    grid = tokens[:, 1:, :].reshape(tokens.shape[0], VIT_GRID, VIT_GRID, tokens.shape[2])
    return grid.permute(0, 3, 1, 2)


def method_layers(model: torch.nn.Module) -> list[tuple[str, str | None]]:
    """ResNets: every method at layer4, Grad-CAM at layer3 too. Other families: each method at its
    default layer (None), as `streamcam run --method M` picks it."""
    if hasattr(model, "layer4"):
        return [(method, "layer4") for method in METHODS] + [("gradcam", "layer3")]
    return [(method, None) for method in METHODS]


def wants_reference(method: str, model_name: str, batch: int, references: dict[str, type]) -> bool:
    if method not in references:
        return False
    if method in ("scorecam", "ablationcam"):
        return (method, model_name, batch) in SLOW_REFERENCES
    return True


def bench(model_name: str, batch: int, size: int, device: torch.device, precision: str, seconds: float) -> list[list[object]]:
    model = load_model(model_name, "none", device=device).model  # channels_last, as streamcam runs it
    # What a pytorch-grad-cam user passes: the same weights in torchvision's default (NCHW) layout.
    torchvision_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x = torch.randn(batch, 3, size, size, device=device)
    references = reference_classes()
    reshape = vit_tokens_to_grid if model_name.startswith("vit") else None

    def plain():
        with torch.inference_mode(), autocast(device, precision):
            model(x)

    for _ in range(3):  # first calls after loading allocate and pick kernels; keep them out of every row
        plain()
    rows = []
    for method, layer in method_layers(model):
        if method == "scorecam" and (model_name, batch) not in SCORECAM_CONFIGS:
            continue
        options = {"smoothgrad": {"n": SMOOTHGRAD_SAMPLES}, "scorecam": {"batch_size": SCORECAM_BATCH}}.get(method, {})
        pixel_method = method in ("saliency", "smoothgrad")
        try:
            explainer = Explainer(model, method, layer=None if pixel_method else layer, precision=precision, **options)
        except StreamcamError as refused:  # e.g. cam where the head is not GAP + Linear
            print(f"{model_name}: {method} skipped: {refused}", flush=True)
            continue
        layer = explainer.layer
        calls = {"plain": plain, "streamcam": functools.partial(explainer, x)}
        references_used = []
        if wants_reference(method, model_name, batch, references):
            for name, reference_model in [("reference", torchvision_model), ("reference_cl", model)]:
                reference = references[method](model=reference_model, target_layers=[reference_model.get_submodule(layer)],
                                               reshape_transform=reshape)
                reference.batch_size = SCORECAM_BATCH  # Score-CAM and Ablation-CAM read it
                calls[name] = functools.partial(reference, input_tensor=x, targets=None)
                references_used.append(reference)
        slow = method in SLOW_METHODS or max(map(_seconds, calls.values())) > SLOW_CALL_SECONDS  # Ablation-CAM's
        medians = benchlib.interleaved_medians(calls, device, min_rounds=1 if slow else 5,
                                               min_seconds=0 if slow else seconds, warmup=not slow)
        for reference in references_used:
            reference.activations_and_grads.release()
        fps = {name: batch / value for name, value in medians.items()}
        label = f"{method} (n={SMOOTHGRAD_SAMPLES})" if method == "smoothgrad" else method
        ours, theirs = fps["streamcam"], fps.get("reference")
        rows.append([model_name, batch, label, "" if pixel_method else layer, f"{fps['plain']:.1f}", _fps(ours),
                     f"{ours / fps['plain']:.2f}", _fps(theirs) if theirs else "—",
                     f"{ours / theirs:.2f}×" if theirs else "",
                     _fps(fps["reference_cl"]) if theirs else "—"])
        print("  ".join(str(cell) for cell in rows[-1]), flush=True)
    return rows


def reciprocam_vs_scorecam(rows: list[list[object]]) -> str:
    """The paper's claim (Recipro-CAM ~148x faster than Score-CAM), as measured in this run."""
    fps = {(row[0], row[1], row[2]): float(row[5]) for row in rows if row[3] == "layer4"}
    lines = [f"- {model}, batch {batch}, layer4: Recipro-CAM {fps[(model, batch, 'reciprocam')]:.1f} fps, "
             f"Score-CAM {scorecam:.3f} fps: **{fps[(model, batch, 'reciprocam')] / scorecam:.0f}×**"
             for (model, batch, method), scorecam in fps.items()
             if method == "scorecam" and (model, batch, "reciprocam") in fps]
    return "Recipro-CAM against Score-CAM, both streamcam's:\n" + "\n".join(lines) + "\n\n" if lines else ""


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _fps(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50,vgg16,vit_b_16")
    parser.add_argument("--batches", default="1,8", help="batch sizes for ResNets; other families run batch 1 (default 1,8)")
    parser.add_argument("--size", type=int, default=224, help="square input side in pixels (default 224)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--precision", default="auto", help="streamcam's: auto (what --precision auto picks here), fp32, bf16, fp16")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per row (default 3)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precision = resolve_precision(args.precision, device)
    print(benchlib.machine(device), f"precision {precision}", flush=True)
    rows = []
    for model_name in args.models.split(","):
        batches = args.batches.split(",") if model_name.startswith("resnet") else ["1"]
        for batch in map(int, batches):
            rows += bench(model_name, batch, args.size, device, precision, args.seconds)

    header = ["model", "batch", "method", "layer", "plain fps", "streamcam fps", "× plain",
              "pytorch-grad-cam fps", "streamcam / pgc", "pgc on channels_last fps"]
    body = (
        f"Input {args.size}×{args.size}, random weights, top-1 target; streamcam at precision {precision}, "
        "pytorch-grad-cam at fp32 (it has no mixed precision). \"plain\" is inference of the model as "
        "streamcam loads it (channels_last); pytorch-grad-cam gets the same weights in torchvision's default "
        "layout, as its users have them, and the last column gives it streamcam's channels_last model too. "
        "Each row times all of these round-robin on the same input; fps = batch / median seconds per call, after a "
        f"warm-up call, over ≥5 rounds and ≥{args.seconds:g} s. Score-CAM (one forward per channel) is timed "
        f"for {', '.join(f'{m} batch {b}' for m, b in sorted(SCORECAM_CONFIGS))} only, and it and SmoothGrad "
        f"(n={SMOOTHGRAD_SAMPLES}), and any row whose first calls take over {SLOW_CALL_SECONDS:g} s, get one "
        "timed call; pytorch-grad-cam's Score-CAM and Ablation-CAM run on ResNet-18 at batch 1 only. ResNets run every method at layer4 (Grad-CAM at layer3 too); "
        "VGG16 and ViT-B/16 run each method at its default layer, batch 1 (ViT: pytorch-grad-cam gets the token "
        "reshape its users write by hand). Methods a model refuses (CAM without a GAP + Linear head) have no row. "
        "numpy's BLAS runs on one thread (its spinning threads otherwise slowed the next timed call).\n\n"
        + reciprocam_vs_scorecam(rows)
        + benchlib.markdown_table(header, rows)
    )
    print()
    print(body)
    if not args.no_record:
        benchlib.record(f"bench_engine:{device.type}-{precision}", f"Engine ({device.type.upper()}, {precision})", body, device)
        print(f"\nrecorded in {benchlib.REPO / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
