"""Every decision that depends on the compute device or on the kind of source, made in one place.

A run is planned once, before its model, sinks and stages exist, and nothing changes the plan afterwards:

- `Decoding`, from the device alone, before the source opens: software decoding or NVDEC, and whether
  frames stay in the decoder's YUV 4:2:0 (the GPU path) or become BGR (the CPU path).
- `RunPlan`, from that and the opened source: where frames are rendered (the device, in YUV with torch;
  or the host, in BGR with OpenCV), CUDA streams, the encoder, and the live-or-file policy (hand-offs,
  drops, batch size, x264 preset, keyframes).

The device policy below (precision, autocast, CUDA graphs, uint8 resizing) is used by the engine too, so
that an Explainer outside a run makes the same choices.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import StreamcamError, unknown_name

if TYPE_CHECKING:
    from .config import RunConfig
    from .sources import VideoInfo

log = logging.getLogger("streamcam")

DECODERS = ("auto", "software", "nvdec")
ENCODERS = ("auto", "libx264", "nvenc")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ----- the device policy --------------------------------------------------------------------------------

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' means the first CUDA GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise StreamcamError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise StreamcamError(f"device {device!r} asked for, but this machine has no usable CUDA GPU")
    return resolved


def is_gpu(device: torch.device) -> bool:
    return device.type == "cuda"


def frames_stay_on_device(device: torch.device) -> bool:
    """The GPU path: frames are uploaded once as the decoder's YUV, rendered on the device and downloaded
    once as the encoder's YUV. On a CPU, OpenCV's uint8 routines render an order of magnitude faster than
    torch's float ops (720p: 1.4 ms against 22 ms per frame), so the CPU path renders BGR with OpenCV.
    (Tests take the GPU path on the CPU by replacing this function.)"""
    return is_gpu(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' runs the network in the fastest precision the hardware has natively: bf16 on CUDA GPUs that
    support it (fp16 on older ones) and on CPUs with bf16 instructions, fp32 on other CPUs."""
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    if is_gpu(device):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions there about twice as fast as fp32 (ResNet-18 at
    299x168, batch 4, 2 cores: 51-56 ms against 97-101), with the demo model's maps within 0.004 and the
    same pointing-game score (docs/benchmarks.md). Elsewhere bf16 is emulated, and slower."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None not in checks:
        return any(check() for check in checks)
    try:  # older torch (2.4) has no such checks: the CPU's flags (Linux) tell
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_tile" in flags


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the network; CAM arithmetic stays in fp32 outside of it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def uses_cuda_graphs(device: torch.device) -> bool:
    """--compile captures CUDA graphs on a GPU, which take away the launch cost of small batches."""
    return is_gpu(device)


def resizes_in_uint8(device: torch.device) -> bool:
    """torch resizes uint8 images (antialiased) on the CPU only, where it is vectorised: 1 ms for a 720p
    frame instead of 11 ms in float. Elsewhere images are resized as floats."""
    return device.type == "cpu"


def cuda_stream(device: torch.device) -> torch.cuda.Stream | None:
    """A CUDA stream of a stage's own on a GPU (so that copies overlap other stages' work), else None."""
    return torch.cuda.Stream(device) if is_gpu(device) else None


# ----- the encoder ----------------------------------------------------------------------------------------

@functools.cache
def probe_encoder(codec: str) -> str | None:
    """None when `codec` encodes a frame here, else why it does not. Hardware encoders must be tried:
    FFmpeg lists NVENC whenever it was built with it, and many NVIDIA GPUs (H100, A100) have none.
    Once per process: the hardware does not change, and FFmpeg explains a failure only the first time."""
    import av
    import av.logging

    from .decoding import keep_ffmpeg_errors

    keep_ffmpeg_errors()
    with av.logging.Capture() as ffmpeg_log:
        try:
            context = av.CodecContext.create(codec, "w")
            context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
            context.time_base = Fraction(1, 30)
            frame = av.VideoFrame(256, 256, "yuv420p")
            frame.pts = 0
            context.encode(frame)
            context.encode(None)
        except (av.error.FFmpegError, ValueError) as error:
            # FFmpeg's own words ("Cannot load libcuda.so.1") say more than the error code.
            errors = [message.strip() for level, _, message in ffmpeg_log if level <= av.logging.ERROR]
            return errors[0] if errors else getattr(error, "strerror", None) or str(error)
    return None


