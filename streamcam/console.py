"""What the terminal shows: a progress bar with ETA for files, a status line for live sources, the summary.

Progress goes to stderr and the summary to stdout, so `streamcam run ... > summary.txt` keeps the result.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .api import RunResult
from .pipeline import Pipeline

stderr = Console(stderr=True)
stdout = Console()


def setup_logging(debug: bool = False) -> None:
    """streamcam's warnings as single "warning: ..." lines on stderr, printed above the progress bar."""
    logger = logging.getLogger("streamcam")
    logger.handlers[:] = [_ConsoleHandler()]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    # FFmpeg's own messages (PyAV logs them as "libav.*"): streamcam reports what matters in its words;
    # --debug shows the originals.
    ffmpeg = logging.getLogger("libav")
    ffmpeg.handlers[:] = [_ConsoleHandler() if debug else logging.NullHandler()]
    ffmpeg.propagate = False


class _ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else None
        # soft_wrap: one line however long, so that logs and CI output keep one message per line.
        stderr.print(f"{record.levelname.lower()}: {self.format(record)}", style=style, markup=False,
                     highlight=False, soft_wrap=True)


class RunProgress:
    """The pipeline's on_tick callback (main thread). The display starts at the first tick, once the
    source is open and it is known whether it is live and how many frames it has."""

    def __init__(self, max_frames: int | None = None):
        self.max_frames = max_frames
        self.progress: Progress | None = None
        self.task = None
        self.live = False

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _start(self, pipeline: Pipeline) -> None:
        self.live = pipeline.plan.live
        if self.live:
            columns = [TextColumn("[bold]live[/]"), TextColumn("{task.description}"), TimeElapsedColumn()]
            total = None
        else:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
            counts = [n for n in (sum(v.frame_count or 0 for v in pipeline.source.videos), self.max_frames) if n]
            total = min(counts) if counts else None
        self.progress = Progress(*columns, console=stderr)
        self.task = self.progress.add_task("starting", total=total)
        self.progress.start()

    def __call__(self, pipeline: Pipeline) -> None:
        if self.progress is None:
            self._start(pipeline)
        stats = pipeline.stats
        fps = stats.output_fps.fps()
        parts = [f"{fps:.1f} fps" if fps else "warming up"]
        if self.live:
            parts += [f"{stats.written} frames", f"dropped {stats.dropped}"]
            if stats.recent_latencies:
                parts.append(f"latency {stats.latency_ms(50, recent=True):.0f} ms")
        if pipeline.source.stalled_since is not None:
            parts.append(f"stalled: reconnecting for {time.monotonic() - pipeline.source.stalled_since:.0f} s")
        if pipeline.control.paused.is_set():
            parts.append("paused")
        self.progress.update(self.task, completed=stats.written, description=" · ".join(parts))


def print_summary(result: RunResult) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", result.source)
    if result.streams:
        table.add_row("streams read", result.streams)
    for label, value in result.stats.summary():
        table.add_row(label, value)
    if result.stop_reason:
        how_far = f"{result.stats.written} of {result.expected_frames}" if result.expected_frames else f"{result.stats.written}"
        table.add_row("stopped", f"{result.stop_reason}, after {how_far} frames")
    for path in result.outputs:
        table.add_row("wrote", str(path))
    stdout.print(table)


def print_check(report) -> None:
    """One row per clip (and per annotated object): frames, mean share, pointing rate, IoU, verdict."""
    thresholds = report.thresholds
    wanted = [f"pointing >= {thresholds.min_pointing:g}" if thresholds.min_pointing is not None else "",
              f"share >= {thresholds.min_share:g}" if thresholds.min_share is not None else ""]
    table = Table(title=f"streamcam check ({', '.join(w for w in wanted if w) or 'no thresholds'})", title_justify="left")
    for column in ("clip", "frames", "share", "pointing", "IoU", "result"):
        table.add_column(column, justify="left" if column in ("clip", "result") else "right")
    for clip in report.clips:
        entries = [(clip.source, clip.summary, clip.failures)]
        entries += [(f"  {method}", summary, report.thresholds.failures(summary)) for method, summary in clip.methods.items()]
        entries += [(f"  {obj['name']}", obj["summary"], obj["failures"]) for obj in clip.objects]
        for name, summary, failures in entries:
            if clip.incomplete:
                verdict = f"[red]INCOMPLETE[/] {clip.incomplete}"
            else:
                verdict = "[red]FAIL[/] " + "; ".join(failures) if failures else "[green]pass[/]"
            table.add_row(name, str(summary["frames"]), f"{summary['share']:.3f}", f"{summary['pointing']:.3f}",
                          f"{summary['iou']:.3f}", verdict)
    stdout.print(table)
    for clip in report.clips:
        if clip.failing_video:
            stdout.print(f"failing frames of {clip.source}: {clip.failing_video}")
    incomplete = [clip for clip in report.clips if clip.incomplete]
    if incomplete:
        stdout.print(f"[red]incomplete[/]: {len(incomplete)} of {len(report.clips)} clips not checked to their end "
                     f"({incomplete[0].source}: {incomplete[0].incomplete}); the check does not pass")
    else:
        stdout.print("[green]passed[/]" if report.passed else f"[red]failed[/]: {len(report.failures())} of the checks above")


