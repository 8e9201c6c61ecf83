"""The live window (OpenCV, on the main thread): shows rendered frames and takes keys.

OpenCV's Qt aborts the whole process when there is no display, so `display_problem` is asked first.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import StreamcamError
from .picture import BgrPicture
from .render import draw_text_box


def display_problem() -> str | None:
    """Why a window cannot open here, or None. OpenCV's Qt aborts the whole process without a display,
    so this is checked before any window call."""
    if platform.system() != "Linux":
        return None
    if os.environ.get("WAYLAND_DISPLAY"):
        return None
    display = os.environ.get("DISPLAY")
    if not display:
        return "no display (DISPLAY is not set)"
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return f"DISPLAY={display!r} is not a valid display"
    if host in ("", "unix"):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            return f"no X server at DISPLAY={display}"
        return None
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=1):
            return None
    except OSError:
        return f"cannot reach the X server at DISPLAY={display}"


def _use_system_fonts() -> None:
    """opencv-python points Qt at a font folder its wheel no longer ships, and Qt then prints warnings
    at every window; point it at the system's fonts instead, before the first window creates Qt."""
    font_dir = os.environ.get("QT_QPA_FONTDIR")
    if font_dir and not Path(font_dir).is_dir():
        for candidate in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
            if Path(candidate).is_dir():
                os.environ["QT_QPA_FONTDIR"] = candidate
                return


class Window:
    """An OpenCV window on the main thread: q or Esc quits, space pauses, s saves a snapshot PNG."""

    def __init__(self, title: str = "streamcam"):
        from . import PYAV_LOADED_BEFORE_OPENCV

        if PYAV_LOADED_BEFORE_OPENCV:
            raise StreamcamError("cannot open a window: PyAV was imported before OpenCV, which makes OpenCV "
                                 "windows hang; import streamcam (or cv2) before av")
        self.title = title
        self.current: np.ndarray | None = None
        _use_system_fonts()
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as error:  # opencv-python-headless has no GUI
            raise StreamcamError(f"cannot open a window: {error.err or error}") from None
        self.sized = False

    def show(self, image: np.ndarray) -> None:
        if not self.sized:
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
            self.sized = True
        self.current = image
        cv2.imshow(self.title, image)

    def show_stalled(self, seconds: float) -> None:
        """Keep the last frame up with a "stalled" banner while a live source reconnects (no black frames)."""
        if self.current is not None:
            banner = draw_text_box(BgrPicture(self.current.copy()), [f"stalled: reconnecting ({seconds:.0f} s)"], right=True)
            cv2.imshow(self.title, banner.bgr())

    def poll(self, wait_ms: int = 1) -> str | None:
        """'quit', 'pause', 'snapshot' or None, from the keyboard (or the window being closed)."""
        key = cv2.waitKey(wait_ms) & 0xFF
        if key in (ord("q"), 27):
            return "quit"
        if key == ord(" "):
            return "pause"
        if key == ord("s"):
            return "snapshot"
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return "quit"
        return None

    def snapshot(self) -> Path | None:
        if self.current is None:
            return None
        path = Path(time.strftime("streamcam-%Y%m%d-%H%M%S.png"))
        cv2.imwrite(str(path), self.current)
        return path

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)
