"""Drive the demo page in headless Chromium: upload images, wait for the result, take a screenshot.

    python docs/demo_browser.py --ckpt PATH --image FILE [--image FILE …] --out docs/demo.png

Starts ``demo.py ckpt=PATH`` on a free port of 127.0.0.1, opens the page in Debian's ``chromium``
through ``chromedriver`` (selenium), uploads the images, waits until the summary names every
image, saves a screenshot of the whole page and prints the summary. The browser test
(``tests/test_demo.py``) and the README's screenshot both use :func:`classify_in_browser`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--window-size=1280,1600")


def chromium() -> tuple[str, str] | None:
    """Paths of ``chromium`` and ``chromedriver``, or ``None`` when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(ckpt: Path, *options: str, env: dict[str, str] | None = None, timeout: float = 120,
           log_file: Path | None = None) -> Iterator[str]:
    """``demo.py ckpt=…`` running on a free local port; yields its URL and stops it afterwards.

    Its output (the server's log) goes to ``log_file`` when given, else to a temporary file.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log_file, "w+") if log_file else tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen([sys.executable, str(REPO / "demo.py"), f"ckpt={ckpt}", f"port={port}", *options],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, text=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                log.seek(0)
                text = log.read()
                if "Running on local URL" in text:
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"demo.py did not start (exit {process.poll()}):\n{text[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


# The page's parts whose text classify_in_browser returns, by element id.
SHOWN = ("summary", "notice", "model", "table")


def classify_in_browser(url: str, images: Sequence[Path], screenshot: Path, timeout: float = 120) -> dict[str, str]:
    """Upload ``images`` on the page at ``url``, wait for their result, save ``screenshot``; returns the text
    of each of :data:`SHOWN` (the result's summary, the notice, the model line, the probability table)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(found[1]), options=options)
        try:
            return _upload_and_wait(driver, url, images, screenshot, timeout)
        finally:
            driver.quit()


def _upload_and_wait(driver, url: str, images: Sequence[Path], screenshot: Path, timeout: float) -> dict[str, str]:
    """:func:`classify_in_browser`'s steps in an open browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    upload.send_keys("\n".join(str(Path(p).resolve()) for p in images))
    names = [Path(p).name for p in images]
    wait.until(lambda d: all(n in d.find_element(By.ID, "summary").text for n in names))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gradcam img")) > 0)
    time.sleep(1)  # let the chart and the gallery finish drawing
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 900), 4000))
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))
    return {part: driver.find_element(By.ID, part).text for part in SHOWN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--image", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "demo.png")
    parser.add_argument("demo_options", nargs="*", help="more demo.py options, e.g. gradcam.layer=layer3")
    args = parser.parse_args()
    if chromium() is None:
        raise SystemExit("demo_browser: chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    with served(args.ckpt, *args.demo_options, env=dict(os.environ)) as url:
        print(classify_in_browser(url, args.image, args.out)["summary"])
    print(f"screenshot → {args.out}")


if __name__ == "__main__":
    main()
