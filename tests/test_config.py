"""YAML presets: every option of a run can be set from a preset, with its natural YAML type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamcam.config import FIELDS, RunConfig, load_preset

# Every RunConfig field (but the source, which is the command's argument), as a user would write it in a
# preset, and what the run then gets. A new option must be added here: the test below fails otherwise.
NATURAL = {
    "output": ("out.mp4", Path("out.mp4")),
    "show": ("true", True),
    "model": ("resnet18", "resnet18"),
    "weights": ("none", "none"),
    "labels": ("classes.txt", Path("classes.txt")),
    "method": ("gradcam++", "gradcam++"),
    "method_options": ("{scorecam: {batch_size: 64}}", {"scorecam": {"batch_size": 64}}),
    "layer": ("layer3", "layer3"),
    "align": ("receptive-field", "receptive-field"),
    "target": ("417", "417"),  # a class index, as the command line gives it
    "top_k": ("3", 3),
    "alpha": ("0.4", 0.4),
    "colormap": ("turbo", "turbo"),
    "view": ("side", "side"),
    "smooth": ("0.3", 0.3),
    "boxes": ("true", True),
    "box_threshold": ("0.4", 0.4),
    "motion": ("moving", "moving"),
    "motion_noise": ("20", 20.0),
    "motion_flow": ("1.5", 1.5),
    "hud_motion": ("true", True),
    "input_size": ("192", 192),
    "batch_size": ("8", 8),
    "device": ("cpu", "cpu"),
    "precision": ("fp32", "fp32"),
    "compile": ("false", False),
    "crf": ("28", 28),
    "preset": ("fast", "fast"),
    "encoder": ("libx264", "libx264"),
    "decoder": ("software", "software"),
    "camera_size": ("1280x720", "1280x720"),
    "camera_fps": ("30", 30.0),
    "reconnect_timeout": ("10", 10.0),
    "video_stream": ("1", 1),
    "fps": ("29.97", 29.97),
    "max_frames": ("100", 100),
    "log": ("frames.jsonl", Path("frames.jsonl")),
    "contact_sheet": ("sheet.png", Path("sheet.png")),
    "serve": ("8000", "8000"),  # a port alone is a YAML number; it is taken as the text it was typed as
    "serve_token": ("s3cret", "s3cret"),
    "serve_max_clients": ("4", 4),
}
# The same options in their other natural forms.
ALTERNATIVES = {"box_threshold": ("otsu", "otsu"), "video_stream": ("all", "all"), "camera_fps": ("25.0", 25.0),
                "target": ("tabby", "tabby"), "alpha": ("1", 1.0), "preset": ("null", None)}


def test_every_option_has_a_natural_yaml_example():
    assert set(NATURAL) == set(FIELDS) - {"source"}


@pytest.mark.parametrize("field, text, expected",
                         [(f, *NATURAL[f]) for f in NATURAL] + [(f, *ALTERNATIVES[f]) for f in ALTERNATIVES])
def test_every_option_is_settable_from_a_preset_with_its_natural_type(tmp_path, monkeypatch, field, text, expected):
    monkeypatch.chdir(tmp_path)
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"{field.replace('_', '-')}: {text}\n")
    values = load_preset(preset)
    assert values == {field: expected} and type(values[field]) is type(expected)
    config = RunConfig(source="clip.mp4", **{"output": Path("out.mp4"), **values})
    config.validate()


def test_every_option_in_the_readme_table_is_a_preset_key():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("| option | default | what it does |"):readme.index("Every run ends with a summary")]
    flags = set(re.findall(r"`(?:-\w, )?--([a-z-]+)", table)) - {"config", "no-show"}
    plural = {"method_option": "method_options"}  # a flag given once per option, gathered in one field
    keys = {plural.get(flag.replace("-", "_"), flag.replace("-", "_")) for flag in flags}
    assert keys <= set(NATURAL), sorted(keys - set(NATURAL))
    assert len(keys) >= 30


@pytest.mark.parametrize("text, message", [("alpha: lots", "alpha must be a number, got 'lots'"),
                                           ("top-k: 2.5", "top_k must be a whole number, got 2.5"),
                                           ("box-threshold: true", "box_threshold must be a number or a name, got True"),
                                           ("model: ", "model cannot be empty"),
                                           ("alpha: !!float abc", "alpha: could not convert")])
def test_values_of_the_wrong_type_say_which_key_and_line(tmp_path, text, message):
    preset = tmp_path / "preset.yaml"
    preset.write_text("model: resnet18\n" + text + "\n")
    with pytest.raises(Exception, match=re.escape(f"preset.yaml line 2: {message}")):
        load_preset(preset)
