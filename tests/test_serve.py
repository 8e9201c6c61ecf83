"""The live view's endpoints, through aiohttp's test client: what each serves, the live controls'
validation, the token, the client limit, and that bad requests get a 4xx, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from media import moving_square
from streamcam.api import Engines
from streamcam.broadcast import Broadcast
from streamcam.config import RunConfig
from streamcam.controls import LiveControls
from streamcam.explain import FrameExplainer
from streamcam.pipeline import Pipeline
from streamcam.render import OpenCVRenderer
from streamcam.serve import BOUNDARY, LiveServer, ServeAddress, parse_address
from streamcam.sinks import Outputs
from streamcam.sources import IterableSource

CONFIG = RunConfig(source="frames", model="resnet18", weights="none", input_size=64, serve="0")
SIZE = (160, 120)


@pytest.fixture(scope="module")
def parts():
    """A run's pieces, as api.run builds them, without running it: the tests hand frames over themselves."""
    import torch

    engines = Engines()
    loaded, explainers = engines.get(CONFIG, torch.device("cpu"), 1)
    return engines, loaded, explainers


def live_view(parts, address=ServeAddress("127.0.0.1", 0), config=CONFIG, **options):
    import torch

    engines, loaded, explainers = parts
    frames = [moving_square(i, *SIZE)[..., ::-1].copy() for i in range(4)]
    explainer = FrameExplainer(loaded, list(explainers))
    renderer = OpenCVRenderer(explainer.class_name)
    plan = SimpleNamespace(batch_size=1, queue_size=4, live=True, max_frames=None)
    pipeline = Pipeline(plan, IterableSource(frames, live=True), explainer, renderer, Outputs([]))
    controls = LiveControls(config, engines, torch.device("cpu"), 1, explainer, renderer, pipeline,
                            resizes_output=config.output is None)
    broadcast = Broadcast(explainer.class_name)
    return LiveServer(address, broadcast, controls, pipeline, **options), frames


def rendered(server: LiveServer, image: np.ndarray):
    frame = IterableSource([image])._frame(image, 0, IterableSource([image]).info.time_base)
    return server.pipeline.renderer.render(server.pipeline.explainer([frame])[0])


@contextlib.asynccontextmanager
async def client_of(server: LiveServer):
    server.broadcast.attach(asyncio.get_running_loop())
    try:
        async with TestClient(TestServer(server.app())) as client:
            yield client
    finally:
        server.broadcast.close()


def serve(server, test):
    async def main():
        async with client_of(server) as client:
            await test(client)

    asyncio.run(main())


