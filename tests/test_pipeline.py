"""End to end through streamcam.api.run on generated media, with random-weight ResNet-18s."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from media import probe, write_clip
from streamcam import api, plan
from streamcam.config import RunConfig
from streamcam.errors import StreamcamError
from streamcam.explain import FrameExplainer

FAST = {"model": "resnet18", "weights": "none", "input_size": 64}


def run(source, **options):
    return api.run(RunConfig(source=str(source), **{**FAST, **options}), handle_signals=False)


def test_clip_with_audio_keeps_frames_fps_size_and_sound(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=36, size=(192, 144), fps=24, audio=True)
    out = tmp_path / "out.mp4"
    result = run(clip, output=out)
    source, written = probe(clip), probe(out)
    assert result.stats.written == result.stats.read == 36 and result.stats.dropped == 0
    assert written["frames"] == 36
    assert (written["width"], written["height"]) == (192, 144)
    assert written["fps"] == 24
    assert written["times"] == pytest.approx(source["times"], abs=1e-6)
    assert written["audio"]


@pytest.mark.parametrize("gpu_path", [False, True], ids=["cpu-path", "gpu-path"])
def test_heights_that_are_not_a_multiple_of_four_keep_their_picture(tmp_path, monkeypatch, gpu_path):
    """yuv420p buffers of a height of 4n+2 (270, 1082, ...): PyAV infers such a buffer's height wrongly."""
    monkeypatch.setattr(plan, "frames_stay_on_device", lambda device: gpu_path)
    clip = write_clip(tmp_path / "in.mp4", frames=4, size=(192, 90))
    out = tmp_path / "out.mp4"
    run(clip, output=out, alpha=0.0, crf=12)
    with av.open(str(clip)) as source, av.open(str(out)) as output:
        pairs = zip(source.decode(video=0), output.decode(video=0))
        for before, after in pairs:
            assert (after.width, after.height) == (192, 90)
            below_label = np.s_[40:]  # alpha 0: the picture itself, up to the encoder's loss
            difference = np.abs(after.to_ndarray(format="bgr24")[below_label].astype(int)
                                - before.to_ndarray(format="bgr24")[below_label].astype(int))
            assert difference.mean() < 3


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    # Irregular timing (ms): steady 25 fps, a stall, a burst at 100 fps, then 10 fps.
    pts = [0, 40, 80, 120, 400, 410, 420, 430, 440, 540, 640, 740]
    clip = write_clip(tmp_path / "vfr.mkv", frames=len(pts), pts=pts, time_base=Fraction(1, 1000))
    out = tmp_path / "out.mkv"
    run(clip, output=out)
    assert probe(clip)["times"] == pytest.approx([p / 1000 for p in pts], abs=1e-6)
    assert probe(out)["times"] == pytest.approx([p / 1000 for p in pts], abs=1e-6)


class SlowExplainer(FrameExplainer):
    """Stands in for a model far slower than the camera: 0.1 s per batch."""

    def __call__(self, frames):
        time.sleep(0.1)
        return super().__call__(frames)


def test_live_source_with_a_slow_explainer_drops_stale_frames_and_keeps_latency_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "FrameExplainer", SlowExplainer)
    result = run("lavfi:testsrc2=size=160x120:rate=30,realtime", output=tmp_path / "live.mp4",
                 log=tmp_path / "live.jsonl", max_frames=20)
    stats = result.stats
    assert stats.written == 20
    # 30 frames/s arrive and 10/s are explained: about two of every three are dropped, and counted.
    assert stats.dropped >= 20
    # Newest-frame-wins: a frame waits at most one processing step, so latency stays flat.
    latencies = [row["latency_ms"] for row in map(json.loads, (tmp_path / "live.jsonl").read_text().splitlines())]
    assert max(latencies) < 500
    assert sum(latencies[-5:]) / 5 < sum(latencies[:5]) / 5 + 100, "latency must not build up"
    assert probe(tmp_path / "live.mp4")["frames"] == 20


def test_file_source_with_a_slow_explainer_drops_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "FrameExplainer", SlowExplainer)
    clip = write_clip(tmp_path / "in.mp4", frames=12)
    result = run(clip, output=tmp_path / "out.mp4", batch_size=2)
    assert result.stats.dropped == 0 and result.stats.written == 12
    assert probe(tmp_path / "out.mp4")["frames"] == 12


def test_max_frames_is_honoured(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=30)
    result = run(clip, output=tmp_path / "out.mp4", log=tmp_path / "log.jsonl", max_frames=7)
    assert result.stats.written == 7 and result.stop_reason == "--max-frames 7 reached"
    assert probe(tmp_path / "out.mp4")["frames"] == 7
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 7


def test_jsonl_log_has_one_valid_row_per_frame(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=10, size=(160, 96), fps=20)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(1000)))
    run(clip, log=tmp_path / "log.jsonl", labels=labels, top_k=3)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == list(range(10))
    assert [row["time"] for row in rows] == pytest.approx([i / 20 for i in range(10)])
    for row in rows:
        assert len(row["top"]) == 3
        assert row["top"][0] == row["explained"]  # no --target: the top-1 class is explained
        assert row["explained"]["label"] == f"thing {row['explained']['class']}"
        assert 0 < row["explained"]["probability"] <= 1
        assert [c["probability"] for c in row["top"]] == sorted((c["probability"] for c in row["top"]), reverse=True)
        assert 0 <= row["peak"]["x"] < 160 and 0 <= row["peak"]["y"] < 96
        assert row["latency_ms"] > 0


