"""The spectral-reach section of the report: its tables, as text, HTML and JSON.

Reads a results Dataset of :func:`bandscope.lnp.reach.reach_analysis` (it never computes an LNP
number): :func:`reach_tables` builds the three tables once (per run, by model size, the
size-ordering tests), and :func:`format_reach_text`, :func:`reach_html_section`,
:func:`reach_to_html` and :func:`reach_to_dict` only format them. Every table says which P it
shows: P_AB, the held-out cross position, is the quantity of spectral reach Figure 1
(appendix B.2.1); P is the self position of the training batch.
"""
from __future__ import annotations

import base64
import html
import io as _io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["WHICH_P", "reach_tables", "format_reach_text", "reach_html_section", "reach_to_html",
           "write_reach_html", "reach_to_dict", "write_reach_json", "insert_section"]

WHICH_P = ("Which P: P_AB is the held-out cross position (step on batch A = the training batch, loss read on "
           "batch B = held-out sequences), the quantity of spectral reach Figure 1 (appendix B.2.1); P is the "
           "self position of batch A. They are linked exactly by P_AB = cos(∇L_A, ∇L_B) · sqrt(P · P_B), "
           "cos being the cosine between the training and held-out gradients.")

#: per-run columns: results variable -> column title
_RUN_COLUMNS = {
    "n_parameters": "params",
    "heldout_loss_final": "held-out loss",
    "spectral_position_cross_last_mean": "P_AB last",
    "spectral_position_cross_last_sd": "± sd",
    "spectral_position_cross_late_slope": "P_AB slope",
    "spectral_position_last_mean": "P last",
    "spectral_position_last_sd": "± sd ",
    "spectral_position_late_slope": "P slope",
    "gradient_cosine_last_mean": "cos last",
    "network_scale_norm_last_mean": "N~ last",
    "loss_scale_norm_last_mean": "L~ last",
    "probe_ratio_median": "probe ratio",
    "probe_ratio_bins_below_1": "bins < 1",
}
_SIZE_COLUMNS = ("heldout_loss_final", "spectral_position_cross_last_mean", "spectral_position_last_mean",
                 "spectral_position_cross_late_slope", "spectral_position_late_slope", "gradient_cosine_last_mean",
                 "probe_ratio_median")


def _size_titles() -> dict:
    out = {}
    for c in _SIZE_COLUMNS:
        out[c] = _RUN_COLUMNS.get(c, c).strip()
        out[f"{c}_sd"] = "sd"
    out["probe_ratio_median"] = "probe ratio"
    return out


def _g(x: Any, sig: int = 3) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{float(x):.{sig}g}"


def reach_tables(results: xr.Dataset) -> dict[str, pd.DataFrame]:
    """The section's tables, built once: ``runs`` (one row per run, ascending size),
    ``sizes`` (mean and sd over the runs of each size) and ``ordering`` (the exact permutation
    tests). Column names are results variable names (see ``docs/format.md``)."""
    runs = pd.DataFrame({v: results[v].values for v in _RUN_COLUMNS if v in results},
                        index=pd.Index([str(r) for r in results["run"].values], name="run"))
    if "probe_ratio_bins" in results:
        runs["probe_ratio_bins_below_1"] = [f"{int(a)}/{int(b)}" if np.isfinite(a) and np.isfinite(b) else "–"
                                            for a, b in
                                            zip(results["probe_ratio_bins_below_1"].values,
                                                results["probe_ratio_bins"].values)]
    runs = runs.sort_values("n_parameters", kind="stable")
    cols = [c for c in _SIZE_COLUMNS if c in results["quantity"].values]
    sizes = pd.DataFrame({"runs": results["size_n_runs"].values},
                         index=pd.Index(results["size"].values, name="n_parameters"))
    for c in cols:
        sizes[c] = results["size_mean"].sel(quantity=c).values
        sizes[f"{c}_sd"] = results["size_sd"].sel(quantity=c).values
    ordering = pd.DataFrame({
        "alternative": results["ordering_alternative"].values,
        "rho": results["ordering_rho"].values, "p_value": results["ordering_p_value"].values,
        "n_assignments": results["ordering_n_assignments"].values,
        "n_as_extreme": results["ordering_n_as_extreme"].values,
        "n_runs": results["ordering_n_runs"].values, "n_sizes": results["ordering_n_sizes"].values,
    }, index=pd.Index([str(o) for o in results["ordering"].values], name="quantity"))
    return {"runs": runs, "sizes": sizes, "ordering": ordering}


