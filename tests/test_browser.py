"""The live view in a real browser: Debian's headless Chromium, driven by selenium through the system's
chromedriver (`.ci/run` installs both). The page of a live run plays its stream, its label changes, and a
method chosen on the page reaches the events and the log."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time

import cv2
import numpy as np
import pytest
from test_live_view import FAST, ServedRun

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Chromium and chromedriver (apt-get install chromium chromium-driver)")


def browser(width: int = 1280, height: int = 860):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the system's: no download


def wait_until(condition, seconds: float = 30, message: str = "timed out"):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.1)
    return value


@pytest.fixture
def page(tmp_path):
    log = tmp_path / "log.jsonl"
    run = ServedRun("lavfi:testsrc2=size=320x240:rate=15,realtime", "--log", str(log), *FAST)
    driver = browser()
    try:
        driver.get(run.url)
        yield driver, run, log
    finally:
        driver.quit()
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            run.finish()


def test_the_page_plays_the_stream_and_its_label_changes(page, tmp_path):
    from selenium.webdriver.common.by import By

    driver, run, _ = page
    stream = driver.find_element(By.ID, "stream")
    wait_until(lambda: driver.execute_script("return arguments[0].naturalWidth", stream) == 320, message="no frame")
    shot = cv2.imdecode(np.frombuffer(stream.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
    assert shot.shape[0] > 100 and shot.std() > 20, "the stream's image is blank"
    (tmp_path / "stream.png").write_bytes(stream.screenshot_as_png)
    label = lambda: driver.find_element(By.ID, "label").text + " " + driver.find_element(By.ID, "probability").text  # noqa: E731
    first = wait_until(lambda: label().strip() not in ("", "–") and label())
    wait_until(lambda: label() != first, message=f"the label stayed {first!r}")
    assert float(driver.find_element(By.ID, "fps").text) > 5
    assert driver.find_element(By.ID, "state").text == "running"


def test_a_method_chosen_on_the_page_reaches_the_events_and_the_log(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, run, log = page
    wait_until(lambda: driver.execute_script("return window.lastEvent"), message="no event reached the page")
    method = wait_until(lambda: (select := Select(driver.find_element(By.ID, "method"))).options and select)
    method.select_by_value("eigencam")
    event = wait_until(lambda: driver.execute_script(
        "const e = window.lastEvent; return e && e.settings.method === 'eigencam' ? e : null"),
        message=lambda: "the events never showed the new method; the page's method, error and last event: " + repr(
            driver.execute_script("return [document.getElementById('method').value, "
                                  "document.getElementById('error').textContent, window.lastEvent]")))
    driver.find_element(By.ID, "target").send_keys("no such class\n")  # a bad value: an error, and the run goes on
    error = wait_until(lambda: driver.find_element(By.ID, "error").text)
    assert "no such class" in error
    later = driver.execute_script("return window.lastEvent.frame")
    wait_until(lambda: driver.execute_script("return window.lastEvent.frame") > later + 5, message="the run stopped")
    run.process.send_signal(signal.SIGINT)
    code, _, stderr = run.finish()
    assert code == 130, stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    changed = [row for row in rows if row.get("changed")]
    assert [row["changed"] for row in changed] == [{"method": "eigencam"}]
    assert changed[0]["frame"] <= event["frame"]
    applied = int(re.search(r"live change from frame (\d+): method eigencam", stderr).group(1))
    assert applied <= changed[0]["frame"]  # a live run may drop the first frames made with it
    assert all(row.get("changed") is None for row in rows if row["frame"] < applied)
