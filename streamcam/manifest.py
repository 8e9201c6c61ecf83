"""A batch's memory, in its output folder: which clips are done, which failed and why, so that a rerun
does each clip once. Outputs are written under temporary names and renamed when complete, so a file
with its final name is always whole.

    DIR/manifest.json   {"clips": {"car1/0001.mp4": {"state": "done", "fingerprint": {...}, ...}}}
    DIR/.partial/       files being written, named with the writing process's id
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

PARTIAL = ".partial"


def fingerprint(source: Path, options: dict[str, object]) -> dict[str, object]:
    """What a clip's result depends on: the file (size and modification time) and the options."""
    stat = source.stat()
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "options": digest}


@dataclass
class ClipRecord:
    """One clip's last result."""

    state: str  # "done" or "failed"
    fingerprint: dict[str, object]
    error: str | None = None
    frames: int = 0
    seconds: float = 0.0
    node: str | None = None
    outputs: list[str] = field(default_factory=list)  # relative to DIR
    check: dict[str, object] | None = None  # with --check: passed, summary, failures, objects
    warning: str | None = None  # damage that was decoded around


class Manifest:
    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "manifest.json"
        self.clips: dict[str, ClipRecord] = {}
        if self.path.exists():
            try:
                stored = json.loads(self.path.read_text())["clips"]
                self.clips = {name: ClipRecord(**record) for name, record in stored.items()}
            except (ValueError, KeyError, TypeError):  # a manifest we cannot read: redo everything
                self.clips = {}

    def is_done(self, name: str, print_: dict[str, object], outputs: list[str]) -> bool:
        """Done with the same file and options, into the outputs it would get now, which are all still there."""
        record = self.clips.get(name)
        return (record is not None and record.state == "done" and record.fingerprint == print_
                and sorted(record.outputs) == sorted(outputs) and all((self.folder / o).exists() for o in outputs))

    def record(self, name: str, record: ClipRecord) -> None:
        self.clips[name] = record
        write_atomically(self.path, json.dumps({"clips": {n: asdict(r) for n, r in sorted(self.clips.items())}},
                                               indent=1) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write a file so that it is either the old one or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8") as file:
        file.write(text)
    os.replace(file.name, path)


def partial_path(folder: Path, final: Path) -> Path:
    """Where `final` (under `folder`) is written until it is complete: the same extension (the muxer
    chooses the format by it), this process's id in the name (whoever died writing it)."""
    relative = final.relative_to(folder)
    flat = "__".join(relative.with_suffix("").parts)
    return folder / PARTIAL / f"{flat}.{os.getpid()}{final.suffix}"


def clear_partials(folder: Path) -> None:
    """Files left by workers that died while writing: no final name points at them."""
    partial = folder / PARTIAL
    if partial.is_dir():
        for leftover in partial.iterdir():
            leftover.unlink(missing_ok=True)