def choose_h264_encoder(requested: str, on_gpu: bool) -> str:
    """The H.264 encoder for --encoder: libx264, or NVENC when asked for, or (auto) when the model runs on
    a GPU and a one-frame probe succeeds. An unavailable NVENC under auto falls back with one line."""
    if requested == "libx264" or (requested == "auto" and not on_gpu):
        return "libx264"
    problem = probe_encoder("h264_nvenc")
    if problem is None:
        return "h264_nvenc"
    if requested == "nvenc":
        raise StreamcamError(f"--encoder nvenc: NVENC cannot encode here ({problem}); use --encoder libx264 or auto")
    log.warning("NVENC cannot encode here (%s); encoding with libx264", problem)
    return "libx264"


@dataclass(frozen=True)
class Encoding:
    """How rendered frames are encoded. Live recordings trade compression for speed (ultrafast, NVENC's
    low-latency tuning) and get a keyframe, hence an MP4 fragment, every two seconds."""

    h264: str = "libx264"  # or h264_nvenc
    crf: int = 23
    preset: str = "veryfast"
    live: bool = False

    def options(self, codec: str, rate: Fraction) -> dict[str, str]:
        if codec == "libvpx-vp9":  # constant quality, fast realtime mode
            options = {"crf": str(self.crf + 10), "b:v": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        elif codec == "h264_nvenc":  # constant quality at the CRF's value
            options = {"preset": "p4", "tune": "ll" if self.live else "hq", "rc": "vbr", "cq": str(self.crf), "b:v": "0"}
        else:
            options = {"crf": str(self.crf), "preset": self.preset}
        if self.live:
            options["g"] = str(max(1, round(2 * float(rate))))
        return options


# ----- the plan -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decoding:
    """How the source decodes, decided from the device before it opens."""

    decoder: str = "software"  # "software", "nvdec", or "auto" (NVDEC where it opens, else software)
    keep_yuv: bool = False  # hand over the decoder's 4:2:0 planes instead of converting them to BGR
    gpu: int = 0  # the CUDA device NVDEC decodes on


def plan_decoding(config: RunConfig, device: torch.device) -> Decoding:
    if config.decoder == "nvdec" and not is_gpu(device):
        raise StreamcamError("--decoder nvdec hands decoded frames to a model on the GPU; it needs --device cuda")
    return Decoding(config.decoder if is_gpu(device) else "software", keep_yuv=frames_stay_on_device(device),
                    gpu=device.index or 0)


@dataclass(frozen=True)
class RunPlan:
    """What every stage of a run reads and nobody changes."""

    device: torch.device
    decoding: Decoding
    live: bool  # drop stale frames at every hand-off (newest wins) rather than wait: latency never builds
    render_on_device: bool  # torch renders in YUV where the frames are; else OpenCV in BGR on the host
    cuda_streams: bool  # explain and render on CUDA streams of their own
    batch_size: int  # frames per forward pass; live: up to this many of the newest frames
    queue_size: int  # frames a file run buffers between stages: bounds memory (a 4K frame is 25 MB)
    encoding: Encoding
    max_frames: int | None = None

    @classmethod
    def build(cls, config: RunConfig, device: torch.device, decoding: Decoding, video: VideoInfo) -> RunPlan:
        live = video.live
        return cls(device=device, decoding=decoding, live=live, render_on_device=decoding.keep_yuv,
                   cuda_streams=is_gpu(device), batch_size=config.batch_size or (1 if live else 4),
                   queue_size=4, encoding=plan_encoding(config, device, live), max_frames=config.max_frames)


def plan_encoding(config: RunConfig, device: torch.device, live: bool) -> Encoding:
    """The run's encoder: --preset, or veryfast for files and ultrafast for live sources."""
    h264 = choose_h264_encoder(config.encoder, on_gpu=is_gpu(device)) if config.writes_video else "libx264"
    return Encoding(h264, config.crf, config.preset or ("ultrafast" if live else "veryfast"), live)
