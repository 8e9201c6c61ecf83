"""Live controls: a run's method, layer, class, look and pause, changed while it runs (the live view's
page sends them, serve.py).

A change is validated where it is asked for, as the command line validates it, so that a bad value gets
its one-line error at once and the run goes on. It is applied by the explain stage before its next batch,
which then explains with it. Every frame carries the settings it was made with (`ExplainedFrame.settings`,
one dict per change), so that the renderer takes up a new look from the first frame made with it, and
the log and the events record the change on the first frame written with it (`settings_changes`; a live
run may drop the very first). Pausing is the exception: it holds the explain stage at once, as the
window's space bar does.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cam.targets import class_index
from .config import RunConfig
from .errors import StreamcamError, unknown_name

if TYPE_CHECKING:
    import torch

    from .api import Engines
    from .explain import FrameExplainer
    from .pipeline import Pipeline
    from .render import Renderer

log = logging.getLogger("streamcam")

EXPLAIN_SETTINGS = ("method", "layer", "target", "smooth")  # the explain stage applies these
LOOK_SETTINGS = ("alpha", "colormap", "view")  # the renderer takes these up from the frame that carries them
SETTINGS = (*EXPLAIN_SETTINGS, *LOOK_SETTINGS, "paused")
APPLY_WAIT_SECONDS = 5.0  # how long a request waits for the explain stage to apply it


@dataclass
class _Request:
    changes: dict[str, object]
    config: RunConfig  # the settings with these changes
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: StreamcamError | None = None


class LiveControls:
    """The settings a run can change while it runs, for one pipeline. `resizes_output`: whether the run
    may change the size of its pictures (not while a video or images are written at the first size).

    The model is the explain stage's alone while it runs (a probe forward elsewhere would mix with its
    hooks): what needs the model is read here before the run, and new explainers are made by the explain
    stage, which reports back to the waiting request."""

    def __init__(self, config: RunConfig, engines: Engines, device: torch.device, batch_size: int,
                 explainer: FrameExplainer, renderer: Renderer, pipeline: Pipeline, *, resizes_output: bool):
        from .cam.layers import feature_layers

        self.config = dataclasses.replace(config)  # the settings asked for (in force once applied)
        self.engines = engines
        self.device = device
        self.batch_size = batch_size
        self.explainer = explainer
        self.renderer = renderer
        self.pipeline = pipeline
        self.resizes_output = resizes_output
        self.start_view = config.view
        self.default_layer = explainer.explainer.layer  # resolved by the explainer (a layer method's)
        every_layer = feature_layers(explainer.loaded.model)  # one probe, before the run starts
        self.layers = [layer.name for layer in every_layer]  # any of these, or their aliases, may be asked for
        self.layers += [alias for layer in every_layer for alias in layer.aliases]
        self.layer_choices = [name for name in self.layers[:len(every_layer)] if name.count(".") < 2]
        self.in_force = {name: value for name, value in self.current().items() if name != "paused"}
        self._requests: list[_Request] = []
        self._lock = threading.Lock()

    def current(self) -> dict[str, object]:
        """The settings asked for: in force, or from the next batch."""
        config = self.config
        return {"method": config.method, "layer": config.layer or self.default_layer, "target": config.target,
                "alpha": config.alpha, "colormap": config.colormap, "view": config.view, "smooth": config.smooth,
                "paused": self.pipeline.control.paused.is_set()}

    def settings(self) -> dict[str, object]:
        """The settings, and what each may become."""
        from .cam import METHODS
        from .render import COLORMAPS

        return {**self.current(), "choices": {"method": list(METHODS), "layer": self.layer_choices,
                                              "colormap": list(COLORMAPS), "view": self.views()}}

    def views(self) -> list[str]:
        """overlay and side need nothing else; grid (top-k maps) and methods (several explainers) only when
        the run began with them, which made the explain stage produce their maps."""
        return list(dict.fromkeys(["overlay", "side", self.start_view]))

    def request(self, changes: dict[str, object], wait: float = APPLY_WAIT_SECONDS) -> dict[str, object]:
        """Validate `changes` (setting -> value, as the page sends them), queue them for the next batch and
        wait (up to `wait` seconds) until the explain stage has applied them; pause and resume at once.
        Raise a StreamcamError with the command line's message when a value is bad. Returns settings();
        "pending" names what was not applied within `wait` (the stage is in a long batch, or done)."""
        unknown = sorted(set(changes) - set(SETTINGS))
        if unknown:
            raise StreamcamError(f"cannot change {', '.join(unknown)} during a run; the live settings are "
                                 f"{', '.join(SETTINGS)}")
        changes = {name: _typed(name, value) for name, value in changes.items()}
        paused = changes.pop("paused", None)
        request = None
        if changes:
            with self._lock:
                candidate = dataclasses.replace(self.config, **changes)
                self._validate(candidate, changes)
                self.config = candidate
                request = _Request(changes, candidate)
                self._requests.append(request)
        if paused is not None and paused != self.pipeline.control.paused.is_set():
            self.pipeline.toggle_pause()
            log.info("live change: %s at frame %d", "paused" if paused else "resumed", self.pipeline.stats.explained)
        if request is not None and request.done.wait(wait) and request.error is not None:
            raise request.error
        settings = self.settings()
        if request is not None and not request.done.is_set():
            settings["pending"] = sorted(request.changes)
        return settings

    def _validate(self, candidate: RunConfig, changes: dict[str, object]) -> None:
        candidate.validate()
        if candidate.view not in self.views():
            raise StreamcamError(f"--view {candidate.view} needs the run to start with it; "
                                 f"during this run: {', '.join(self.views())}")
        if "view" in changes and not self.resizes_output:
            video = self.pipeline.source.videos[0]
            now = self.renderer.output_size(video.width, video.height, self.start_view)
            then = self.renderer.output_size(video.width, video.height, candidate.view)
            if now != then:
                raise StreamcamError(f"--view {candidate.view} would make the pictures {then[0]}x{then[1]}, but this "
                                     f"run writes them at {now[0]}x{now[1]}; run without -o to change the view")
        if len(candidate.methods) > 1 and self.start_view != "methods":
            raise StreamcamError("several methods side by side need the run to start with --view methods")
        if "layer" in changes and candidate.layer is not None and candidate.layer not in self.layers:
            raise unknown_name("layer", candidate.layer, self.layer_choices, hint="(`streamcam layers MODEL` lists them)")
        if "target" in changes and candidate.target is not None:
            loaded = self.explainer.loaded
            class_index(candidate.target, self.explainer.explainer.num_classes, loaded.class_names)

    def apply_pending(self, frame_index: int) -> None:
        """In the explain stage, before a batch whose first frame is `frame_index` (or while paused): apply
        what was asked since the last time, each request whole or not at all, into a new `in_force`."""
        with self._lock:
            requests, self._requests = self._requests, []
        for request in requests:
            try:
                self._apply(request)
                log.info("live change from frame %d: %s", frame_index, ", ".join(
                    f"{name} {value if value is not None else 'top-1'}" for name, value in request.changes.items()))
            except StreamcamError as error:  # e.g. a method that needs another layer: refused, the run goes on
                request.error = error
                with self._lock:  # back to what is in force
                    self.config = dataclasses.replace(self.config, **{
                        name: self.in_force[name] for name in request.changes})
            finally:
                request.done.set()

    def _apply(self, request: _Request) -> None:
        config, changes, explainer = request.config, request.changes, self.explainer
        explainers = self.engines.get(config, self.device, self.batch_size)[1] if {"method", "layer"} & set(changes) \
            else explainer.explainers
        target = explainer.target
        if "target" in changes:
            target = None if config.target is None else class_index(
                config.target, explainers[0].num_classes, explainer.loaded.class_names)
        explainer.explainers, explainer.explainer, explainer.target = explainers, explainers[0], target
        if "smooth" in changes:
            explainer.smooth = config.smooth
        self.in_force = {**self.in_force, **changes}  # a new dict: frames made before keep theirs


def _typed(name: str, value: object) -> object:
    """A value from the page (JSON: numbers, booleans, strings) as RunConfig holds it."""
    try:
        if name in ("alpha", "smooth"):
            return float(value)
        if name == "paused":
            if not isinstance(value, bool):
                raise ValueError
            return value
    except (TypeError, ValueError):
        kind = "true or false" if name == "paused" else "a number"
        raise StreamcamError(f"{name} must be {kind}, got {value!r}") from None
    if value in (None, "") and name in ("layer", "target"):
        return None  # the default layer; each frame's top-1 class
    if not isinstance(value, str):
        raise StreamcamError(f"{name} must be a name, got {value!r}")
    return value.strip()


def settings_changes(previous: dict[str, object] | None, current: dict[str, object] | None) -> dict[str, object] | None:
    """What changed between two frames' live settings (None: nothing, or no live settings)."""
    if previous is None or current is None or previous is current:
        return None
    return {name: value for name, value in current.items() if previous.get(name) != value} or None
