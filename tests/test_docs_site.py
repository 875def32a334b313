"""The offline docs site: tools/build_docs.py builds it, headless Chromium (Debian's, driven by Playwright) reads it.

To bound the test's time on a busy machine, it builds a partial site into its temp dir — the index, the spectrum
chapter (executed: it has the plotly figures) and the dashboard chapter (rendered from its saved state) — through
the same steps as the full build (`make docs`): nbdev's processors, show_doc, navigation, nbconvert. Then the
browser opens index.html, follows the
navigation to the spectrum API page, and checks that every navigation link resolves, that the plotly figures
render (with the local plotly.min.js), and that neither page logs a console error or fails a request.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_dashboard_browser import ensure_browser, launch


PAGES = ("index.ipynb", "20_reports_spectrum.ipynb", "21_reports_dashboard.ipynb")


def build_docs_module():
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools" / "build_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "_docs"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), "--only", ",".join(PAGES),
                        "--execute", "20_reports_spectrum.ipynb", "--out", str(out), "--n-workers", "2"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return out


def test_every_page_is_built_and_hidden_cells_are_gone(site):
    bd = build_docs_module()
    nbs = ROOT / "nbs"
    expected = {bd.page_name(p, nbs) for p in bd.notebooks(nbs) if p.name in PAGES}
    assert expected == {"index.html", "reports_spectrum.html", "reports_dashboard.html"}
    assert {p.name for p in site.glob("*.html")} == expected
    assert (site / "plotly.min.js").stat().st_size > 1e6
    spectrum = (site / "reports_spectrum.html").read_text()
    for gone in ("#| hide", "#| export", "pio.renderers.default", "from fastcore.test import", "cdn.plot.ly", "require.js"):
        assert gone not in spectrum, gone
    assert re.search(r"<h3[^>]*>fig_eigenspectrum<", spectrum), "show_doc entry missing"
    assert "<math" in spectrum and "$\\lambda" not in spectrum   # LaTeX became MathML
    printed = re.search(r"matrix_ssl \[0, 1, 2, 3, 4\] 40 steps; alpha asked [\d.]+, monitor says [\d.]+\n", spectrum)
    assert printed and "['matrix_ssl" not in spectrum, "a print()'s output is missing or shown as a list"
    for page in site.glob("*.html"):   # nothing is fetched from the network
        assert not re.search(r"<(script|link)[^>]*(src|href)=\"https?://", page.read_text()), page.name


def test_site_in_chromium(site, tmp_path):
    ensure_browser()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        ctx = launch(pw, tmp_path)
        try:
            page = ctx.new_page()
            problems = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))

            page.goto((site / "index.html").as_uri())
            nav = page.eval_on_selector_all(".mssl-nav a", "els => els.map(a => [a.textContent, a.href])")
            assert len(nav) == len(list(site.glob("*.html"))) + 1   # the brand link + one per page
            for text, href in nav:
                assert href.startswith("file://") and Path(href[len("file://"):].split("#")[0]).is_file(), (text, href)
            page.screenshot(path=str(tmp_path / "docs-index.png"))

            page.click(".mssl-nav a[href$='reports_spectrum.html']")      # navigate like a reader
            page.wait_for_url("**/reports_spectrum.html")
            assert page.inner_text(".mssl-nav li.current") == "Spectrum visualisation"
            page.wait_for_function("() => document.querySelectorAll('.mssl-plotly .main-svg').length > 0", timeout=30_000)
            figures = page.evaluate("""() => Array.from(document.querySelectorAll('.mssl-plotly')).map(el =>
                ({traces: (el.data || []).length, svg: !!el.querySelector('.main-svg'), lines: el.querySelectorAll('.scatterlayer .trace').length}))""")
            assert len(figures) >= 5 and all(f["svg"] and f["traces"] > 0 and f["lines"] > 0 for f in figures), figures
            text = page.evaluate("""() => Array.from(document.querySelectorAll('.mssl-plotly .annotation-text')).map(a => a.textContent)""")
            assert any(t.startswith("α-ReQ = ") for t in text), text
            for text_, href in page.eval_on_selector_all(".mssl-nav a, .mssl-pager a", "els => els.map(a => [a.textContent, a.href])"):
                assert Path(href[len("file://"):].split("#")[0]).is_file(), (text_, href)
            page.locator(".mssl-plotly").first.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "docs-spectrum.png"))
            assert not problems, problems
            print("screenshots:", *sorted(tmp_path.glob("*.png")), sep="\n")
        finally:
            ctx.close()
