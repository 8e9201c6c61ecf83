"""The GPU path (decoder planes uploaded once, converted, explained and rendered on the device, I420 back
to the encoder), run on the CPU: the same code runs on CUDA, and it must make what the CPU path makes."""

from __future__ import annotations

import json
import logging

import av
import cv2
import numpy as np
import pytest
import torch

from media import decoded_frames, moving_square, probe, write_clip
from streamcam import api, plan, yuv
from streamcam.config import RunConfig
from streamcam.errors import StreamcamError
from streamcam.models import Preprocess
from streamcam.picture import I420Picture, i420_from_dlpack
from streamcam.plan import Decoding
from streamcam.sources import open_source

FAST = {"model": "resnet18", "weights": "none", "input_size": 64, "device": "cpu"}  # on a GPU machine too


def run(source, **options):
    return api.run(RunConfig(source=str(source), **{**FAST, **options}), handle_signals=False)


def frame_i420(width=320, height=180, index=3):
    bgr = np.ascontiguousarray(moving_square(index, width, height)[..., ::-1])
    return bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def test_yuv_to_rgb_matches_opencv_and_round_trips():
    bgr, packed = frame_i420()
    y, u, v = (torch.from_numpy(p).float() for p in yuv.planes(packed))
    full = torch.stack([y, u.repeat_interleave(2, 0).repeat_interleave(2, 1), v.repeat_interleave(2, 0).repeat_interleave(2, 1)])
    rgb = yuv.yuv_to_rgb(full, "bt601")
    reference = cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420).transpose(2, 0, 1).astype(np.float32)
    assert np.abs(rgb.numpy() - reference).max() <= 2.5
    assert torch.allclose(yuv.yuv_to_rgb(yuv.rgb_to_yuv(rgb, "bt709"), "bt709"), rgb, atol=1e-3)


def test_preprocessing_from_i420_matches_preprocessing_from_bgr():
    bgr, packed = frame_i420(640, 360)
    preprocess = Preprocess(short_side=128)
    from_bgr = preprocess(torch.from_numpy(bgr)[None], bgr=True)
    from_planes = preprocess.i420(torch.from_numpy(packed)[None], "bt601")
    assert from_planes.shape == from_bgr.shape == (1, 3, 128, 228)
    # In units of the normalised input (1/255 of a level is ~0.017): resizing before converting and the
    # chroma's own resize change only rounding and edges.
    difference = (from_planes - from_bgr).abs()
    assert difference.mean() < 0.03 and difference.quantile(0.99) < 0.25


