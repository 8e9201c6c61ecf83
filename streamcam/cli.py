"""The `streamcam` command line. Commands only turn flags into a RunConfig; the work happens in the library."""

from __future__ import annotations

import inspect
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from .config import FIELDS, RunConfig, load_preset
from .errors import RunFailed, StreamcamError

app = typer.Typer(
    name="streamcam",
    help="See where a vision model looks: Grad-CAM heatmaps over camera, video and stream frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
DEFAULT = RunConfig()

# Options shared by `run` and `webcam`. Defaults come from RunConfig, so the help tells the truth.
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write the annotated video here (.mp4, .mkv, .mov, .webm, ...), or images into this folder.")]
Model = Annotated[str, typer.Option(help="demo (bundled, offline) or a torchvision classifier (see `streamcam models`).")]
Weights = Annotated[str, typer.Option(help="pretrained (ImageNet, downloaded once; demo: its bundled training), imagenet, none (random), or a checkpoint PATH.")]
Labels = Annotated[Path | None, typer.Option(help="Class names: a text file (one per line) or JSON list.")]
Method = Annotated[str, typer.Option(help="Explanation method (see `streamcam methods`); several, comma-separated, with --view methods.")]
MethodOption = Annotated[list[str] | None, typer.Option("--method-option", help="A method's option, METHOD.OPTION=VALUE (e.g. scorecam.batch_size=64, reciprocam.gaussian=true); again for more. `streamcam methods` lists them.")]
Layer = Annotated[str | None, typer.Option(help="Layer to explain, e.g. layer4 or layer3.5 (see `streamcam layers MODEL`). \\[default: last feature map before pooling]")]
Align = Annotated[str, typer.Option(help="Where layer cells sit when maps are upsampled: image (as pytorch-grad-cam) or receptive-field (at their receptive fields' centres; half a cell up and left).")]
Target = Annotated[str | None, typer.Option(help="Explain this class (name or index) in every frame. \\[default: each frame's top-1]")]
TopK = Annotated[int, typer.Option("--top-k", help="Classes listed on the frame; with --view grid, maps shown.")]
Alpha = Annotated[float, typer.Option(help="Heatmap opacity, 0..1.")]
Colormap = Annotated[str, typer.Option(help="jet, turbo, inferno or viridis.")]
View = Annotated[str, typer.Option(help="overlay, side (original | overlay), grid (one map per top-k class) or methods (one map per --method, with its time).")]
Boxes = Annotated[bool, typer.Option(help="Draw boxes around the heatmap's hot regions, and log them.")]
BoxThreshold = Annotated[str, typer.Option("--box-threshold", help="Where a hot region starts: a fraction of the map's maximum, or otsu.")]
Smooth = Annotated[float, typer.Option(help="Temporal smoothing of maps against flicker, 0 (off) .. <1 (strong).")]
InputSize = Annotated[int | None, typer.Option("--input-size", help="Model input short side in pixels (aspect kept, nothing cropped). \\[default: the checkpoint's training size, else 224]")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Frames per forward pass. \\[default: 1 for live sources, 4 for files]")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Precision = Annotated[str, typer.Option(help="auto (bf16 on GPUs and on CPUs with bf16 instructions, fp16 on older GPUs, else fp32), fp32, bf16 or fp16.")]
Compile = Annotated[bool, typer.Option(help="Compile the model's forward pass with torch.compile (CUDA graphs on a GPU): compiling takes tens of seconds, so it pays on long runs only. Only where no backward pass is needed (the default layer).")]
Crf = Annotated[int, typer.Option(help="Video quality: 0 (lossless) .. 51; lower is better and bigger.")]
Preset = Annotated[str | None, typer.Option(help="x264 speed preset. \\[default: veryfast for files, ultrafast for live]")]
Encoder = Annotated[str, typer.Option(help="H.264 encoder: auto (NVENC when the model runs on a GPU that has one, checked with a one-frame test; else libx264), libx264 or nvenc.")]
Decoder = Annotated[str, typer.Option(help="Video decoding: auto (NVDEC when the model runs on a GPU and NVDEC opens; else the CPU, said in one line), software or nvdec.")]
VideoStream = Annotated[str, typer.Option("--video-stream", help="Which video stream of a file with several (dual-camera dashcams): 0, 1, ..., or all (each explained, one output stream per camera).")]
Fps = Annotated[float | None, typer.Option("--fps", help="Frame rate of a stream without timestamps (a raw .h264 or .hevc file). \\[default: the rate the stream gives]")]
MaxFrames = Annotated[int | None, typer.Option("--max-frames", help="Stop after this many frames.")]
Log = Annotated[Path | None, typer.Option(help="Write one JSON line per frame here: classes, probabilities, heatmap peak, latency.")]
ContactSheet = Annotated[Path | None, typer.Option("--contact-sheet", help="Write a PNG grid of 8 rendered frames spread over the run.")]
Config = Annotated[Path | None, typer.Option(help="YAML preset (see configs/); flags given here override it.")]
CameraSize = Annotated[str | None, typer.Option("--camera-size", help="Camera resolution, e.g. 1280x720. \\[default: the camera's]")]
CameraFps = Annotated[float | None, typer.Option("--camera-fps", help="Camera frame rate. \\[default: the camera's]")]
ReconnectTimeout = Annotated[float, typer.Option("--reconnect-timeout", help="Seconds a dropped stream or camera may stay away (reconnecting, shown as stalled) before the run ends; 0 ends it at once.")]
Debug = Annotated[bool, typer.Option(help="Show full tracebacks.")]


def _clip_options(
    model: Model = DEFAULT.model, weights: Weights = DEFAULT.weights, labels: Labels = None,
    method: Method = DEFAULT.method, method_option: MethodOption = None, layer: Layer = None,
    align: Align = DEFAULT.align, target: Target = None,
    top_k: TopK = DEFAULT.top_k, alpha: Alpha = DEFAULT.alpha, colormap: Colormap = DEFAULT.colormap,
    view: View = DEFAULT.view, smooth: Smooth = DEFAULT.smooth,
    boxes: Boxes = DEFAULT.boxes, box_threshold: BoxThreshold = DEFAULT.box_threshold,
    input_size: InputSize = None, batch_size: BatchSize = None, device: Device = DEFAULT.device,
    precision: Precision = DEFAULT.precision, compile: Compile = DEFAULT.compile, crf: Crf = DEFAULT.crf, preset: Preset = None,
    encoder: Encoder = DEFAULT.encoder, decoder: Decoder = DEFAULT.decoder,
    video_stream: VideoStream = str(DEFAULT.video_stream), fps: Fps = None, max_frames: MaxFrames = None,
    config: Config = None, debug: Debug = False,
) -> None:
    """The options that apply to any clip: `run`, `webcam` and `batch` share them."""


def _source_options(
    output: Output = None,
    camera_size: CameraSize = None, camera_fps: CameraFps = None, reconnect_timeout: ReconnectTimeout = DEFAULT.reconnect_timeout,
    log: Log = None, contact_sheet: ContactSheet = None,
) -> None:
    """The options of one source's run: `run` and `webcam` share them too."""


def _with_options(*groups):
    """Typer reads a command's options from its signature: append the groups' to the command's own."""
    def append(command):
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [p for group in groups for p in inspect.signature(group, eval_str=True).parameters.values()]
        command.__signature__ = inspect.Signature(own + shared)
        return command

    return append


@app.command()
@_with_options(_source_options, _clip_options)
def run(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Video file, image or folder of images, stream URL (rtsp://, http://), camera index, or lavfi:GRAPH.")],
    show: Annotated[bool, typer.Option(help="Show a window (q/Esc quits, space pauses, s saves a snapshot).")] = DEFAULT.show,
    **options: object,
) -> None:
    """Explain every frame of SOURCE: write an annotated video (-o), a per-frame log (--log), show a window (--show)."""
    _run(_config(ctx, options["config"]), debug=bool(options["debug"]))


@app.command()
@_with_options(_source_options, _clip_options)
def webcam(
    ctx: typer.Context,
    camera: Annotated[str, typer.Option(help="Camera index or device path (/dev/video0; a name on Windows).")] = "0",
    show: Annotated[bool, typer.Option(help="Show the window (q/Esc quits, space pauses, s saves a snapshot).")] = True,
    **options: object,
) -> None:
    """Explain a live camera in a window: `run` with a camera and the window on."""
    settings = _config(ctx, options["config"])
    settings.source = camera
    _run(settings, debug=bool(options["debug"]))


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Annotated video; the contact sheet goes beside it as NAME_sheet.png.")] = Path("demo.mp4"),
    seconds: Annotated[float, typer.Option(help="Length of the generated clip.")] = 8.0,
    show: Annotated[bool | None, typer.Option(help="Show a window. \\[default: when there is a display]")] = None,
    method: Method = DEFAULT.method,
    smooth: Smooth = 0.3,
    device: Device = DEFAULT.device,
    debug: Debug = False,
) -> None:
    """Offline demo: generate a driving clip, explain it with the bundled model, score the heatmaps."""
    from .console import RunProgress, print_summary, setup_logging
    from .demo.run import run_demo
    from .sinks import check_output

    setup_logging(debug)
    check_output(output, "")
    with RunProgress() as progress:
        result = run_demo(output, seconds=seconds, show=show, device=device, method=method, smooth=smooth,
                          on_tick=progress)
    print_summary(result.run)
    fps = result.run.stats.average_fps()
    typer.echo(
        f"demo: {result.frames} frames in {result.seconds:.0f} s ({fps:.1f} fps after start-up); "
        f"class right on {result.accuracy:.0%} of frames; heatmap peak inside the object's box on "
        f"{result.pointing:.0%} of those (pointing game)"
    )
    typer.echo(f"watch {result.video}, or look at {result.contact_sheet}")


@app.command()
def check(
    sources: Annotated[list[str], typer.Argument(help="Clips to check: files, folders of clips, quoted globs (\"clips/*.mp4\"), streams.")],
    roi: Annotated[str, typer.Option(help="Where the heatmap should be: x0,y0,x1,y1 (pixels, or fractions of the frame), a mask image, or per-frame boxes (.json/.csv).")],
    class_name: Annotated[str | None, typer.Option("--class", help="Explain this class (name or index) in every frame. \\[default: each frame's top-1]")] = None,
    min_share: Annotated[float | None, typer.Option("--min-share", help="Pass when the map's mean energy share inside the region is at least this. \\[default: not checked]")] = None,
    min_pointing: Annotated[float, typer.Option("--min-pointing", help="Pass when at least this share of frames has the map's peak inside the region.")] = 0.8,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here: per-frame metrics and summaries.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here: one test case per clip, or per annotated object.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the failing frames, annotated: a video for one clip, else a folder.")] = None,
    model: Model = DEFAULT.model, weights: Weights = DEFAULT.weights, labels: Labels = None,
    method: Method = DEFAULT.method, layer: Layer = None,
    align: Annotated[str, typer.Option(help="image or receptive-field; see `run --help`.")] = "receptive-field",
    box_threshold: BoxThreshold = DEFAULT.box_threshold,
    input_size: InputSize = None, batch_size: BatchSize = None, device: Device = DEFAULT.device,
    precision: Precision = DEFAULT.precision, max_frames: MaxFrames = None,
    debug: Debug = False,
) -> None:
    """Test that the model looks where it should: exit 0 when every clip meets the thresholds, 1 when not."""
    from .checks import check as run_check
    from .console import RunProgress, print_check, setup_logging
    from .sinks import check_output

    setup_logging(debug)
    for path in (report, junit):
        if path is not None:
            check_output(path, "", log=True)
    result = run_check(
        sources, roi, target=class_name, min_share=min_share, min_pointing=min_pointing, failing_output=output,
        on_clip=lambda source: RunProgress(max_frames), model=model, weights=weights, labels=labels,
        method=method, layer=layer, align=align, box_threshold=box_threshold, input_size=input_size,
        batch_size=batch_size, device=device, precision=precision, max_frames=max_frames,
    )
    print_check(result)
    if report is not None:
        result.write_json(report)
    if junit is not None:
        result.write_junit(junit)
    if result.interrupted_by is not None:
        _exit(128 + result.interrupted_by)  # 130 for Ctrl-C, 143 for SIGTERM: never a pass
    if not result.passed:
        raise typer.Exit(1)


@app.command()
@_with_options(_clip_options)
def batch(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help="Clips: files, folders (recursively), quoted globs (\"archive/**/*.mp4\"), or @list.txt (one path a line).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the outputs (DIR/<clip's relative path>.mp4), the manifest and the reports.")],
    video: Annotated[bool, typer.Option(help="Write each clip's annotated video.")] = True,
    log: Annotated[bool, typer.Option("--log", help="Write each clip's per-frame log, DIR/<clip>.jsonl.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Check each clip's heatmaps against --roi, as `streamcam check` does.")] = False,
    roi: Annotated[str | None, typer.Option(help="With --check: a region, or a template per clip, e.g. 'annotations/{stem}.json' ({stem}, {name}, {path}).")] = None,
    class_name: Annotated[str | None, typer.Option("--class", help="With --check: explain this class in every frame. \\[default: each frame's top-1]")] = None,
    min_share: Annotated[float | None, typer.Option("--min-share", help="With --check: the least mean energy share inside the region.")] = None,
    min_pointing: Annotated[float, typer.Option("--min-pointing", help="With --check: the least share of frames with the peak inside.")] = 0.8,
    address: Annotated[str | None, typer.Option(help="Join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT. \\[default: start a local Ray]")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray workers (each loads the model once). \\[default: one per GPU; on CPU-only nodes one per 4 cores]")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every clip, also those the manifest has as done.")] = False,
    **options: object,
) -> None:
    """Process an archive of clips on Ray, resumably: exit 0 when every clip is done (and passes), 1 when one failed."""
    import signal

    from .batches import RUN_ONLY
    from .batches import batch as run_batch
    from .console import BatchProgress, print_batch, setup_logging

    setup_logging(bool(options["debug"]))
    settings = _config(ctx, options["config"])
    options = {name: getattr(settings, name) for name in FIELDS if name not in RUN_ONLY}
    if check and roi is None:
        raise StreamcamError("--check needs --roi: a region, or a template such as 'annotations/{stem}.json'")
    checking = {"roi": roi, "target": class_name, "min_share": min_share, "min_pointing": min_pointing} if check else None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a CI runner's SIGTERM ends the batch as Ctrl-C does
    with BatchProgress() as progress:
        report = run_batch(sources, out, address=address, workers=workers, force=force, video=video, log=log,
                           check=checking, on_progress=progress, **options)
    print_batch(report)
    if report.interrupted:
        _exit(130)
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """List the torchvision classification models that --model accepts."""
    from .models import available_models

    for name in available_models():
        typer.echo(name)


