"""Screenshots of braid serve's search page (desktop and phone width) in headless Chromium.

    python scripts/page_screenshots.py indexes/scifact "microglia activation in the brain" docs/images

Serves INDEX on a loopback port, opens the page in Debian's chromium through selenium
(chromium-driver), runs QUERY with the default pipeline, opens the first hit's explanation and saves
``search-desktop.png``, ``search-side-by-side.png`` (1280 px wide) and ``search-phone.png`` (390 px).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
import urllib.parse
from pathlib import Path


def serve(index: Path):
    import uvicorn

    from braid.retrieval.serve.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(index), log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def browser(width: int, height: int):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    if width < 500:  # headless Chromium keeps windows at least 500 px wide: emulate the phone's viewport instead
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1}})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")), options=options)


def shoot(url: str, query: str, out: Path, width: int, height: int, names: dict[str, str], open_hits: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser(width, height)
    try:
        driver.get(url + "#" + urllib.parse.urlencode({"q": query, "k": 10}))
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit"))
        for summary in driver.find_elements(By.CSS_SELECTOR, "#hits details.why summary")[:open_hits]:
            summary.click()
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(out / names["fused"]))
        if "side" in names:
            driver.find_element(By.ID, "view-side").click()
            driver.save_screenshot(str(out / names["side"]))
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path)
    ap.add_argument("query")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server, url = serve(args.index)
    try:
        shoot(url, args.query, args.out, 1280, 1000, {"fused": "search-desktop.png", "side": "search-side-by-side.png"}, open_hits=1)
        shoot(url, args.query, args.out, 390, 844, {"fused": "search-phone.png"}, open_hits=1)
    finally:
        server.should_exit = True
    print("wrote", ", ".join(str(p) for p in sorted(args.out.glob("search-*.png"))))


if __name__ == "__main__":
    main()
