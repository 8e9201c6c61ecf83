"""What a run is asked to do, in one validated place: defaults, YAML presets and their checks.

Precedence: a flag given on the command line > the --config preset > the defaults below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .errors import StreamcamError, unknown_name

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .sources import Source

VIEWS = ("overlay", "side", "grid", "methods")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass
class RunConfig:
    # what the user typed (a file, folder, URL, camera, lavfi:GRAPH), or, from Python, a Source or any
    # iterable of frames (sources.IterableSource)
    source: str | Source | Iterable = ""
    output: Path | None = None
    show: bool = False
    # model and explanation
    model: str = "resnet50"
    weights: str = "pretrained"  # ImageNet for torchvision models, the bundled training for "demo"
    labels: Path | None = None
    method: str = "gradcam"  # one method, or several separated by commas (--view methods, streamcam check)
    method_options: dict | None = None  # {method: {option: value}}, e.g. {"scorecam": {"batch_size": 64}}
    layer: str | None = None
    align: str = "image"  # where layer cells sit when maps are upsampled; see cam/cells.py
    target: str | None = None  # a class name or index; None explains each frame's top-1 class
    top_k: int = 1  # classes listed on the frame (and maps in the grid view)
    # rendering
    alpha: float = 0.5
    colormap: str = "jet"
    view: str = "overlay"
    smooth: float = 0.0
    boxes: bool = False  # draw (and log) boxes around the map's hot regions
    motion: str | None = None  # log each map's share on moving pixels: auto, still or moving (motion.py)
    motion_noise: float = 15.0  # grey levels a still camera's pixel must change by to count as moving
    motion_flow: float = 1.0  # pixels (at the motion mask's working width) a pixel must move beyond the camera's motion
    hud_motion: bool = False  # show the motion share on the frame too (turns on --motion auto)
    box_threshold: float | str = 0.5  # a fraction of the map's maximum, or "otsu"
    # compute
    input_size: int | None = None  # None: what the checkpoint was trained at, else 224
    batch_size: int | None = None  # None: 1 for live sources (latency), 4 for files (throughput)
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False  # torch.compile the forward pass (CUDA graphs on a GPU); pays on long runs only
    # encoder
    crf: int = 23
    preset: str | None = None  # None: veryfast for files, ultrafast for live sources
    encoder: str = "auto"  # H.264: auto (NVENC when the model is on a GPU that has it), libx264, nvenc
    decoder: str = "auto"  # video decoding: auto (NVDEC when the model is on a GPU), software, nvdec
    # camera capture
    camera_size: str | None = None  # "1280x720"; None keeps the camera's default
    camera_fps: float | None = None
    reconnect_timeout: float = 30.0  # seconds a dropped stream or camera may stay away before the run ends
    # the source's video
    video_stream: int | str = 0  # which camera of a file with several (0, 1, ...), or "all"
    fps: float | None = None  # the frame rate of a stream without timestamps (raw .h264); None: its own
    # run control
    max_frames: int | None = None
    log: Path | None = None
    contact_sheet: Path | None = None  # a PNG grid of frames sampled across the run
    # the live view in a browser (serve.py)
    serve: str | None = None  # [HOST:]PORT; loopback unless a host is given
    serve_token: str | None = None  # needed on every request; off loopback one is made up when not given
    serve_max_clients: int = 8  # viewers of the stream (and, apart, of the events) at once

    def validate(self, extra_outputs: bool = False) -> RunConfig:
        """Raise a StreamcamError naming the first option that is out of range, that does not go with
        another, or whose output cannot be written; before anything opens. `extra_outputs`: the caller
        adds sinks of its own (`streamcam check`)."""
        from .cam import METHODS
        from .cam.maps import ALIGNMENTS
        from .motion import MOTION_MODES
        from .plan import DECODERS, ENCODERS, PRECISIONS
        from .render import COLORMAPS
        from .sinks import check_output

        checks = [
            (0.0 <= self.alpha <= 1.0, f"--alpha must be between 0 and 1, got {self.alpha}"),
            (0.0 <= self.smooth < 1.0, f"--smooth must be in [0, 1), got {self.smooth}"),
            (self.top_k >= 1, f"--top-k must be at least 1, got {self.top_k}"),
            (self.batch_size is None or self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.input_size is None or self.input_size >= 32, f"--input-size must be at least 32, got {self.input_size}"),
            (0 <= self.crf <= 51, f"--crf must be between 0 and 51, got {self.crf}"),
            (self.max_frames is None or self.max_frames >= 1, f"--max-frames must be at least 1, got {self.max_frames}"),
            (self.camera_fps is None or self.camera_fps > 0, f"--camera-fps must be positive, got {self.camera_fps}"),
            (self.fps is None or self.fps > 0, f"--fps must be positive, got {self.fps}"),
            (self.motion_noise > 0, f"--motion-noise must be positive, got {self.motion_noise}"),
            (self.motion_flow > 0, f"--motion-flow must be positive, got {self.motion_flow}"),
            (self.reconnect_timeout >= 0, f"--reconnect-timeout must be 0 or more, got {self.reconnect_timeout}"),
            (self.serve_max_clients >= 1, f"--serve-max-clients must be at least 1, got {self.serve_max_clients}"),
            (not (self.view == "grid" and self.target is not None),
             "--target picks one class; the grid view shows the top-k classes (--top-k)"),
        ]
        for ok, message in checks:
            if not ok:
                raise StreamcamError(message)
        for kind, value, valid in [
            ("view", self.view, VIEWS), ("colormap", self.colormap, COLORMAPS),
            ("preset", self.preset or "veryfast", PRESETS),
            ("alignment", self.align, ALIGNMENTS), ("encoder", self.encoder, ENCODERS),
            ("decoder", self.decoder, DECODERS), ("precision", self.precision, PRECISIONS),
        ]:
            if value not in valid:
                raise unknown_name(kind, value, valid)
        if self.motion is not None and self.motion not in MOTION_MODES:
            raise unknown_name("motion mode", self.motion, MOTION_MODES)
        for method in self.methods:
            if method not in METHODS:
                raise unknown_name("method", method, METHODS)
        if len(self.methods) > 1 and self.view != "methods" and not extra_outputs:
            raise StreamcamError(f"--method {self.method} names several methods: show them side by side with "
                                 "--view methods (or compare them with streamcam check)")
        for method in self.method_options or {}:
            self.options_of(method, validate=True)
        if self.camera_size is not None:
            parse_size(self.camera_size)
        self.box_threshold_value()
        self.video_stream_value()
        if self.serve is not None:
            from .serve import parse_address

            parse_address(self.serve)
        outputs = [self.output, self.log, self.contact_sheet]
        if not self.show and self.serve is None and outputs == [None] * 3 and not extra_outputs:
            raise StreamcamError("nothing to do: give -o/--output, --log, --contact-sheet, --show or --serve")
        for output, is_log in zip(outputs, (False, True, False)):
            if output is not None:
                check_output(output, self.source, log=is_log)
        return self

    @property
    def motion_settings(self) -> tuple[str, float, float] | None:
        """A MotionMask's mode, noise and min_flow: --motion (auto for --hud-motion alone); None: none."""
        mode = self.motion or ("auto" if self.hud_motion else None)
        return (mode, self.motion_noise, self.motion_flow) if mode else None

    @property
    def methods(self) -> list[str]:
        """The methods of --method, in order."""
        return [name.strip() for name in self.method.split(",") if name.strip()]

    def options_of(self, method: str, validate: bool = False) -> dict[str, object]:
        """--method-option values for `method`, typed (a method's options are its dataclass fields)."""
        from .cam.methods import METHODS, make_method, typed_options

        given = (self.method_options or {}).get(method, {})
        if validate:
            if method not in METHODS:
                raise unknown_name("method", method, METHODS, hint="(in --method-option)")
            if not isinstance(given, dict):
                raise StreamcamError(f"--method-option {method}: expected option=value pairs, got {given!r}")
        options = typed_options(method, given)
        if validate:
            make_method(method, options)  # every option known and in range, or one clear line
        return options

    @property
    def writes_video(self) -> bool:
        """The output is a video file (not images, not only a log)."""
        from .formats import VIDEO_CODECS

        return self.output is not None and self.output.suffix.lower() in VIDEO_CODECS

    def video_stream_value(self) -> int | str:
        """--video-stream as the source takes it: an index, or "all"."""
        value = str(self.video_stream).lower()
        if value == "all" or value.isdigit():
            return value if value == "all" else int(value)
        raise StreamcamError(f"--video-stream must be a stream number (0, 1, ...) or all, got {self.video_stream!r}")

    def box_threshold_value(self) -> float | str:
        """--box-threshold as the metrics take it: a float in (0, 1], or "otsu"."""
        if str(self.box_threshold).lower() == "otsu":
            return "otsu"
        try:
            value = float(self.box_threshold)
        except ValueError:
            value = -1.0
        if not 0 < value <= 1:
            raise StreamcamError(f"--box-threshold must be a fraction in (0, 1] or otsu, got {self.box_threshold!r}")
        return value


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise StreamcamError(f"a size must look like 1280x720, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise StreamcamError(f"a size must be positive, got {text!r}")
    return width, height


FIELDS = {field.name: field for field in dataclasses.fields(RunConfig)}


def load_preset(path: str | Path) -> dict[str, object]:
    """Read a YAML preset: a mapping of RunConfig fields (dashes or underscores) to values.

    Errors say which key and where: "configs/x.yaml line 4: unknown key 'colourmap'; did you mean colormap?".
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise StreamcamError(f"cannot read config {path}: {error.strerror or error}") from None
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise StreamcamError(f"{path}{where}: invalid YAML ({problem})") from None
    if document is None:
        return {}
    if not isinstance(document, yaml.MappingNode):
        raise StreamcamError(f"{path}: a config must be a mapping of option: value")

    values: dict[str, object] = {}
    for key_node, value_node in document.value:
        line = key_node.start_mark.line + 1
        key = str(key_node.value).replace("-", "_")
        if key not in FIELDS or key == "source":
            raise _unknown_key(path, line, key_node.value)
        try:
            value = yaml.SafeLoader("").construct_object(value_node, deep=True)
        except (yaml.YAMLError, ValueError) as error:  # a tag that does not fit: !!float abc, !custom
            problem = getattr(error, "problem", None) or str(error)
            raise StreamcamError(f"{path} line {line}: {key}: {problem}") from None
        values[key] = _coerce(path, line, key, value)
    return values


def _unknown_key(path: Path, line: int, key: object) -> StreamcamError:
    valid = [name.replace("_", "-") for name in FIELDS if name != "source"]
    error = unknown_name("key", key, valid)
    return StreamcamError(f"{path} line {line}: {error}")


def _coerce(path: Path, line: int, key: str, value: object) -> object:
    """A preset value in its natural YAML type, checked against the RunConfig field's annotation (a union
    takes the first type that fits) and converted: numbers to floats, names to paths, and a class index
    (an int) to the string the command line would give."""
    kinds = [kind.strip() for kind in str(FIELDS[key].type).split("|")]
    if value is None:
        if "None" not in kinds:
            raise StreamcamError(f"{path} line {line}: {key} cannot be empty")
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    for kind in kinds:
        if kind == "dict" and isinstance(value, dict):
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and is_number and isinstance(value, int):
            return value
        if kind == "float" and is_number:
            return float(value)
        if kind == "str" and (isinstance(value, str) or (is_number and isinstance(value, int))):
            return str(value)
        if kind == "Path" and isinstance(value, str):
            return Path(value)
    wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds if kind != "None")
    raise StreamcamError(f"{path} line {line}: {key} must be {wanted}, got {value!r}")


_KIND_NAMES = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a name", "Path": "a path",
               "dict": "a mapping"}
