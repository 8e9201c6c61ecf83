"""`streamcam batch`: an archive of clips through Ray workers that load the model once, resumable, where
one bad clip never stops the rest.

    report = streamcam.batch(["archive/"], "out/", model="demo", log=True)
    report.failed, report.totals, report.path   # out/report.json, out/report.csv (and out/junit.xml)

Each clip's outputs go to `out/<its path relative to the folder or glob it came from>.mp4` (and `.jsonl`),
written under a temporary name and renamed when complete. The manifest (manifest.py) makes a rerun
skip the clips already done with the same file and options, and retry the failed ones.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .check_report import CheckReport, ClipReport, Thresholds, summarize
from .config import RunConfig
from .errors import StreamcamError
from .fleet import MAX_RESTARTS, ClipJob, ClipOutcome, connected, describe_nodes, plan_workers, ray_module, start_worker
from .manifest import ClipRecord, Manifest, clear_partials, fingerprint, write_atomically

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".ts", ".m2ts", ".mts", ".webm", ".flv", ".mpg", ".mpeg",
                  ".wmv", ".3gp", ".h264", ".264", ".hevc", ".h265", ".265"}
RUN_ONLY = ("source", "output", "show", "log", "contact_sheet", "camera_size", "camera_fps", "reconnect_timeout",
            "serve", "serve_token", "serve_max_clients")


@dataclass
class Clip:
    path: Path
    name: str  # relative to the folder or glob it was found by


def find_clips(specs: Iterable[str]) -> list[Clip]:
    """Files, folders (recursively), quoted globs and @lists (one path a line) -> clips with their names."""
    found: list[Clip] = []
    for spec in specs:
        if spec.startswith("@"):
            listed = Path(spec[1:])
            try:
                lines = [line.strip() for line in listed.read_text().splitlines()]
            except OSError as error:
                raise StreamcamError(f"cannot read the list {listed}: {error.strerror or error}") from None
            found += find_clips(line for line in lines if line and not line.startswith("#"))
        elif Path(spec).is_dir():
            root = Path(spec)
            found += [Clip(path, str(path.relative_to(root))) for path in sorted(root.rglob("*"))
                      if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES
                      and not any(part.startswith(".") for part in path.relative_to(root).parts)]
        elif Path(spec).is_file():
            found.append(Clip(Path(spec), Path(spec).name))
        elif glob.has_magic(spec):
            root = Path(os.path.dirname(spec.split("*")[0].split("?")[0].split("[")[0]) or ".")
            found += [Clip(Path(match), str(Path(match).relative_to(root))) for match in sorted(glob.glob(spec, recursive=True))
                      if Path(match).is_file()]
        elif "://" in spec:
            raise StreamcamError(f"{spec}: batch reads files that every node can open (local paths or a shared "
                                 "mount); object stores and streams are not supported")
        else:
            raise StreamcamError(f"no such file or folder: {spec}")
    names = [clip.name for clip in found]
    if len(set(names)) < len(names):  # the same name from two roots: name them from a common parent
        common = Path(os.path.commonpath([clip.path.resolve() for clip in found]))
        found = [Clip(clip.path, str(clip.path.resolve().relative_to(common))) for clip in found]
    return found


def _outputs(name: str, folder: Path, taken: set[Path], suffix: str) -> Path:
    """DIR/<name> with `suffix` instead of its own, or after it where that would collide (a.ts and a.mp4)."""
    path = folder / Path(name).with_suffix(suffix)
    if path in taken:
        path = folder / (name + suffix)
    taken.add(path)
    return path


@dataclass
class BatchReport:
    folder: Path
    clips: list[dict[str, object]]  # per clip: name, state, frames, seconds, fps, node, error, cached, passed
    nodes: list[dict[str, object]]
    workers: int
    seconds: float
    interrupted: bool = False
    check: CheckReport | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # where the wall time went, in seconds

    @property
    def failed(self) -> list[dict[str, object]]:
        return [clip for clip in self.clips if clip["state"] == "failed"]

    @property
    def passed(self) -> bool:
        """Every clip done, none interrupted, and, with --check, every check passed."""
        return not self.failed and not self.interrupted and (self.check is None or self.check.passed)

    @property
    def totals(self) -> dict[str, object]:
        run = [clip for clip in self.clips if clip["state"] == "done" and not clip["cached"]]
        frames = sum(clip["frames"] for clip in run)
        totals = {"clips": len(self.clips), "done": sum(clip["state"] == "done" for clip in self.clips),
                  "failed": len(self.failed), "cached": sum(clip["cached"] for clip in self.clips),
                  "frames": frames, "seconds": round(self.seconds, 3),
                  "fps": round(frames / self.seconds, 2) if self.seconds else 0.0}
        if self.check is not None:
            totals["check_passed"] = sum(bool(clip.get("passed")) for clip in self.clips)  # a failed clip did not pass
            totals["pass_rate"] = round(totals["check_passed"] / len(self.clips), 4) if self.clips else 0.0
        return totals

    @property
    def path(self) -> Path:
        return self.folder / "report.json"

    def write(self) -> None:
        ray = ray_module()
        write_atomically(self.path, json.dumps({
            "engine": "ray", "ray_version": ray.__version__, "nodes": self.nodes, "workers": self.workers,
            "interrupted": self.interrupted, "passed": self.passed, "totals": self.totals, "timings": self.timings,
            "clips": self.clips,
        }, indent=1) + "\n")
        columns = ["clip", "state", "frames", "seconds", "fps", "node", "cached", "passed", "error"]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**clip, "clip": clip["name"]} for clip in self.clips)
        write_atomically(self.folder / "report.csv", text.getvalue())
        if self.check is not None:
            self.check.write_junit(self.folder / "junit.xml")


def _row(name: str, record: ClipRecord, cached: bool) -> dict[str, object]:
    row = {"name": name, "state": record.state, "frames": record.frames, "seconds": round(record.seconds, 3),
           "fps": round(record.frames / record.seconds, 2) if record.seconds else 0.0, "node": record.node,
           "error": record.error, "warning": record.warning, "cached": cached, "outputs": record.outputs}
    if record.check is not None:
        row["passed"] = record.check["passed"]
    return row


def _clip_report(name: str, stored: dict[str, object]) -> ClipReport:
    return ClipReport(name, [], stored["summary"], stored["failures"], stored["objects"])


def batch(sources: str | Iterable[str], out: str | Path, *, address: str | None = None, workers: int | None = None,
          force: bool = False, video: bool = True, log: bool = False, check: dict[str, object] | None = None,
          on_progress: Callable[[BatchReport, int], None] | None = None, **options: object) -> BatchReport:
    """Process every clip of `sources` into `out`, on Ray (see the module's docstring). `options` are
    RunConfig fields for every clip; `check` (roi: a path, or a template with {stem}, {name}, {path};
    and target, min_share, min_pointing) measures each clip as `streamcam check` does. Validated before
    Ray starts; `on_progress(report so far, clips in all)` is called as clips finish."""
    folder = Path(out).resolve()  # every node writes where the driver means, whatever its working folder
    specs = [sources] if isinstance(sources, str) else list(sources)
    clips = [clip for clip in find_clips(specs) if folder not in clip.path.resolve().parents]
    for spec in specs:
        root = Path(spec).resolve()
        if root.is_dir() and (folder == root or root in folder.parents):
            raise StreamcamError(f"--out {out} is inside the source folder {spec}: outputs would become sources, "
                                 "or overwrite them; choose a folder outside it")
    if not clips:
        raise StreamcamError("no clip found in the sources given")
    jobs, prints, manifest = _plan(clips, folder, video, log, check, force, options)
    report = BatchReport(folder, [], [], 0, 0.0, check=CheckReport([], Thresholds(
        check.get("min_share"), check.get("min_pointing", 0.8)), check.get("target")) if check else None)
    to_do = []
    for job in jobs:
        planned = [str(path.relative_to(folder)) for path in (job.video, job.log) if path is not None]
        if manifest.is_done(job.name, prints[job.name], planned):
            record = manifest.clips[job.name]
            report.clips.append(_row(job.name, record, cached=True))
            if report.check is not None and record.check is not None:
                report.check.clips.append(_clip_report(job.name, record.check))
        else:
            to_do.append(job)
    started = time.monotonic()
    with connected(address):
        report.timings["ray_start"] = time.monotonic() - started
        report.nodes = describe_nodes()
        if to_do:
            slots = plan_workers(workers, str(options.get("device", "auto")))[:len(to_do)]
            report.workers = len(slots)
            try:
                _run_jobs(to_do, slots, manifest, prints, report, started, on_progress, len(jobs))
            except KeyboardInterrupt:
                report.interrupted = True
            clear_partials(folder)  # every worker is gone: what is left there, a dead worker left
        stopping = time.monotonic()
    report.timings["ray_stop"] = time.monotonic() - stopping
    report.seconds = time.monotonic() - started
    report.clips.sort(key=lambda clip: clip["name"])
    report.write()
    return report


def _plan(clips: list[Clip], folder: Path, video: bool, log: bool, check: dict[str, object] | None, force: bool,
          options: dict[str, object]) -> tuple[list[ClipJob], dict[str, dict], Manifest]:
    """The jobs, each clip's fingerprint and the manifest: every option validated, before Ray starts."""
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(RunConfig)} | (set(options) & set(RUN_ONLY)))
    if unknown:
        raise StreamcamError(f"batch() got options it cannot apply per clip: {', '.join(unknown)}")
    if not (video or log or check):
        raise StreamcamError("nothing to do: keep the videos, or ask for --log or --check")
    if check is not None and "roi" not in check:
        raise StreamcamError("--check needs --roi: a region, or a template such as 'annotations/{stem}.json'")
    folder.mkdir(parents=True, exist_ok=True)
    options = dict(options)
    if check is not None:
        options.setdefault("align", "receptive-field")  # as `streamcam check`: where maps localise best
    RunConfig(source="clip", output=folder / "x.mp4", **options).validate()
    clear_partials(folder)
    manifest = Manifest(folder)
    if force:
        manifest.clips = {}
    taken: set[Path] = set()
    jobs, prints = [], {}
    for clip in clips:
        clip_check = None
        if check is not None:
            roi = str(check["roi"]).format(stem=clip.path.stem, name=clip.path.name, path=clip.name)
            clip_check = {**check, "roi": roi}
        jobs.append(ClipJob(clip.name, str(clip.path.resolve()), folder,
                            _outputs(clip.name, folder, taken, ".mp4") if video else None,
                            _outputs(clip.name, folder, taken, ".jsonl") if log else None, options, clip_check))
        prints[clip.name] = fingerprint(clip.path, {"options": options, "check": clip_check, "video": video, "log": log})
    return jobs, prints, manifest