@app.command()
def layers(model: str = typer.Argument(..., help="A model name, as listed by `streamcam models`.")) -> None:
    """List the layers of MODEL that can be explained (--layer), with the one chosen by default marked."""
    from .cam.layers import feature_layers, resolve_layer
    from .models import load_model

    loaded = load_model(model, "none", device="cpu")
    default, _ = resolve_layer(loaded.model, None)
    shown = feature_layers(loaded.model, max_depth=2)
    if default not in [layer.name for layer in shown]:  # deeper (ViT's last block's norm): shown in its place
        layers_by_name = {layer.name: layer for layer in feature_layers(loaded.model)}
        order = list(layers_by_name)
        shown = sorted([*shown, layers_by_name[default]], key=lambda layer: order.index(layer.name)
                       if layer.name in order else len(order))
    width = max(20, *(len(layer.name) + 1 for layer in shown))
    typer.echo(f"{'layer':<{width}} {'channels':>8} {'stride':>6}  {'layout':<7} same output as")
    for layer in shown:
        mark = "  (default)" if layer.name == default else ""
        typer.echo(f"{layer.name:<{width}} {layer.channels:>8} {layer.stride:>6}  {layer.layout.kind:<7} "
                   f"{', '.join(layer.aliases)}{mark}")


@app.command()
def methods() -> None:
    """List the explanation methods that --method accepts, with their options (--method-option)."""
    from .cam.methods import METHODS, method_options

    for name, method in METHODS.items():
        typer.echo(f"{name:<20} {method.summary}")
        if options := method_options(method):
            typer.echo(f"{'':<20} options: " + ", ".join(f"{name}.{option}={default}" for option, default in options.items()))


