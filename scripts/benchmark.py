"""End to end: streamcam against the naive pytorch-grad-cam loop and the codec ceiling, in one run.

    scripts/with-env python scripts/benchmark.py                  # CPU; writes docs/benchmarks.md
    scripts/with-env python scripts/benchmark.py --device cuda    # GPU

On a lent GPU machine, which has torch but neither PyAV nor pytorch-grad-cam, `scripts/gpu-check bench`
runs it (see that script).

It generates a 720p and a 1080p H.264 clip (moving test pattern) and measures on each, with the same
encoder settings (libx264, veryfast, CRF 23):

1. bare transcode: PyAV decode -> RGB -> encode, the codec ceiling;
2. the naive loop a pytorch-grad-cam user writes: per frame, decode, GradCAM on the frame squashed to
   224², `show_cam_on_image` at full resolution, `cv2.putText`, encode;
3. streamcam end to end (`streamcam run`), ResNet-18 and ResNet-50, at the same model input pixels as
   the naive loop (short side 168: 299×168 ≈ 224²);
4. the zero-overhead pipeline, the bound of streamcam's (issue 19): decode, the same model's plain
   forward pass and x264 of the untouched frames, each in a thread of its own, with streamcam's model
   input, batch, precision and encoder settings: what streamcam would do if the heatmap, blend, text and
   hand-offs cost nothing;
5. live latency: a `lavfi:...,realtime` 720p30 source through streamcam, capture -> rendered frame, and
   through the zero-overhead pipeline, capture -> encoded.

Every case runs in its own process (threads, memory and warm-up do not leak between cases) and is timed
in steady state: the first frames (start-up, warm-up) are excluded. Models have random weights: speed
does not depend on them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import benchlib  # scripts/ is on sys.path as this script's directory
import streamcam  # noqa: F401 - first, as the CLI loads it: it sets the OpenMP policy before torch loads

WARMUP_FRAMES = 10
ENCODER = {"preset": "veryfast", "crf": "23"}
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def make_clip(path: Path, size: tuple[int, int], frames: int, fps: int = 30) -> None:
    import av

    graph = av.open(f"testsrc2=size={size[0]}x{size[1]}:rate={fps}", format="lavfi")
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=fps, options=dict(ENCODER))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index, frame in enumerate(graph.decode(video=0)):
            if index == frames:
                break
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    graph.close()


class SteadyClock:
    """Frames per second after the first WARMUP_FRAMES frames."""

    def __init__(self):
        self.count = 0
        self.started: float | None = None

    def tick(self) -> None:
        self.count += 1
        if self.count == WARMUP_FRAMES:
            self.started = time.perf_counter()

    def fps(self) -> float:
        return (self.count - WARMUP_FRAMES) / (time.perf_counter() - self.started)


def reencode(clip: str, output: str, picture) -> float:
    """Decode `clip` to RGB, turn each frame into `picture(rgb)`, encode it; steady-state FPS."""
    import av

    clock = SteadyClock()
    with av.open(clip) as source, av.open(output, "w") as sink:
        video = source.streams.video[0]
        stream = sink.add_stream("libx264", rate=video.average_rate, options=dict(ENCODER))
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in source.decode(video):
            rgb = frame.to_ndarray(format="rgb24")
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture(rgb), format="rgb24")):
                sink.mux(packet)
            clock.tick()
        for packet in stream.encode(None):
            sink.mux(packet)
    return clock.fps()


def case_transcode(clip: str, output: str, device: str) -> dict:
    return {"fps": reencode(clip, output, lambda rgb: rgb)}


def case_naive(clip: str, output: str, device: str, model_name: str = "resnet18") -> dict:
    import cv2
    import numpy as np
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image

    model = getattr(torchvision.models, model_name)(weights=None).eval().to(device)
    cam = GradCAM(model=model, target_layers=[model.layer4])

    def picture(rgb):
        small = cv2.resize(rgb, (224, 224)).astype(np.float32) / 255
        input_tensor = preprocess_image(small, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).to(device)
        heatmap = cam(input_tensor=input_tensor, targets=None)[0]
        label = int(cam.outputs.argmax())
        full = cv2.resize(heatmap, (rgb.shape[1], rgb.shape[0]))
        overlay = show_cam_on_image(rgb.astype(np.float32) / 255, full, use_rgb=True)
        cv2.putText(overlay, f"class {label}", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        return overlay

    return {"fps": reencode(clip, output, picture)}


def streamcam_config(clip: str, output: str, device: str, model_name: str = "resnet18", **options: object):
    """The `streamcam run` of a case: the naive loop's model input pixels (short side 168), random weights,
    libx264 at the other cases' CRF; files at their preset, a live source at a live run's own (ultrafast)."""
    from streamcam.config import RunConfig

    live = clip.startswith("lavfi:")
    settings = {"preset": None if live else ENCODER["preset"], "crf": int(ENCODER["crf"]), **options}
    return RunConfig(source=clip, output=Path(output), model=model_name, weights="none", input_size=168, device=device,
                     encoder="libx264", **settings)  # the other cases' encoder, even where NVENC exists


def case_streamcam(clip: str, output: str, device: str, model_name: str = "resnet18", max_frames: int | None = None,
                   seconds: float | None = None, decoder: str = "auto", compile: bool = False,
                   lossless: bool = False) -> dict:
    """streamcam end to end; with `lossless`, its rendered frames kept exactly (CRF 0) for the cases that
    encode them."""
    from streamcam.api import run

    deadline = None if seconds is None else time.monotonic() + seconds
    memory: list[tuple[int, float]] = []  # (frames written, resident MB) as the run goes
    cpu, steady_from = benchlib.ThreadCpu(), []

    def on_tick(pipeline) -> None:
        memory.append((pipeline.stats.written, resident_mb()))
        if not steady_from and pipeline.stats.written >= WARMUP_FRAMES:
            cpu.mark()
            steady_from.append(pipeline.stats.written)
        if deadline and time.monotonic() > deadline:
            pipeline.stop("benchmark time is up")

    exact = {"crf": 0, "preset": "ultrafast"} if lossless else {}
    config = streamcam_config(clip, output, device, model_name, max_frames=max_frames, decoder=decoder,
                              compile=compile, **exact)
    with cpu:
        result = run(config, on_tick=on_tick, handle_signals=False)
    stats = result.stats
    steady = sorted(stats.latencies[WARMUP_FRAMES:])
    after_a_third = next((mb for written, mb in memory if written >= stats.written / 3), None)
    return {
        "rss_third_mb": after_a_third,
        "rss_end_mb": memory[-1][1] if memory else None,
        "fps": stats.average_fps(),
        "frames": stats.written,
        "dropped": stats.dropped,
        "p50_ms": 1000 * steady[len(steady) // 2] if steady else None,
        "p95_ms": 1000 * steady[int(len(steady) * 0.95)] if steady else None,
        "stages": {stage: stats.stage_ms(stage) for stage in ("decode", "explain", "render", "write")},
        "cpu_ms": cpu.per_frame_ms(stats.written - steady_from[0]) if steady_from and stats.written > 2 * steady_from[0]
        else cpu.per_frame_ms(stats.written, whole_run=True),  # a run too short for a steady state
    }


class NewestFirst:
    """A hand-off between two threads: blocking when full (a file), or keeping the newest (live), as
    streamcam's hand-offs do. None marks the end."""

    def __init__(self, size: int, live: bool):
        self.items: collections.deque = collections.deque()
        self.size, self.live, self.dropped = size, live, 0
        self.changed = threading.Condition()

    def put(self, item) -> None:
        with self.changed:
            while not self.live and len(self.items) >= self.size and item is not None:
                self.changed.wait()
            if self.live and len(self.items) >= self.size and item is not None:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.changed.notify_all()

    def take(self, most: int) -> list:
        """Up to `most` items, waiting for at least one (a file waits for `most`, or the end)."""
        with self.changed:
            while not self.items or (not self.live and len(self.items) < most and self.items[-1] is not None):
                self.changed.wait()
            taken = []
            while self.items and len(taken) < most and self.items[0] is not None:
                taken.append(self.items.popleft())
            if not taken:
                return [None]
            self.changed.notify_all()
            return taken