def _text_table(df: pd.DataFrame, titles: dict | None = None) -> list[str]:
    titles = titles or {}
    head = [df.index.name or ""] + [titles.get(c, c) for c in df.columns]
    rows = [[str(i)] + [_g(v) for v in row] for i, row in zip(df.index, df.itertuples(index=False))]
    width = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)  # noqa: E731
                                  for j, (c, w) in enumerate(zip(cells, width)))
    return [fmt(head), "  ".join("-" * w for w in width), *(fmt(r) for r in rows)]


def _captions(results: xr.Dataset) -> dict[str, str]:
    k = results.attrs.get("last_k", 3)
    starts = str(results.attrs.get("slope_start", "a tenth of the last LNP step"))
    return {
        "runs": (f"Per run: 'last' = mean of the last {k} window means (± their sd); 'slope' = d log Q / d log step "
                 f"of the window means from step {starts} on (about 0 once Q has flattened out); cos = "
                 "cos(∇L_A, ∇L_B); N~, L~ = normalised network and loss scales (A.2); probe ratio = median over "
                 "τ bins of <P_trained>_τ / <P_random>_τ (§5.1, Eq. 12; below 1: the trained backbone reaches "
                 "lower P) with the bins below 1."),
        "sizes": "By model size (runs grouped by n_parameters): mean over the runs of each size, each followed by "
                 "the sd over those runs.",
        "ordering": ("Size ordering: Spearman ρ between n_parameters (seeds tied) and the per-run quantity, with "
                     "the exact one-sided permutation p-value over all assignments of the runs to the size groups "
                     "(spectral reach §4 predicts ρ < 0 for P_AB: larger models reach lower P). cos has no "
                     "predicted direction (two-sided)."),
    }


def format_reach_text(results: xr.Dataset, header: str = "") -> str:
    """The spectral-reach section as plain text (three tables with their captions)."""
    t, cap = reach_tables(results), _captions(results)
    n_runs, n_sizes = results.sizes["run"], results.sizes["size"]
    out = [header.strip(), ""] if header else []
    out += [f"Spectral reach (LNP) of {n_runs} runs in {n_sizes} model sizes", "", WHICH_P, ""]
    out += [cap["runs"], "", *_text_table(t["runs"], _RUN_COLUMNS), ""]
    out += [cap["sizes"], "", *_text_table(t["sizes"], _size_titles()), ""]
    out += [cap["ordering"], "", *_text_table(t["ordering"]), ""]
    return "\n".join(out)


