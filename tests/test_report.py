"""bandscope.report: the printed report (paper beside ours, verdicts, legends, ≤ 100 columns)
and the self-contained HTML report, rendered in a real headless browser (Debian chromium)."""
import base64
import os
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bandscope import analyze, report
from bandscope.cli import main
from bandscope.keysearch.synthetic import make_runs_synthetic
from bandscope.report import numfmt, paper, tables
from bandscope.report import verdict as V

CHROMIUM = os.environ.get("BANDSCOPE_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def res():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(make_runs_synthetic(4))


@pytest.fixture(scope="module")
def text(res):
    return report.format_text(res, header="Analysing 4 runs.", view="paper")


def test_text_fits_100_columns(text):
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= report.WIDTH
    assert lines[0] == "Analysing 4 runs."


def test_long_architecture_names_still_fit():
    runs = make_runs_synthetic(2, n_bands=4)
    runs = [r.assign_attrs(arch=r.attrs["arch"] + "-with-a-rather-long-architecture-name") for r in runs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        txt = report.format_text(analyze(runs), view="paper")
    assert max(len(line) for line in txt.splitlines()) <= report.WIDTH
    assert "…" in txt


def test_every_column_explained_once(res):
    secs = report.sections(res, view="paper") + report.sections(res, view="own")
    terms = [t for s in report.sections(res, view="paper") for t in s.legend]
    assert len(terms) == len(set(terms))
    terms = [t for s in report.sections(res, view="own") for t in s.legend]
    assert len(terms) == len(set(terms))                 # once per view
    explained = {t for s in secs for t in s.legend}
    for s in secs:
        for c in s.columns:
            # a per-window column "0.95/0.01 R²" is explained by its statistic's term
            term = c.key if c.key in report.TERMS else c.key.split(" ", 1)[1]
            assert term in explained, f"column {c.key!r} of {s.key} is not explained"
            assert term in report.TERMS


def test_paper_value_beside_ours(res, text):
    secs = {s.key: s for s in report.sections(res, view="paper")}
    rows = secs["band_fits"].rows
    i = next(j for j, r in enumerate(rows) if r.get("band") == "2")
    assert rows[i]["source"] == "ours" and rows[i + 1]["source"] == "paper"
    assert rows[i + 1]["ΔBIC"] == paper.BAND_FITS[2]["delta_bic"].text == "-19.05"
    assert rows[i]["ΔBIC"] == numfmt.fmt_signed(tables.table_b2(res).loc["2", "median ΔBIC"])
    for needle in ("-19.65  72/84", "-1.73  78/84", "-73.83", "0.986", "Table B.3.2", "Table B.2"):
        assert needle in text
    # the ordering rows: paper row right under ours, verdicts from the rules
    o = secs["ordering"].rows
    assert [r["source"] for r in o[:2]] == ["ours", "paper"]
    assert o[1]["median ρ"] == "0.786" and o[1]["verdict"] == V.HOLDS


def test_verdict_rows_match_table_verdicts(res):
    vt = tables.table_verdicts(res)
    sec = report.sections(res, view="paper")[0]
    by_test = {r.get("test"): r for r in sec.rows if r.get("test")}
    assert by_test["onset τ_i (expected +)"]["verdict"] == vt.loc["onset", "verdict"]
    heads = [r for r in sec.rows if r.get("_kind") == "head"]
    assert [h["_text"][0] for h in heads] == ["1", "2", "3"]
    assert heads[0]["verdict"] == vt.loc["all band fits", "verdict"]
    assert all(h["verdict"] in V.LEVELS for h in heads)


def test_r2_never_printed_as_one(res, text):
    r2 = tables.table_b2(res)["median R²"]
    for v in r2:
        if 0.9999 < v < 1:
            assert numfmt.fmt_r2(v) in text
    assert not re.search(r"ours\s+1\s", text)


def test_other_window_hides_paper_values(res):
    txt = " ".join(report.format_text(res, window="0.90/0.10", view="paper").split())
    assert "window 0.90/0.10" in txt and "primary window is 0.90/0.10" in txt
    assert "-19.65" not in txt                  # B.2 values belong to 0.95/0.01 only
    assert "0.90/0.10 ours +" in txt or "paper 1.000 [0.964, 1.000]" in txt   # B.3.2 has every window


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.refs = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "src" in a:
            self.srcs.append(a["src"])
        if "href" in a:
            self.refs.append(a["href"])



try:
    import matplotlib  # noqa: F401

    HAVE_MPL = True
except ImportError:        # core-only lane: the report without figures, still browser-checked
    HAVE_MPL = False


@pytest.fixture(scope="module")
def small():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(make_runs_synthetic(2, n_bands=4))


@pytest.fixture(scope="module")
def html_text(small):
    return report.to_html(small, header="Analysing 2 runs.", max_runs=1, figures=HAVE_MPL, view="paper")


def _n_figures(results, view, max_runs):
    return sum(len(s.figures) for s in report.sections(results, view=view, max_runs=max_runs))


def test_html_is_self_contained(html_text, small):
    p = _Collect()
    p.feed(html_text)
    secs = report.sections(small, view="paper")
    assert p.tags.count("table") == sum(1 for s in secs if s.columns) + 1   # + the reasons table
    assert "script" not in p.tags and "link" not in p.tags and not p.refs
    assert "http://" not in html_text.replace("http://www.w3.org/", "") and "https://" not in html_text
    if HAVE_MPL:   # inline SVG figures: one per figure of the sections, text kept as text
        assert p.tags.count("figure") == _n_figures(small, "paper", 1) == p.tags.count("svg")
        assert "<text" in html_text and "fail" not in re.findall(r"class='(\w+)'", html_text)
    assert "@media print" in html_text


def test_html_png_figures(small):
    pytest.importorskip("matplotlib")
    h = report.to_html(small, max_runs=1, figure_format="png", dpi=30)
    p = _Collect()
    p.feed(h)
    assert len(p.srcs) == _n_figures(small, "own", 1) and "<svg" not in h
    for s in p.srcs:
        assert base64.b64decode(s.split(",", 1)[1])[:4] == b"\x89PNG"


def test_html_without_figures(small):
    h = report.to_html(small, figures=False, view="paper")
    assert "<img" not in h and "<svg" not in h and "Verdicts" in h


def test_own_view_has_no_paper(small):
    """The default view is the runs alone: no verdicts, no paper rows or values."""
    own = report.format_text(small)
    assert own == report.format_text(small, view="own")
    assert "Verdicts" not in own and "paper  " not in own and "-19.65" not in own and "verdict" not in own
    keys = [s.key for s in report.sections(small)]
    assert keys[0] == "runs" and "verdicts" not in keys
    assert all(r.get("_kind") != "paper" for s in report.sections(small) for r in s.rows)
    paper_view = report.format_text(small, view="paper")
    assert paper_view.startswith("Verdicts") and "-19.65" in paper_view
    with pytest.raises(Exception, match="report view 'mine'"):
        report.sections(small, view="mine")


_TABLE_FUNCTIONS = ("table_b2", "table_b31", "table_ordering", "table_62", "table_a7", "table_full_loss",
                    "table_saturation", "table_verdicts")


def _count_table_calls(monkeypatch) -> dict:
    """Wrap every table function of bandscope.report.tables in a counter: (name, window) → calls."""
    calls: dict = {}
    for name in _TABLE_FUNCTIONS:
        real = getattr(tables, name)

        def counted(*a, _real=real, _name=name, **k):
            key = (_name, a[1] if len(a) > 1 else k.get("window"))
            calls[key] = calls.get(key, 0) + 1
            return _real(*a, **k)

        monkeypatch.setattr(tables, name, counted)
    return calls


def test_each_table_function_runs_once_per_report(small, monkeypatch):
    """Text, HTML (both views' sections) and JSON from one ReportTables: every table function
    runs once per (function, window)."""
    from bandscope.report.results_json import results_to_dict

    calls = _count_table_calls(monkeypatch)
    rt = tables.ReportTables(small)
    report.format_text(small, view="paper", tables=rt)
    report.format_text(small, view="own", tables=rt)
    report.to_html(small, view="paper", tables=rt, figures=False)
    results_to_dict(small, tables=rt)
    assert calls and max(calls.values()) == 1, calls
    assert ("table_b2", None) not in calls or calls[("table_b2", None)] == 1
    # the same numbers as the functions called alone
    assert rt.verdicts().equals(tables.table_verdicts(small))
    assert rt.b31().equals(tables.table_b31(small))


def test_analyze_html_json_builds_each_table_once(tmp_path, monkeypatch):
    """One `bandscope analyze --compare-paper --html --json` (printed text, JSON, HTML with its
    figures): every table function that runs, runs once per (function, window), and the counter
    sees them all (a report that built a table twice, or a counter that missed them, fails)."""
    pytest.importorskip("matplotlib")
    from bandscope import io as bio

    files = []
    for j, run in enumerate(make_runs_synthetic(2, n_bands=4)):
        f = tmp_path / f"run{j}.nc"
        bio.write_run(run, f)
        files.append(str(f))
    calls = _count_table_calls(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["analyze", *files, "--compare-paper", "--html", str(tmp_path / "r.html"),
                     "--json", str(tmp_path / "r.json")]) == 0
    assert "<svg" in (tmp_path / "r.html").read_text(encoding="utf-8")
    called = {name for name, _ in calls}
    assert called == set(_TABLE_FUNCTIONS) - {"table_62"}, called
    assert max(calls.values()) == 1, calls


def test_section_registry(small):
    from bandscope.report.sections import _REGISTRY, Column, Section, register_section, registered_sections

    def mine(ctx):
        return Section("mine", "My section", "sub", [Column("run", "run", "<")],
                       [{"run": str(r)} for r in ctx.results["run"].values], legend=["run"])

    register_section("mine_test", mine, views=("own",), order=95)
    try:
        secs = report.sections(small)
        assert secs[-1].key == "mine" and "My section" in report.format_text(small)
        assert "mine" not in [s.key for s in report.sections(small, view="paper")]
    finally:
        _REGISTRY.pop("mine_test")
    assert "mine_test" not in registered_sections("own")


def test_forecast_section(small):
    from bandscope.keysearch.forecasting import forecast

    runs = make_runs_synthetic(2, n_bands=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fcs = {r.attrs["name"]: forecast(r, prefix=0.5) for r in runs}
    secs = {s.key: s for s in report.sections(small, forecasts=fcs, max_runs=1)}
    fs = secs["forecast"]
    name = str(small.run.values[0])
    heads = [r["_text"] for r in fs.rows if r.get("_kind") == "head"]
    n_used = int(fcs[name]["start_index"].sel(band=1) + fcs[name]["n_fit"].sel(band=1))
    assert heads[0] == f"{name} (prefix {n_used}/53 checkpoints)"
    band8 = next(r for r in fs.rows if r.get("band") == "8")
    assert band8["floor [95%]"].startswith(numfmt.fmt_sig(float(fcs[name].floor.sel(band=8))))
    assert band8["floor now"] == numfmt.fmt_sig(float(small.floor.sel(run=name, band=8)))
    assert len(fs.figures) == 1 and "forecast" not in report.sections(small)


def test_plural_header(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bandscope import io as bio

    f = tmp_path / "one.nc"
    bio.write_run(make_runs_synthetic(1, n_bands=4)[0], f)
    out = tmp_path / "r.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["analyze", str(f), "--html", str(out), "--html-figures", "png", "--quiet"]) == 0
    h = out.read_text(encoding="utf-8")
    assert "Analysing 1 run: " in h and "1 runs" not in h and "Verdicts" not in h


def test_cli_views_and_failing_figure(tmp_path, capsys, monkeypatch):
    """analyze: the runs alone by default, --compare-paper the comparison; a figure that fails
    is named, and the text, JSON and HTML are still written."""
    pytest.importorskip("matplotlib")
    import json

    from bandscope import io as bio
    from bandscope.report import figures

    files = []
    for j, run in enumerate(make_runs_synthetic(2, n_bands=4)):
        f = tmp_path / f"run{j}.nc"
        bio.write_run(run, f)
        files.append(str(f))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["analyze", *files]) == 0
        assert "Verdicts" not in capsys.readouterr().out
        assert main(["analyze", *files, "--compare-paper"]) == 0
        assert capsys.readouterr().out.startswith("Verdicts")

        def broken(*a, **k):
            raise RuntimeError("boom")

        monkeypatch.setattr(figures, "plot_ordering", broken)
        out, js, plots = tmp_path / "r.html", tmp_path / "r.json", tmp_path / "plots"
        rc = main(["analyze", *files, "--html", str(out), "--json", str(js), "--plots", str(plots),
                   "--format", "svg"])
    printed = capsys.readouterr()
    assert rc == 2 and "figure 'ordering' could not be drawn (RuntimeError: boom)" in printed.err
    assert "Per-band Weibull" in printed.out and json.loads(js.read_text())["runs"]
    h = out.read_text(encoding="utf-8")
    assert "Figure ordering could not be drawn: RuntimeError: boom" in h and "<svg" in h
    assert (plots / "full_loss.svg").exists() and not (plots / "ordering.svg").exists()


def _chromium():
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return CHROMIUM
    if os.environ.get("BANDSCOPE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BANDSCOPE_REQUIRE_BROWSER=1 but no chromium at {CHROMIUM} "
                    "(apt-get install -y chromium, or set BANDSCOPE_CHROMIUM)")
    pytest.skip(f"no chromium at {CHROMIUM} (set BANDSCOPE_REQUIRE_BROWSER=1 to fail instead)")


_MEASURE = """() => {
  const doc = document.documentElement;
  const figs = [...document.querySelectorAll('figure svg, figure img')].map(f => {
    const box = f.getBoundingClientRect();
    const texts = [...f.querySelectorAll('text')].filter(t => t.textContent.trim()).map(t => {
      const r = t.getBoundingClientRect();
      return {text: t.textContent, h: r.height, px: parseFloat(getComputedStyle(t).fontSize) * box.width /
              f.viewBox.baseVal.width, out: r.left < box.left - 1 || r.right > box.right + 1 ||
              r.top < box.top - 1 || r.bottom > box.bottom + 1};
    });
    return {name: f.dataset.figure, w: box.width, texts, decoded: f.tagName !== 'IMG' || f.naturalWidth > 0};
  });
  return {width: doc.scrollWidth, client: doc.clientWidth, figs,
          tables: document.querySelectorAll('table').length};
}"""


def render_in_browser(html_path, shot=None, width=1280):
    """Open ``html_path`` (file://) in headless Chromium at ``width`` px: the page's scroll
    width, and for every figure its box, decoding and each text's size (px) and whether it
    lies outside the figure's box. Saves a full-page screenshot to ``shot`` if given."""
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = _chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(Path(html_path).as_uri(), wait_until="load")
        m = page.evaluate(_MEASURE)
        if shot:
            page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return m


@pytest.mark.parametrize("view", ["own", "paper"])
def test_html_layout_in_headless_chromium(small, tmp_path, view):
    """At a 1,280-px viewport: no horizontal overflow, every figure decoded and inside the
    column, every figure text at least 9 px and inside its figure (no clipped title).
    Screenshots go to $BANDSCOPE_SCREENSHOT_DIR when set (the docs lane keeps them)."""
    page = tmp_path / f"report-{view}.html"
    report.write_html(small, page, view=view, max_runs=1, header="Analysing 2 runs.", figures=HAVE_MPL)
    shots = os.environ.get("BANDSCOPE_SCREENSHOT_DIR")
    shot = Path(shots) / f"report-{view}.png" if shots else tmp_path / "shot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    m = render_in_browser(page, shot)
    assert m["width"] <= m["client"] <= 1280, m["width"]
    assert m["tables"] >= 5
    if HAVE_MPL:
        assert len(m["figs"]) == _n_figures(small, view, 1)
        for f in m["figs"]:
            assert f["decoded"] and 0 < f["w"] <= 1100, f["name"]
            assert f["texts"], f["name"]
            small_text = [(t["text"], round(t["px"], 1)) for t in f["texts"] if t["px"] < 9]
            outside = [t["text"] for t in f["texts"] if t["out"]]
            assert not small_text, (f["name"], small_text)
            assert not outside, (f["name"], outside)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_cli_analyze_html(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bandscope import io as bio

    files = []
    for j, run in enumerate(make_runs_synthetic(2, n_bands=4)):
        f = tmp_path / f"run{j}.nc"
        bio.write_run(run, f)
        files.append(str(f))
    out = tmp_path / "r" / "report.html"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["analyze", *files, "--html", str(out), "--compare-paper"]) == 0
    printed = capsys.readouterr()
    assert "Verdicts" in printed.out and f"wrote {out}" in printed.err
    h = Path(out).read_text(encoding="utf-8")
    assert h.startswith("<!DOCTYPE html>") and "<svg" in h and "Why each verdict" in h


def test_lm_runs_report_in_headless_chromium(tmp_path):
    """The spectral-reach report of language-model runs (`bandscope analyze RUNS.nc --html`) at a
    1,280-px viewport: no horizontal overflow, its tables and figures there and decoded."""
    pytest.importorskip("matplotlib")
    from bandscope.cli import main

    runs = sorted(str(p) for p in (REPO / "reference_runs" / "lm-scaling-long" / "runs").glob("*.nc"))
    assert len(runs) == 8
    page = tmp_path / "lm.html"
    assert main(["analyze", *runs, "--quiet", "--slope-start", "1000", "--html", str(page)]) == 0
    assert "id='spectral-reach'" in page.read_text()
    shots = os.environ.get("BANDSCOPE_SCREENSHOT_DIR")
    shot = Path(shots) / "report-lm.png" if shots else tmp_path / "shot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    m = render_in_browser(page, shot)
    assert m["width"] <= m["client"] <= 1280, m["width"]
    assert m["tables"] >= 3
    assert m["figs"] and all(f["decoded"] and 0 < f["w"] <= m["client"] for f in m["figs"]), m["figs"]
