"""scripts/screenshot-pages.py, which makes the README's picture of a model page from the
demo, run as the README says (to a temporary path): it writes a PNG of the window's size that
shows a page, not a blank one. The PNG is read back in the same headless Chromium the pages'
browser tests drive (a canvas's pixels), so nothing beyond the test tier's tools is needed."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "screenshot-pages.py"

# the picture's pixels in the browser: its size, how many are not the page's white
# background, and how many distinct colours (sampled on a grid, to keep the script short)
PIXELS = """
const [src, done] = arguments;
const img = new Image();
img.onload = () => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let inked = 0, total = 0;
  const colours = new Set();
  for (let y = 0; y < c.height; y += 2) {
    for (let x = 0; x < c.width; x += 2) {
      const i = 4 * (y * c.width + x);
      total++;
      if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) inked++;
      colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
  }
  done({width: c.width, height: c.height, inked: inked / total, colours: colours.size});
};
img.onerror = () => done({error: 'not an image'});
img.src = src;
"""


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_readme_screenshot_script_draws_the_demo_page(browser, tmp_path):
    out = tmp_path / "model-page.png"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--duration", "6",
                          "--height", "900"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    data = out.read_bytes()
    assert png_size(data) == (1400, 900)
    browser.set_script_timeout(60)
    seen = browser.execute_async_script(
        PIXELS, "data:image/png;base64," + base64.b64encode(data).decode())
    assert seen.get("error") is None, seen
    assert (seen["width"], seen["height"]) == (1400, 900)
    # a page: text, tables and charts ink a few percent of it in many colours (a blank or
    # error page is one or two colours over almost nothing)
    assert seen["inked"] > 0.02, seen
    assert seen["colours"] > 50, seen
    print(f"screenshot: {out} {seen}")
