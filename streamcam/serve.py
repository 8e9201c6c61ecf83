"""The live view (`--serve [HOST:]PORT`): a run's annotated frames, events, health and live controls over
HTTP, for browsers on the same machine or, given a host, elsewhere.

    /               the page (phones too)                /events        Server-Sent Events: a --log row per frame
    /stream.mjpg    multipart/x-mixed-replace JPEGs      /health        the run's state, as JSON
    /snapshot.jpg   the newest frame                     /settings      the live settings and their choices
    POST /control   {"method": "eigencam", ...}: applied from the next batch (controls.py)

aiohttp serves it from the run's process, on a thread and event loop of its own, and stops with the run.
Loopback is the default. Any other host needs a token on every request (`--serve-token`, or one made up
and printed with the URL). No file system path is served; the page is a string of the package's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web
from aiohttp_sse import sse_response

from .broadcast import BOUNDARY, Broadcast
from .errors import StreamcamError

if TYPE_CHECKING:
    import torch

    from .api import Engines
    from .config import RunConfig
    from .controls import LiveControls
    from .pipeline import Pipeline

log = logging.getLogger("streamcam")

STALLED_CLIENT_SECONDS = 20.0  # a viewer that takes no frame for this long is let go, freeing its place


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def url(self, port: int) -> str:
        """The page's address; for a wildcard host (all interfaces), by this machine's name."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def parse_address(text: str) -> ServeAddress:
    """`--serve` as given: PORT, :PORT, HOST:PORT or [IPv6]:PORT. Port 0 takes a free one."""
    host, colon, port = str(text).strip().rpartition(":")
    if not colon:
        host = ""
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise StreamcamError(f"--serve takes [HOST:]PORT, e.g. 8000 or 0.0.0.0:8000; got {text!r}")
    return ServeAddress(host, int(port))


def open_live_view(config: RunConfig, pipeline: Pipeline, engines: Engines, device: torch.device, batch_size: int,
                   resources: contextlib.ExitStack) -> LiveServer:
    """Serve `pipeline`'s run (before it runs) until `resources` close: its frames become a sink of the run,
    the page's changes its live controls."""
    from .controls import LiveControls

    address = parse_address(config.serve)
    explainer = pipeline.explainer
    # A file being written keeps the first frame's size; the window and the page take any.
    controls = LiveControls(config, engines, device, batch_size, explainer, pipeline.renderer, pipeline,
                            resizes_output=config.output is None and config.contact_sheet is None)
    stats = pipeline.stats
    broadcast = Broadcast(explainer.class_name, extras=lambda: {
        "fps": round(stats.output_fps.fps() or 0.0, 2), "dropped": stats.dropped,
        "paused": pipeline.control.paused.is_set()})
    server = LiveServer(address, broadcast, controls, pipeline, token=config.serve_token,
                        max_clients=config.serve_max_clients)
    url = server.start()
    resources.callback(server.stop)
    pipeline.controls = controls
    pipeline.outputs.sinks.append(broadcast)
    if not address.loopback:
        log.warning("the live view listens on %s port %d: whoever reaches this machine there with the token "
                    "sees the camera", address.host, server.port)
    log.info("live view at %s", url)
    return server