def case_zero(clip: str, output: str, device: str, model_name: str = "resnet18", seconds: float | None = None,
              pictures_from: str | None = None) -> dict:
    """The zero-overhead pipeline, the bound of streamcam's: PyAV decode in one thread; the same model's
    plain forward pass in a second (streamcam's model input: short side 168, the uint8 resize, the
    batch size and precision a run of this source gets); libx264 encoding the decoded frames, untouched,
    in a third (the encoder streamcam's run of the same clip plans). Steady-state FPS and, per frame,
    the latency from decoding to encoded.

    With `pictures_from` (a lossless recording of streamcam's run of this clip), the encoder gets
    streamcam's rendered frames instead, read into memory beforehand: the bound for those very pictures,
    whose heatmap costs the encoder more than the source does."""
    import av
    import torch

    from streamcam.models import load_model
    from streamcam.picture import BgrPicture, upload
    from streamcam.plan import autocast, plan_encoding, resolve_device, resolve_precision

    live = clip.startswith("lavfi:")
    torch_device = resolve_device(device)
    loaded = load_model(model_name, "none", device=torch_device, input_size=168)
    precision = resolve_precision("auto", torch_device)
    encoding = plan_encoding(streamcam_config(clip, output, device, model_name), torch_device, live)
    batch_size = 1 if live else 4
    decoded, explained = NewestFirst(batch_size if live else 4, live), NewestFirst(4, live)
    clock, latencies, cpu = SteadyClock(), [], benchlib.ThreadCpu()
    rendered = read_frames(pictures_from) if pictures_from else []
    deadline = None if seconds is None else time.monotonic() + seconds
    if live:
        source = av.open(clip.removeprefix("lavfi:"), format="lavfi")
    else:
        source = av.open(clip)
    video = source.streams.video[0]
    video.thread_type = "SLICE"  # as streamcam decodes

    def decode() -> None:
        for frame in source.decode(video):
            decoded.put((frame, BgrPicture(frame.to_ndarray(format="bgr24", threads=1)), time.monotonic()))
            if deadline and time.monotonic() > deadline:
                break
        decoded.put(None)

    def infer() -> None:
        while (batch := decoded.take(batch_size)) != [None]:
            x = upload([picture for _, picture, _ in batch], torch_device).model_input(loaded.preprocess)
            with torch.inference_mode(), autocast(torch_device, precision):
                loaded.model(x)
            for item in batch:
                explained.put(item)
        explained.put(None)

    threads = [threading.Thread(target=decode, name="decode"), threading.Thread(target=infer, name="infer")]
    main_name, threading.current_thread().name = threading.current_thread().name, "encode"
    with cpu:
        for thread in threads:
            thread.start()
        rate = video.average_rate or Fraction(30)
        with av.open(output, "w") as sink:
            stream = sink.add_stream(encoding.h264, rate=rate, options=encoding.options(encoding.h264, rate))
            stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
            index = 0
            while (taken := explained.take(1)) != [None]:
                frame, _, captured = taken[0]
                if rendered:
                    frame = rendered[min(index, len(rendered) - 1)]
                frame.pts, frame.time_base = index, 1 / rate
                index += 1
                for packet in stream.encode(frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame):
                    sink.mux(packet)
                latencies.append(time.monotonic() - captured)
                clock.tick()
                if clock.count == WARMUP_FRAMES:
                    cpu.mark()
            for packet in stream.encode(None):
                sink.mux(packet)
        for thread in threads:
            thread.join()
    threading.current_thread().name = main_name
    source.close()
    steady = sorted(latencies[WARMUP_FRAMES:])
    return {"fps": clock.fps(), "frames": len(latencies), "dropped": decoded.dropped + explained.dropped,
            "p50_ms": 1000 * steady[len(steady) // 2], "p95_ms": 1000 * steady[int(len(steady) * 0.95)],
            "cpu_ms": cpu.per_frame_ms(len(latencies) - WARMUP_FRAMES)}


def case_encode(clip: str, output: str, device: str, pictures_from: str) -> dict:
    """x264 alone, at the file runs' settings: CPU milliseconds per frame (all of x264's threads) to
    encode the clip's own frames, and streamcam's rendered frames of it (a lossless recording), each
    read into memory first, with nothing else running."""
    import av
    import torch

    from streamcam.plan import plan_encoding

    encoding = plan_encoding(streamcam_config(clip, output, device), torch.device("cpu"), live=False)
    result = {}
    for name, path in (("untouched", clip), ("streamcam", pictures_from)):
        frames = read_frames(path)
        with av.open(output, "w") as sink:
            stream = sink.add_stream(encoding.h264, rate=30, options=encoding.options(encoding.h264, Fraction(30)))
            stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
            started = process_cpu()
            for index, frame in enumerate(frames):
                frame.pts, frame.time_base = index, Fraction(1, 30)
                for packet in stream.encode(frame):
                    sink.mux(packet)
            for packet in stream.encode(None):
                sink.mux(packet)
            result[f"{name}_ms"] = 1000 * (process_cpu() - started) / len(frames)
    return result


def read_frames(path: str) -> list:
    """Every frame of a video's first stream, as yuv420p, in memory."""
    import av

    with av.open(path) as video:
        return [frame.reformat(format="yuv420p") for frame in video.decode(video=0)]


def process_cpu() -> float:
    """CPU seconds of all of this process's threads so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_row(size_name: str, model: str, pipeline: str, result: dict) -> list[str]:
    """A row of the CPU table: a case's steady-state CPU ms per frame, by the thread that spent them."""
    spent = result["cpu_ms"]
    columns = [("capture", "decode"), ("explain", "infer"), ("render",), ("write", "encode"), ("native",), ("MainThread",)]
    cells = [f"{sum(spent.get(name, 0.0) for name in names):.1f}" if any(n in spent for n in names) else "—"
             for names in columns]
    return [size_name, model, pipeline, *cells, f"{spent['total']:.1f}",
            f"{spent['total'] * result['fps'] / 1000:.2f}"]


def resident_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


CASES = {"transcode": case_transcode, "naive": case_naive, "zero": case_zero, "streamcam": case_streamcam,
         "encode": case_encode}


def run_case(name: str, baseline: str | None = None, **kwargs: object) -> dict:
    """One case in a fresh process; its result plus peak RSS (and peak GPU memory on CUDA). With
    `baseline` (a checkout of another commit), that checkout's streamcam is the one imported."""
    command = [sys.executable, __file__, "--case", name, "--kwargs", json.dumps(kwargs)]
    env = dict(os.environ, PYTHONPATH=baseline) if baseline else None
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"case {name} {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_run(results: list[dict]) -> dict:
    """The run with the median FPS, the upper one for an even count (its stage times and memory come with it)."""
    return sorted(results, key=lambda result: result["fps"])[len(results) // 2]


def main_case(name: str, kwargs: dict) -> None:
    import torch

    # The same random weights in every case: the maps, and so what the encoder is given, then match
    # between streamcam's timed run and its recording (x264 alone on two runs' frames: 17.7 and 21.0 ms).
    torch.manual_seed(0)
    result = CASES[name](**kwargs)
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if kwargs.get("device", "cpu").startswith("cuda"):
        result["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def clip_size(name: str) -> tuple[int, int]:
    """720p, 1080p or WIDTHxHEIGHT."""
    if name in SIZES:
        return SIZES[name]
    width, height = (int(part) for part in name.split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--decoder", default="auto", help="streamcam's --decoder: auto, software or nvdec (default auto)")
    parser.add_argument("--compile", action="store_true", help="streamcam with --compile")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--sizes", default="720p,1080p", help="clips: 720p, 1080p or WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--live-size", default="1280x720")
    parser.add_argument("--live-seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="round-robin runs of every case; medians are reported")
    parser.add_argument("--baseline", help="a checkout of another commit (git worktree add): its streamcam runs the "
                        "streamcam cases too, in the same round-robin, as `baseline`")
    parser.add_argument("--no-record", action="store_true", help="print the tables only; leave docs/benchmarks.md alone")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return main_case(args.case, json.loads(args.kwargs))

    on_gpu = args.device.startswith("cuda")
    memory = ["peak RSS MB"] + (["peak GPU MB"] if on_gpu else [])

    def memory_cells(result: dict) -> list[str]:
        return [f"{result['rss_mb']:.0f}"] + ([f"{result.get('gpu_mb', 0):.0f}"] if on_gpu else [])

    rows, stage_rows, cpu_rows, encoder_rows, notes = [], [], [], [], []
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="streamcam-bench-") as folder:
        for size_name in args.sizes.split(","):
            clip = str(Path(folder) / f"{size_name}.mp4")
            make_clip(Path(clip), clip_size(size_name), args.frames)
            common = {"clip": clip, "output": str(Path(folder) / "out.mp4"), "device": args.device}
            streamcam_options = dict(common, decoder=args.decoder, compile=args.compile)
            # streamcam's rendered frames of this clip, kept exactly, for the bound that encodes them.
            recordings = {model: str(Path(folder) / f"{size_name}-{model}-rendered.mkv") for model in models}
            for model, recording in recordings.items():
                run_case("streamcam", **dict(streamcam_options, output=recording), model_name=model, lossless=True)
            # The cases run round-robin `--repeats` times and each reports its median: this VM's speed
            # drifts by ±20 % over minutes, and drift then hits every case alike.
            variants = [(model, None) for model in models]
            if args.baseline:
                variants += [(f"{model} @ baseline", args.baseline) for model in models]
            bounds = [f"zero {model}" for model in models] + [f"zero {model} on its frames" for model in models]
            runs: dict[str, list[dict]] = {name: [] for name in ["transcode", "naive", *bounds, *(v for v, _ in variants)]}
            for _ in range(args.repeats):
                runs["transcode"].append(run_case("transcode", **common))
                runs["naive"].append(run_case("naive", **common))
                for model in models:
                    runs[f"zero {model}"].append(run_case("zero", **common, model_name=model))
                    runs[f"zero {model} on its frames"].append(
                        run_case("zero", **common, model_name=model, pictures_from=recordings[model]))
                for variant, checkout in variants:
                    model = variant.split(" @ ")[0]
                    runs[variant].append(run_case("streamcam", checkout, **streamcam_options, model_name=model))
                print(size_name, {name: round(results[-1]["fps"], 1) for name, results in runs.items()}, flush=True)
            transcode, naive = median_run(runs["transcode"]), median_run(runs["naive"])
            rows.append([size_name, "bare transcode (codec ceiling)", f"{transcode['fps']:.1f}", "", "", "", "",
                         *memory_cells(transcode)])
            rows.append([size_name, "naive pytorch-grad-cam loop, ResNet-18", f"{naive['fps']:.1f}", "1.00×",
                         f"{naive['fps'] / transcode['fps']:.2f}×", "", "", *memory_cells(naive)])
            for model in models:
                bound, on_its_frames = median_run(runs[f"zero {model}"]), median_run(runs[f"zero {model} on its frames"])
                rows.append([size_name, f"zero-overhead pipeline, {model}", f"{bound['fps']:.1f}",
                             f"{bound['fps'] / naive['fps']:.2f}×", f"{bound['fps'] / transcode['fps']:.2f}×", "1.00×", "",
                             *memory_cells(bound)])
                rows.append([size_name, f"zero-overhead pipeline, {model}, encoding streamcam's frames",
                             f"{on_its_frames['fps']:.1f}", f"{on_its_frames['fps'] / naive['fps']:.2f}×",
                             f"{on_its_frames['fps'] / transcode['fps']:.2f}×",
                             f"{on_its_frames['fps'] / bound['fps']:.2f}×", "1.00×", *memory_cells(on_its_frames)])
                cpu_rows.append(cpu_row(size_name, model, "zero-overhead", bound))
                cpu_rows.append(cpu_row(size_name, model, "zero-overhead, streamcam's frames", on_its_frames))
                encoder = run_case("encode", **common, pictures_from=recordings[model])
                encoder_rows.append([size_name, model, f"{encoder['untouched_ms']:.1f}", f"{encoder['streamcam_ms']:.1f}",
                                     f"{encoder['streamcam_ms'] - encoder['untouched_ms']:+.1f}"])
            for variant, _ in variants:
                model = variant.split(" @ ")[0]
                result = median_run(runs[variant])
                bound, on_its_frames = median_run(runs[f"zero {model}"]), median_run(runs[f"zero {model} on its frames"])
                rows.append([size_name, f"streamcam, {variant}", f"{result['fps']:.1f}", f"{result['fps'] / naive['fps']:.2f}×",
                             f"{result['fps'] / transcode['fps']:.2f}×", f"**{result['fps'] / bound['fps']:.2f}×**",
                             f"{result['fps'] / on_its_frames['fps']:.2f}×", *memory_cells(result)])
                stage_rows.append([size_name, variant] + [f"{ms:.1f}" for ms in result["stages"].values()])
                if "cpu_ms" in result:
                    cpu_rows.append(cpu_row(size_name, model, f"streamcam{variant[len(model):]}", result))
            for model in models:
                result = median_run(runs[model])
                third, end = result["rss_third_mb"], result["rss_end_mb"]
                growth = "does not grow" if end < 1.05 * third else f"GREW by {end - third:.0f} MB"
                notes.append(f"{size_name}, streamcam {model}: resident memory {third:.0f} MB after a third of the "
                             f"clip, {end:.0f} MB at its end: it {growth} with the clip's length")
        width, height = clip_size(args.live_size)
        live_source = {"clip": f"lavfi:testsrc2=size={width}x{height}:rate=30,realtime",
                       "output": str(Path(folder) / "live.mp4"), "device": args.device, "model_name": models[0],
                       "seconds": args.live_seconds}
        bound = run_case("zero", **live_source)
        rows.append([f"{args.live_size} 30 fps live", f"zero-overhead pipeline, {models[0]}: latency capture → encoded",
                     f"{bound['fps']:.1f}", f"p50 {bound['p50_ms']:.0f} ms", f"p95 {bound['p95_ms']:.0f} ms", "1.00×", "",
                     *memory_cells(bound)])
        notes.append(f"live zero-overhead: {bound['frames']} frames encoded, {bound['dropped']} stale frames dropped")
        for label, checkout in [("", None)] + ([(" @ baseline", args.baseline)] if args.baseline else []):
            live = run_case("streamcam", checkout, **live_source, compile=args.compile)
            rows.append([f"{args.live_size} 30 fps live", f"streamcam, {models[0]}{label}: latency capture → rendered frame",
                         f"{live['fps']:.1f}", f"p50 {live['p50_ms']:.0f} ms", f"p95 {live['p95_ms']:.0f} ms",
                         f"p95 **{live['p95_ms'] / bound['p95_ms']:.2f}×**", "", *memory_cells(live)])
            notes.append(f"live{label}: {live['frames']} frames written, {live['dropped']} stale frames dropped "
                         "(newest frame wins)")
    if args.baseline:
        commit = subprocess.run(["git", "-C", args.baseline, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        notes.append(f"`@ baseline`: the same cases run by commit {commit} ({args.baseline}), in the same round-robin")
    table = benchlib.markdown_table(["clip", "pipeline", "FPS", "× naive", "× transcode", "× zero-overhead",
                                     "× zero-overhead on streamcam's frames", *memory], rows)
    stages = benchlib.markdown_table(["clip", "model", "decode ms", "explain ms", "render ms", "write ms"], stage_rows)
    cpu = benchlib.markdown_table(["clip", "model", "pipeline", "decode", "model", "render", "write / encode call",
                                   "native threads", "main", "total", "cores busy"], cpu_rows)
    encoders = benchlib.markdown_table(["clip", "model", "untouched frames", "streamcam's frames", "difference"],
                                       encoder_rows)
    text = (f"Steady-state FPS (first {WARMUP_FRAMES} frames excluded), median of {args.repeats} round-robin run(s) "
            f"per case (of an even count, the faster middle one). \"Encoding streamcam's frames\": the zero-overhead "
            "pipeline whose encoder gets streamcam's rendered frames of the clip (a lossless recording read into "
            f"memory first, which its peak RSS includes).\n\n{table}\n\nstreamcam time per frame in each stage "
            f"(stages run in parallel threads):\n\n{stages}\n\nCPU milliseconds per frame in steady state, per thread "
            "(from /proc; \"native threads\": x264's frame and lookahead threads, torch's OpenMP worker, the "
            "decoder's slice threads and OpenCV's workers; \"cores busy\": CPU time over wall time):\n\n"
            f"{cpu}\n\nx264 alone ({ENCODER['preset']}, CRF {ENCODER['crf']}), CPU milliseconds per frame of the clip's "
            f"own frames and of streamcam's rendered frames of it, nothing else running:\n\n{encoders}\n\n"
            + "\n".join(f"- {note}" for note in notes))
    print(text)
    if not args.no_record:
        import torch

        kind = args.device.split(":")[0]
        benchlib.record(f"benchmark:{kind}", f"End to end ({kind.upper()})", text, torch.device(args.device))


if __name__ == "__main__":
    main()
