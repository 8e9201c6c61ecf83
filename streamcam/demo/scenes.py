"""Procedural driving-like scenes with one object whose box is known: the demo's data and ground truth.

A scene is a road under a sky (perspective lane marks, textured asphalt, verges, roadside clutter), lit
with random brightness, tint and shadows, and one object of a class: car, pedestrian, traffic sign or
cyclist, each a distinct shape at a random position, scale and colour, sometimes partly occluded. All
geometry is in fractions of the image height, so a scene draws the same at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

# The first four classes are objects. "Empty road" scenes have none: without that class, one object class
# could be recognised by the absence of the others, and its heatmap would light up the background.
CLASSES = ("car", "pedestrian", "traffic sign", "cyclist", "empty road")
OBJECT_CLASSES = 4
_AA = cv2.LINE_AA


@dataclass(frozen=True)
class Background:
    horizon: float  # y of the horizon, fraction of height
    vanish_x: float  # x of the vanishing point, fraction of width
    road_half_width: float  # at the bottom edge, fraction of width
    sky_top: tuple[int, int, int]
    sky_bottom: tuple[int, int, int]
    verge: tuple[int, int, int]
    asphalt: int
    clutter_seed: int
    brightness: float
    tint: tuple[float, float, float]
    shadow: tuple[float, float, float] | None  # (x0, x1, strength) of a shadow band across the road


@dataclass(frozen=True)
class SceneObject:
    cls: int
    x: float  # centre x, fraction of width
    ground: float  # y where the object stands, fraction of height
    size: float  # height, fraction of image height
    colour: tuple[int, int, int]
    facing: int  # +1 right, -1 left
    phase: float  # walking / pedalling phase, radians
    occluder: tuple[float, float, float] | None  # (x offset, width, height) as fractions of the object's size
    sign_shape: int = 0  # traffic sign: 0 round, 1 triangle, 2 blue round


def random_background(rng: np.random.Generator) -> Background:
    daylight = rng.uniform(0.55, 1.25)
    return Background(
        horizon=rng.uniform(0.32, 0.5),
        vanish_x=rng.uniform(0.35, 0.65),
        road_half_width=rng.uniform(0.35, 0.6),
        sky_top=tuple(int(c) for c in rng.integers([150, 90, 40], [235, 170, 110])),
        sky_bottom=tuple(int(c) for c in rng.integers([200, 170, 140], [255, 230, 215])),
        verge=tuple(int(c) for c in rng.choice([[60, 120, 70], [70, 110, 120], [90, 140, 110], [120, 130, 140]])
                    + rng.integers(-20, 20, 3)),
        asphalt=int(rng.integers(70, 120)),
        clutter_seed=int(rng.integers(1 << 30)),
        brightness=daylight,
        tint=tuple(rng.uniform(0.85, 1.15, 3)),
        shadow=(*sorted(rng.uniform(0, 1, 2)), rng.uniform(0.5, 0.8)) if rng.random() < 0.4 else None,
    )


def random_object(rng: np.random.Generator, background: Background, cls: int | None = None) -> SceneObject:
    """An object standing on the ground, sized by its distance below the horizon (perspective)."""
    cls = int(rng.integers(OBJECT_CLASSES)) if cls is None else cls
    ground = rng.uniform(background.horizon + 0.45 * (1 - background.horizon), 0.99)
    depth = (ground - background.horizon) / (1 - background.horizon)  # 0 at the horizon, 1 at the bottom
    # Heights are kept large enough that each object spans more than one cell of a stride-32 feature
    # map at the demo's input size (160 pixels high): narrower than that, no layer4 map can point at it.
    low, high = {0: (0.3, 0.6), 1: (0.55, 0.85), 2: (0.5, 0.85), 3: (0.42, 0.8)}[cls]
    size = float(low + (high - low) * depth * rng.uniform(0.8, 1.0))
    size = min(size, ground - 0.02)  # keep the object inside the frame
    half_width = _aspect(cls) * size / 2 * 9 / 16  # in fractions of the width of a 16:9 frame
    x = rng.uniform(half_width + 0.02, 1 - half_width - 0.02)
    palette = {
        0: [(40, 40, 200), (200, 80, 30), (230, 230, 230), (160, 160, 165), (30, 30, 30), (40, 190, 230)],
        1: [(60, 60, 180), (180, 120, 40), (50, 150, 60), (200, 200, 200), (90, 40, 120)],
        2: [(255, 255, 255)],
        3: [(30, 160, 230), (200, 60, 60), (60, 200, 80), (230, 230, 230)],
    }[cls]
    colour = tuple(int(np.clip(c + rng.integers(-25, 25), 0, 255)) for c in palette[rng.integers(len(palette))])
    occluder = None
    if rng.random() < 0.3:
        occluder = (rng.uniform(-0.4, 0.4), rng.uniform(0.2, 0.45), rng.uniform(0.2, 0.4))
    return SceneObject(cls, x, ground, size, colour, int(rng.choice([-1, 1])), rng.uniform(0, 2 * np.pi),
                       occluder, int(rng.integers(3)))


def _aspect(cls: int) -> float:
    """Width / height of each class's drawing."""
    return {0: 2.0, 1: 0.45, 2: 0.5, 3: 1.35}[cls]


