"""On a CUDA GPU: the device path makes what the CPU path makes, NVDEC decodes what FFmpeg's software
decoders decode, and work on the pipeline's CUDA streams is ordered. Skipped without a GPU (CI has none);
`scripts/gpu-check tests` runs these on a lent GPU machine."""

from __future__ import annotations

import dataclasses
import json
import logging

import av
import numpy as np
import pytest
import torch
from test_parity import REFERENCES, reference_maps
from test_render import explained, name

from media import decoded_frames, probe, write_clip
from streamcam import Explainer, api
from streamcam.config import RunConfig
from streamcam.demo.run import run_demo
from streamcam.picture import BgrPicture, download, upload
from streamcam.plan import Decoding, choose_h264_encoder, probe_encoder
from streamcam.render import TorchRenderer
from streamcam.sources import open_source

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture
def exact_fp32():
    """Convolutions and matrix products in true fp32 (not TF32), so that CPU and GPU runs can be compared
    closely. (Not monkeypatch: torch.backends.cuda.matmul's flag cannot be deleted, which its undo does.)"""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_uploads_and_downloads_are_exact_and_ordered(rng=np.random.default_rng(0)):
    """Pinned, non-blocking copies on a side stream, round after round with new pictures: a staging
    buffer recycled before its upload finished, or a download read before its copy finished, would show
    up as a wrong picture."""
    side = torch.cuda.Stream()
    for round_ in range(20):
        images = [rng.integers(0, 256, (1620, 1920), dtype=np.uint8) for _ in range(4)]
        with torch.cuda.stream(side):
            pixels = upload([BgrPicture(image) for image in images], CUDA).data
            brighter = download(pixels.add(1))  # uint8 wraps at 255, as numpy does
        assert np.array_equal(brighter, np.stack(images) + np.uint8(1)), f"round {round_}"


