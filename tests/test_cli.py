"""The installed `streamcam` command: listings, and one clear line for user errors."""

from __future__ import annotations

import subprocess
import sys


def streamcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["streamcam", *args], capture_output=True, text=True, timeout=120)


def test_models_lists_torchvision_classifiers():
    result = streamcam("models")
    assert result.returncode == 0
    assert {"resnet18", "resnet50", "resnet152", "efficientnet_b0"} <= set(result.stdout.split())


def test_layers_lists_feature_maps_with_the_default_last():
    result = streamcam("layers", "resnet18")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[-1].split()[:3] == ["layer4", "512", "32"] and "layer4.1" in lines[-1]


def test_methods_lists_every_method():
    result = streamcam("methods")
    names = [line.split()[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert names == ["gradcam", "cam", "gradcam++", "layercam", "hirescam", "xgradcam", "gradcam-elementwise",
                     "reciprocam", "eigencam", "eigengradcam", "ablationcam", "scorecam", "saliency", "smoothgrad"]
    assert "options: reciprocam.gaussian=False, reciprocam.batch_size=64" in result.stdout


def test_unknown_model_is_one_line_on_stderr_without_traceback():
    result = streamcam("layers", "resnet5")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: unknown model 'resnet5'; did you mean resnet50, resnet152, resnet34? (`streamcam models` lists them)"
    ]


def test_python_dash_m_streamcam_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "streamcam", "methods"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == streamcam("methods").stdout
    usage = subprocess.run([sys.executable, "-m", "streamcam", "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "Usage: python -m streamcam" in usage.stdout


COMMANDS = ["run", "webcam", "check", "evaluate", "batch", "demo", "models", "layers", "methods"]


def test_help_works_for_every_command():
    from typer.testing import CliRunner

    from streamcam.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    for command in COMMANDS:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output
    run_help = runner.invoke(app, ["run", "--help"], terminal_width=200).output
    run_help = " ".join(run_help.replace("│", " ").split())  # rich wraps at its own width: compare words
    for default in ("default: resnet50", "default: pretrained", "default: gradcam", "default: 0.5", "default: jet",
                    "else 224"):
        assert default in run_help


def test_the_contract_flags(tmp_path):
    """`run SOURCE -o OUT --model NAME --weights none --log FILE --max-frames N`, as scripts call it."""
    import json

    from media import probe, write_clip

    clip = write_clip(tmp_path / "in.mp4", frames=20)
    result = streamcam("run", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "resnet18", "--weights", "none",
                       "--log", str(tmp_path / "log.jsonl"), "--max-frames", "6")
    assert result.returncode == 0, result.stderr
    assert "written 6" in result.stdout and "stopped" in result.stdout
    assert probe(tmp_path / "out.mp4")["frames"] == 6
    assert [json.loads(line)["frame"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == list(range(6))


def test_preset_values_apply_and_flags_override_them(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from streamcam import api, cli

    seen = {}

    def fake_run(config, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(api, "run", fake_run)
    preset = tmp_path / "p.yaml"
    preset.write_text("model: resnet18\nview: side\ntop-k: 3\nalpha: 0.3\n")
    result = CliRunner().invoke(cli.app, ["run", "clip.mp4", "--config", str(preset), "--alpha", "0.7", "--model", "resnet50"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.model, config.view, config.top_k, config.alpha) == ("resnet50", "side", 3, 0.7)
    assert config.method == "gradcam"  # neither given nor in the preset: the default


def test_bundled_presets_are_valid(tmp_path):
    from pathlib import Path

    from streamcam.config import RunConfig, load_preset

    presets = sorted(Path(__file__).parent.parent.glob("configs/*.yaml"))
    assert {p.stem for p in presets} >= {"webcam", "dashcam", "demo"}
    for path in presets:
        RunConfig(source="x", **{"output": tmp_path / "out.mp4", **load_preset(path)}).validate()


def test_bad_presets_say_which_key_and_where(tmp_path):
    import pytest

    from streamcam.config import load_preset
    from streamcam.errors import StreamcamError

    (tmp_path / "a.yaml").write_text("model: resnet18\ncolourmap: jet\n")
    with pytest.raises(StreamcamError, match=r"a.yaml line 2: unknown key 'colourmap'; did you mean colormap"):
        load_preset(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("model: [resnet18\n")
    with pytest.raises(StreamcamError, match=r"b.yaml line \d+: invalid YAML"):
        load_preset(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("alpha: lots\n")
    with pytest.raises(StreamcamError, match=r"c.yaml line 1: alpha must be a number"):
        load_preset(tmp_path / "c.yaml")


def test_missing_camera_is_one_clear_line():
    result = streamcam("webcam", "--camera", "/dev/video77", "--no-show", "--log", "/tmp/never.jsonl")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: cannot open camera /dev/video77 (/dev/video77): No such file or directory"
    ]


def test_ctrl_c_finishes_the_output_and_says_how_far_it_got(tmp_path):
    import re
    import signal
    import time

    from media import probe

    output = tmp_path / "live.mp4"
    process = subprocess.Popen(
        ["streamcam", "run", "lavfi:testsrc2=size=160x120:rate=15,realtime", "-o", str(output),
         "--model", "resnet18", "--weights", "none", "--input-size", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while (not output.exists() or output.stat().st_size < 2000) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    written = int(re.search(r"written (\d+)", out).group(1))
    assert "stopped" in out and "interrupted (Ctrl-C)" in out
    assert written > 0 and probe(output)["frames"] == written
