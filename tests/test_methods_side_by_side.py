"""Methods side by side (--view methods, check with several methods) and method options (--method-option)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import streamcam
from media import probe, write_clip
from streamcam import api, cli
from streamcam.config import RunConfig, load_preset
from streamcam.errors import StreamcamError

FAST = {"model": "resnet18", "weights": "none", "input_size": 64}


def run(source, **options):
    return api.run(RunConfig(source=str(source), **{**FAST, **options}), handle_signals=False)


def test_the_methods_view_tiles_one_map_per_method_and_logs_each(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=6, size=(160, 96))
    run(clip, output=tmp_path / "two.mp4", log=tmp_path / "two.jsonl", view="methods", method="gradcam,reciprocam")
    assert (probe(tmp_path / "two.mp4")["width"], probe(tmp_path / "two.mp4")["height"]) == (320, 96)  # side by side
    rows = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert [m["method"] for m in row["methods"]] == ["gradcam", "reciprocam"]
        assert all(m["ms"] > 0 and 0 <= m["peak"]["x"] < 160 and 0 <= m["peak"]["y"] < 96 for m in row["methods"])
        assert row["peak"] == row["methods"][0]["peak"]
    run(clip, output=tmp_path / "four.mp4", view="methods", method="cam,gradcam,eigencam,ablationcam", boxes=True,
        log=tmp_path / "four.jsonl")
    assert (probe(tmp_path / "four.mp4")["width"], probe(tmp_path / "four.mp4")["height"]) == (160, 96)  # 2 x 2 tiles
    first = json.loads((tmp_path / "four.jsonl").read_text().splitlines()[0])
    assert all("boxes" in m for m in first["methods"])


def test_several_methods_need_the_methods_view(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    with pytest.raises(StreamcamError, match="names several methods: show them side by side with --view methods"):
        run(clip, output=tmp_path / "out.mp4", method="gradcam,cam")


def test_check_reports_each_methods_numbers_and_fails_on_any(tmp_path):
    from streamcam.demo.run import write_clip as write_scene

    truth = write_scene(tmp_path / "drive.mp4", seconds=1.0, seed=3)
    boxes = [{"frame": i, "box": [x0, y0, x1 + 1, y1 + 1]} for i, (_, (x0, y0, x1, y1)) in enumerate(truth)]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    report = streamcam.check(tmp_path / "drive.mp4", roi=str(tmp_path / "boxes.json"), model="demo", device="cpu",
                             method="gradcam,eigencam", min_pointing=0.5)
    clip = report.clips[0]
    assert set(clip.methods) == {"gradcam", "eigencam"}
    for method, summary in clip.methods.items():
        rows = [row for row in clip.rows if row["method"] == method]
        assert summary["frames"] == 30 and summary["pointing"] == pytest.approx(sum(r["pointing"] for r in rows) / 30)
    assert clip.summary == clip.methods["gradcam"]  # the first method's numbers stand for the clip
    strict = streamcam.check(tmp_path / "drive.mp4", roi="0,0,0.1,0.1", model="demo", device="cpu",
                             method="gradcam,eigencam")
    assert [reason.split(":")[0] for reason in strict.clips[0].failures] == ["gradcam", "eigencam"]


def test_method_options_from_the_command_line_are_typed_and_validated(monkeypatch):
    seen = {}

    def fake_run(config, **kwargs):
        config.validate(extra_outputs=True)
        seen["options"] = {method: config.options_of(method) for method in config.method_options}
        raise SystemExit(0)

    monkeypatch.setattr(api, "run", fake_run)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["run", "clip.mp4", "--method", "reciprocam", "--method-option",
                                     "reciprocam.gaussian=true", "--method-option", "scorecam.batch_size=64"])
    assert result.exit_code == 0, result.output
    assert seen["options"] == {"reciprocam": {"gaussian": True}, "scorecam": {"batch_size": 64}}
    for option, message in [("scorecam.batch=64", "scorecam has no option batch; it takes batch_size"),
                            ("scorecam.batch_size=lots", "scorecam.batch_size takes int values, got 'lots'"),
                            ("scorecam.batch_size=0", "batch_size must be > 0"),
                            ("nocam.n=1", "unknown method 'nocam'"),
                            ("scorecam-batch_size", "give METHOD.OPTION=VALUE")]:
        result = runner.invoke(cli.app, ["run", "clip.mp4", "--method-option", option])
        assert result.exit_code != 0 and message in str(result.exception), (option, result.exception)


def test_method_options_in_a_preset(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("method: smoothgrad\nmethod-options:\n  smoothgrad: {n: 8, sigma: 0.1}\n")
    config = RunConfig(source="clip.mp4", output=tmp_path / "out.mp4", **load_preset(preset)).validate()
    assert config.options_of("smoothgrad") == {"n": 8, "sigma": 0.1}
    explainer = api.Engines().get(RunConfig(source="x", model="resnet18", weights="none", method="smoothgrad",
                                            method_options={"smoothgrad": {"n": 3}}), __import__("torch").device("cpu"), 1)[1][0]
    assert explainer.method.n == 3
