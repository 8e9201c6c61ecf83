"""Does Grad-CAM point at the object? Train a small CNN for seconds on generated images whose object
position is known, then score the pointing game (map peak inside the object's box) on held-out images."""

from __future__ import annotations

import time

import torch
from torch import nn

from streamcam import Explainer

SIZE = 64
COLOURS = ("red", "green", "blue")


def make_scenes(count: int, generator: torch.Generator, objects: int = 1):
    """Noisy grey backgrounds with soft-edged blobs; a blob's class is its dominant colour.

    With objects=2 the two blobs have different classes, one in each half of the image.
    Returns normalised images (N,3,S,S), labels (N,objects) and boxes (N,objects,4) as x0, y0, x1, y1
    in pixels, covering each blob out to 2 sigma.
    """
    grey = torch.rand(count, 1, 1, 1, generator=generator) * 0.6 + 0.2
    images = grey.expand(count, 3, SIZE, SIZE).clone()
    first = torch.randint(len(COLOURS), (count,), generator=generator)
    labels = torch.stack([(first + i) % len(COLOURS) for i in range(objects)], 1)
    left_first = torch.rand(count, generator=generator) < 0.5
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    boxes = []
    for i in range(objects):
        sigma = torch.rand(count, generator=generator) * 3 + 3
        width = SIZE / objects  # each blob stays in its own vertical strip
        strip = torch.where(left_first, i, objects - 1 - i) * width
        cx = strip + 2 * sigma + torch.rand(count, generator=generator) * (width - 4 * sigma)
        cy = 2 * sigma + torch.rand(count, generator=generator) * (SIZE - 4 * sigma)
        distance2 = (xs[None] - cx[:, None, None]) ** 2 + (ys[None] - cy[:, None, None]) ** 2
        blob = torch.exp(-distance2 / (2 * sigma[:, None, None] ** 2))[:, None]
        colour = torch.full((count, 3), 0.2)
        colour[torch.arange(count), labels[:, i]] = 1.0
        images = images * (1 - blob) + colour[:, :, None, None] * blob
        boxes.append(torch.stack([cx - 2 * sigma, cy - 2 * sigma, cx + 2 * sigma, cy + 2 * sigma], 1))
    images = images + 0.1 * torch.randn(count, 3, SIZE, SIZE, generator=generator)
    return (images - 0.5) / 0.25, labels, torch.stack(boxes, 1)


def small_cnn() -> nn.Sequential:
    """Three convolutions (stride 4 in all), global average pooling and a Linear classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(COLOURS)),
    )


def pointing_game(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per image: is the map's peak inside the box?"""
    peak = maps.flatten(1).argmax(1)
    y, x = peak // maps.shape[-1], peak % maps.shape[-1]
    return (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])


def test_gradcam_points_at_the_object_after_seconds_of_training():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    started = time.monotonic()
    for _ in range(300):
        images, labels, _ = make_scenes(32, generator)
        loss = nn.functional.cross_entropy(model(images), labels[:, 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    training_seconds = time.monotonic() - started
    model.eval()

    images, labels, boxes = make_scenes(300, torch.Generator().manual_seed(123))
    explainer = Explainer(model, method="gradcam")
    assert explainer.layer == "5" and explainer.analytic  # the last ReLU, found automatically
    result = explainer(images)
    accuracy = (result.targets == labels[:, 0]).float().mean().item()
    pointing = pointing_game(result.maps, boxes[:, 0]).float().mean().item()
    print(f"trained {training_seconds:.1f} s, accuracy {accuracy:.3f}, pointing game {pointing:.3f}")
    assert training_seconds < 60
    assert accuracy >= 0.9, "the model must have learnt the task for the test to mean anything"
    assert pointing >= 0.9

    # The same one convolution earlier, where the gradients come from autograd.
    earlier = Explainer(model, method="gradcam", layer="3")
    assert not earlier.analytic
    assert pointing_game(earlier(images).maps, boxes[:, 0]).float().mean().item() >= 0.9

    # Two objects of different classes: each class's map must point at its own object.
    images, labels, boxes = make_scenes(300, torch.Generator().manual_seed(7), objects=2)
    for i in range(2):
        maps = explainer(images, labels[:, i]).maps
        hits = pointing_game(maps, boxes[:, i]).float().mean().item()
        print(f"two objects, class of object {i}: pointing game {hits:.3f}")
        assert hits >= 0.9
