"""What `streamcam check` found: per clip (and per annotated object) summaries against thresholds, as
JSON and JUnit XML. A clip that was not checked to its end never passes.
"""

from __future__ import annotations

import json
import signal
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    min_share: float | None = None  # mean energy share inside the region, over the checked frames
    min_pointing: float | None = 0.8  # share of checked frames whose peak is inside the region

    def failures(self, summary: dict[str, object]) -> list[str]:
        """Why a summary fails these thresholds (empty when it passes)."""
        if not summary["frames"]:
            return ["no frame was checked (no region for any frame)"]
        reasons = []
        if self.min_share is not None and summary["share"] < self.min_share:
            reasons.append(f"mean share {summary['share']:.3f} < {self.min_share:g}")
        if self.min_pointing is not None and summary["pointing"] < self.min_pointing:
            reasons.append(f"pointing {summary['pointing']:.3f} < {self.min_pointing:g}")
        return reasons


def summarize(rows: list[dict[str, object]], target: int | None = None) -> dict[str, object]:
    """Means over per-frame rows; `accuracy` (top-1 == target) when a target class was given."""
    summary: dict[str, object] = {"frames": len({row["frame"] for row in rows}), "regions": len(rows)}
    for key in ("share", "pointing", "iou"):
        summary[key] = round(float(np.mean([row[key] for row in rows])), 6) if rows else 0.0
    if target is not None and rows:
        summary["accuracy"] = round(float(np.mean([row["top1"] == target for row in rows])), 6)
    return summary


@dataclass
class ClipReport:
    source: str
    rows: list[dict[str, object]]  # one per (frame, region)
    summary: dict[str, object]
    failures: list[str]
    objects: list[dict[str, object]] = field(default_factory=list)  # per annotated object: name, summary, failures
    failing_video: Path | None = None
    incomplete: str | None = None  # why not every frame was checked ("interrupted (SIGTERM) after 158 of 250 frames")
    frames_seen: int = 0  # frames of the clip that reached the check, with a region or not
    methods: dict[str, dict[str, object]] = field(default_factory=dict)  # several methods: each one's summary

    @property
    def passed(self) -> bool:
        """A clip passes only when every frame was seen and every threshold is met."""
        return self.incomplete is None and not self.failures and all(not obj["failures"] for obj in self.objects)


@dataclass
class CheckReport:
    clips: list[ClipReport]
    thresholds: Thresholds
    target: str | None = None
    interrupted_by: signal.Signals | None = None  # SIGINT or SIGTERM, when one stopped the check

    @property
    def passed(self) -> bool:
        return all(clip.passed for clip in self.clips)

    @property
    def summary(self) -> dict[str, object]:
        rows = [row for clip in self.clips for row in clip.rows]
        overall = summarize(rows)
        overall.update(frames=sum(clip.summary["frames"] for clip in self.clips), clips=len(self.clips),
                       failed_clips=sum(not clip.passed for clip in self.clips),
                       incomplete_clips=sum(clip.incomplete is not None for clip in self.clips))
        return overall

    def failures(self) -> list[str]:
        """One line per failed or incomplete clip or object, for assertion messages."""
        lines = [f"{clip.source}: incomplete: {clip.incomplete}" for clip in self.clips if clip.incomplete]
        lines += [f"{clip.source}: {'; '.join(clip.failures)}" for clip in self.clips if clip.failures]
        lines += [f"{clip.source} {obj['name']}: {'; '.join(obj['failures'])}"
                  for clip in self.clips for obj in clip.objects if obj["failures"]]
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "thresholds": {"min_share": self.thresholds.min_share, "min_pointing": self.thresholds.min_pointing},
            "class": self.target,
            "summary": self.summary,
            "complete": all(clip.incomplete is None for clip in self.clips),
            "clips": [{
                "source": clip.source, "passed": clip.passed, "incomplete": clip.incomplete,
                "failures": clip.failures, "summary": clip.summary, "methods": clip.methods,
                "objects": clip.objects, "failing_video": str(clip.failing_video) if clip.failing_video else None,
                "frames": clip.rows,
            } for clip in self.clips],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    def write_junit(self, path: Path) -> None:
        """JUnit XML: one test case per clip, or per annotated object when the annotations name objects. The
        cases of a clip that was not checked to its end are errors, whatever their numbers so far."""
        suite = ET.Element("testsuite", name="streamcam check")
        cases = failed = errors = 0
        for clip in self.clips:
            entries = clip.objects or [{"name": "", "summary": clip.summary, "failures": clip.failures}]
            if clip.objects and clip.failures:  # a clip-level failure still shows
                entries = [{"name": "(clip)", "summary": clip.summary, "failures": clip.failures}] + entries
            for entry in entries:
                cases += 1
                name = f"{clip.source} {entry['name']}".strip()
                case = ET.SubElement(suite, "testcase", classname="streamcam.check", name=name)
                ET.SubElement(case, "system-out").text = json.dumps(entry["summary"])
                if clip.incomplete:
                    errors += 1
                    ET.SubElement(case, "error", message=f"incomplete: {clip.incomplete}", type="incomplete")
                elif entry["failures"]:
                    failed += 1
                    ET.SubElement(case, "failure", message="; ".join(entry["failures"])).text = json.dumps(entry["summary"])
        suite.set("tests", str(cases))
        suite.set("failures", str(failed))
        suite.set("errors", str(errors))
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        ET.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)