def test_target_class_and_grid_view(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=4, size=(128, 96))
    run(clip, log=tmp_path / "log.jsonl", target="417")
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {row["explained"]["class"] for row in rows} == {417}
    run(clip, output=tmp_path / "grid.mp4", view="grid", top_k=2)
    assert (probe(tmp_path / "grid.mp4")["width"], probe(tmp_path / "grid.mp4")["height"]) == (256, 96)
    run(clip, output=tmp_path / "side.mp4", view="side")
    assert probe(tmp_path / "side.mp4")["width"] == 256


def test_smoothing_is_an_exponential_moving_average_that_cuts_flicker():
    from streamcam import Explainer, load_model
    from streamcam.picture import BgrPicture
    from streamcam.sources import Frame

    torch.manual_seed(0)
    loaded = load_model("resnet18", "none", device="cpu", input_size=64)
    rng = np.random.default_rng(0)
    frames = [Frame(i, BgrPicture(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)), i, Fraction(1, 30), 0.0)
              for i in range(8)]
    maps = {}
    for smooth in (0.0, 0.75):
        explain = FrameExplainer(loaded, Explainer(loaded), target="5", smooth=smooth)
        maps[smooth] = [result.maps[0] for batch in (frames[:3], frames[3:]) for result in explain(batch)]
    raw, smoothed = maps[0.0], maps[0.75]
    expected = raw[0]
    for t in range(len(frames)):  # e_t = s * e_(t-1) + (1 - s) * m_t, across batch boundaries
        expected = raw[0] if t == 0 else 0.75 * expected + 0.25 * raw[t]
        assert torch.allclose(smoothed[t], expected, atol=1e-6)

    def flicker(sequence):
        return sum((b - a).abs().mean().item() for a, b in zip(sequence, sequence[1:])) / (len(sequence) - 1)

    assert flicker(smoothed) < 0.5 * flicker(raw)

    # A slot starts over when its class changes (a map of another class is not blended in).
    explain = FrameExplainer(loaded, Explainer(loaded), smooth=0.75)
    m = torch.rand(4, 1, 5, 7, generator=torch.Generator().manual_seed(1))
    out = explain._smoothed(m, torch.tensor([[1], [1], [2], [2]]), cameras=[0, 0, 0, 0])
    for got, want in zip(out, [m[0], 0.75 * m[0] + 0.25 * m[1], m[2], 0.75 * m[2] + 0.25 * m[3]]):
        assert torch.allclose(got, want)


def test_image_folder_in_image_folder_out(tmp_path):
    import cv2

    from media import moving_square

    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.jpg", "c.bmp"]):
        cv2.imwrite(str(folder / name), moving_square(i, 96 + 8 * i, 64))
    result = run(folder, output=tmp_path / "out")
    assert result.stats.written == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.png", "c.png"]
    assert cv2.imread(str(tmp_path / "out" / "c.png")).shape == (64, 112, 3)


def test_odd_frame_size_is_padded_to_even(tmp_path):
    clip = write_clip(tmp_path / "odd.mkv", frames=5, size=(161, 121), codec="ffv1", pix_fmt="bgr0")
    run(clip, output=tmp_path / "out.mp4")
    written = probe(tmp_path / "out.mp4")
    assert (written["width"], written["height"], written["frames"]) == (162, 122, 5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"output": Path("nowhere/out.mp4")}, "folder nowhere does not exist"),
        ({"output": Path("out.xyz")}, "unknown extension '.xyz'"),
        ({}, "nothing to do"),
        ({"output": Path("out.mp4"), "view": "mosaic"}, "unknown view 'mosaic'"),
        ({"output": Path("out.mp4"), "colormap": "rainbow"}, "unknown colormap 'rainbow'"),
        ({"output": Path("out.mp4"), "target": "tabby"}, "model has no class names"),
    ],
)
def test_bad_requests_fail_before_any_work(tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    with pytest.raises(StreamcamError, match=message):
        run(clip, **options)
    assert not (tmp_path / "out.mp4").exists()


def test_a_failing_stage_ends_the_run_cleanly_and_the_output_still_plays(tmp_path, monkeypatch):
    class Failing(FrameExplainer):
        calls = 0

        def __call__(self, frames):
            Failing.calls += 1
            if Failing.calls == 4:
                time.sleep(1)  # the three frames explained so far reach the file (a stop drops what is in flight)
                raise RuntimeError("model exploded")
            return super().__call__(frames)

    monkeypatch.setattr(api, "FrameExplainer", Failing)
    clip = write_clip(tmp_path / "in.mp4", frames=40)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="model exploded"):
        run(clip, output=tmp_path / "out.mp4", batch_size=1)
    assert time.monotonic() - started < 30, "a dead stage must not hang the pipeline"
    assert probe(tmp_path / "out.mp4")["frames"] == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without NVENC")
def test_nvenc_is_probed_and_falls_back_to_libx264_with_one_line(monkeypatch, caplog):
    assert plan.probe_encoder("libx264") is None
    problem = plan.probe_encoder("h264_nvenc")
    assert problem  # no GPU here: the one-frame test fails, and says why
    with caplog.at_level("WARNING", logger="streamcam"):
        assert plan.choose_h264_encoder("auto", on_gpu=True) == "libx264"
    assert [record.getMessage() for record in caplog.records] == [
        f"NVENC cannot encode here ({problem}); encoding with libx264"]
    with pytest.raises(StreamcamError, match="--encoder nvenc: NVENC cannot encode here"):
        plan.choose_h264_encoder("nvenc", on_gpu=True)

    def no_probe(codec):
        raise AssertionError("a CPU run or a forced libx264 must not probe")

    monkeypatch.setattr(plan, "probe_encoder", no_probe)
    assert plan.choose_h264_encoder("auto", on_gpu=False) == "libx264"
    assert plan.choose_h264_encoder("libx264", on_gpu=True) == "libx264"