def _html_table(df: pd.DataFrame, titles: dict | None = None) -> str:
    titles = titles or {}
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in [df.index.name or ""] +
                   [titles.get(c, c) for c in df.columns])
    rows = "".join("<tr><td>" + html.escape(str(i)) + "</td>" + "".join(
        f"<td class='num'>{html.escape(_g(v))}</td>" for v in row) + "</tr>"
        for i, row in zip(df.index, df.itertuples(index=False)))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _png(fig: Any, dpi: float) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def reach_html_section(results: xr.Dataset, *, figures: bool = True, dpi: int = 80) -> str:
    """The section as one HTML ``<section id='spectral-reach'>``: tables, captions and the figures of
    :mod:`bandscope.report.lnp_figures` as base64 PNG (left out, with a note, without matplotlib)."""
    t, cap = reach_tables(results), _captions(results)
    body = ["<section id='spectral-reach'><h2>Spectral reach (LNP)</h2>",
            f"<p>{html.escape(WHICH_P)}</p>"]
    for key, titles in (("runs", _RUN_COLUMNS), ("sizes", _size_titles()), ("ordering", None)):
        body += [f"<p>{html.escape(cap[key])}</p>", _html_table(t[key], titles)]
    if figures:
        try:
            from . import lnp_figures as lf

            figs = [("Spectral reach Figure 1 layout: loss (top) and the held-out cross position P_AB (bottom) "
                     "over training, by model size.", lf.plot_reach(results)[0].figure),
                    ("LNP components over training by model size: normalised loss and network scales, gradient "
                     "cosine, P, P_AB, P_B (window means).", lf.plot_lnp_components(results).ravel()[0].figure)]
            if "probe_ratio" in results:
                figs.append(("Linear probes (§5.1): <P_trained>_τ / <P_random>_τ over normalised time.",
                             lf.plot_probe_ratio(results).figure))
        except ImportError as exc:
            body.append(f"<p>No figures: {html.escape(str(exc))}</p>")
        else:
            for caption, fig in figs:
                body.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
                            f"{_png(fig, dpi)}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    body.append("</section>")
    return "\n".join(body)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}")


def reach_to_html(results: xr.Dataset, *, title: str = "bandscope spectral reach", header: str = "",
                  figures: bool = True, dpi: int = 80) -> str:
    """A self-contained HTML page holding only the spectral-reach section."""
    head = f"<p>{html.escape(header)}</p>" if header else ""
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>{head}\n{reach_html_section(results, figures=figures, dpi=dpi)}\n"
            "</body></html>\n")


def insert_section(page: str, section: str) -> str:
    """``page`` (a whole HTML document) with ``section`` inserted before its ``</body>``."""
    i = page.rfind("</body>")
    if i < 0:
        raise ValueError("the page has no </body> to insert the section before")
    return page[:i] + section + "\n" + page[i:]


def write_reach_html(results: xr.Dataset, path: str | Path, **kw: Any) -> Path:
    """Write :func:`reach_to_html` to ``path`` (UTF-8, atomically) and return the path."""
    from ..io.atomic import write_text_atomic

    return write_text_atomic(path, reach_to_html(results, **kw))


def _num(x: Any) -> Any:
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, str):
        return x
    x = float(x)
    return x if math.isfinite(x) else None


def reach_to_dict(results: xr.Dataset) -> dict:
    """The section as JSON-ready data (NaN as None): ``which_p``, ``runs`` (per-run scalars and the
    window means of each quantity with their ``window_step``), ``sizes`` and ``ordering``."""
    per_run = {}
    window_vars = [v for v in results.data_vars if results[v].dims == ("run", "lnp_window")]
    scalars = [v for v in results.data_vars if results[v].dims == ("run",)]
    for run in results["run"].values:
        r = results.sel(run=run)
        entry = {v: _num(r[v].values) for v in scalars}
        entry["window_step"] = [_num(x) for x in r["window_step"].values]
        entry["windows"] = {v: [_num(x) for x in r[v].values] for v in window_vars}
        if "probe_ratio" in results:
            entry["probe_ratio"] = [_num(x) for x in r["probe_ratio"].values]
        per_run[str(run)] = entry
    t = reach_tables(results)
    return {
        "format": results.attrs.get("bandscope_results", ""),
        "which_p": WHICH_P,
        "runs": per_run,
        "time_bin": [_num(x) for x in results["time_bin"].values] if "time_bin" in results.coords else [],
        "sizes": {str(int(n)): {c: _num(v) for c, v in row.items()} for n, row in t["sizes"].iterrows()},
        "ordering": {q: {c: _num(v) for c, v in row.items()} for q, row in t["ordering"].iterrows()},
    }


def write_reach_json(results: xr.Dataset, path: str | Path) -> Path:
    """Write :func:`reach_to_dict` as JSON to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reach_to_dict(results), indent=1, allow_nan=False), encoding="utf-8")
    return path
