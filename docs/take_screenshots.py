"""Build the site, open it in headless Chromium, and save full-page screenshots.

    python docs/take_screenshots.py       # -> docs/screenshots/home.png, docs/screenshots/lstm.png

A manual check that the built site renders in a real browser (navigation, code blocks,
tables, diagrams); not part of the test suite or CI. Needs mkdocs (the ``test`` extra),
Pillow (comes with matplotlib) and a Chromium (Debian: ``apt-get install chromium``).
The site is served over HTTP from a temporary folder, as a web server would serve it.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
PAGES = {"home.png": "", "lstm.png": "layers/lstm/"}
WIDTH, MAX_HEIGHT = 1280, 6000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("take_screenshots.py: no Chromium found (Debian: apt-get install chromium)")


def trim(path: Path) -> None:
    """Cut the empty band between the end of the page and the footer (the window is taller
    than any page), and store the image with a 256-colour palette."""
    image = Image.open(path).convert("RGB")
    pixels = image.load()
    white = (255, 255, 255)

    def blank(y: int) -> bool:
        return all(pixels[x, y] == white for x in range(0, WIDTH, 4))

    footer = image.height
    while footer > 1 and not blank(footer - 1):
        footer -= 1
    end = footer
    while end > 1 and blank(end - 1):
        end -= 1
    top = image.crop((0, 0, WIDTH, min(footer, end + 40)))
    bottom = image.crop((0, footer, WIDTH, image.height))
    page = Image.new("RGB", (WIDTH, top.height + bottom.height), white)
    page.paste(top, (0, 0))
    page.paste(bottom, (0, top.height))
    page.quantize(colors=256).save(path, optimize=True)


def main() -> int:
    chromium = browser()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--site-dir", str(site)], cwd=ROOT, env=env,
                       check=False)
        if not (site / "index.html").is_file():
            sys.exit("take_screenshots.py: the site did not build")
        handler = functools.partial(_QuietHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            OUT.mkdir(parents=True, exist_ok=True)
            for name, page in PAGES.items():
                url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
                target = OUT / name
                subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                f"--window-size={WIDTH},{MAX_HEIGHT}", f"--screenshot={target}", url],
                               check=True, capture_output=True, timeout=120)
                trim(target)
                print(f"wrote {target.relative_to(ROOT)} ({url})")
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
