"""The live view's cost: a live 720p30 run without a server, and with `--serve` and 0, 1 and 8 viewers.

    scripts/with-env python scripts/bench_serve.py                   # docs/benchmarks.md, serve:cpu:1280x720
    scripts/with-env python scripts/bench_serve.py --size 640x360    # a run with cores to spare

Every case is the same `streamcam run` of a `lavfi:testsrc2=...,realtime` source (a camera's stand-in)
with ResNet-18 (random weights, short side 168), writing an x264 video as a live run does, in a process of
its own, in round-robin order. Reported: the run's FPS after start-up, its capture-to-output latency
(p50/p95, from its summary) and its stale drops; and what the viewers got: JPEG frames per second each,
and the latency from the frame's capture to its last byte at the viewer (the stream's X-Captured-At
header against the viewer's clock, on the same machine). The viewers are lean Python clients reading
the MJPEG stream, as a remote browser would, in a process of their own below the run's priority (they
stand in for other machines). A last case opens the page in headless Chromium on this machine, at the
run's priority: its capture-to-page latency is each event's capture time against the page's clock
(`window.pageLatencies`), and its FPS says what a viewer on the same machine costs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # scripts/ is on sys.path as this script's directory

OPTIONS = ["--model", "resnet18", "--weights", "none", "--input-size", "168"]
CASES = [("no server", None), ("`--serve`, no viewer", 0), ("`--serve`, 1 viewer", 1), ("`--serve`, 8 viewers", 8)]
BROWSER_CASE = ("`--serve`, 1 Chromium viewer on this machine", "chromium")


def start_run(source: str, frames: int, folder: Path, serve: bool) -> tuple[subprocess.Popen, str | None]:
    command = ["streamcam", "run", source, "-o", str(folder / "live.mp4"), "--max-frames", str(frames), *OPTIONS]
    process = subprocess.Popen(command + (["--serve", "127.0.0.1:0"] if serve else []), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if not serve:
        return process, None
    for line in process.stderr:
        if match := re.search(r"live view at (http://\S+)", line):
            return process, match.group(1)
    raise SystemExit(f"no live view URL: {process.communicate()[1][-2000:]}")


def summary(stdout: str) -> dict:
    fps = re.search(r"([\d.]+) fps after start-up", stdout)
    latency = re.search(r"p50 (\d+) ms · p95 (\d+) ms", stdout)
    stale = re.search(r"stale (\d+)", stdout)
    if not (fps and latency):
        raise SystemExit(f"no summary in:\n{stdout[-2000:]}")
    return {"fps": float(fps.group(1)), "p50": float(latency.group(1)), "p95": float(latency.group(2)),
            "stale": int(stale.group(1)) if stale else 0}


VIEWERS = r'''
import asyncio, json, sys, time
from urllib.parse import urlparse

async def view(url):
    """Read the MJPEG stream to its end: (seconds from capture to the last byte, per frame), frames/s.
    HTTP/1.0, so that the stream comes unchunked, as it is sent."""
    address = urlparse(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(f"GET /stream.mjpg HTTP/1.0\r\nHost: {address.netloc}\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")  # the response's head
    latencies, first = [], None
    try:
        while True:
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            if "content-length" not in headers:
                break
            await reader.readexactly(int(headers["content-length"]) + 2)
            now = time.time()
            first = first or now
            latencies.append(now - float(headers["x-captured-at"]))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
    return latencies, (len(latencies) - 1) / (now - first) if len(latencies) > 1 else 0.0

async def main(url, count):
    print(json.dumps(await asyncio.gather(*(view(url) for _ in range(count)))))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


def start_viewers(url: str, count: int) -> subprocess.Popen:
    """The viewers stand in for browsers on other machines: they run here below the run's priority
    (niceness 10), so that their own reading takes the spare cycles, not the run's. The Chromium case
    shows what a viewer on the same machine, at the same priority, costs."""
    return subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", VIEWERS, url, str(count)],
                            stdout=subprocess.PIPE, text=True)


def viewer_figures(latencies: list[float], skip: int) -> dict:
    kept = sorted(latencies[skip:]) or [float("nan")]
    return {"p50": 1000 * statistics.median(kept), "p95": 1000 * kept[int(0.95 * (len(kept) - 1))]}


def chromium_case(url: str, process: subprocess.Popen, skip: int) -> dict:
    sys.path.insert(0, str(benchlib.REPO / "tests"))
    from test_browser import browser  # the tests' headless Chromium, through the system's chromedriver

    driver = browser()
    try:
        driver.get(url)
        while process.poll() is None:
            time.sleep(0.2)
        latencies = driver.execute_script("return window.pageLatencies")
    finally:
        driver.quit()
    return viewer_figures(latencies, skip)


def run_case(source: str, frames: int, viewers, skip: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="streamcam-bench-serve-") as folder:
        process, url = start_run(source, frames, Path(folder), serve=viewers is not None)
        result: dict = {}
        if viewers == "chromium":
            result["page"] = chromium_case(url, process, skip)
        elif viewers:
            clients = start_viewers(url, viewers)
        stdout, stderr = process.communicate(timeout=600)
        if process.returncode:
            raise SystemExit(f"the run failed:\n{stderr[-2000:]}")
        result.update(summary(stdout))
        if isinstance(viewers, int) and viewers:
            seen = json.loads(clients.communicate(timeout=60)[0])
            result["viewer_fps"] = statistics.median(fps for _, fps in seen)
            result["viewer"] = viewer_figures([s for latencies, _ in seen for s in latencies[skip:]], 0)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=450, help="frames per run (15 s at 30 fps)")
    parser.add_argument("--repeats", type=int, default=2, help="round-robin runs of every case; the median FPS run is kept")
    parser.add_argument("--no-browser", action="store_true", help="leave out the Chromium case")
    parser.add_argument("--no-record", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    source = f"lavfi:testsrc2=size={args.size}:rate=30,realtime"
    skip = 30  # the first second: the run's own start-up
    cases = list(CASES) + ([] if args.no_browser or not shutil.which("chromedriver") else [BROWSER_CASE])
    results: dict[str, list[dict]] = {name: [] for name, _ in cases}
    for _ in range(args.repeats):
        for name, viewers in cases:
            results[name].append(run_case(source, args.frames, viewers, skip))
            print(name, results[name][-1], file=sys.stderr, flush=True)
    kept = {name: sorted(runs, key=lambda r: r["fps"])[len(runs) // 2] for name, runs in results.items()}
    alone = kept["no server"]
    rows = []
    for name, _ in cases:
        result = kept[name]
        viewer = result.get("viewer") or result.get("page")
        rows.append([name, f"{result['fps']:.1f}", f"{result['fps'] / alone['fps']:.2f}×",
                     f"{result['p50']:.0f} / {result['p95']:.0f}", str(result["stale"]),
                     f"{result['viewer_fps']:.1f}" if "viewer_fps" in result else "–",
                     f"{viewer['p50']:.0f} / {viewer['p95']:.0f}" if viewer else "–"])
    table = benchlib.markdown_table(
        ["case", "run FPS", "× no server", "run latency p50 / p95 ms", "stale drops",
         "JPEGs/s per viewer", "capture → viewer p50 / p95 ms"], rows)
    body = (f"A live {args.size} 30 fps source (`lavfi:testsrc2`, realtime), {args.frames} frames per run; ResNet-18, "
            f"random weights, short side 168; an x264 video written as live runs write it. {args.repeats} "
            "round-robin runs of each case, the median-FPS run shown. The Python viewers run at niceness 10 "
            "(they stand in for other machines), Chromium at the run's. Viewer latencies leave out the first "
            "second; the Chromium row's is capture → the page's event handler.\n\n" + table)
    print(body)
    if not args.no_record:
        import torch

        benchlib.record(f"serve:cpu:{args.size}", f"Live view: the cost of `--serve`, {args.size} (CPU)", body,
                        torch.device("cpu"))


if __name__ == "__main__":
    main()
