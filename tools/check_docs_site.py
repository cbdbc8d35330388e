"""Check the built documentation site in a real headless browser (``make docs-check``).

Serves the site (``build/site`` from ``make docs``) on 127.0.0.1 and opens every page in
Chromium through playwright, with Debian's ``/usr/bin/chromium`` (playwright's own browser
download is never used). Fails, listing every problem, when

- a page throws a JavaScript error or logs a console error,
- a request of the page fails or returns an HTTP error, or the page requests anything that is
  not on the local server (the site must work offline),
- an image does not load (``naturalWidth == 0``),
- an internal link points to a page or file that does not exist, or to an anchor that is not on
  its target page,
- the API reference lacks a key function (``API_OBJECTS``: an anchor on the module page and a
  link from the API index), or a module page renders no documented object,
- a tutorial does not show its executed output (``TUTORIALS``: text printed by its code, a
  minimum number of rendered figures and tables, no traceback),
- the site search finds nothing for a key function name.

Usage: ``python tools/check_docs_site.py [SITE_DIR] [--chromium PATH]``; exit code 0 if all pass.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# API reference: object id -> (module page it must be documented on, linked from the API index).
API_OBJECTS = {
    "bandscope.transforms.bands.band_losses": ("api/bandscope.transforms.bands.html", True),
    "bandscope.keysearch.analysis.analyze": ("api/bandscope.keysearch.analysis.html", True),
    "bandscope.transforms.paramtime.parameter_time": ("api/bandscope.transforms.paramtime.html", True),
    "bandscope.io.runfiles.read_run": ("api/bandscope.io.runfiles.html", True),
    "bandscope.lnp.statistics.lnp_components": ("api/bandscope.lnp.statistics.html", False),
    "bandscope.torch.lnp.measure_lnp": ("api/bandscope.torch.lnp.html", True),
    "bandscope.torch.lnp.hook.LNPHook": ("api/bandscope.torch.lnp.hook.html", True),
}

# Tutorials: page -> (regexes its executed output must contain, min figures, min tables).
TUTORIALS = {
    "tutorials/key_search.html": (
        [r"Analysed \d+ runs x \d+ bands", r"largest relative difference between sum_i L_i and the logged MSE",
         r"median R²", r"ρ\(resolution, onset\)", r"R² recomputed 0\.\d+, stored 0\.\d+",
         r"neighbouring bands moves it by 12/\(n\(n²−1\)\) = 0\.\d+", r"paper verdict"],
        5, 8),
    "tutorials/spectral_reach.html": (
        [r"largest relative difference between recomputed and stored P: \d", r"P goes [\d.e-]+ → [\d.e-]+",
         r"P as the eigen-sum over the \d+ eNTK modes", r"𝒩 ≈ [\d.]+ ± [\d.]+ \(16 probes"],
        2, 5),
}
SEARCH_TERMS = ["measure_lnp", "band_losses"]


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def local_file(site: Path, base: str, url: str) -> Path | None:
    """The file under ``site`` that a same-origin ``url`` names (None if it is another origin)."""
    if not url.startswith(base):
        return None
    path = unquote(urlsplit(url).path).lstrip("/")
    target = site / path
    return target / "index.html" if (path == "" or path.endswith("/")) else target


def check(site: Path, chromium: str, *, api_objects=None, tutorials=None, search_terms=None) -> list[str]:
    """Every problem found on the site under ``site`` (empty list: all checks passed)."""
    from playwright.sync_api import sync_playwright

    api_objects = API_OBJECTS if api_objects is None else api_objects
    tutorials = TUTORIALS if tutorials is None else tutorials
    search_terms = SEARCH_TERMS if search_terms is None else search_terms
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")
    if not pages:
        return [f"no HTML pages under {site}: run `make docs` first"]
    problems: list[str] = [f"tutorial page missing: {t}" for t in tutorials if t not in pages]
    ids: dict[str, set[str]] = {}
    links: list[tuple[str, str]] = []  # (page, absolute url) for same-origin links
    n_images = 0
    httpd, base = serve(site)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="bandscope-docs-chromium-") as profile:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900})
            ctx.set_default_timeout(60_000)
            current = {"name": ""}

            def route(r):
                url = r.request.url
                if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
                    r.continue_()
                else:
                    problems.append(f"{current['name']}: external request (the site must work offline): {url}")
                    r.abort()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("pageerror", lambda e: problems.append(f"{current['name']}: JavaScript error: {e}"))
            page.on("console", lambda m: m.type == "error" and problems.append(
                f"{current['name']}: console error: {m.text}"))
            page.on("requestfailed", lambda r: r.url.startswith(base) and problems.append(
                f"{current['name']}: request failed: {r.url} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and problems.append(
                f"{current['name']}: HTTP {r.status} for {r.url}"))

            for name in pages:
                current["name"] = name
                page.goto(base + name, wait_until="load")
                page.wait_for_load_state("networkidle")
                ids[name] = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
                for img in page.eval_on_selector_all(
                        "img", "els => els.map(e => [e.currentSrc || e.src, e.complete && e.naturalWidth > 0,"
                               " e.alt])"):
                    n_images += 1
                    src, ok, alt = img
                    if not ok:
                        problems.append(f"{name}: image not loaded: {alt or src[:80]!r}")
                for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                    if href.startswith(base):
                        links.append((name, href))
                text = page.inner_text("body")
                if name in tutorials:
                    if "Traceback (most recent call last)" in text:
                        problems.append(f"{name}: shows a Python traceback")
                    patterns, min_figs, min_tables = tutorials[name]
                    for pat in patterns:
                        if not re.search(pat, text):
                            problems.append(f"{name}: executed output missing: /{pat}/")
                    figs = page.eval_on_selector_all(
                        "article img[src^='data:image/png']", "els => els.filter(e => e.naturalWidth > 0).length")
                    if figs < min_figs:
                        problems.append(f"{name}: {figs} rendered figures, expected at least {min_figs}")
                    n_tables = page.eval_on_selector_all("article table", "els => els.length")
                    if n_tables < min_tables:
                        problems.append(f"{name}: {n_tables} tables, expected at least {min_tables}")
                if name.startswith("api/") and name != "api/index.html":
                    if not page.query_selector("article .doc-heading"):
                        problems.append(f"{name}: no documented object rendered")

            # site search (a web worker over search_index.json): a key name must be found
            current["name"] = "search"
            for term in search_terms:
                page.goto(base + "index.html", wait_until="load")
                page.fill(".md-search__input", term)
                try:
                    page.wait_for_selector(".md-search-result__item", timeout=30_000)
                except Exception:  # playwright's TimeoutError
                    problems.append(f"search: no result for {term!r}")
            ctx.close()
    finally:
        httpd.shutdown()

    # internal links and their anchors
    for name, href in links:
        url, frag = urldefrag(href)
        target = local_file(site, base, url)
        if target is None or not target.exists():
            problems.append(f"{name}: broken link {href}")
            continue
        rel = target.relative_to(site).as_posix()
        if frag and rel in ids and unquote(frag) not in ids[rel]:
            problems.append(f"{name}: link to missing anchor {href}")

    api_index = {href for name, href in links if name == "api/index.html"}
    for obj, (module_page, in_index) in api_objects.items():
        if obj not in ids.get(module_page, set()):
            problems.append(f"API reference: {obj} is not documented on {module_page}")
        if in_index and f"{base}{module_page}#{obj}" not in api_index:
            problems.append(f"API reference: the index does not link to {obj}")
    print(f"checked {len(pages)} pages, {len(links)} internal links, {n_images} images, "
          f"{len(api_objects)} API objects, {len(tutorials)} tutorials, search for {search_terms}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", nargs="?", default="build/site", help="built site (default build/site)")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable (default /usr/bin/chromium)")
    args = ap.parse_args(argv)
    site = Path(args.site).resolve()
    if not Path(args.chromium).exists():
        print(f"no Chromium at {args.chromium}: apt-get install -y chromium (or pass --chromium PATH)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    problems = check(site, args.chromium)
    for p in problems:
        print("FAIL", p)
    print(f"{'FAILED' if problems else 'OK'}: {len(problems)} problems ({time.perf_counter() - t0:.1f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
