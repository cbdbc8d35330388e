"""The documentation-site checker (tools/check_docs_site.py) finds what it claims to find.

Runs the checker in headless Chromium on two small hand-written sites: a clean one (no problem
reported) and one with one defect of each kind (each reported). Needs playwright (the ``docs``
extra) and Debian's /usr/bin/chromium; skipped otherwise. Also: the docstring conversion of the
site's griffe extension (docs/hooks.py; needs mkdocs and griffe, the ``docs`` extra).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tools_loader import load_tool

CHROMIUM = "/usr/bin/chromium"
browser = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium at /usr/bin/chromium")

check_docs_site = load_tool("check_docs_site")

# a 1x1 PNG
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
API = {"pkg.mod.func": ("api/pkg.mod.html", True)}
TUTORIALS = {"tutorials/t.html": ([r"ran \d+ steps"], 1, 1)}


def _page(body: str) -> str:
    return f"<!doctype html><html><head><meta charset='utf-8'></head><body><article>{body}</article></body></html>"


def _site(root: Path, **defects: bool) -> Path:
    (root / "api").mkdir(parents=True)
    (root / "tutorials").mkdir()
    (root / "figures").mkdir()
    import base64

    (root / "figures" / "f.png").write_bytes(base64.b64decode(PNG))
    index = ("<a href='api/index.html'>api</a> <a href='tutorials/t.html#out'>tutorial</a>"
             "<img src='figures/f.png' alt='a figure'>")
    if defects.get("js_error"):
        index += "<script>throw new Error('boom')</script>"
    if defects.get("broken_link"):
        index += "<a href='missing.html'>gone</a>"
    if defects.get("broken_anchor"):
        index += "<a href='api/pkg.mod.html#pkg.mod.nothing'>gone</a>"
    if defects.get("missing_image"):
        index += "<img src='figures/none.png' alt='lost figure'>"
    if defects.get("external"):
        index += "<img src='http://192.0.2.1/x.png' alt='remote'>"
    (root / "index.html").write_text(_page(index), encoding="utf-8")
    api_index = "" if defects.get("api_unlinked") else "<a href='pkg.mod.html#pkg.mod.func'>func</a>"
    (root / "api" / "index.html").write_text(_page(api_index), encoding="utf-8")
    obj = "other" if defects.get("api_missing") else "func"
    (root / "api" / "pkg.mod.html").write_text(
        _page(f"<h2 class='doc-heading' id='pkg.mod.{obj}'>{obj}</h2>"), encoding="utf-8")
    output = "nothing ran" if defects.get("no_output") else "ran 12 steps"
    (root / "tutorials" / "t.html").write_text(_page(
        f"<p id='out'>{output}</p><table><tr><td>1</td></tr></table>"
        f"<img src='data:image/png;base64,{PNG}' alt='executed figure'>"), encoding="utf-8")
    return root


def _check(site):
    pytest.importorskip("playwright.sync_api")
    return check_docs_site.check(site, CHROMIUM, api_objects=API, tutorials=TUTORIALS, search_terms=[], zoom=False)


@pytest.mark.slow
@browser
def test_clean_site_passes(tmp_path):
    assert _check(_site(tmp_path)) == []


@pytest.mark.slow
@browser
def test_each_defect_is_reported(tmp_path):
    defects = ["js_error", "broken_link", "broken_anchor", "missing_image", "external", "api_unlinked",
               "api_missing", "no_output"]
    problems = "\n".join(_check(_site(tmp_path, **dict.fromkeys(defects, True))))
    expected = {
        "js_error": "index.html: JavaScript error: boom",
        "broken_link": "broken link http://127.0.0.1",
        "broken_anchor": "missing anchor",
        "missing_image": "image not loaded: 'lost figure'",
        "external": "index.html: external request (the site must work offline): http://192.0.2.1/x.png",
        "api_unlinked": "the index does not link to pkg.mod.func",
        "api_missing": "pkg.mod.func is not documented on api/pkg.mod.html",
        "no_output": "executed output missing",
    }
    for defect, message in expected.items():
        assert message in problems, f"{defect} not reported:\n{problems}"


def test_rst_blocks_become_markdown():
    pytest.importorskip("mkdocs")
    pytest.importorskip("griffe")
    path = Path(__file__).resolve().parents[1] / "docs" / "hooks.py"
    spec = importlib.util.spec_from_file_location("docs_hooks", path)
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    text = "\n".join([
        "Intro.",
        "",
        "=====  ==========  =====",
        "name   what        where",
        "=====  ==========  =====",
        "``a``  first line  B.2",
        "       continued",
        "``b``  x | y       §6",
        "=====  ==========  =====",
        "",
        "Example::",
        "",
        "    f(x)",
        "        g(y)",
        "",
        ".. math:: s_k = \\sum_m d_m",
        "",
        ">>> [x for x in 'ab']",
        "['a', 'b']",
        "",
        "Examples",
        "--------",
        ">>> 1 + 1",
        "2",
    ])
    assert hooks.rst_blocks_to_markdown(text).split("\n") == [
        "Intro.", "", "",
        "| name | what | where |", "|---|---|---|",
        "| ``a`` | first line continued | B.2 |", "| ``b`` | x \\| y | §6 |",
        "", "",
        "Example:", "", "```text", "f(x)", "    g(y)", "```",
        "",
        "```text", "s_k = \\sum_m d_m", "```",
        "",
        "```pycon", ">>> [x for x in 'ab']", "['a', 'b']", "```",
        "",
        "Examples", "--------", ">>> 1 + 1", "2",
    ]
