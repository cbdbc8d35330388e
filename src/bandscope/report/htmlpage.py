"""The report as one self-contained HTML page: the :func:`~bandscope.report.sections.sections`
tables (verdict cells coloured), the reasons of every verdict (paper view), and each section's
figures, inline SVG by default (vector, selectable text) or PNG; no script, no external file.

A figure that fails to draw does not lose the page: its place says which figure failed and
why, and ``on_figure_error(name, exc)`` is called so the caller can report it.
"""
from __future__ import annotations

import base64
import html
import io as _io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import verdict as V
from .sections import TERMS, Section, report_context, sections
from .svg import figure_svg, shared_text_metrics

__all__ = ["to_html", "write_html", "CSS", "FIGURE_FORMATS"]

FIGURE_FORMATS = ("svg", "png")
"""Figure formats of the HTML report: inline SVG (default) or base64 PNG."""

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
p.sub{color:#555;margin-top:-.5em}
.tw{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.92em}
th,td{padding:.2em .6em;text-align:right;white-space:pre}
th{border-bottom:2px solid #888}td.l,th.l{text-align:left}
td.why{white-space:normal;min-width:14em;max-width:28em}
tr.paper td{color:#666;font-style:italic;border-bottom:1px solid #eee}
tr.head td{font-weight:600;text-align:left;padding-top:.6em}
td.v-holds{background:#d9f2d9}td.v-weaker{background:#fff2c2}
td.v-does-not-hold{background:#f7d4d4}td.v-not-tested{background:#eee}
dl{font-size:.9em;display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.1em 1em}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
figure{margin:1.5em 0}
figure svg,figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
p.fail{color:#a00;font-weight:600}
@media print{
body{max-width:none;margin:0;padding:0;font-size:10pt}
.tw{overflow:visible}
section,figure,table,tr{break-inside:avoid}
h2{break-after:avoid}
figure svg,figure img{max-width:100%;border:none}
td.v-holds,td.v-weaker,td.v-does-not-hold,td.v-not-tested{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def _vclass(level: str) -> str:
    return "v-" + level.replace(" ", "-") if level in V.LEVELS else ""


def _html_table(s: Section) -> str:
    out = ["<div class='tw'><table>"]
    cols = s.columns
    if any(c.group for c in cols):
        out.append("<tr>")
        j = 0
        while j < len(cols):
            k = j
            while k + 1 < len(cols) and cols[k + 1].group == cols[j].group:
                k += 1
            out.append(f'<th colspan="{k - j + 1}">{html.escape(cols[j].group)}</th>')
            j = k + 1
        out.append("</tr>")
    out.append("<tr>" + "".join(f'<th class="{"l" if c.align == "<" else ""}">{html.escape(c.header)}</th>'
                                for c in cols) + "</tr>")
    for r in s.rows:
        kind = r.get("_kind", "ours")
        if kind == "head":
            level = r.get("verdict", "")
            vcell = f'<td class="l {_vclass(level)}">{html.escape(level)}</td>' if level else ""
            span = len(cols) - (1 if level else 0)
            out.append(f'<tr class="head"><td colspan="{span}">{html.escape(str(r.get("_text", "")))}</td>'
                       f"{vcell}</tr>")
            continue
        cells = []
        for c in cols:
            v = str(r.get(c.key, ""))
            cls = ["l"] if c.align == "<" else []
            if c.key == "verdict" and v:
                cls.append(_vclass(v))
            cells.append(f'<td class="{" ".join(cls)}">{html.escape(v)}</td>')
        out.append(f'<tr class="{kind}">' + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _svg(fig: Any, n: int, fast: bool = True) -> str:
    """``fig`` as an inline ``<svg>`` element: text kept as text (selectable, measurable), ids
    salted per figure so several figures on one page never share a clip path."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"bandscope-figure-{n}"}):
        text = figure_svg(fig, fast=fast)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)
    return text


def _png(fig: Any, dpi: float) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure_html(spec: Any, n: int, fmt: str, dpi: float, on_error: Callable | None,
                 drawn: dict | None = None) -> str:
    """One ``<figure>`` of ``spec`` (or the failure line). ``drawn``: kind → the last figure of
    that kind, already rendered, which a spec of the same kind draws on again (``spec.draw_on``)
    instead of making a new one; updated here."""
    cap = html.escape(spec.caption)
    kind = getattr(spec, "kind", "") if drawn is not None else ""
    drawn = {} if drawn is None else drawn
    try:
        before = drawn.pop(kind, None) if kind else None
        draw_on = getattr(spec, "draw_on", None)
        fig = draw_on(before) if before is not None and draw_on is not None else spec.draw()
        if fmt == "svg":
            body = _svg(fig, n)
            body = body.replace("<svg ", f"<svg role='img' aria-label='{cap}' data-figure='{html.escape(spec.name)}' ",
                                1)
        else:
            data = _png(fig, dpi)
            body = f"<img alt='{cap}' data-figure='{html.escape(spec.name)}' src='data:image/png;base64,{data}'>"
    except ImportError:
        raise
    except Exception as exc:  # a figure that fails must not lose the report: say which and why
        if on_error is not None:
            on_error(spec.name, exc)
        return (f"<p class='fail'>Figure {html.escape(spec.name)} could not be drawn: "
                f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>")
    if kind:
        drawn[kind] = fig
    return f"<figure>{body}<figcaption>{cap}</figcaption></figure>"


def _html_section(s: Section, figs: list[str]) -> str:
    parts = [f'<section id="{html.escape(s.key)}">', f"<h2>{html.escape(s.title)}</h2>",
             f'<p class="sub">{html.escape(s.subtitle)}</p>']
    if s.columns:
        parts.append(_html_table(s))
    if s.legend:
        parts.append("<dl>" + "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(TERMS[t])}</dd>"
                                      for t in s.legend) + "</dl>")
    for n in s.notes:
        parts.append(f"<p>{html.escape(n)}</p>")
    parts += figs
    parts.append("</section>")
    return "\n".join(parts)


def _reasons_html(ctx: Any) -> str:
    vt = ctx.tables.verdicts(ctx.window)
    rows = ["<div class='tw'><table><tr><th class='l'>test</th><th class='l'>verdict</th><th class='l'>why</th>"
            "<th class='l'>paper verdict</th><th class='l'>why</th></tr>"]
    for test, r in vt.iterrows():
        rows.append(f"<tr><td class='l'>{html.escape(str(test))}</td>"
                    f"<td class='l {_vclass(r['verdict'])}'>{html.escape(r['verdict'])}</td>"
                    f"<td class='l why'>{html.escape(r['reason'])}</td>"
                    f"<td class='l {_vclass(r['paper verdict'])}'>{html.escape(r['paper verdict'])}</td>"
                    f"<td class='l why'>{html.escape(r['paper reason'])}</td></tr>")
    rows.append("</table></div>")
    rules = (f"holds: the predicted sign and a magnitude beyond the thresholds (median ΔBIC ≤ "
             f"-{V.DBIC_EVIDENCE:g}, R² ≥ {V.R2_HOLDS}, ΔBIC(n/10) < 0; |ρ| beyond chance for the "
             f"number of bands at one-sided {V.RHO_ALPHA:g}, three quarters of the runs on the "
             f"predicted side); weaker: the predicted sign but below a threshold; does not hold: "
             f"zero or the opposite sign, the Weibull winning at most half the fits, or R² < "
             f"{V.R2_FAILS}.")
    return ("<section id='reasons'><h2>Why each verdict</h2>"
            f"<p>{html.escape(rules)}</p>" + "\n".join(rows) + "</section>")


def to_html(results: Any, window: str | None = None, *, title: str = "bandscope report", header: str = "",
            figures: bool = True, max_runs: int = 3, dpi: float = 100, view: str | None = None, tables: Any = None,
            forecasts: dict | None = None, figure_format: str = "svg",
            on_figure_error: Callable | None = None) -> str:
    """The report as one self-contained HTML page.

    Parameters
    ----------
    results : xarray.Dataset or ReportContext
        From :func:`bandscope.analyze` (or a :class:`~bandscope.report.sections.ReportContext`).
    window : str, optional
        The primary window (default the first).
    view : "own" or "paper"
        The runs alone (default) or against the key-search paper (verdicts, paper rows, the
        reasons of every verdict).
    tables : ReportTables, optional
        The tables already computed for ``results`` (reused, not recomputed).
    forecasts : dict, optional
        Run → forecast Dataset: adds the forecast section and figures.
    figures : bool
        False (or matplotlib missing) leaves the figures out with a note.
    figure_format : "svg" or "png"
        Inline SVG (vector; default) or base64 PNG at ``dpi``.
    max_runs : int
        Per-run figures (and full-loss panels) for the first ``max_runs`` runs (default 3;
        ``write_figures`` and ``--plots`` draw every run).
    on_figure_error : callable, optional
        ``on_figure_error(name, exc)`` for each figure that fails to draw (the page then says
        which figure failed; the rest of the report is unaffected).
    """
    if figure_format not in FIGURE_FORMATS:
        raise ValueError(f"figure_format {figure_format!r}: choose one of {FIGURE_FORMATS}")
    ctx = report_context(results, window, view=view, tables=tables, forecasts=forecasts, max_runs=max_runs)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if header:
        body.append("<p>" + "<br>".join(html.escape(x) for x in header.strip().splitlines()) + "</p>")
    note = None
    if figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            note = "No figures: figures need matplotlib: pip install 'bandscope[plot]'"
            figures = False
    if note:
        body.append(f"<p>{html.escape(note)}</p>")
    n = 0
    drawn: dict = {}   # per-run figures of one kind are drawn on the previous one's Axes
    with shared_text_metrics():   # each tick label (and other text) of the page measured once
        for s in sections(ctx):
            figs = []
            if figures:
                for spec in s.figures:
                    figs.append(_figure_html(spec, n, figure_format, dpi, on_figure_error, drawn))
                    n += 1
            if s.columns or figs or s.notes:
                body.append(_html_section(s, figs))
    if ctx.compare:
        body.append(_reasons_html(ctx))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_minify(CSS)}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _minify(css: str) -> str:
    return re.sub(r"\n", "", css)


def write_html(results: Any, path: str | Path, window: str | None = None, **kw: Any) -> Path:
    """Write :func:`to_html` to ``path`` (UTF-8, atomically: :func:`bandscope.io.atomic.write_text_atomic`)
    and return the path."""
    from ..io.atomic import write_text_atomic

    return write_text_atomic(path, to_html(results, window, **kw))
