"""The `streamcam` command line. Commands only turn flags into a RunConfig; the work happens in the library."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from .cli_options import (
    DEFAULT,
    Align,
    BatchSize,
    BoxThreshold,
    Debug,
    Device,
    InputSize,
    Labels,
    Layer,
    MaxFrames,
    Method,
    MethodOption,
    Model,
    Motion,
    MotionFlow,
    MotionNoise,
    Precision,
    Serve,
    ServeMaxClients,
    ServeToken,
    Smooth,
    Weights,
    clip_options,
    source_options,
    with_options,
)
from .config import FIELDS, RunConfig, load_preset
from .errors import RunFailed, StreamcamError, unknown_name

app = typer.Typer(
    name="streamcam",
    help="See where a vision model looks: Grad-CAM heatmaps over camera, video and stream frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@with_options(source_options, clip_options)
def run(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Video file, image or folder of images, stream URL (rtsp://, http://), camera index, or lavfi:GRAPH.")],
    show: Annotated[bool, typer.Option(help="Show a window (q/Esc quits, space pauses, s saves a snapshot).")] = DEFAULT.show,
    **options: object,
) -> None:
    """Explain every frame of SOURCE: write an annotated video (-o), a per-frame log (--log), show a window (--show)."""
    _run(_config(ctx, options["config"]), debug=bool(options["debug"]))


@app.command()
@with_options(source_options, clip_options)
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
    serve: Serve = None, serve_token: ServeToken = None, serve_max_clients: ServeMaxClients = DEFAULT.serve_max_clients,
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
                          on_tick=progress, serve={"serve": serve, "serve_token": serve_token,
                                                   "serve_max_clients": serve_max_clients})
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
    roi: Annotated[str, typer.Option(help="Where the heatmap should be: x0,y0,x1,y1 (pixels, or fractions of the frame), a mask image, per-frame boxes (.json/.csv), or motion (what moves in each frame).")],
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
    motion: Motion = None, motion_noise: MotionNoise = DEFAULT.motion_noise, motion_flow: MotionFlow = DEFAULT.motion_flow,
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
        method=method, layer=layer, align=align, box_threshold=box_threshold, motion=motion,
        motion_noise=motion_noise, motion_flow=motion_flow, input_size=input_size,
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
def evaluate(
    sources: Annotated[list[str], typer.Argument(help="Clips, image folders or streams: files, folders of clips, quoted globs.")],
    method: Method = DEFAULT.method, method_option: MethodOption = None, layer: Layer = None,
    model: Model = DEFAULT.model, weights: Weights = DEFAULT.weights, labels: Labels = None,
    class_name: Annotated[str | None, typer.Option("--class", help="Explain this class (name or index) in every frame. \\[default: each frame's top-1]")] = None,
    roi: Annotated[str | None, typer.Option(help="Regions for pointing and share, as `streamcam check --roi` takes them. \\[default: none]")] = None,
    sample: Annotated[int | None, typer.Option(help="Evaluate this many frames of each clip, spread over it. \\[default: every frame]")] = None,
    motion: Annotated[str, typer.Option(help="Motion mask for motion share: auto (detects a moving camera), still, moving or off.")] = "auto",
    motion_noise: MotionNoise = DEFAULT.motion_noise, motion_flow: MotionFlow = DEFAULT.motion_flow,
    steps: Annotated[int, typer.Option(help="Deletion and insertion: pixels change in this many steps.")] = 20,
    baseline: Annotated[str, typer.Option(help="What deleted pixels become: zeros (the mean colour) or blur.")] = "zeros",
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write one CSV row per method here.")] = None,
    align: Align = "image", input_size: InputSize = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per batch.")] = 8,
    device: Device = DEFAULT.device, precision: Precision = DEFAULT.precision, debug: Debug = False,
) -> None:
    """Measure how faithful each method's maps are: Average Drop, Increase in Confidence, coherency,
    complexity, ADCC, deletion and insertion AUC, motion share, and pointing against --roi."""
    from .checks import expand_sources
    from .console import print_evaluation, setup_logging
    from .evaluation import evaluate_sources
    from .motion import MOTION_MODES
    from .sinks import check_output

    setup_logging(debug)
    if motion not in (*MOTION_MODES, "off"):
        raise unknown_name("motion mode", motion, (*MOTION_MODES, "off"))
    for path in (report, csv):
        if path is not None:
            check_output(path, "", log=True)
    config = RunConfig(model=model, weights=weights, labels=labels, method=method, layer=layer, align=align,
                       target=class_name, input_size=input_size, device=device, precision=precision,
                       motion=None if motion == "off" else motion, motion_noise=motion_noise, motion_flow=motion_flow,
                       method_options=_method_options(method_option, None) if method_option else None)
    terminated = []

    def stop_on_sigterm(signum, frame):  # a CI runner's SIGTERM stops it as Ctrl-C does: with the figures so far
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    result = evaluate_sources(expand_sources(sources), config, roi=roi, sample=sample, steps=steps,
                              baseline=baseline, batch_size=batch_size,
                              on_clip=lambda source, number, count: typer.echo(
                                  f"evaluating {source} ({number} of {count})", err=True))
    print_evaluation(result)
    if report is not None:
        result.write_json(report)
    if csv is not None:
        result.write_csv(csv)
    if result.interrupted:
        _exit(143 if terminated else 130)
    if result.errors:
        raise typer.Exit(1)


@app.command()
@with_options(clip_options)
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
