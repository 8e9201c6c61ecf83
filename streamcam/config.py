"""What a run is asked to do, in one validated place: defaults, YAML presets and their checks.

Precedence: a flag given on the command line > the --config preset > the defaults below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import StreamcamError, unknown_name

VIEWS = ("overlay", "side", "grid")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass
class RunConfig:
    source: str = ""
    output: Path | None = None
    show: bool = False
    # model and explanation
    model: str = "resnet50"
    weights: str = "pretrained"  # ImageNet for torchvision models, the bundled training for "demo"
    labels: Path | None = None
    method: str = "gradcam"
    layer: str | None = None
    align: str = "image"  # where layer cells sit when maps are upsampled; see cam.maps
    target: str | None = None  # a class name or index; None explains each frame's top-1 class
    top_k: int = 1  # classes listed on the frame (and maps in the grid view)
    # rendering
    alpha: float = 0.5
    colormap: str = "jet"
    view: str = "overlay"
    smooth: float = 0.0
    boxes: bool = False  # draw (and log) boxes around the map's hot regions
    box_threshold: str = "0.5"  # a fraction of the map's maximum, or "otsu"
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
    # run control
    max_frames: int | None = None
    log: Path | None = None
    contact_sheet: Path | None = None  # a PNG grid of frames sampled across the run

    def validate(self) -> RunConfig:
        """Raise a StreamcamError naming the first option that is out of range."""
        from .cam import METHODS
        from .cam.maps import ALIGNMENTS
        from .render import COLORMAPS
        from .sinks import ENCODERS
        from .sources import DECODERS

        checks = [
            (0.0 <= self.alpha <= 1.0, f"--alpha must be between 0 and 1, got {self.alpha}"),
            (0.0 <= self.smooth < 1.0, f"--smooth must be in [0, 1), got {self.smooth}"),
            (self.top_k >= 1, f"--top-k must be at least 1, got {self.top_k}"),
            (self.batch_size is None or self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.input_size is None or self.input_size >= 32, f"--input-size must be at least 32, got {self.input_size}"),
            (0 <= self.crf <= 51, f"--crf must be between 0 and 51, got {self.crf}"),
            (self.max_frames is None or self.max_frames >= 1, f"--max-frames must be at least 1, got {self.max_frames}"),
            (self.camera_fps is None or self.camera_fps > 0, f"--camera-fps must be positive, got {self.camera_fps}"),
            (self.reconnect_timeout >= 0, f"--reconnect-timeout must be 0 or more, got {self.reconnect_timeout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise StreamcamError(message)
        for kind, value, valid in [
            ("view", self.view, VIEWS), ("colormap", self.colormap, COLORMAPS),
            ("method", self.method, METHODS), ("preset", self.preset or "veryfast", PRESETS),
            ("alignment", self.align, ALIGNMENTS), ("encoder", self.encoder, ENCODERS),
            ("decoder", self.decoder, DECODERS),
        ]:
            if value not in valid:
                raise unknown_name(kind, value, valid)
        if self.camera_size is not None:
            parse_size(self.camera_size)
        self.box_threshold_value()
        return self

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
        value = yaml.safe_load(yaml.serialize(value_node))
        values[key] = _coerce(path, line, key, value)
    return values


def _unknown_key(path: Path, line: int, key: object) -> StreamcamError:
    valid = [name.replace("_", "-") for name in FIELDS if name != "source"]
    error = unknown_name("key", key, valid)
    return StreamcamError(f"{path} line {line}: {error}")


def _coerce(path: Path, line: int, key: str, value: object) -> object:
    """Check a preset value's type against the RunConfig field and convert paths."""
    annotation = str(FIELDS[key].type)
    if value is None:
        if "None" not in annotation:
            raise StreamcamError(f"{path} line {line}: {key} cannot be empty")
        return None
    expected = {"bool": bool, "int": int, "float": (int, float), "str": (str, int), "Path": str}
    base = annotation.split(" |")[0]
    if base in expected and (not isinstance(value, expected[base]) or (base != "bool" and isinstance(value, bool))):
        raise StreamcamError(f"{path} line {line}: {key} must be a {base}, got {value!r}")
    if base == "Path":
        return Path(value)
    if base == "str":
        return str(value)
    return float(value) if base == "float" else value