def test_the_page_health_settings_and_snapshot(parts):
    server, frames = live_view(parts)

    async def test(client):
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        assert "stream.mjpg" in await page.text() and "EventSource" in await page.text()
        health = await (await client.get("/health")).json()
        assert health["state"] == "running" and health["frames"]["written"] == 0 and health["viewers"] == 0
        assert (await client.get("/snapshot.jpg")).status == 503  # no frame yet
        settings = await (await client.get("/settings")).json()
        assert settings["method"] == "gradcam" and settings["layer"] == "layer4"
        assert "eigencam" in settings["choices"]["method"] and "layer3" in settings["choices"]["layer"]
        assert settings["choices"]["view"] == ["overlay", "side"]
        server.broadcast.write(rendered(server, frames[1]))
        snapshot = await client.get("/snapshot.jpg")
        assert snapshot.status == 200 and snapshot.content_type == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(await snapshot.read(), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (SIZE[1], SIZE[0], 3) and image.std() > 10

    serve(server, test)


def test_the_stream_sends_the_newest_frame_as_a_jpeg_part(parts):
    server, frames = live_view(parts)

    async def test(client):
        response = await client.get("/stream.mjpg")
        assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        while server.broadcast.watchers == 0:
            await asyncio.sleep(0.01)
        sent = rendered(server, frames[2])
        server.broadcast.write(sent)
        assert await response.content.readline() == f"--{BOUNDARY}\r\n".encode()
        headers = {}
        while (line := (await response.content.readline()).strip()):
            key, _, value = line.decode().partition(": ")
            headers[key] = value
        assert headers["Content-Type"] == "image/jpeg" and float(headers["X-Captured-At"]) > 0
        jpeg = await response.content.readexactly(int(headers["Content-Length"]))
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert np.abs(image.astype(int) - sent.bgr().astype(int)).mean() < 4  # the rendered frame, JPEG'd
        response.close()

    serve(server, test)


def test_frames_are_encoded_once_for_every_viewer_and_only_while_someone_watches(parts, monkeypatch):
    import streamcam.broadcast

    encoded = []
    encode = streamcam.broadcast.encode_jpeg
    monkeypatch.setattr(streamcam.broadcast, "encode_jpeg", lambda rendered: encoded.append(1) or encode(rendered))
    server, frames = live_view(parts)

    async def test(client):
        server.broadcast.write(rendered(server, frames[0]))
        await asyncio.sleep(0.3)
        assert encoded == [] and server.broadcast.jpeg is None  # nobody watches: nothing encoded
        viewers = [await client.get("/stream.mjpg") for _ in range(3)]
        while server.broadcast.watchers < 3 or server.broadcast.jpeg is None:  # the waiting frame, encoded
            await asyncio.sleep(0.01)
        for image in frames[1:3]:
            server.broadcast.write(rendered(server, image))
            number = server.broadcast.jpeg.number if server.broadcast.jpeg else 0
            while server.broadcast.jpeg is None or server.broadcast.jpeg.number == number:
                await asyncio.sleep(0.01)
        for viewer in viewers:  # each got the newest frame's one JPEG
            assert await viewer.content.readline() == f"--{BOUNDARY}\r\n".encode()
            viewer.close()
        assert len(encoded) == 3  # the frame waiting when the viewers came, and the two after: once each

    serve(server, test)


def test_events_carry_each_rendered_frames_log_row(parts):
    server, frames = live_view(parts)

    async def test(client):
        response = await client.get("/events")
        assert response.content_type == "text/event-stream"
        while server.broadcast.event_clients == 0:
            await asyncio.sleep(0.01)
        sent = [rendered(server, image) for image in frames[:3]]
        before, after = {"method": "gradcam", "alpha": 0.5}, {"method": "eigencam", "alpha": 0.5}  # a live change
        for frame, settings in zip(sent, (before, after, after)):
            frame.explained.settings = settings
        for frame in sent:
            server.broadcast.write(frame)
        events = []
        while len(events) < 3:
            line = (await response.content.readline()).decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
        for event in events:
            assert {"frame", "time", "top", "explained", "peak", "latency_ms", "captured_at"} <= set(event)
        assert [event["settings"]["method"] for event in events] == ["gradcam", "eigencam", "eigencam"]
        assert [event.get("changed") for event in events] == [None, {"method": "eigencam"}, None]
        response.close()

    serve(server, test)


@contextlib.contextmanager
def explain_stage(server: LiveServer):
    """What the pipeline's explain stage does for the controls: apply what was asked, between batches."""
    stop = threading.Event()

    def between_batches():
        frame = 0
        while not stop.wait(0.01):
            server.controls.apply_pending(frame)
            frame += 1

    thread = threading.Thread(target=between_batches, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_a_control_is_validated_as_the_command_line_validates_it_and_applied_between_batches(parts):
    server, _ = live_view(parts)
    explainer = server.pipeline.explainer

    async def test(client):
        async def control(**changes):
            response = await client.post("/control", json=changes)
            return response.status, await response.json()

        first = server.controls.in_force
        status, body = await control(method="eigencam", alpha=0.25, colormap="turbo")
        assert status == 200 and body["method"] == "eigencam" and body["alpha"] == 0.25
        assert [e.method.name for e in explainer.explainers] == ["eigencam"]  # applied before the answer
        assert server.controls.in_force is not first and first["method"] == "gradcam"  # earlier frames keep theirs
        assert server.controls.in_force["colormap"] == "turbo"
        for changes, message in [({"alpha": 3}, "--alpha must be between 0 and 1, got 3.0"),
                                 ({"method": "gradcan"}, "unknown method 'gradcan'"),
                                 ({"layer": "layer9"}, "unknown layer 'layer9'"),
                                 ({"target": "5000"}, "5000"),
                                 ({"view": "grid"}, "--view grid needs the run to start with it"),
                                 ({"model": "resnet50"}, "cannot change model during a run"),
                                 ({"paused": "yes"}, "paused must be true or false"),
                                 # refused by the explain stage itself, when it makes the explainer
                                 ({"method": "cam", "layer": "layer3"}, "needs a layer that feeds global average")]:
            status, body = await control(**changes)
            assert status == 400 and message in body["error"], (changes, body)
        settings = await (await client.get("/settings")).json()
        assert (settings["method"], settings["layer"]) == ("eigencam", "layer4")  # a refused change is undone
        status, body = await control(target="7", layer="layer3")
        assert status == 200 and body["target"] == "7" and explainer.target == 7
        assert explainer.explainer.layer == "layer3"
        status, body = await control(paused=True)
        assert status == 200 and body["paused"] and server.pipeline.control.paused.is_set()
        await control(paused=False)

    with explain_stage(server):
        serve(server, test)


def test_a_change_the_stage_has_not_applied_yet_is_pending(parts):
    server, _ = live_view(parts)
    settings = server.controls.request({"smooth": 0.5}, wait=0.05)  # no batch in between
    assert settings["smooth"] == 0.5 and settings["pending"] == ["smooth"] and server.pipeline.explainer.smooth == 0
    server.controls.apply_pending(frame_index=3)
    assert server.pipeline.explainer.smooth == 0.5 and server.controls.in_force["smooth"] == 0.5


def test_a_view_that_would_resize_a_video_being_written_is_refused(parts, tmp_path):
    server, _ = live_view(parts, config=RunConfig(**{**vars(CONFIG), "output": tmp_path / "out.mp4"}))

    async def test(client):
        response = await client.post("/control", json={"view": "side"})
        assert response.status == 400 and "would make the pictures 320x120" in (await response.json())["error"]

    serve(server, test)


@pytest.mark.parametrize("request_", [
    ("POST", "/control", {"data": "method=eigencam"}, 415),  # a form a page elsewhere could send
    ("POST", "/control", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", "/control", {"json": ["method"]}, 400),
    ("GET", "/control", {}, 405),  # controls are POST only
    ("GET", "/../../etc/passwd", {}, 404),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", {}, 404),
    ("GET", "/live_page.html", {}, 404),  # the page is served at / only: no file is reachable by its name
    ("GET", "/static/../streamcam/serve.py", {}, 404),
], ids=["form", "bad-json", "not-an-object", "get-control", "traversal", "encoded-traversal", "file-name", "static"])
def test_bad_requests_get_a_4xx_and_no_traceback(parts, request_):
    server, _ = live_view(parts)
    method, path, options, expected = request_

    async def test(client):
        response = await client.request(method, path, allow_redirects=False, **options)
        text = await response.text()
        assert response.status == expected and "Traceback" not in text

    serve(server, test)


def test_off_loopback_every_request_needs_the_token(parts):
    server, _ = live_view(parts, address=ServeAddress("0.0.0.0", 0))
    assert server.token and f"?token={server.token}" in server.url

    async def test(client):
        for path in ("/", "/health", "/stream.mjpg", "/events", "/snapshot.jpg", "/settings"):
            assert (await client.get(path)).status == 401
        assert (await client.post("/control", json={"alpha": 0.1})).status == 401
        assert (await client.get("/health", params={"token": "wrong"})).status == 401
        assert (await client.get("/health", params={"token": server.token})).status == 200
        assert (await client.get("/health", headers={"Authorization": f"Bearer {server.token}"})).status == 200

    serve(server, test)


def test_on_loopback_a_token_given_is_needed_too(parts):
    server, _ = live_view(parts, token="s3cret")

    async def test(client):
        assert (await client.get("/health")).status == 401
        assert (await client.get("/health", params={"token": "s3cret"})).status == 200

    serve(server, test)


def test_the_client_limit_holds_and_frees_a_place_when_a_viewer_leaves(parts):
    server, _ = live_view(parts, max_clients=2)

    async def test(client):
        viewers = [await client.get("/stream.mjpg") for _ in range(2)]
        while server.broadcast.watchers < 2:
            await asyncio.sleep(0.01)
        refused = await client.get("/stream.mjpg")
        assert refused.status == 503 and "--serve-max-clients" in (await refused.json())["error"]
        events = [await client.get("/events") for _ in range(2)]  # the events have places of their own
        assert all(response.status == 200 for response in events)
        assert (await client.get("/events")).status == 503
        viewers[0].close()
        while server.broadcast.watchers > 1:
            await asyncio.sleep(0.01)
        assert (await client.get("/stream.mjpg")).status == 200

    serve(server, test)


@pytest.mark.parametrize("text, host, port", [("8000", "127.0.0.1", 8000), (":8000", "127.0.0.1", 8000),
                                              ("0.0.0.0:8080", "0.0.0.0", 8080), ("[::1]:0", "::1", 0)])
def test_serve_addresses(text, host, port):
    address = parse_address(text)
    assert (address.host, address.port) == (host, port)
    assert address.loopback == (host != "0.0.0.0")


@pytest.mark.parametrize("text", ["http://x", "80000", "host:", "eight"])
def test_a_bad_serve_address_is_one_clear_error(text):
    from streamcam.errors import StreamcamError

    with pytest.raises(StreamcamError, match=r"--serve takes \[HOST:\]PORT"):
        parse_address(text)
