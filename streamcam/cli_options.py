"""The command line's options, shared by its commands. Defaults come from RunConfig, so the help tells
the truth; `with_options` lets several commands take one group of options."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from .config import RunConfig

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
Motion = Annotated[str | None, typer.Option(help="Log each map's share on what moves (motion_share): auto (detects a moving camera), still or moving. \\[default: off]")]
MotionNoise = Annotated[float, typer.Option("--motion-noise", help="Motion: grey levels a pixel must change by (past the camera's own motion) to count as moving.")]
MotionFlow = Annotated[float, typer.Option("--motion-flow", help="Motion: pixels (at 320 wide) a pixel must move beyond the camera's own motion.")]
HudMotion = Annotated[bool, typer.Option("--hud-motion", help="Show the motion share on the frame (turns on --motion auto).")]
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
Serve = Annotated[str | None, typer.Option(help="Serve the live view to browsers at [HOST:]PORT (e.g. 8000, or 0.0.0.0:8000 for other machines, with a token): the stream, the label, FPS, latency and live controls. \\[default: off; host 127.0.0.1]")]
ServeToken = Annotated[str | None, typer.Option("--serve-token", help="The token every request to the live view needs. \\[default: none on loopback; else one is made up and printed with the URL]")]
ServeMaxClients = Annotated[int, typer.Option("--serve-max-clients", help="Viewers the live view takes at once.")]


def clip_options(
    model: Model = DEFAULT.model, weights: Weights = DEFAULT.weights, labels: Labels = None,
    method: Method = DEFAULT.method, method_option: MethodOption = None, layer: Layer = None,
    align: Align = DEFAULT.align, target: Target = None,
    top_k: TopK = DEFAULT.top_k, alpha: Alpha = DEFAULT.alpha, colormap: Colormap = DEFAULT.colormap,
    view: View = DEFAULT.view, smooth: Smooth = DEFAULT.smooth,
    boxes: Boxes = DEFAULT.boxes, box_threshold: BoxThreshold = DEFAULT.box_threshold,
    motion: Motion = None, motion_noise: MotionNoise = DEFAULT.motion_noise, motion_flow: MotionFlow = DEFAULT.motion_flow,
    hud_motion: HudMotion = DEFAULT.hud_motion,
    input_size: InputSize = None, batch_size: BatchSize = None, device: Device = DEFAULT.device,
    precision: Precision = DEFAULT.precision, compile: Compile = DEFAULT.compile, crf: Crf = DEFAULT.crf, preset: Preset = None,
    encoder: Encoder = DEFAULT.encoder, decoder: Decoder = DEFAULT.decoder,
    video_stream: VideoStream = str(DEFAULT.video_stream), fps: Fps = None, max_frames: MaxFrames = None,
    config: Config = None, debug: Debug = False,
) -> None:
    """The options that apply to any clip: `run`, `webcam` and `batch` share them."""


def source_options(
    output: Output = None,
    camera_size: CameraSize = None, camera_fps: CameraFps = None, reconnect_timeout: ReconnectTimeout = DEFAULT.reconnect_timeout,
    log: Log = None, contact_sheet: ContactSheet = None,
    serve: Serve = None, serve_token: ServeToken = None, serve_max_clients: ServeMaxClients = DEFAULT.serve_max_clients,
) -> None:
    """The options of one source's run: `run` and `webcam` share them too."""


def with_options(*groups):
    """Typer reads a command's options from its signature: append the groups' to the command's own."""
    def append(command):
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [p for group in groups for p in inspect.signature(group, eval_str=True).parameters.values()]
        command.__signature__ = inspect.Signature(own + shared)
        return command

    return append
