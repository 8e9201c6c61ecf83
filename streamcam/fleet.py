"""The Ray side of `streamcam batch`: joining or starting Ray, sizing the pool of workers, and the worker
that processes clip after clip with its model loaded once.

A worker is a Ray actor. Ray restarts one whose process dies (up to MAX_RESTARTS times) and retries the
clip it was working on there (up to MAX_RETRIES times); the clip's partial files carry the dead
process's id and are never renamed to a final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StreamcamError

MAX_RESTARTS = 3  # a worker process that dies is restarted this often
MAX_RETRIES = 3  # and the clip it was on retried this often
CPUS_PER_WORKER = 4  # on CPU-only nodes: one worker per this many cores (at least one per node)


def ray_module():
    try:
        import ray
    except ImportError:
        raise StreamcamError("streamcam batch runs on Ray, which is not installed: pip install 'streamcam[batch]'") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Ray for the batch: the caller's, when this process already has one (tests, notebooks); the cluster
    at `address` ("auto", "HOST:PORT", "ray://..."); else a local one, shut down at the end."""
    ray = ray_module()
    if ray.is_initialized():
        yield
        return
    try:
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # streamcam says what matters
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise StreamcamError(f"cannot start or join {where}: {error}") from None
    try:
        yield
    finally:
        if not address:
            _stop_autoscaler_monitor()
        ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """Stop the local Ray's autoscaler monitor while its GCS still runs. ray.shutdown stops the GCS first;
    the monitor's SIGTERM handler then tries to report to it and is killed after a 1 s grace period,
    which was a third of Ray's whole overhead in a batch (docs/benchmarks.md). A local, one-node Ray
    has nothing to autoscale. Ray's node object is private API, so a Ray without it is left alone."""
    node = getattr(getattr(ray_module(), "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    if node is not None and hasattr(node, "kill_monitor"):
        with contextlib.suppress(Exception):
            node.kill_monitor(check_alive=False)


@dataclass(frozen=True)
class WorkerSlot:
    """One worker's resources, and the node it is pinned to (None: wherever Ray puts it)."""

    cpus: float
    gpus: float = 0.0
    node: str | None = None


def plan_workers(requested: int | None, device: str) -> list[WorkerSlot]:
    """One worker per GPU; on nodes without GPUs, one per CPUS_PER_WORKER cores (at least one per node);
    or `requested` workers sharing the cluster's cores (or GPUs)."""
    ray = ray_module()
    nodes = [node for node in ray.nodes() if node["Alive"]]
    use_gpus = device != "cpu" and any(node["Resources"].get("GPU", 0) >= 1 for node in nodes)
    if requested is not None:
        if use_gpus:
            gpus = sum(node["Resources"].get("GPU", 0) for node in nodes)
            return [WorkerSlot(cpus=1, gpus=min(1.0, gpus / requested))] * requested
        cpus = sum(node["Resources"].get("CPU", 0) for node in nodes)
        return [WorkerSlot(cpus=max(1.0, cpus // requested))] * requested
    slots = []
    for node in nodes:
        cpus, gpus = node["Resources"].get("CPU", 0), int(node["Resources"].get("GPU", 0))
        if use_gpus and gpus:
            slots += [WorkerSlot(cpus=max(1.0, cpus // gpus), gpus=1.0, node=node["NodeID"])] * gpus
        elif cpus >= 1:
            count = max(1, int(cpus // CPUS_PER_WORKER))
            slots += [WorkerSlot(cpus=cpus // count, node=node["NodeID"])] * count
    if not slots:
        raise StreamcamError("the Ray cluster has no node with a CPU to work on")
    return slots


def start_worker(slot: WorkerSlot):
    """A ClipWorker actor with the slot's resources."""
    ray = ray_module()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(slot.node, soft=False) if slot.node else "SPREAD"
    remote = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RETRIES)(ClipWorker)
    return remote.options(num_cpus=slot.cpus, num_gpus=slot.gpus, scheduling_strategy=strategy).remote(int(slot.cpus))


def describe_nodes() -> list[dict[str, object]]:
    ray = ray_module()
    return [{"node": node["NodeID"][:12], "address": node["NodeManagerAddress"],
             "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0)}
            for node in ray.nodes() if node["Alive"]]


@dataclass
class ClipJob:
    """One clip to process: where it is, where its outputs go (under `folder`), with which options."""

    name: str  # the clip's name in the manifest and the report: its path relative to its root
    source: str
    folder: Path
    video: Path | None  # final output paths
    log: Path | None
    options: dict[str, object]  # RunConfig fields
    check: dict[str, object] | None = None  # roi, target, min_share, min_pointing


@dataclass
class ClipOutcome:
    name: str
    state: str  # "done" or "failed"
    error: str | None = None
    warning: str | None = None  # damage that was decoded around
    frames: int = 0
    seconds: float = 0.0
    node: str | None = None
    outputs: list[str] = field(default_factory=list)  # relative to the batch folder
    check: object = None  # a check_report.ClipReport, with --check


class ClipWorker:
    """A worker process: torch and the model load once (api.Engines), then clip after clip."""

    def __init__(self, threads: int):
        import torch

        from .api import Engines

        torch.set_num_threads(max(1, threads))
        self.engines = Engines()

    def pid(self) -> int:
        return os.getpid()

    def process(self, job: ClipJob) -> ClipOutcome:
        import ray

        from .manifest import partial_path

        node = f"{ray.get_runtime_context().get_node_id()[:12]} ({socket.gethostname()})"
        partials = {final: partial_path(job.folder, final) for final in (job.video, job.log) if final is not None}
        for partial in partials.values():
            partial.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            frames, warning, check = self._run(job, partials)
            written = [final for final, partial in partials.items() if partial.exists()]  # no frame: no video
            for final in written:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partials[final], final)  # complete: only now does it get its final name
        except Exception as error:  # noqa: BLE001 - one clip's failure, in one line; the batch goes on
            for partial in partials.values():
                partial.unlink(missing_ok=True)
            message = str(error) if isinstance(error, StreamcamError) else f"{type(error).__name__}: {error}"
            return ClipOutcome(job.name, "failed", error=message.splitlines()[0] if message else type(error).__name__,
                               seconds=time.monotonic() - started, node=node)
        return ClipOutcome(job.name, "done", warning=warning, frames=frames, seconds=time.monotonic() - started,
                           node=node, outputs=[str(final.relative_to(job.folder)) for final in written], check=check)

    def _run(self, job: ClipJob, partials: dict[Path, Path]) -> tuple[int, str | None, object]:
        from . import api, checks
        from .config import RunConfig

        config = RunConfig(source=job.source, output=partials.get(job.video), log=partials.get(job.log), **job.options)
        if job.check is None:
            result = api.run(config, handle_signals=False, engines=self.engines)
            if not result.complete:
                raise StreamcamError(f"stopped: {result.stop_reason}")
            return result.stats.written, result.damage, None
        check = dict(job.check)
        report = checks.check(job.source, check.pop("roi"), config=config, engines=self.engines, handle_signals=False,
                              **check)
        clip = report.clips[0]
        if clip.incomplete:
            raise StreamcamError(f"incomplete: {clip.incomplete}")
        clip.rows = []  # per-frame rows stay with the worker; the summaries travel
        return clip.frames_seen, None, clip
