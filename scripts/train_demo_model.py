"""Train the bundled demo model on procedural driving scenes, reproducibly, on the CPU.

    scripts/with-env python scripts/train_demo_model.py                 # writes streamcam/demo/demo_resnet.pt
    scripts/with-env python scripts/train_demo_model.py --steps 100 --output /tmp/quick.pt

Every training image is a fresh scene from streamcam.demo.scenes (road, lane marks, lighting, one car,
pedestrian, traffic sign or cyclist at a random place, scale and colour, sometimes occluded), rendered
at the demo's input size and preprocessed exactly as streamcam preprocesses frames. The same seed gives
the same scenes, the same initial weights and the same checkpoint. Accuracy is measured on held-out
scenes from another seed and stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamcam.demo.model import ARCHITECTURE, CHECKPOINT, INPUT_SIZE, build_demo_model
from streamcam.demo.scenes import CLASSES, random_scene
from streamcam.models import Preprocess

WIDTH = round(INPUT_SIZE * 16 / 9 / 2) * 2  # 16:9 frames at the demo's input size: 284x160


def batch(rng: np.random.Generator, size: int, preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*[random_scene(rng, WIDTH, INPUT_SIZE)[:2] for _ in range(size)])
    return preprocess(np.stack(images), bgr=True), torch.tensor(labels)


def evaluate(model: nn.Module, preprocess: Preprocess, seed: int, count: int) -> float:
    rng = np.random.default_rng(seed)
    correct = 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, count, 100):
            x, y = batch(rng, min(100, count - start), preprocess)
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps (default 250)")
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=1000, help="held-out scenes for the accuracy (default 1000)")
    parser.add_argument("--output", type=Path, default=CHECKPOINT)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(args.seed)
    preprocess = Preprocess(short_side=INPUT_SIZE)
    model = build_demo_model(len(CLASSES)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.15)
    loss_function = nn.CrossEntropyLoss(label_smoothing=0.05)

    started = time.monotonic()
    model.train()
    for step in range(1, args.steps + 1):
        x, y = batch(rng, args.batch_size, preprocess)
        loss = loss_function(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == args.steps:
            elapsed = time.monotonic() - started
            print(f"step {step}/{args.steps}  loss {loss.item():.3f}  {elapsed / 60:.1f} min", flush=True)
    minutes = (time.monotonic() - started) / 60

    accuracy = evaluate(model, preprocess, seed=args.seed + 10_000, count=args.eval_images)
    print(f"held-out accuracy {accuracy:.3f} on {args.eval_images} scenes; trained in {minutes:.1f} min")
    state = {name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in model.state_dict().items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "state_dict": state,
        "class_names": list(CLASSES),
        "architecture": ARCHITECTURE,
        "input_size": INPUT_SIZE,
        "training": {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                     "minutes": round(minutes, 1), "held_out_accuracy": accuracy, "held_out_images": args.eval_images},
    }, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