def test_nvdec_planes_are_repacked_as_i420(rng=np.random.default_rng(0)):
    """NVDEC gives NV12 (or 10-bit P010) with padded rows, shared through DLPack; emulated here."""
    height, width, line = 6, 8, 16
    y = torch.from_numpy(rng.integers(0, 255, (height, line), dtype=np.uint8))[:, :width]
    uv = torch.from_numpy(rng.integers(0, 255, (height // 2, line), dtype=np.uint8))[:, :width].reshape(height // 2, width // 2, 2)
    packed = yuv.nv12_to_i420(y, uv)
    out_y, out_u, out_v = yuv.planes(packed)
    assert torch.equal(out_y, y) and torch.equal(out_u, uv[..., 0]) and torch.equal(out_v, uv[..., 1])
    ten_bit = yuv.nv12_to_i420(y.to(torch.int32).mul(256).to(torch.uint16), uv.to(torch.int32).mul(256).to(torch.uint16))
    assert torch.equal(ten_bit, packed)


def test_nv12_frames_shared_through_dlpack_become_the_same_i420():
    """What NVDEC frames go through, on a CPU frame: DLPack export with FFmpeg's padded rows, repacking."""
    graph = av.open("testsrc2=size=200x120:rate=30", format="lavfi")
    frame = next(graph.decode(video=0)).reformat(format="yuv420p")
    graph.close()
    nv12 = frame.reformat(format="nv12")
    assert nv12.planes[0].line_size > 200  # rows padded, as FFmpeg allocates them
    assert np.array_equal(i420_from_dlpack(nv12).numpy(), frame.to_ndarray())


def test_decoder_keeps_yuv420p_planes_and_converts_what_it_cannot_keep(tmp_path):
    even = write_clip(tmp_path / "even.mp4", frames=3, size=(160, 120))
    odd = write_clip(tmp_path / "odd.mkv", frames=3, size=(161, 121), codec="libx264rgb", pix_fmt="bgr0")
    keep_yuv = Decoding(keep_yuv=True)
    with open_source(str(even), decoding=keep_yuv) as source:
        frame = next(iter(source.frames()))
        assert isinstance(frame.picture, I420Picture) and frame.shape == (120, 160) and frame.picture.matrix == "bt601"
    with open_source(str(even)) as source:
        plain = next(iter(source.frames()))
    assert np.abs(frame.picture.bgr().astype(int) - plain.picture.bgr().astype(int)).max() <= 1  # swscale, as the BGR path
    with open_source(str(odd), decoding=keep_yuv) as source:
        assert not isinstance(next(iter(source.frames())).picture, I420Picture)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without NVDEC")
def test_nvdec_falls_back_to_the_cpu_in_one_line_or_refuses_when_forced(tmp_path, caplog):
    """This machine has no NVIDIA GPU, so NVDEC cannot open: auto decodes on the CPU, nvdec is an error."""
    clip = write_clip(tmp_path / "in.mp4", frames=3)
    with caplog.at_level(logging.WARNING, logger="streamcam"), open_source(str(clip), decoding=Decoding("auto")) as source:
        assert len(list(source.frames())) == 3
    assert [r.getMessage() for r in caplog.records if "NVDEC" in r.getMessage()][:1]
    with pytest.raises(StreamcamError, match="--decoder nvdec: NVDEC cannot decode"):
        open_source(str(clip), decoding=Decoding("nvdec"))
    with pytest.raises(StreamcamError, match="needs --device cuda"):
        run(clip, output=tmp_path / "out.mp4", decoder="nvdec", device="cpu")


@pytest.fixture
def gpu_path(monkeypatch):
    """Take the GPU path on the CPU."""
    monkeypatch.setattr(plan, "frames_stay_on_device", lambda device: True)


@pytest.mark.parametrize("size, codec, pix_fmt", [((192, 144), "libx264", "yuv420p"), ((161, 91), "libx264rgb", "bgr0")],
                         ids=["yuv420p", "odd-rgb"])
def test_gpu_path_writes_what_the_cpu_path_writes(tmp_path, monkeypatch, size, codec, pix_fmt):
    clip = write_clip(tmp_path / "in.mp4", frames=12, size=size, fps=24, audio=True, codec=codec, pix_fmt=pix_fmt)
    torch.manual_seed(0)  # the same random weights for both runs
    run(clip, output=tmp_path / "cpu.mp4", log=tmp_path / "cpu.jsonl", batch_size=3, crf=10)
    monkeypatch.setattr(plan, "frames_stay_on_device", lambda device: True)
    torch.manual_seed(0)
    result = run(clip, output=tmp_path / "gpu.mp4", log=tmp_path / "gpu.jsonl", batch_size=3, crf=10)
    assert result.stats.written == 12
    cpu, gpu = probe(tmp_path / "cpu.mp4"), probe(tmp_path / "gpu.mp4")
    assert gpu["frames"] == 12 and gpu["audio"] and gpu["times"] == pytest.approx(cpu["times"], abs=1e-6)
    assert (gpu["width"], gpu["height"]) == (cpu["width"], cpu["height"])
    # Below the labels (the FPS differs from run to run), up to rounding and the encoder's loss.
    difference = np.abs(np.stack(decoded_frames(tmp_path / "gpu.mp4")).astype(int) - np.stack(decoded_frames(tmp_path / "cpu.mp4")))[:, 30:]
    assert difference.mean() < 2.5 and np.percentile(difference, 99) <= 12
    cpu_rows, gpu_rows = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()] for name in ("cpu.jsonl", "gpu.jsonl"))
    for cpu_row, gpu_row in zip(cpu_rows, gpu_rows):
        assert gpu_row["explained"]["class"] == cpu_row["explained"]["class"]
        assert gpu_row["explained"]["probability"] == pytest.approx(cpu_row["explained"]["probability"], abs=0.02)


def test_gpu_path_keeps_a_bt709_source_in_bt709(tmp_path, gpu_path):
    """HD video is BT.709: its planes pass through, and the output says which matrix they use."""
    clip = tmp_path / "hd.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 192, 144, "yuv420p"
        stream.codec_context.colorspace = yuv.AVCOL_SPC["bt709"]
        for index in range(6):
            frame = av.VideoFrame.from_ndarray(moving_square(index, 192, 144), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="itu709")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    run(clip, output=tmp_path / "out.mp4", alpha=0.0)
    with av.open(str(tmp_path / "out.mp4")) as output, av.open(str(clip)) as source:
        assert output.streams.video[0].codec_context.colorspace == yuv.AVCOL_SPC["bt709"]
        first_out, first_in = next(output.decode(video=0)), next(source.decode(video=0))
        # Below the label, alpha 0 leaves the picture as decoded, up to the encoder's loss.
        luma_out, luma_in = (f.to_ndarray()[60:144].astype(int) for f in (first_out, first_in))
        assert np.abs(luma_out - luma_in).mean() < 1.5


def test_gpu_path_renders_images_and_the_window_views(tmp_path, gpu_path):
    """BGR inputs (images) take the device renderer too; the grid view and a boxes overlay render."""
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        cv2.imwrite(str(folder / f"{index}.png"), moving_square(index, 160, 92)[..., ::-1])
    out = tmp_path / "out"
    run(folder, output=out, view="grid", top_k=3)
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]
    assert cv2.imread(str(out / "0.png")).shape == (92, 160, 3)
    run(folder, output=tmp_path / "boxes", boxes=True)
    assert cv2.imread(str(tmp_path / "boxes" / "1.png")).shape == (92, 160, 3)