class BatchProgress:
    """The batch's on_progress callback: one bar over all clips, with done, failed, the fleet's FPS, ETA."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=stderr)
        self.task = None

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, report, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("batch", total=total)
            self.progress.start()
        totals = report.totals
        self.progress.update(self.task, completed=totals["done"] + totals["failed"],
                             description=f"done {totals['done']} · failed {totals['failed']} · {totals['fps']:.1f} fps")


def print_batch(report) -> None:
    """The fleet's totals, and one row per clip that failed (or did not pass its check)."""
    totals = report.totals
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("clips", f"{totals['clips']} · done {totals['done']} ({totals['cached']} already) · failed {totals['failed']}")
    table.add_row("frames", f"{totals['frames']} in {totals['seconds']:.1f} s · {totals['fps']:.1f} fps across "
                            f"{report.workers} worker{'s' * (report.workers != 1)} on {len(report.nodes)} node"
                            f"{'s' * (len(report.nodes) != 1)}")
    if "pass_rate" in totals:
        table.add_row("check", f"{totals['check_passed']} passed · pass rate {totals['pass_rate']:.1%}")
    for clip in report.clips:
        if clip["state"] == "failed":
            table.add_row("[red]failed[/]", f"{clip['name']}: {clip['error']}")
        elif clip.get("passed") is False:
            table.add_row("[red]check failed[/]", clip["name"])
    if report.interrupted:
        table.add_row("[red]interrupted[/]", "the clips not listed as done are done on the next run")
    table.add_row("wrote", f"{report.path}, {report.folder / 'report.csv'}"
                           + (f", {report.folder / 'junit.xml'}" if report.check is not None else ""))
    stdout.print(table)


EVALUATION_COLUMNS = (("pointing", "pointing"), ("share", "share"), ("average_drop", "AD"),
                      ("increase_in_confidence", "IC"), ("coherency", "coherency"), ("complexity", "complexity"),
                      ("adcc", "ADCC"), ("deletion_auc", "deletion"), ("insertion_auc", "insertion"),
                      ("motion_share", "motion"), ("ms_per_frame", "ms/frame"))


def print_evaluation(report) -> None:
    """One row per method: the faithfulness metrics, localisation against --roi, motion share, speed."""
    settings = report.settings
    table = Table(title=f"streamcam evaluate ({report.frames_seen} frames, {settings['model']}, "
                        f"{settings['precision']}, deletion/insertion: {settings['steps']} steps on {settings['baseline']})",
                  title_justify="left")
    table.add_column("method")
    table.add_column("layer")
    for _, header in EVALUATION_COLUMNS:
        table.add_column(header, justify="right")
    for row in report.rows():
        cells = ["—" if row[key] is None else f"{row[key]:.{1 if key == 'ms_per_frame' else 3}f}"
                 for key, _ in EVALUATION_COLUMNS]
        table.add_row(row["method"], row["layer"], *cells)
    # A terminal wraps the table to fit; a pipe or CI log gets it whole, not squeezed to 80 columns.
    (stdout if stdout.is_terminal else Console(width=200)).print(table)
    for source, error in report.errors:
        stderr.print(f"[red]failed[/]: {source}: {error}")
    for note in report.notes:
        stdout.print(f"note: {note}")
    if report.interrupted:
        stdout.print(f"[red]stopped[/]: interrupted after {report.how_far()}; the figures cover those frames")
