"""The tour's HTML in a real browser: headless Chromium driven by Playwright.

Builds a small tour page with the command line (``bayesdl tour --only coin,stochastic-depth``)
and a page of the lecture-claims sections of :mod:`bayesdl.reports.tour_models` (quick
settings), opens each one and checks that every ``<img>`` decodes (``naturalWidth > 0``) and
that the console shows no error; then, at 1400 and 800 px, that the page never scrolls
sideways, that every figure is shown at :data:`~bayesdl.reports.page.LEGIBLE` of its own
size or more (a wide one scrolls inside its own box on a narrow screen), that every section
ends in its verdict line, and that every warning the command printed is on the page.
Slow (a few minutes); needs the extra ``browser`` (Playwright) and a Chromium at
``$BAYESDL_CHROMIUM`` or ``/usr/bin/chromium`` (Debian: ``apt-get install chromium``); no
browser is downloaded. Run: ``pytest -m slow tests/test_tour_browser.py``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("BAYESDL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: the widths the page is read at: a laptop, and a narrow window
WIDTHS = (1400, 800)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (skipped, with the reason, when unavailable)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[browser]'"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or $BAYESDL_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _open(browser, page_path: Path) -> dict:
    """Load ``page_path``; return its images' states and the console errors seen."""
    errors: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    images = page.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
        "width: i.naturalWidth, height: i.naturalHeight}))"
    )
    title = page.title()
    page.close()
    return {"images": images, "errors": errors, "title": title}


def _assert_renders(result: dict, at_least: int) -> None:
    assert result["title"] == "bayesdl tour"
    images = result["images"]
    assert len(images) >= at_least, images
    broken = [i["alt"] for i in images if not (i["complete"] and min(i["width"], i["height"]) > 0)]
    assert not broken, f"images that do not decode: {broken}"
    assert not result["errors"], result["errors"]


MEASURE = """() => ({
  scroll: document.documentElement.scrollWidth,
  client: document.documentElement.clientWidth,
  images: Array.from(document.images).map(i => ({alt: i.alt, natural: i.naturalWidth,
    shown: i.getBoundingClientRect().width})),
  sections: Array.from(document.querySelectorAll('section')).map(s => ({
    title: (s.querySelector('h2') || {}).textContent,
    verdicts: s.querySelectorAll('.verdict').length,
    last: (s.lastElementChild || {}).className || ''})),
  text: document.body.innerText})"""


def _measure(browser, page_path: Path, width: int) -> dict:
    """The page at ``width`` px: its scroll width, every figure's natural and shown width, each
    section's verdict lines, its text."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    facts = page.evaluate(MEASURE)
    page.close()
    return facts


def _assert_readable(browser, page_path: Path) -> str:
    """No sideways scroll, legible figures, a verdict ending every section (at each width of
    :data:`WIDTHS`); returns the page's text."""
    from bayesdl.reports.page import LEGIBLE

    for width in WIDTHS:
        f = _measure(browser, page_path, width)
        assert f["scroll"] <= f["client"], f"the page scrolls sideways at {width} px"
        small = [(i["alt"], i["natural"], round(i["shown"])) for i in f["images"]
                 if i["shown"] < LEGIBLE * i["natural"] - 1]  # fmt: skip
        assert not small, f"figures shown below {LEGIBLE:.0%} of their size at {width} px: {small}"
        assert f["sections"]
        for s in f["sections"]:
            assert s["verdicts"] == 1 and "verdict" in s["last"], s
    return f["text"]


def printed_warnings(stderr: str) -> list[str]:
    """``Category: message`` of each warning line the command printed (``file:line:
    Category: message``)."""
    found = re.findall(r"^\S*:\d+: (\w*Warning: .*)$", stderr, flags=re.M)
    return [w.strip() for w in found]


def test_tour_page_renders_reads_and_shows_warnings(browser, cli, tmp_path):
    out = tmp_path / "tour"
    # a real process: the tour's sections run in worker processes, which print to its stderr
    proc = cli("tour", "--only", "coin,stochastic-depth", "--out", str(out), "--quiet",
               timeout=600, process=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert printed_warnings(proc.stderr), "the quick stochastic-depth fit warns: none was read"
    _assert_renders(_open(browser, out / "index.html"), at_least=3)
    text = " ".join(_assert_readable(browser, out / "index.html").split())
    for warning in printed_warnings(proc.stderr):
        assert " ".join(warning.split()) in text, f"printed, not on the page: {warning}"


def test_lecture_claims_sections_render(browser, tmp_path):
    import torch

    from bayesdl.fits.folder import write_text
    from bayesdl.reports import page as report
    from bayesdl.reports import tour_models

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sections = tour_models.sections(tmp_path, quick=True)
    finally:
        torch.set_num_threads(n)
    write_text(tmp_path / "index.html", report.page(sections, "claims sections, quick settings"))
    _assert_renders(_open(browser, tmp_path / "index.html"), at_least=3)
    _assert_readable(browser, tmp_path / "index.html")