class LiveServer:
    """The HTTP side of the live view, for one run."""

    def __init__(self, address: ServeAddress, broadcast: Broadcast, controls: LiveControls, pipeline: Pipeline,
                 *, token: str | None = None, max_clients: int = 8):
        self.address = address
        self.broadcast = broadcast
        self.controls = controls
        self.pipeline = pipeline
        # A token guards every request off loopback; on loopback, only when the user gave one.
        self.token = token or (None if address.loopback else secrets.token_urlsafe(16))
        self.max_clients = max_clients
        self.port: int | None = None
        self.page = resources.files("streamcam").joinpath("live_page.html").read_text(encoding="utf-8")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None
        self._started = time.monotonic()

    @property
    def url(self) -> str:
        return self.address.url(self.port) + (f"?token={quote(self.token, safe='')}" if self.token else "")

    def start(self) -> str:
        """Listen, or raise a StreamcamError (port taken, host not here); returns the page's URL."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="serve", daemon=True)
        self._thread.start()
        ready.wait()
        if self._failure is not None:
            reason = getattr(self._failure, "strerror", None) or str(self._failure)
            raise StreamcamError(f"cannot serve the live view on {self.address.host}:{self.address.port}: {reason}")
        return self.url

    def stop(self) -> None:
        self.broadcast.close()  # ends every client's response (the run's outputs have usually closed it)
        if self._loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=5)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.address.host, self.address.port)
            loop.run_until_complete(site.start())
        except Exception as error:  # noqa: BLE001 - a port taken, a host not here: reported by start()
            self._failure = error
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        self.port = runner.addresses[0][1]
        self._loop, self._stopping = loop, asyncio.Event()
        self.broadcast.attach(loop)
        ready.set()
        try:
            loop.run_until_complete(self._stopping.wait())
            loop.run_until_complete(runner.cleanup())
        finally:
            loop.close()

    # ----- the application -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        @web.middleware
        async def guard(request: web.Request, handler):
            return await self._guard(request, handler)

        app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/stream.mjpg", self._stream)
        app.router.add_get("/snapshot.jpg", self._snapshot)
        app.router.add_get("/events", self._events)
        app.router.add_get("/health", self._health)
        app.router.add_get("/settings", self._settings)
        app.router.add_post("/control", self._control)
        return app

    async def _guard(self, request: web.Request, handler):
        """Token first; then a StreamcamError is the client's 400, and anything else a 500 in one line."""
        if self.token is not None and not self._authorised(request):
            return web.json_response({"error": "a valid token is needed: open the URL streamcam printed"}, status=401)
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except StreamcamError as error:
            return web.json_response({"error": str(error)}, status=400)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as error:  # noqa: BLE001 - one line in the log and to the client, never a traceback
            log.warning("live view: %s on %s: %s", type(error).__name__, request.path, error)
            return web.json_response({"error": "internal error"}, status=500)

    def _authorised(self, request: web.Request) -> bool:
        given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.page, content_type="text/html", headers={"Cache-Control": "no-store"})

    def _refuse_when_full(self, clients: int) -> None:
        if clients >= self.max_clients:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": f"the live view already has its {self.max_clients} viewers "
                                          "(--serve-max-clients)"}), content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self._refuse_when_full(self.broadcast.watchers)
        response = web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        self.broadcast.watch(True)
        try:
            number = 0
            while (jpeg := await self.broadcast.next_jpeg(number)) is not None:
                number = jpeg.number
                await asyncio.wait_for(response.write(jpeg.part), STALLED_CLIENT_SECONDS)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the viewer left, or stopped reading
        finally:
            self.broadcast.watch(False)
        return response

    async def _snapshot(self, request: web.Request) -> web.Response:
        data = await self.broadcast.snapshot()
        if data is None:
            return web.json_response({"error": "no frame yet"}, status=503, headers={"Retry-After": "1"})
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self._refuse_when_full(self.broadcast.event_clients)
        queue = self.broadcast.subscribe()
        try:
            async with sse_response(request) as events:
                with contextlib.suppress(ConnectionError):  # the client left
                    while (event := await queue.get()) is not None:
                        await events.send(json.dumps(event))
        finally:
            self.broadcast.unsubscribe(queue)
        return events

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(self.health())

    def health(self) -> dict[str, object]:
        stats, control = self.pipeline.stats, self.pipeline.control
        state = "stopping" if control.stopping.is_set() else "paused" if control.paused.is_set() else "running"
        if self.broadcast.closed:
            state = "finished"
        fps = stats.output_fps.fps()
        return {
            "state": state, "source": self.pipeline.source.info.description,
            "frames": {"read": stats.read, "explained": stats.explained, "written": stats.written,
                       "dropped": stats.dropped, "drops": dict(stats.drops)},
            "fps": round(fps, 2) if fps else None,
            "latency_ms": {"p50": _rounded(stats.latency_ms(50, recent=True)),
                           "p95": _rounded(stats.latency_ms(95, recent=True))},
            "viewers": self.broadcast.watchers, "event_clients": self.broadcast.event_clients,
            "uptime_s": round(time.monotonic() - self._started, 1),
        }

    async def _settings(self, request: web.Request) -> web.Response:
        return web.json_response(self.controls.settings())

    async def _control(self, request: web.Request) -> web.Response:
        """Changes as a JSON object. A browser sends JSON to another origin only after asking it (CORS
        preflight, which this server never grants), so a page elsewhere cannot drive a loopback run."""
        if request.content_type != "application/json":
            return web.json_response({"error": "send the changes as application/json"}, status=415)
        try:
            changes = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "send a JSON object of setting: value"}, status=400)
        # The request waits for the explain stage to apply it: off the event loop, which serves the others.
        settings = await asyncio.get_running_loop().run_in_executor(None, self.controls.request, changes)
        return web.json_response(settings, status=202 if "pending" in settings else 200)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