def draw_scene(width: int, height: int, background: Background, obj: SceneObject | None,
               noise_rng: np.random.Generator | None = None) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """A BGR uint8 image, and the object's box (x0, y0, x1, y1) in pixels, clipped to the image."""
    image = _draw_background(width, height, background)
    box = None
    if obj is not None:
        box = _draw_object(image, obj)
        if obj.occluder is not None:
            _draw_occluder(image, obj, box)
    image = _light(image, background)
    if noise_rng is not None:
        image = np.clip(image + noise_rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, box


def random_scene(rng: np.random.Generator, width: int, height: int, cls: int | None = None):
    """(image, class index, box) for training and evaluation; box is None for an empty road."""
    cls = int(rng.integers(len(CLASSES))) if cls is None else cls
    background = random_background(rng)
    obj = random_object(rng, background, cls) if cls < OBJECT_CLASSES else None
    image, box = draw_scene(width, height, background, obj, rng)
    return image, cls, box


# ----- drawing ------------------------------------------------------------------------------------------
def _draw_background(width: int, height: int, bg: Background) -> np.ndarray:
    horizon = int(bg.horizon * height)
    ramp = np.linspace(0, 1, max(1, horizon))[:, None, None]
    image = np.empty((height, width, 3), np.float32)
    image[:horizon] = (1 - ramp) * np.array(bg.sky_top) + ramp * np.array(bg.sky_bottom)
    rng = np.random.default_rng(bg.clutter_seed)
    ground_noise = rng.normal(0, 10, (max(1, (height - horizon) // 4 + 1), width // 4 + 1, 1))
    ground_noise = cv2.resize(ground_noise.astype(np.float32), (width, height - horizon))[..., None]
    image[horizon:] = np.array(bg.verge) + ground_noise
    image = image.clip(0, 255).astype(np.uint8)

    # Buildings and trees on the horizon.
    for _ in range(rng.integers(3, 9)):
        x = int(rng.uniform(0, width))
        w = int(rng.uniform(0.04, 0.15) * width)
        h = int(rng.uniform(0.03, 0.15) * height)
        shade = tuple(int(c) for c in rng.integers(60, 170, 3))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, horizon - h), (x + w, horizon), shade, -1)
        else:
            cv2.ellipse(image, (x, horizon), (w // 2, h), 0, 180, 360, (40, int(rng.integers(80, 140)), 50), -1, _AA)

    vanish = (int(bg.vanish_x * width), horizon)
    half = bg.road_half_width * width
    road = np.array([[vanish[0] - 2, horizon], [vanish[0] + 2, horizon],
                     [width / 2 + half, height], [width / 2 - half, height]], np.int32)
    asphalt = np.full_like(image, bg.asphalt)
    asphalt = cv2.add(asphalt, (rng.normal(0, 7, image.shape)).clip(-20, 20).astype(np.int8), dtype=cv2.CV_8U)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, road, 255, _AA)
    image = np.where(mask[..., None] > 127, asphalt, image)

    # Edge lines and dashed lane marks, in perspective.
    for side in (-1, 1):
        edge = (int(width / 2 + side * half * 0.92), height)
        cv2.line(image, vanish, edge, (235, 235, 235), max(1, height // 120), _AA)
    lane_bottom = int(width / 2 + rng.uniform(-0.1, 0.1) * width)
    t = 0.0
    while t < 1:
        dash = 0.06 + 0.1 * t
        p0, p1 = _along(vanish, (lane_bottom, height), t), _along(vanish, (lane_bottom, height), min(1, t + dash))
        cv2.line(image, p0, p1, (240, 240, 240), max(1, int(height * 0.012 * (0.3 + t))), _AA)
        t += dash * 2.2

    # Roadside poles and cracks: clutter that belongs to no class.
    for _ in range(rng.integers(0, 4)):
        x = int(rng.uniform(0, width))
        top = int(horizon - rng.uniform(0, 0.1) * height)
        bottom = int(horizon + rng.uniform(0.05, 0.3) * height)
        cv2.line(image, (x, top), (x, bottom), (90, 90, 95), max(1, height // 150), _AA)
    for _ in range(rng.integers(0, 5)):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(horizon, height)))
        axes = (int(rng.uniform(0.02, 0.08) * width), int(rng.uniform(0.005, 0.02) * height))
        cv2.ellipse(image, centre, axes, rng.uniform(0, 180), 0, 360, (bg.asphalt - 30,) * 3, -1, _AA)
    return image


def _along(a: tuple[int, int], b: tuple[int, int], t: float) -> tuple[int, int]:
    return int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t)


def _draw_object(image: np.ndarray, obj: SceneObject) -> tuple[int, int, int, int]:
    height, width = image.shape[:2]
    size = obj.size * height
    cx, ground = obj.x * width, obj.ground * height
    draw = {0: _car, 1: _pedestrian, 2: _sign, 3: _cyclist}[obj.cls]
    x0, y0, x1, y1 = draw(image, cx, ground, size, obj)
    return max(0, int(x0)), max(0, int(y0)), min(width - 1, int(x1)), min(height - 1, int(y1))


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _thick(size: float, fraction: float) -> int:
    return max(1, int(round(size * fraction)))


def _car(image, cx, ground, size, obj):
    w = size * _aspect(0)
    body_top, body_bottom = ground - size * 0.62, ground - size * 0.15
    cv2.rectangle(image, _pt(cx - w / 2, body_top), _pt(cx + w / 2, body_bottom), obj.colour, -1, _AA)
    f = obj.facing  # the cabin leans to the front, and the lamp is at the front
    cabin = np.array([_pt(cx - 0.32 * w * f, body_top), _pt(cx - 0.2 * w * f, ground - size),
                      _pt(cx + 0.12 * w * f, ground - size), _pt(cx + 0.3 * w * f, body_top)], np.int32)
    cv2.fillConvexPoly(image, cabin, obj.colour, _AA)
    glass = (200, 170, 120)
    for offset in (-0.16, 0.1):
        cv2.rectangle(image, _pt(cx + w * offset - w * 0.1, ground - size * 0.92),
                      _pt(cx + w * offset + w * 0.1, body_top - size * 0.02), glass, -1, _AA)
    for offset in (-0.3, 0.3):
        cv2.circle(image, _pt(cx + w * offset, ground - size * 0.15), int(size * 0.15), (25, 25, 25), -1, _AA)
        cv2.circle(image, _pt(cx + w * offset, ground - size * 0.15), int(size * 0.06), (150, 150, 150), -1, _AA)
    lamp_x = cx + f * w * 0.47
    cv2.circle(image, _pt(lamp_x, body_top + size * 0.12), max(1, int(size * 0.05)), (120, 230, 255), -1, _AA)
    return cx - w / 2, ground - size, cx + w / 2, ground


def _person(image, cx, feet, size, obj, colour):
    """A walking figure `size` tall standing at `feet`; returns its box."""
    skin = (140, 170, 210)
    head_r = size * 0.09
    neck = feet - size * 0.8
    hip = feet - size * 0.45
    thick = _thick(size, 0.09)
    cv2.line(image, _pt(cx, neck), _pt(cx, hip), colour, _thick(size, 0.16), _AA)
    swing = np.sin(obj.phase) * size * 0.14
    cv2.line(image, _pt(cx, hip), _pt(cx + swing, feet), (60, 50, 40), thick, _AA)
    cv2.line(image, _pt(cx, hip), _pt(cx - swing, feet), (60, 50, 40), thick, _AA)
    cv2.line(image, _pt(cx, neck + size * 0.05), _pt(cx - swing * 0.8, hip + size * 0.02), colour, _thick(size, 0.06), _AA)
    cv2.line(image, _pt(cx, neck + size * 0.05), _pt(cx + swing * 0.8, hip + size * 0.02), colour, _thick(size, 0.06), _AA)
    cv2.circle(image, _pt(cx, neck - head_r), int(head_r), skin, -1, _AA)
    return cx - size * 0.2, feet - size, cx + size * 0.2, feet


def _pedestrian(image, cx, ground, size, obj):
    return _person(image, cx, ground, size, obj, obj.colour)


def _sign(image, cx, ground, size, obj):
    plate = size * 0.5
    centre = (cx, ground - size + plate / 2)
    cv2.line(image, _pt(cx, centre[1]), _pt(cx, ground), (120, 120, 125), _thick(size, 0.05), _AA)
    red, white, blue = (30, 30, 210), (245, 245, 245), (170, 80, 20)
    if obj.sign_shape == 1:
        triangle = np.array([_pt(cx, centre[1] - plate / 2), _pt(cx + plate / 2, centre[1] + plate * 0.4),
                             _pt(cx - plate / 2, centre[1] + plate * 0.4)], np.int32)
        cv2.fillConvexPoly(image, triangle, red, _AA)
        cv2.fillConvexPoly(image, ((triangle - np.array(_pt(*centre))) * 0.65 + np.array(_pt(*centre))).astype(np.int32), white, _AA)
    else:
        outer, inner = (red, white) if obj.sign_shape == 0 else (white, blue)
        cv2.circle(image, _pt(*centre), int(plate / 2), outer, -1, _AA)
        cv2.circle(image, _pt(*centre), int(plate * 0.36), inner, -1, _AA)
    return cx - plate / 2, ground - size, cx + plate / 2, ground


def _cyclist(image, cx, ground, size, obj):
    wheel = size * 0.22
    spread = size * 0.42
    rims = (30, 30, 30)
    for dx in (-spread, spread):
        cv2.circle(image, _pt(cx + dx, ground - wheel), int(wheel), rims, _thick(size, 0.035), _AA)
    seat = (cx - spread * 0.35 * obj.facing, ground - size * 0.5)
    bars = (cx + spread * 0.7 * obj.facing, ground - size * 0.55)
    for a, b in [((cx - spread, ground - wheel), seat), (seat, (cx, ground - wheel)), ((cx, ground - wheel), bars),
                 (bars, (cx + spread, ground - wheel)), ((cx - spread, ground - wheel), (cx, ground - wheel))]:
        cv2.line(image, _pt(*a), _pt(*b), obj.colour, _thick(size, 0.035), _AA)
    x0, y0, x1, y1 = _person(image, seat[0] + spread * 0.15 * obj.facing, ground - wheel * 0.6, size * 0.9, obj, (70, 70, 160))
    return cx - spread - wheel, min(y0, ground - size), cx + spread + wheel, ground


def _draw_occluder(image, obj: SceneObject, box: tuple[int, int, int, int]) -> None:
    """A bush or a barrier in front of part of the object (never more than ~40 % of it)."""
    x0, y0, x1, y1 = box
    size = y1 - y0
    offset, w, h = obj.occluder
    cx = (x0 + x1) / 2 + offset * (x1 - x0)
    top = y1 - h * size
    if int(obj.phase * 10) % 2:
        cv2.ellipse(image, _pt(cx, y1), (int(w * size), int(h * size)), 0, 180, 360, (40, 110, 60), -1, _AA)
    else:
        cv2.rectangle(image, _pt(cx - w * size, top), _pt(cx + w * size, y1), (200, 200, 205), -1, _AA)
        for stripe in np.arange(cx - w * size, cx + w * size, max(2.0, size * 0.12)):
            cv2.line(image, _pt(stripe, y1), _pt(stripe + size * 0.06, top), (40, 40, 200), _thick(size, 0.03), _AA)


def _light(image: np.ndarray, bg: Background) -> np.ndarray:
    gain = np.array(bg.tint, np.float32) * bg.brightness
    lit = image.astype(np.float32) * gain
    if bg.shadow is not None:
        height, width = image.shape[:2]
        x0, x1, strength = bg.shadow
        lit[int(bg.horizon * height):, int(x0 * width):int(x1 * width)] *= strength
    return lit.clip(0, 255).astype(np.uint8)


def demo_clip(width: int, height: int, fps: int, seconds: float, seed: int = 7):
    """Objects moving through the scene, one class after another, with the light slowly changing.

    Yields (BGR image, class index, box) per frame.
    """
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * fps))
    segment = max(1, frames // OBJECT_CLASSES)
    for cls in range(OBJECT_CLASSES):
        count = segment if cls < OBJECT_CLASSES - 1 else frames - segment * (OBJECT_CLASSES - 1)
        background = random_background(rng)
        start = random_object(rng, background, cls)
        # Across the frame in the direction it faces, coming slightly closer.
        half_width = _aspect(cls) * start.size * height / width / 2
        x_from, x_to = (half_width + 0.03, 1 - half_width - 0.03)[:: start.facing]
        for i in range(count):
            t = i / max(1, count - 1)
            brightness = background.brightness * (1 + 0.15 * np.sin(2 * np.pi * (t + cls / 4)))
            lit = replace(background, brightness=brightness)
            obj = replace(start, x=x_from + (x_to - x_from) * t, size=start.size * (0.9 + 0.1 * t),
                          phase=start.phase + 8 * np.pi * t)
            image, box = draw_scene(width, height, lit, obj, np.random.default_rng(seed * 1000 + cls * 100 + i))
            yield image, cls, box