def _config(ctx: typer.Context, preset_path: Path | None) -> RunConfig:
    """Defaults < the --config preset < flags given on the command line."""
    preset = load_preset(preset_path) if preset_path else {}
    config = RunConfig(**preset)
    for name, value in ctx.params.items():
        # By name: Typer >= 0.20 vendors click, and its ParameterSource enum is private.
        given = ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")
        if name in FIELDS and (given or name not in preset):
            setattr(config, name, value)
    if ctx.params.get("method_option"):
        config.method_options = _method_options(ctx.params["method_option"], config.method_options)
    return config


def _method_options(pairs: list[str], preset: dict | None) -> dict:
    """["scorecam.batch_size=64", ...] over the preset's method-options: {"scorecam": {"batch_size": "64"}}
    (typed against the method's fields when validated)."""
    options = {method: dict(values) for method, values in (preset or {}).items()}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        method, dot, option = key.partition(".")
        if not (equals and dot and method and option):
            raise StreamcamError(f"--method-option {pair!r}: give METHOD.OPTION=VALUE, e.g. scorecam.batch_size=64")
        options.setdefault(method.strip(), {})[option.strip()] = value.strip()
    return options


def _run(config: RunConfig, debug: bool = False) -> None:
    from . import api
    from .console import RunProgress, print_summary, setup_logging

    setup_logging(debug)
    with RunProgress(config.max_frames) as progress:
        result = api.run(config, on_tick=progress)
    print_summary(result)
    if result.interrupted_by:
        _exit(128 + result.interrupted_by)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


def _exit(code: int) -> None:
    """Exit with `code`. After an abort a stage may still be inside the model (a daemon thread);
    letting the interpreter tear down torch under it aborts the process, so leave at once. The outputs
    are closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)


def main() -> None:
    """Entry point: errors become one red line on stderr and a non-zero exit code; --debug shows the
    traceback. User errors (names, files, options) exit 2, failures during a run exit 1 (after the
    summary of how far it got)."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except RunFailed as error:  # it started, and outputs hold what was done: say how far it got
        if debug:
            raise
        if error.result is not None:
            from .console import print_summary

            print_summary(error.result)
        typer.secho(f"error: {error}", fg="red", err=True)
        _exit(1)
    except StreamcamError as error:
        if debug:
            raise
        typer.secho(f"error: {error}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="red", err=True)
        sys.exit(130)
    except Exception as error:
        if debug:
            raise
        typer.secho(f"error: {type(error).__name__}: {error} (--debug shows the traceback)", fg="red", err=True)
        sys.exit(1)