def _run_jobs(jobs: list[ClipJob], slots, manifest: Manifest, prints: dict[str, dict], report: BatchReport,
              started: float, on_progress, total: int) -> None:
    """Each worker takes the next clip as soon as it is free; results are recorded as they come."""
    ray = ray_module()
    queue = list(reversed(jobs))
    running: dict[object, tuple[object, ClipJob, object]] = {}  # result ref -> (worker, job, slot)

    def give(worker, slot) -> None:
        if queue:
            job = queue.pop()
            running[worker.process.remote(job)] = (worker, job, slot)

    workers = [start_worker(slot) for slot in slots]
    try:
        for worker, slot in zip(workers, slots):
            give(worker, slot)
        while running:
            [ready], _ = ray.wait(list(running), num_returns=1)
            worker, job, slot = running.pop(ready)
            try:
                outcome: ClipOutcome = ray.get(ready)
            except ray.exceptions.RayActorError as error:  # the worker died more often than Ray restarts it
                outcome = ClipOutcome(job.name, "failed", error=f"its worker died {MAX_RESTARTS + 1} times ({error.__class__.__name__})")
                ray.kill(worker)
                workers[workers.index(worker)] = worker = start_worker(slot)
            except ray.exceptions.RayTaskError as error:  # a bug of ours, raised in the worker
                outcome = ClipOutcome(job.name, "failed", error=str(error.cause or error).splitlines()[0])
            _record(outcome, manifest, prints[job.name], report)
            report.timings["clips"] = report.timings.get("clips", 0.0) + outcome.seconds
            report.seconds = time.monotonic() - started
            if on_progress:
                on_progress(report, total)
            give(worker, slot)
    finally:
        for worker in workers:
            ray.kill(worker)


def _record(outcome: ClipOutcome, manifest: Manifest, print_: dict, report: BatchReport) -> None:
    check = None
    if outcome.check is not None:
        clip: ClipReport = outcome.check
        check = {"passed": clip.passed, "summary": clip.summary, "failures": clip.failures, "objects": clip.objects}
        clip.source = outcome.name
        report.check.clips.append(clip)
    elif report.check is not None:  # a clip that could not be checked is an error case in JUnit
        report.check.clips.append(ClipReport(outcome.name, [], summarize([]), [], incomplete=f"failed: {outcome.error}"))
    record = ClipRecord(outcome.state, print_, outcome.error, outcome.frames, outcome.seconds, outcome.node,
                        outcome.outputs, check, outcome.warning)
    manifest.record(outcome.name, record)
    report.clips.append(_row(outcome.name, record, cached=False))