@pytest.mark.parametrize("i420", [False, True], ids=["bgr", "i420"])
@pytest.mark.parametrize("view, maps", [("overlay", 1), ("grid", 3)])
def test_device_renderer_on_cuda_draws_what_it_draws_on_the_cpu(view, maps, i420):
    item = explained(maps=maps, i420=i420)
    on_gpu = dataclasses.replace(item, picture=item.picture.with_data(item.picture.data.to(CUDA)), maps=item.maps.to(CUDA))
    options = {"view": view, "alpha": 0.5, "colormap": "turbo", "top_k": 2}
    cpu = TorchRenderer(name, torch.device("cpu"), **options).render(item, fps=30.0).picture
    gpu = TorchRenderer(name, CUDA, torch.cuda.Stream(CUDA), **options).render(on_gpu, fps=30.0).picture
    assert isinstance(gpu.data, np.ndarray) and gpu.shape == cpu.shape
    difference = np.abs(gpu.data.astype(int) - cpu.data.astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.05  # float rounding only


@pytest.mark.parametrize("codec, size", [("libx264", (320, 240)), ("libx264", (320, 182)), ("libx265", (320, 240))],
                         ids=["h264", "h264-height-4n+2", "hevc"])
def test_nvdec_decodes_what_the_software_decoder_decodes(tmp_path, codec, size):
    """Decoding is exact in H.264 and HEVC: NVDEC's frames, repacked to I420 on the GPU, must equal
    FFmpeg's software decoder's, bit for bit. Torch uses the GPU first, as in any process that ran a model."""
    torch.zeros(1, device=CUDA)
    clip = write_clip(tmp_path / "in.mkv", frames=30, size=size, codec=codec)
    with open_source(str(clip), decoding=Decoding("nvdec", keep_yuv=True)) as source:
        hardware = list(source.frames())
    with open_source(str(clip), decoding=Decoding("software", keep_yuv=True)) as source:
        software = list(source.frames())
    assert len(hardware) == len(software) == 30
    for ours, theirs in zip(hardware, software):
        assert isinstance(ours.picture.data, torch.Tensor) and ours.picture.data.is_cuda  # NVDEC, not its fallback
        assert ours.pts == theirs.pts and ours.picture.matrix == theirs.picture.matrix
        assert np.array_equal(ours.picture.data.cpu().numpy(), theirs.picture.data), f"frame {ours.index}"


def test_nvdec_10_bit_hevc_becomes_8_bit_i420(tmp_path):
    """HEVC Main 10 comes out of NVDEC as P010 (10 bits in the high bits of 16): its top 8 bits are the
    picture swscale makes of the software decoder's, up to rounding."""
    torch.zeros(1, device=CUDA)
    clip = write_clip(tmp_path / "ten.mkv", frames=10, size=(320, 240), codec="libx265", pix_fmt="yuv420p10le")
    with open_source(str(clip), decoding=Decoding("nvdec", keep_yuv=True)) as source:
        hardware = list(source.frames())
    with av.open(str(clip)) as container:
        software = [frame.reformat(format="yuv420p").to_ndarray() for frame in container.decode(video=0)]
    assert len(hardware) == len(software) == 10
    for ours, theirs in zip(hardware, software):
        assert isinstance(ours.picture.data, torch.Tensor) and ours.picture.data.is_cuda
        difference = np.abs(ours.picture.data.cpu().numpy().astype(int) - theirs.astype(int))
        assert difference.max() <= 1 and difference.mean() < 0.6, f"frame {ours.index}"


def run_logged(clip, tmp_path, label, **options):
    """A run with its JSONL log. On the GPU, NVDEC is forced: a silent fall back to the CPU would test
    less than it claims."""
    run_options = {"model": "resnet18", "weights": "none", "input_size": 96, "batch_size": 4, "crf": 10,
                   "encoder": "libx264", **({"decoder": "nvdec"} if options.get("device") == "cuda" else {}), **options}
    config = RunConfig(source=str(clip), output=tmp_path / f"{label}.mp4", log=tmp_path / f"{label}.jsonl", **run_options)
    torch.manual_seed(0)  # the same random weights in every run
    result = api.run(config, handle_signals=False)
    rows = [json.loads(line)["explained"] for line in (tmp_path / f"{label}.jsonl").read_text().splitlines()]
    return result, rows


def assert_same_run(tmp_path, label, reference, rows, reference_rows, probability_tolerance=0.01):
    assert [row["class"] for row in rows] == [row["class"] for row in reference_rows]
    for row, reference_row in zip(rows, reference_rows):
        assert row["probability"] == pytest.approx(reference_row["probability"], abs=probability_tolerance)
    # Below the labels (the FPS in them differs from run to run), up to rounding and the encoder's loss.
    difference = np.abs(np.stack(decoded_frames(tmp_path / f"{label}.mp4")).astype(int) - np.stack(decoded_frames(tmp_path / f"{reference}.mp4")))[:, 40:]
    assert difference.mean() < 2.5 and np.percentile(difference, 99) <= 12


def test_cuda_run_with_nvdec_writes_what_the_cpu_run_writes(tmp_path, exact_fp32):
    """The whole GPU path (NVDEC, upload-free decoding, explain and render on their own streams, one
    download) against the CPU path, over enough frames for the stages to overlap. Torch has used the
    GPU before NVDEC opens here (earlier tests, and the session's models): FFmpeg must share its context."""
    clip = write_clip(tmp_path / "in.mp4", frames=60, size=(320, 240), fps=30, audio=True)
    _, cpu_rows = run_logged(clip, tmp_path, "cpu", device="cpu", precision="fp32")
    result, gpu_rows = run_logged(clip, tmp_path, "gpu", device="cuda", precision="fp32")
    assert result.stats.written == 60
    assert probe(tmp_path / "gpu.mp4")["times"] == pytest.approx(probe(tmp_path / "cpu.mp4")["times"], abs=1e-6)
    assert_same_run(tmp_path, "gpu", "cpu", gpu_rows, cpu_rows)


def test_compiled_forward_on_cuda_equals_eager(tmp_path, exact_fp32):
    """--compile on CUDA captures CUDA graphs (mode reduce-overhead), replayed on the explain stage's own
    stream; 30 frames in batches of 4 also replay the padded last batch. Two compiled runs: each run's
    explain stage is a new thread, and CUDA graphs keep per-thread state (cam/compiled.py)."""
    clip = write_clip(tmp_path / "in.mp4", frames=30, size=(320, 240), fps=30)
    _, eager = run_logged(clip, tmp_path, "eager", device="cuda", precision="fp32")
    for label in ("compiled", "compiled-again"):
        _, compiled = run_logged(clip, tmp_path, label, device="cuda", precision="fp32", compile=True)
        assert_same_run(tmp_path, label, "eager", compiled, eager, probability_tolerance=1e-3)


@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_maps_on_cuda_equal_pytorch_grad_cam(resnets, batch, method, exact_fp32):
    model = resnets["resnet50"].to(CUDA)
    try:
        x = batch.to(CUDA)
        for layer in ("layer4", "layer3"):
            ours = Explainer(model, method=method, layer=layer, precision="fp32")(x, [3, 417])
            expected = reference_maps(model, REFERENCES[method], layer, x, [3, 417])
            assert ours.maps.std() > 0.05
            assert (ours.maps.cpu() - expected).abs().max() <= 1e-3, layer
    finally:
        model.cpu()  # the session's shared models stay on the CPU for other tests


def test_demo_model_in_bf16_on_cuda_still_names_and_finds_the_objects(tmp_path):
    """precision auto is bf16 on the GPU: the trained demo model must keep its accuracy and pointing."""
    result = run_demo(tmp_path / "demo.mp4", seconds=4, show=False, device="cuda")
    assert result.frames == 120
    assert result.accuracy >= 0.95 and result.pointing >= 0.9


def test_nvenc_encodes_when_the_card_has_it_or_auto_falls_back_in_one_line(tmp_path, caplog):
    """H100 and A100 have NVDEC but no NVENC; most other NVIDIA cards have both."""
    problem = probe_encoder("h264_nvenc")
    with caplog.at_level(logging.WARNING, logger="streamcam"):
        chosen = choose_h264_encoder("auto", on_gpu=True)
    if problem:
        assert chosen == "libx264" and len(caplog.records) == 1
        return
    assert chosen == "h264_nvenc" and not caplog.records
    clip = write_clip(tmp_path / "in.mp4", frames=24, size=(320, 240))
    run_logged(clip, tmp_path, "nvenc", device="cuda", encoder="nvenc")
    assert probe(tmp_path / "nvenc.mp4")["frames"] == 24
