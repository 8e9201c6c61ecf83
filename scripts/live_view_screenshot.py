"""The README's picture of the live view: the demo's driving scene, served, in headless Chromium.

    scripts/with-env python scripts/live_view_screenshot.py          # writes docs/live_view.png

Needs Chromium and chromedriver (apt-get install chromium chromium-driver), as the browser test does.
Look at the picture before committing it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_browser import browser  # noqa: E402 - the tests' headless Chromium, through the system's chromedriver

from streamcam.demo.run import write_clip  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="streamcam-screenshot-") as folder:
        clip = Path(folder) / "scene.mp4"
        write_clip(clip, 30.0, 7)
        run = subprocess.Popen(["streamcam", "run", str(clip), "--model", "demo", "--align", "receptive-field",
                                "--top-k", "2", "--smooth", "0.3", "--serve", "127.0.0.1:0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = next(match.group(1) for line in run.stderr if (match := re.search(r"live view at (http://\S+)", line)))
        driver = browser(1280, 820)
        try:
            driver.get(url)
            time.sleep(6)  # the stream plays, the label and figures settle
            driver.save_screenshot(str(REPO / "docs" / "live_view.png"))
        finally:
            driver.quit()
            run.send_signal(signal.SIGINT)
            run.wait(timeout=60)
    print(REPO / "docs" / "live_view.png")


if __name__ == "__main__":
    main()
