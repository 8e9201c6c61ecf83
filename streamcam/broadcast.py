"""What the live view's clients get of a run: its newest rendered frame as a JPEG and one event per
rendered frame (serve.py serves them).

The run never waits for a client. The writer thread hands each rendered frame over by reference and
returns; a JPEG thread of its own encodes the newest one, once for every client and only while a client
watches; each client then takes the newest JPEG when it is ready for one, so a slow client skips frames.
Events go into each client's bounded queue, which drops its oldest when a client falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from .controls import settings_changes
from .render import RenderedFrame
from .sinks import Sink, log_row

BOUNDARY = "streamcam-frame"  # between the MJPEG stream's parts
JPEG_QUALITY = 80
JPEG_NICENESS = 10  # the JPEG thread's scheduling priority, below the run's (0)
EVENT_BACKLOG = 64  # events a client may fall behind by before its oldest are dropped


@dataclass(frozen=True)
class Jpeg:
    number: int  # counts the rendered frames handed over, from 1
    data: bytes  # the JPEG, for a snapshot
    part: bytes  # it as one part of the MJPEG stream, made once for every viewer


def stream_part(data: bytes, captured_at: float, frame: int) -> bytes:
    """A JPEG as one part of the MJPEG stream, with the frame's capture (Unix time: the viewer's clock on
    the same machine) and index."""
    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
            f"X-Captured-At: {captured_at:.4f}\r\nX-Frame: {frame}\r\n\r\n")
    return head.encode() + data + b"\r\n"


class Broadcast(Sink):
    """A sink for the first camera's rendered frames (as the window shows), read by the server's event
    loop. Each event says the live `settings` its frame was made with; `extras()` adds the run's own
    fields (FPS, drops, pause)."""

    def __init__(self, class_name: Callable[[int], str], extras: Callable[[], dict[str, object]] = dict):
        self.class_name = class_name
        self.extras = extras
        self._settings: dict | None = None  # the live settings of the last frame
        self.watchers = 0  # clients of the MJPEG stream; changed on the event loop only
        self.loop: asyncio.AbstractEventLoop | None = None
        self.jpeg: Jpeg | None = None  # the newest encoded frame; read and replaced on the event loop
        self.closed = False
        self._newest: tuple[int, RenderedFrame, float] | None = None  # (number, frame, captured_at)
        self._changed = threading.Condition()
        self._published: asyncio.Event | None = None  # set when a newer JPEG (or the end) is published
        self._event_queues: set[asyncio.Queue] = set()
        self._encoder = threading.Thread(target=self._encode_newest, name="serve-jpeg", daemon=True)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start, publishing to the server's event loop."""
        self.loop = loop
        self._published = asyncio.Event()
        self._encoder.start()

    # ----- the writer thread ---------------------------------------------------------------------------
    def write(self, rendered: RenderedFrame) -> None:
        if rendered.frame.stream != 0 or self.loop is None:
            return
        captured_at = time.time() - (time.monotonic() - rendered.frame.captured)
        with self._changed:
            number = self._newest[0] + 1 if self._newest else 1
            self._newest = (number, rendered, captured_at)
            if self.watchers:  # else the JPEG thread sleeps: nobody to encode for
                self._changed.notify()
        previous, self._settings = self._settings, rendered.explained.settings
        if self._event_queues:
            event = {**log_row(rendered, self.class_name, changed=settings_changes(previous, self._settings)),
                     "captured_at": round(captured_at, 4), "settings": self._settings, **self.extras()}
            self._call(self._send_event, event)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._changed:
            self._changed.notify()
        if self._encoder.is_alive():
            self._encoder.join(timeout=2)
        self._call(self._end)

    def _call(self, callback, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has already stopped: nobody to tell
            self.loop.call_soon_threadsafe(callback, *args)

    # ----- the JPEG thread -----------------------------------------------------------------------------
    def _encode_newest(self) -> None:
        # Below the pipeline's threads: on a machine the run keeps busy, viewers get the frames the
        # spare cycles can encode (they skip the rest), and the run keeps its own pace. Linux sets a
        # thread's niceness by its id; elsewhere this thread runs at the process's priority.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JPEG_NICENESS)
        encoded = 0
        while True:
            with self._changed:
                while not self.closed and not (self.watchers and self._newest and self._newest[0] > encoded):
                    self._changed.wait()  # woken by a frame while someone watches, a new watcher, or the end
                if self.closed:
                    return
                number, rendered, captured_at = self._newest
            jpeg = encode_jpeg(rendered)  # OpenCV releases the GIL: the pipeline's threads run meanwhile
            encoded = number
            self._call(self._publish, Jpeg(number, jpeg, stream_part(jpeg, captured_at, rendered.frame.index)))

    # ----- the event loop ------------------------------------------------------------------------------
    def _publish(self, jpeg: Jpeg | None) -> None:
        if jpeg is not None:
            self.jpeg = jpeg
        published, self._published = self._published, asyncio.Event()
        published.set()

    def _end(self) -> None:
        """The run has ended: wake every client, which then ends its response."""
        self._publish(None)
        for queue in self._event_queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    async def next_jpeg(self, after: int) -> Jpeg | None:
        """The newest JPEG newer than number `after`, once there is one; None when the run has ended."""
        while not self.closed:
            if self.jpeg is not None and self.jpeg.number > after:
                return self.jpeg
            await self._published.wait()
        return None

    def watch(self, watching: bool) -> None:
        self.watchers += 1 if watching else -1
        if watching:
            with self._changed:
                self._changed.notify()

    async def snapshot(self) -> bytes | None:
        """The newest frame as a JPEG: the stream's, when it is current, else encoded now."""
        with self._changed:
            newest = self._newest
        if newest is None:
            return None
        if self.jpeg is not None and self.jpeg.number == newest[0]:
            return self.jpeg.data
        return await asyncio.get_running_loop().run_in_executor(None, encode_jpeg, newest[1])

    @property
    def event_clients(self) -> int:
        return len(self._event_queues)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(EVENT_BACKLOG)
        self._event_queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._event_queues.discard(queue)

    def _send_event(self, event: dict[str, object]) -> None:
        for queue in self._event_queues:
            if queue.full():
                queue.get_nowait()  # this client fell behind: it skips its oldest event
            queue.put_nowait(event)


def encode_jpeg(rendered: RenderedFrame) -> bytes:
    ok, data = cv2.imencode(".jpg", rendered.bgr(), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    return data.tobytes()
