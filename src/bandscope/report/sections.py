"""The report as data: a list of :class:`Section` (title, subtitle, columns, rows of text cells,
legend, notes, figures), built from one :class:`~bandscope.report.tables.ReportTables` and
assembled from a registry of section builders, so a module can add a section of its own.

Two views of one analysis (``docs/report.md``):

- ``"own"`` -- the runs alone: an overview of the runs with the loss over training, the fits,
  the ordering, the full loss, saturation, γ, forecasts when given; no paper rows, no verdicts;
- ``"paper"`` -- the runs against the key-search paper: the verdicts first, and under each of
  our rows the paper's row (``docs/report.md``, "Verdict rules").

Adding a section: ``register_section("lnp", build, views=("own", "paper"), order=75)`` where
``build(ctx)`` takes a :class:`ReportContext` and returns a :class:`Section`, a list of them, or
None when the section does not apply (e.g. the runs carry no LNP statistics). A builder only
formats: its numbers come from ``ctx.tables`` (or the results), it never fits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..keysearch.ordering import METRICS
from . import paper, tables
from . import verdict as V
from .numfmt import DASH, fmt_int, fmt_r2, fmt_range, fmt_rho, fmt_sig, fmt_signed
from .tables import ReportTables, _primary

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["TERMS", "VIEWS", "Column", "Section", "FigureSpec", "ReportContext", "report_context",
           "register_section", "registered_sections", "sections", "literal", "plural"]

VIEWS = ("own", "paper")
"""The report's views: the runs alone, and the runs against the paper."""

WIDTH = 100
"""Longest printed line."""

TERMS = {
    "source": "ours = the runs analysed here; paper = key search's 12 CelebA runs, value as "
              "printed there (— where it gives none).",
    "band": "Haar band resolution r: 1 is the coarsest band (the image mean), each next band "
            "doubles the resolution (A.6).",
    "R²": "median over runs of the Weibull fit's R² on the residual R_i(s) = L_i(s) - L_i^∞ "
          "in the active window, linear scale (§5.2).",
    "β": "median Weibull shape in R = A exp(-((s - s_start)/ω)^β): 1 is the exponential, > 1 a "
         "slow start then faster decay, < 1 fast then slower (Figure 2).",
    "ΔBIC": "median BIC_Weibull - BIC_exponential (A.11); negative favours the Weibull, "
            "|ΔBIC| > 2 is evidence.",
    "wins": "runs with ΔBIC < 0 (Weibull preferred) / runs fitted.",
    "ΔBIC n/10": "median ΔBIC with the BIC's sample size deflated to n_eff = n/10 for "
                 "correlated checkpoints (B.2); undefined (—) for windows of ≤ 10 checkpoints.",
    "wins n/10": "runs with ΔBIC(n/10) < 0 / runs where it is defined.",
    "ΔBIC acf": "median ΔBIC with n_eff estimated from the autocorrelation of the Weibull fit's "
                "residuals, n / (1 + 2 Σ ρ_k); not in the paper. At windows of tens of checkpoints "
                "that n_eff is biased towards n, so this leans towards the undeflated ΔBIC "
                "(docs/analysis.md).",
    "runs": "runs whose fit converged and enter the medians (in a row 'all': run-band fits).",
    "verdict": "the rule of bandscope.report.verdict for this row (docs/report.md); on a paper row, "
               "the same rule applied to the paper's values.",
    "metric": "per-band descriptor: onset τ_i = c_i(0.95), width w_i = c_i(0.01) - c_i(0.95) "
              "(parameter time), floor L_i^∞, initial residual R_i(s_0) (§6.2).",
    "median ρ": "median over runs of the within-run Spearman ρ between band resolution and "
                "the descriptor; the sign in brackets is the predicted one.",
    "IQR": "25th and 75th percentiles of ρ across runs.",
    "min–max": "smallest and largest ρ across runs.",
    "window": "active-window thresholds HI/LO: a band's fit uses the saved checkpoints "
              "between its HI and LO crossings of q_i = R_i/R_i(s_0) (§5.1).",
    "exp R²": "median R² of the exponential (β = 1) fit to the same data.",
    "band-sum R²": "median R² of the sum of the per-band Weibull fits against R_tot on all "
                   "checkpoints (§6.3).",
    "drift %": "floor-window drift: (max - min of L_i over the last k checkpoints) / (max - "
               "min of L_i over the run) × 100; median and largest across runs.",
    "trend %": "median steady fall over the floor window (least-squares line in parameter "
               "time), same units; negative = still falling.",
    "noise %": "median checkpoint-to-checkpoint scatter over the last 2k+2 checkpoints, same "
               "units.",
    "floor diff %": "median difference between the mean-of-last-k and the final-checkpoint "
                    "floors (A.9), % of range.",
    "unsaturated": "runs whose band drifts ≥ the saturation tolerance over the floor window "
                   "/ all runs.",
    "epoch window": "the raw-time range of the fit s(t) ≈ a + b t^γ, in epochs (A.7).",
    "arch": "architecture of the runs.",
    "γ": "median exponent γ of s(t) ≈ a + b t^γ.",
    "γ R²": "median R² of that fit.",
    "test": "what is compared; 'ours' and 'paper' give the numbers the verdict is decided on.",
    "ours": "these runs.",
    "paper": "the paper's published value (bandscope.report.paper names each one's table).",
}


TERMS.update({
    "run": "the run's name (its file stem, or the folder of a run.nc).",
    "checkpoints": "saved checkpoints of the run (rows of its log).",
    "steps": "optimiser steps of the first and the last checkpoint.",
    "s final": "parameter time s at the last checkpoint (L2 distance travelled in parameter space).",
    "final loss": "Σ_i L_i at the last checkpoint: the panel MSE (band losses sum to it).",
    "status": "ok, or why the forecast is NaN (docs/forecast.md: too_few_checkpoints, rising, "
              "not_started, failed).",
    "prefix": "checkpoints the forecast saw / checkpoints of the run.",
    "floor [95%]": "forecast floor L∞ and its interval (docs/forecast.md).",
    "s_reach [95%]": "forecast parameter time at which the removable loss is down to the level "
                     "(default 1 %), and its interval; inf = not bounded by the data yet.",
    "floor now": "the floor measured on the whole run (mean of the last k checkpoints), when the "
                 "run is longer than the forecast's prefix.",
})


def literal(text: Any) -> str:
    r"""A user's string (run name, file name, attribute) made safe for a one-line table cell:
    every character kept, except that control characters (newline, tab, ...) are written as
    their Python escapes, so a cell never breaks a line.

    >>> literal("a$b<c>&{d}%")
    'a$b<c>&{d}%'
    >>> literal("two\nlines")
    'two\\nlines'
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in s)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 run"``, ``"2 runs"``.

    >>> plural(1, "run"), plural(12, "run"), plural(2, "checkpoint window", "checkpoint windows")
    ('1 run', '12 runs', '2 checkpoint windows')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


@dataclass
class Column:
    """A table column: the key of its cells, its header, alignment and optional group label
    (printed once above the columns that share it)."""

    key: str
    header: str
    align: str = ">"
    group: str = ""


@dataclass
class FigureSpec:
    """A figure of a section: a file-name stem, a caption, and ``draw()`` returning a
    :class:`matplotlib.figure.Figure` (called only when the figure is rendered: text reports
    never import matplotlib).

    Optional: ``kind`` names figures drawn by the same function for different runs, and
    ``draw_on(fig)`` draws this one on ``fig``, the figure of the previous spec of the same
    kind once it has been rendered (:func:`bandscope.report.figures.draw_again`); the HTML
    page uses it so per-run figures do not make their Axes and ticks anew.
    """

    name: str
    caption: str
    draw: Callable
    kind: str = ""
    draw_on: Callable | None = None


@dataclass
class Section:
    """One titled table of the report.

    ``rows`` are dicts of text cells keyed by column key; the special key ``"_kind"`` marks a
    row ``"paper"`` (the paper's values), ``"head"`` (a heading row spanning the table, text in
    ``"_text"``) or ``"ours"`` (default). ``legend`` holds (term, explanation) pairs, each term
    explained in the first section it appears in; ``notes`` are sentences printed after it;
    ``figures`` (:class:`FigureSpec`) are drawn in the HTML report, after the table.
    """

    key: str
    title: str
    subtitle: str
    columns: list
    rows: list
    legend: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    figures: list = field(default_factory=list)


# ----------------------------------------------------------------------------- building


def _paper_txt(p: Any) -> str:
    return p.text if p is not None else DASH


def _verdict_cell(level: str) -> str:
    return level or ""


def _section_verdicts(ctx: ReportContext) -> Section:
    results, w, T = ctx.results, ctx.window, ctx.tables
    vt = T.verdicts(w)
    b2 = T.b2(w)
    d = f"n/{float(results.attrs.get('deflation', 10.0)):g}"
    fl = T.full_loss(w)
    t62 = T.ordering(w)
    primary = w == paper.PRIMARY_WINDOW
    rows = []

    def head(text: str, level: str) -> None:
        rows.append({"_kind": "head", "_text": text, "verdict": level})

    def row(test: str, ours: str, theirs: str, level: str = "") -> None:
        rows.append({"test": test, "ours": ours, "paper": theirs, "verdict": level})

    band_rows = [t for t in vt.index if t.startswith("band ")]
    n_hold = int((vt.loc[band_rows, "verdict"] == V.HOLDS).sum())
    p_band = [f"band {b}" for b in paper.BANDS]
    p_hold = sum(V.weibull_verdict(paper.BAND_FITS[b]["r2"].value, paper.BAND_FITS[b]["delta_bic"].value,
                                   paper.BAND_FITS[b]["wins"].text, paper.BAND_FITS[b]["delta_bic_neff"].value,
                                   neff_expected=True).level == V.HOLDS for b in paper.BANDS)
    o = b2.loc["overall"]
    pa = paper.ALL_BAND_FITS
    head("1  Per-band residuals are Weibull curves (§6.1)",
         vt.loc["all band fits", "verdict"])
    row("all band fits: median R²", fmt_r2(o["median R²"]), pa["r2"].text if primary else DASH)
    row("  median ΔBIC, Weibull wins", f"{fmt_signed(o['median ΔBIC'])}  {o['wins (ΔBIC<0)']}",
        f"{pa['delta_bic'].text}  {pa['wins'].text}" if primary else DASH)
    row("  the same at n_eff = n/10",
        f"{fmt_signed(o[f'median ΔBIC ({d})'])}  {o[f'wins ({d})']}",
        f"{pa['delta_bic_neff'].text}  {pa['wins_neff'].text}" if primary else DASH)
    row("  bands where the rule holds", f"{n_hold} of {len(band_rows)}",
        f"{p_hold} of {len(p_band)}" if primary else DASH)
    levels = [vt.loc[m, "verdict"] for m in METRICS]
    head("2  Bands are ordered coarse to fine (§6.2), median ρ", _combine(levels))
    for m in METRICS:
        p = paper.ORDERING.get((m, w))
        sign = "+" if V.EXPECTED_SIGN[m] > 0 else "-"
        row(f"{tables.METRIC_NAMES[m]} (expected {sign})", fmt_rho(t62.loc[tables.METRIC_NAMES[m], "median ρ"]),
            _paper_txt(p["median"] if p else None), vt.loc[m, "verdict"])
    f = fl.loc["overall"]
    pf = paper.FULL_LOSS["overall"]
    head("3  The full-loss residual is one Weibull (§6.3)", vt.loc["full loss", "verdict"])
    row("full loss: median R²", fmt_r2(f["median R²"]), pf["r2"].text)
    row("  median ΔBIC, Weibull wins", f"{fmt_signed(f['median ΔBIC'])}  {f['wins (ΔBIC<0)']}",
        pf["delta_bic"].text)
    row("band-sum reconstruction: median R²", fmt_r2(f[f"median band-sum R² ({w})"]),
        pf["band_sum_r2"].text if primary else DASH, vt.loc["band-sum reconstruction", "verdict"])
    for g in fl.index.drop("overall"):
        r = fl.loc[g]
        pg = paper.FULL_LOSS.get(tables.paper_arch(g) or "")
        row(f"{g}: median β, ΔBIC", f"{fmt_sig(r['median β'])}  {fmt_signed(r['median ΔBIC'])}",
            f"{pg['beta'].text}  {pg['delta_bic'].text}" if pg else DASH, vt.loc[f"full loss {g}", "verdict"])
    notes = [
        "A prediction's verdict (its heading row) is that of its first test for 1 and 3, and "
        "the weakest of the four descriptors for 2. Per-band verdicts are in the next table; "
        "every reason is in the JSON summary (table_verdicts) and the HTML report.",
    ]
    if not primary:
        notes.append(f"The paper reports most values only for the window {paper.PRIMARY_WINDOW}; "
                     f"this report's primary window is {w}, so those are shown as —.")
    return Section(
        "verdicts", "Verdicts: the paper's three predictions tested on these runs",
        f"key search §4.1 predictions, tested as in §6 and appendix B · window {w}",
        [Column("test", "test", "<"), Column("ours", "ours", "<"), Column("paper", "paper", "<"),
         Column("verdict", "verdict", "<")],
        rows, legend=["test", "ours", "paper", "verdict"], notes=notes)


def _combine(levels: Any) -> str:
    """The weakest verdict among ``levels`` (not tested only if all are)."""
    tested = [lv for lv in levels if lv != V.UNTESTED]
    if not tested:
        return V.UNTESTED
    for lv in (V.FAILS, V.WEAKER):
        if lv in tested:
            return lv
    return V.HOLDS


def _section_band_fits(ctx: ReportContext) -> Section:
    results, w, T = ctx.results, ctx.window, ctx.tables
    b2 = T.b2(w)
    vt = T.verdicts(w)
    d = f"n/{float(results.attrs.get('deflation', 10.0)):g}"
    primary = w == paper.PRIMARY_WINDOW
    ours_bands = [int(b) for b in b2.index.drop("overall")]
    bands = sorted(set(ours_bands) | (set(paper.BANDS) if primary and ctx.compare else set()))
    rows = []
    for label in [*bands, "all"]:
        key = str(label) if label != "all" else "overall"
        test = f"band {label}" if label != "all" else "all band fits"
        if key in b2.index:
            r = b2.loc[key]
            rows.append({"band": str(label), "source": "ours", "R²": fmt_r2(r["median R²"]),
                         "β": fmt_sig(r["median β"]), "ΔBIC": fmt_signed(r["median ΔBIC"]),
                         "wins": r["wins (ΔBIC<0)"], "ΔBIC n/10": fmt_signed(r[f"median ΔBIC ({d})"]),
                         "wins n/10": r[f"wins ({d})"], "ΔBIC acf": fmt_signed(r["median ΔBIC (n_eff acf)"]),
                         "runs": fmt_int(r["fitted runs"]),
                         "verdict": vt.loc[test, "verdict"]})
        else:
            rows.append({"band": str(label), "source": "ours", "R²": DASH, "β": DASH, "ΔBIC": DASH,
                         "wins": DASH, "ΔBIC n/10": DASH, "wins n/10": DASH, "ΔBIC acf": DASH, "runs": "0",
                         "verdict": V.UNTESTED})
        p = (paper.ALL_BAND_FITS if label == "all" else paper.BAND_FITS.get(label)) if primary else None
        if p is not None:
            rows.append({"_kind": "paper", "band": "", "source": "paper", "R²": p["r2"].text,
                         "β": _paper_txt(p.get("beta")), "ΔBIC": p["delta_bic"].text,
                         "wins": p["wins"].text, "ΔBIC n/10": p["delta_bic_neff"].text,
                         "wins n/10": p["wins_neff"].text, "ΔBIC acf": DASH,
                         "runs": str(paper.N_RUNS * paper.N_BANDS if label == "all" else paper.N_RUNS),
                         "verdict": vt.loc[test, "paper verdict"] if test in vt.index else
                         V.weibull_verdict(p["r2"].value, p["delta_bic"].value, p["wins"].text,
                                           p["delta_bic_neff"].value, neff_expected=True).level})
    cols = [Column("band", "band"), Column("source", "source", "<"), Column("R²", "R²"),
            Column("β", "β"), Column("ΔBIC", "ΔBIC"), Column("wins", "wins"),
            Column("ΔBIC n/10", f"ΔBIC {d}"), Column("wins n/10", f"wins {d}"),
            Column("ΔBIC acf", "ΔBIC acf"), Column("runs", "runs"), Column("verdict", "verdict", "<")]
    return Section("band_fits", "Per-band Weibull vs exponential fits: medians across runs",
                   f"paper §6.1 and Table B.2 · window {w} · 'all' = every run-band fit",
                   cols, rows, legend=["band", "source", "R²", "β", "ΔBIC", "wins", "ΔBIC n/10",
                                       "wins n/10", "ΔBIC acf", "runs", "verdict"])


def _section_ordering(ctx: ReportContext) -> Section:
    w, T = ctx.window, ctx.tables
    t = T.ordering(w)
    vt = T.verdicts(w)
    nb = T.n_bands(w)
    rows = []
    for m in METRICS:
        r = t.loc[tables.METRIC_NAMES[m]]
        sign = "+" if V.EXPECTED_SIGN[m] > 0 else "-"
        rows.append({"metric": f"{tables.METRIC_NAMES[m]} ({sign})", "source": "ours",
                     "median ρ": fmt_rho(r["median ρ"]), "IQR": fmt_range(r["IQR low (q25)"], r["IQR high (q75)"]),
                     "min–max": fmt_range(r["min"], r["max"]), "runs": fmt_int(r["runs"]),
                     "verdict": vt.loc[m, "verdict"]})
        p = paper.ORDERING.get((m, w))
        if p is not None:
            rows.append({"_kind": "paper", "metric": "", "source": "paper", "median ρ": p["median"].text,
                         "IQR": f"[{p['q25'].text}, {p['q75'].text}]",
                         "min–max": f"[{p['min'].text}, {p['max'].text}]", "runs": str(paper.N_RUNS),
                         "verdict": vt.loc[m, "paper verdict"]})
    crit = V.spearman_critical(nb)
    chance = (f"Chance level: with {nb} bands a random band order gives ρ ≥ {fmt_sig(crit)} with "
              f"probability ≤ {V.RHO_ALPHA:g}")
    cols = [Column("metric", "metric", "<"), Column("source", "source", "<"), Column("median ρ", "median ρ"),
            Column("IQR", "IQR"), Column("min–max", "min–max"), Column("runs", "runs"),
            Column("verdict", "verdict", "<")]
    return Section("ordering", "Band ordering: Spearman ρ between band resolution and each descriptor",
                   f"paper §6.2 (values from Table B.3.2) · window {w}", cols, rows,
                   legend=["metric", "median ρ", "IQR", "min–max", "runs"],
                   notes=[f"{chance}; with the paper's {paper.N_BANDS} bands, ≥ "
                          f"{fmt_sig(V.spearman_critical(paper.N_BANDS))}." if ctx.compare else
                          f"{chance}."])


def _section_full_loss(ctx: ReportContext) -> Section:
    results, w, T = ctx.results, ctx.window, ctx.tables
    fl = T.full_loss(w)
    vt = T.verdicts(w)
    d = f"n/{float(results.attrs.get('deflation', 10.0)):g}"
    rows = []
    for g in fl.index:
        r = fl.loc[g]
        test = "full loss" if g == "overall" else f"full loss {g}"
        rows.append({"_kind": "head", "_text": "all runs" if g == "overall" else f"architecture {g}"})
        rows.append({"source": "ours", "runs": fmt_int(r["runs fitted"]),
                     "R²": fmt_r2(r["median R²"]), "β": fmt_sig(r["median β"]),
                     "ΔBIC": fmt_signed(r["median ΔBIC"]), "wins": r["wins (ΔBIC<0)"],
                     "ΔBIC n/10": fmt_signed(r[f"median ΔBIC ({d})"]), "exp R²": fmt_r2(r["median exp R²"]),
                     "band-sum R²": fmt_r2(r[f"median band-sum R² ({w})"]), "verdict": vt.loc[test, "verdict"]})
        key = "overall" if g == "overall" else tables.paper_arch(g)
        p = paper.FULL_LOSS.get(key or "")
        if p is not None:
            rows.append({"_kind": "paper", "source": "paper",
                         "runs": str(paper.N_RUNS if g == "overall" else paper.N_RUNS // 2),
                         "R²": _paper_txt(p.get("r2")), "β": _paper_txt(p.get("beta")),
                         "ΔBIC": p["delta_bic"].text, "wins": DASH, "ΔBIC n/10": DASH, "exp R²": DASH,
                         "band-sum R²": _paper_txt(p.get("band_sum_r2")) if w == paper.PRIMARY_WINDOW else DASH,
                         "verdict": vt.loc[test, "paper verdict"]})
    cols = [Column("source", "source", "<"), Column("runs", "runs"), Column("R²", "R²"),
            Column("β", "β"), Column("ΔBIC", "ΔBIC"), Column("wins", "wins"),
            Column("ΔBIC n/10", f"ΔBIC {d}"), Column("exp R²", "exp R²"),
            Column("band-sum R²", "band-sum R²"), Column("verdict", "verdict", "<")]
    return Section("full_loss", "Full-loss residual: one Weibull over all checkpoints, and the band-sum",
                   f"paper §6.3 · R_tot = Σ_i R_i fitted over every saved checkpoint · band-sum "
                   f"window {w}", cols, rows,
                   legend=["runs", "R²", "β", "ΔBIC", "wins", "ΔBIC n/10", "exp R²",
                           "band-sum R²", "verdict"],
                   notes=["Here R² and β are those of the single Weibull fitted to R_tot (not a "
                          "per-band median)" + ("; the verdict column judges that fit." if ctx.compare
                                                else ".")])


def _section_saturation(ctx: ReportContext) -> Section:
    results = ctx.results
    t = ctx.tables.saturation()
    rows = []
    for b in t.index:
        r = t.loc[b]
        rows.append({"band": str(b), "median drift %": fmt_sig(r["median drift %"]),
                     "max drift %": fmt_sig(r["max drift %"]),
                     "trend %": fmt_signed(r["median trend %"]) if "median trend %" in t else DASH,
                     "noise %": fmt_sig(r["median noise %"]) if "median noise %" in t else DASH,
                     "floor diff %": fmt_sig(r["median A.9 floor diff %"]),
                     "unsaturated": r["unsaturated runs"]})
    conv = np.asarray(results["floor_convention_diff_pct"].values, dtype=float)
    conv_max = float(np.nanmax(conv)) if np.isfinite(conv).any() else np.nan
    tol = results.attrs.get("saturation_tol_pct", "")
    cols = [Column("band", "band"), Column("median drift %", "drift % (median)"),
            Column("max drift %", "drift % (max)"), Column("trend %", "trend %"),
            Column("noise %", "noise %"), Column("floor diff %", "floor diff %"),
            Column("unsaturated", "unsaturated")]
    k = results.attrs.get("k", "k")
    return Section("saturation", "Saturation: did each band reach its floor before the floor window?",
                   f"our check behind the floors of A.9 · floor window = last {k} checkpoints · "
                   f"tolerance {tol} %", cols, rows,
                   legend=["band", "drift %", "trend %", "noise %", "floor diff %", "unsaturated"],
                   notes=[f"Largest floor-convention difference over all run-band pairs: "
                          f"{fmt_sig(conv_max)} % of range (paper A.9: at most "
                          f"{paper.FLOOR_CONVENTION.text}). An unsaturated band's floor is biased "
                          "up, and with it its crossings, width and residuals."])


def _section_by_window(ctx: ReportContext) -> Section:
    t = ctx.tables.b31()
    windows = list(t.columns.get_level_values("window").unique())
    bands = [int(b) for b in t.index]
    all_bands = sorted(set(bands) | (set(paper.BANDS) if ctx.compare else set()))
    cols = [Column("band", "band"), Column("source", "source", "<")]
    for w in windows:
        for q in ("R²", "β", "ΔBIC"):
            cols.append(Column(f"{w} {q}", q, ">", group=w))
    cols.append(Column("runs", "runs"))
    rows = []
    for b in all_bands:
        row = {"band": str(b), "source": "ours"}
        runs = []
        for w in windows:
            if b in bands:
                r = t.loc[str(b), w] if str(b) in t.index else t.loc[b, w]
                row[f"{w} R²"] = fmt_r2(r["median R²"])
                row[f"{w} β"] = fmt_sig(r["median β"])
                row[f"{w} ΔBIC"] = fmt_signed(r["median ΔBIC"])
                runs.append(fmt_int(r["fitted runs"]))
            else:
                row.update({f"{w} R²": DASH, f"{w} β": DASH, f"{w} ΔBIC": DASH})
                runs.append("0")
        row["runs"] = "/".join(runs)
        rows.append(row)
        prow = {"_kind": "paper", "band": "", "source": "paper"}
        anyp = False
        for w in windows:
            p = paper.BAND_FITS_BY_WINDOW.get((w, b))
            anyp |= p is not None
            prow[f"{w} R²"] = p["r2"].text if p else DASH
            prow[f"{w} β"] = p["beta"].text if p else DASH
            prow[f"{w} ΔBIC"] = p["delta_bic"].text if p else DASH
        prow["runs"] = ""
        if anyp or b in paper.BANDS:
            rows.append(prow)
    return Section("by_window", "Per-band fits under each active window: medians across runs",
                   "paper Table B.3.1 (robustness to the window choice)", cols, rows,
                   legend=["window"],
                   notes=["R², β, ΔBIC, runs as in the per-band table above; runs is given per "
                          "window (first/second/third)." + (" The paper prints — where fewer than five "
                          "checkpoints fall inside the window." if ctx.compare else "")])


def _section_ordering_by_window(ctx: ReportContext) -> Section:
    T = ctx.tables
    t = T.ordering(all_windows=True)
    windows = list(t.index.get_level_values("window").unique())
    rows = []
    for m in METRICS:
        name = tables.METRIC_NAMES[m]
        sign = V.EXPECTED_SIGN[m]
        rows.append({"_kind": "head", "_text": f"{name} (expected {'+' if sign > 0 else '-'})"})
        for w in windows:
            r = t.loc[(name, w)]
            ours = V.ordering_verdict(r["median ρ"], r["IQR low (q25)"], r["IQR high (q75)"],
                                      expected_sign=sign, n_bands=T.n_bands(w))
            rows.append({"window": w, "source": "ours", "median ρ": fmt_rho(r["median ρ"]),
                         "IQR": fmt_range(r["IQR low (q25)"], r["IQR high (q75)"]),
                         "min–max": fmt_range(r["min"], r["max"]), "runs": fmt_int(r["runs"]),
                         "verdict": ours.level})
            p = paper.ORDERING.get((m, w))
            if p is not None:
                pv = V.ordering_verdict(p["median"].value, p["q25"].value, p["q75"].value,
                                        expected_sign=sign, n_bands=paper.N_BANDS)
                rows.append({"_kind": "paper", "window": "", "source": "paper",
                             "median ρ": p["median"].text, "IQR": f"[{p['q25'].text}, {p['q75'].text}]",
                             "min–max": f"[{p['min'].text}, {p['max'].text}]",
                             "runs": str(paper.N_RUNS), "verdict": pv.level})
    cols = [Column("window", "window", "<"), Column("source", "source", "<"),
            Column("median ρ", "median ρ"), Column("IQR", "IQR"), Column("min–max", "min–max"),
            Column("runs", "runs"), Column("verdict", "verdict", "<")]
    return Section("ordering_by_window", "Band ordering under each active window",
                   "paper Table B.3.2 (robustness to the window choice)", cols, rows,
                   notes=["Columns as in the band-ordering table above."])


def _section_gamma(ctx: ReportContext) -> Section:
    t = ctx.tables.a7()
    rows = []
    for (g, a), r in t.iterrows():
        rows.append({"epoch window": g, "arch": a, "source": "ours", "runs": fmt_int(r["runs"]),
                     "γ": fmt_sig(r["median γ"]), "γ R²": fmt_r2(r["median R²"])})
        key = (g, tables.paper_arch(a)) if g != "all checkpoints" else None
        p = paper.GAMMA.get(key) if key else None
        if p is not None:
            rows.append({"_kind": "paper", "epoch window": "", "arch": "", "source": "paper",
                         "runs": p["runs"].text, "γ": p["gamma"].text, "γ R²": p["r2"].text})
    pa = paper.GAMMA[("all checkpoints", "all")]
    cols = [Column("epoch window", "epoch window", "<"), Column("arch", "arch", "<"),
            Column("source", "source", "<"), Column("runs", "runs"), Column("γ", "γ"),
            Column("γ R²", "R²")]
    return Section("gamma", "Parameter time against raw time: s(t) ≈ a + b t^γ",
                   "paper A.7 · three-parameter fit per run, medians over runs", cols, rows,
                   legend=["epoch window", "arch", "γ", "γ R²"],
                   notes=[f"Paper, all checkpoints of all 12 runs: γ = {pa['gamma'].text} "
                          f"(SD {pa['gamma_sd'].text}), R² = {pa['r2'].text} (A.7 text). γ depends "
                          "on the window and the run length, so runs of other lengths differ."]
                   if ctx.compare else ["γ depends on the epoch window and the run length."])



# ----------------------------------------------------------------------------- the runs alone


def _runs_overview(ctx: ReportContext) -> Section:
    """The runs analysed: name, architecture, checkpoints, steps, final parameter time and
    loss; the loss-over-training figure."""
    r = ctx.results
    ok = np.isfinite(np.asarray(r["param_time"].values, dtype=float))
    n_ok = ok.sum(axis=1)
    last = np.maximum(n_ok - 1, 0)
    s = np.asarray(r["param_time"].values, dtype=float)
    loss = np.asarray(r["band_loss"].sum("band", skipna=False).values, dtype=float)
    steps = np.asarray(r["step"].values) if "step" in r else None
    archs = [str(a) for a in r["arch"].values] if "arch" in r.coords else [""] * r.sizes["run"]
    rows = []
    for i, run in enumerate(r["run"].values):
        j = int(last[i])
        rows.append({"run": str(run), "arch": archs[i] or DASH, "checkpoints": str(int(n_ok[i])),
                     "steps": f"{int(steps[i, 0])}–{int(steps[i, j])}" if steps is not None and n_ok[i] else DASH,
                     "s final": fmt_sig(s[i, j]) if n_ok[i] else DASH,
                     "final loss": fmt_sig(loss[i, j]) if n_ok[i] else DASH})
    cols = [Column("run", "run", "<"), Column("arch", "arch", "<"), Column("checkpoints", "checkpoints"),
            Column("steps", "steps"), Column("s final", "s final"), Column("final loss", "final loss")]
    n = r.sizes["run"]
    lu = r["band_loss"].attrs.get("units", "squared pixel value")
    figs = [FigureSpec("loss_curves", "Loss over training: the full loss Σ_i L_i (the panel MSE) of each "
                       "run against optimiser steps and against parameter time.",
                       lambda: _fig().plot_loss_curves(r)[0].figure)]
    return Section("runs", f"The runs: {plural(n, 'run')}, {plural(r.sizes['band'], 'band')}",
                   f"{plural(n, 'run')} analysed · losses in {lu}", cols, rows,
                   legend=["run", "arch", "checkpoints", "steps", "s final", "final loss"], figures=figs)


def _fig() -> Any:
    from . import figures

    return figures


def _per_run_figures(ctx: ReportContext) -> Section:
    """Per run (the first ``ctx.max_runs``): band losses (Figure 1) and band fits (Figure 3)."""
    r = ctx.results
    runs = [str(x) for x in r["run"].values]
    shown = runs[: ctx.max_runs]
    figs = []
    for run in shown:
        figs.append(FigureSpec(f"{run}_band_losses", f"{run}: band losses over parameter time; "
                               "unsaturated bands dashed, the floor window shaded.",
                               lambda run=run: _fig().plot_band_losses(r, run)[0].figure, "band_losses",
                               lambda fig, run=run: _fig().draw_again(fig, _fig().plot_band_losses, r, run)))
        figs.append(FigureSpec(f"{run}_fits", f"{run}: residual per band with its Weibull and "
                               f"exponential fits (window {ctx.window}); pale points lie outside the active "
                               "window.", lambda run=run: _fig().plot_band_fits(r, run, ctx.window)[0].figure,
                               "fits", lambda fig, run=run: _fig().draw_again(fig, _fig().plot_band_fits, r, run,
                                                                              ctx.window)))
    notes = []
    if len(runs) > len(shown):
        notes.append(f"Figures for the first {plural(len(shown), 'run')} of {len(runs)}; "
                     "`bandscope analyze --plots DIR` writes every run's.")
    return Section("per_run", "Each run: band losses and band fits",
                   "paper Figures 1 and 3", [], [], notes=notes, figures=figs)


def _forecast_section(ctx: ReportContext) -> Section | None:
    """The forecasts handed to the report (``forecasts=``): per run and band the floor and
    s_reach with their intervals (docs/forecast.md), and the forecast figures."""
    if not ctx.forecasts:
        return None
    r = ctx.results
    rows: list[dict[str, Any]] = []
    figs: list[FigureSpec] = []

    def iv(fc: Any, var: str, suffix: str = "") -> str:
        v, lo, hi = (float(fc[f"{var}{x}"].values) for x in ("", "_low", "_high"))
        if not np.isfinite(v):
            return DASH
        return f"{fmt_sig(v)} [{fmt_sig(lo)}, {'inf' if np.isinf(hi) else fmt_sig(hi)}]"

    for run, fc in ctx.forecasts.items():
        run = str(run)
        n_all = int(np.isfinite(np.asarray(r["param_time"].sel(run=run).values, float)).sum()) \
            if run in r["run"].values else 0
        n_used = _n_used(fc)
        measured = r["floor"].sel(run=run) if run in r["run"].values else None
        longer = measured is not None and n_used and n_all > n_used
        rows.append({"_kind": "head", "_text": f"{run} (prefix {n_used}/{n_all or '?'} checkpoints)"})
        for band in fc["band"].values:
            b = fc.sel(band=band)
            rows.append({"band": str(int(band)), "status": str(b["status"].values),
                         "floor [95%]": iv(b, "floor"), "s_reach [95%]": iv(b, "s_reach"),
                         "floor now": fmt_sig(measured.sel(band=band)) if longer and measured is not None else DASH})
        total = {k[len("total_"):]: fc[k] for k in fc.data_vars if k.startswith("total_")}
        if total:
            import xarray as xr

            t = xr.Dataset(total)
            rows.append({"band": "total", "status": str(t["status"].values),
                         "floor [95%]": iv(t, "floor"), "s_reach [95%]": iv(t, "s_reach"),
                         "floor now": fmt_sig(float(r["band_loss"].sel(run=run).sum("band")[-ctx.k:].mean()))
                         if longer else DASH})
        if len(figs) < ctx.max_runs:
            figs.append(FigureSpec(f"{run}_forecast", f"{run}: forecasts from the first {n_used} "
                                   "checkpoints (filled points): the fitted curve, the floor and its interval "
                                   "(band), s_reach (dotted); pale points are what the run did afterwards.",
                                   lambda run=run, fc=fc: _fig().plot_forecasts(r, fc, name=run)[0].figure))
    conf = next(iter(ctx.forecasts.values())).attrs.get("confidence", 0.95)
    cols = [Column("band", "band"), Column("status", "status", "<"), Column("floor [95%]", "floor [95%]"),
            Column("s_reach [95%]", "s_reach [95%]"), Column("floor now", "floor now")]
    return Section("forecast", "Forecasts: where each band is heading",
                   f"docs/forecast.md · interval level {conf:g}", cols, rows,
                   legend=["status", "floor [95%]", "s_reach [95%]", "floor now"], figures=figs)


def _n_used(fc: Any) -> int:
    if "n_fit" in fc and "start_index" in fc:
        n = np.asarray(fc["start_index"].values, float) + np.asarray(fc["n_fit"].values, float)
        n = n[np.isfinite(n)]
        if n.size:
            return int(n.max())
    return 0


def _without_paper(s: Section) -> Section:
    """The own view of a section built for the comparison: no paper rows, no verdict or source
    column, no verdict on heading rows."""
    drop = {"verdict", "source"}
    s.columns = [c for c in s.columns if c.key not in drop]
    s.rows = [({k: v for k, v in row.items() if k != "verdict"} if row.get("_kind") == "head" else row)
              for row in s.rows if row.get("_kind") != "paper"]
    s.legend = [t for t in s.legend if t not in drop]
    return s


def _with_figures(build: Callable[[ReportContext], Any], *specs: Callable[[ReportContext], Any]
                  ) -> Callable[[ReportContext], Any]:
    """``build`` with figures appended (``specs``: functions ctx → FigureSpec or None)."""
    def wrapped(ctx: ReportContext) -> Any:
        s = build(ctx)
        if s is not None:
            s.figures += [f for f in (spec(ctx) for spec in specs) if f is not None]
        return s
    wrapped.__name__ = build.__name__
    return wrapped


def _fig2(ctx: ReportContext) -> FigureSpec | None:
    if not ctx.compare:
        return None
    return FigureSpec("weibull_shapes", "Figure 2 of the paper: how β shapes a Weibull decay (schematic, "
                      "not a fit).", lambda: _fig().plot_weibull_shapes().figure)


def _fig_ordering(ctx: ReportContext) -> FigureSpec | None:
    return FigureSpec("ordering", "Band ordering: onset, width, floor and initial residual against band "
                      "resolution, one line per run, coloured by architecture; ρ is the median Spearman ρ.",
                      lambda: _fig().plot_ordering(ctx.results, ctx.window)[0].figure)


def _fig_full_loss(ctx: ReportContext) -> FigureSpec | None:
    return FigureSpec("full_loss", "Full-loss residual R_tot with the Weibull and exponential fits of each "
                      f"run (the first {ctx.max_runs}).",
                      lambda: _fig().plot_full_loss(ctx.results.isel(run=slice(0, ctx.max_runs)),
                                                    ctx.window)[0].figure)


# ----------------------------------------------------------------------------- the registry


@dataclass
class ReportContext:
    """What a section builder reads.

    Attributes
    ----------
    results : xarray.Dataset
        From :func:`bandscope.analyze`.
    tables : ReportTables
        Its tables, each computed once (:class:`bandscope.report.tables.ReportTables`).
    window : str
        The primary window.
    view : "own" or "paper"
        The runs alone, or against the paper (:data:`VIEWS`).
    forecasts : dict or None
        Run name → forecast Dataset (``bandscope.forecast``, docs/forecast.md), when given.
    max_runs : int
        Per-run figures (and full-loss panels) for the first ``max_runs`` runs.
    """

    results: xr.Dataset
    tables: ReportTables
    window: str
    view: str = "own"
    forecasts: dict | None = None
    max_runs: int = 12

    @property
    def compare(self) -> bool:
        """True in the paper view."""
        return self.view == "paper"

    @property
    def k(self) -> int:
        return int(self.results.attrs.get("k", 5))


def report_context(results: Any, window: str | None = None, *, view: str | None = None, tables: Any = None,
                   forecasts: dict | None = None, max_runs: int = 12) -> ReportContext:
    """A :class:`ReportContext` for ``results`` (a results Dataset, or a :class:`ReportContext`
    returned as is). ``view`` defaults to ``"own"``; ``tables`` reuses a
    :class:`~bandscope.report.tables.ReportTables` already built for these results."""
    if isinstance(results, ReportContext):
        return results
    if view is None:
        view = "own"
    if view not in VIEWS:
        from ..errors import BandscopeInputError

        raise BandscopeInputError(f"report view {view!r}: choose one of {VIEWS}")
    rt = tables if tables is not None else ReportTables(results, window)
    w = rt.window if window is None else _primary(results, window)
    return ReportContext(results, rt, w, view, dict(forecasts) if forecasts else None, int(max_runs))


@dataclass(frozen=True)
class _Entry:
    key: str
    build: Callable
    views: tuple
    order: float


_REGISTRY: dict = {}


def register_section(key: str, build: Callable[..., Any], *, views: tuple[str, ...] = VIEWS,
                     order: float = 100.0) -> None:
    """Add (or replace) a report section.

    Parameters
    ----------
    key : str
        The section's key (its HTML id); registering a key again replaces the builder.
    build : callable
        ``build(ctx: ReportContext) -> Section | list[Section] | None``; None (or an empty
        list) when the section does not apply to these results.
    views : tuple of "own" / "paper"
        The views the section appears in.
    order : float
        Sections are printed by increasing ``order``. The built-in ones: verdicts 10, runs
        overview 15 (own view; 85 in the paper view), band fits 20, ordering 30, full loss 40,
        saturation 50, per window 60 and 61, γ 70, forecasts 80, per-run figures 90.
    """
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"views {bad}: choose from {VIEWS}")
    _REGISTRY[key] = _Entry(key, build, tuple(views), float(order))


def registered_sections(view: str) -> list:
    """The registered section keys of ``view``, in print order."""
    return [e.key for e in sorted(_REGISTRY.values(), key=lambda e: e.order) if view in e.views]


def _own_or_paper(build: Callable[[ReportContext], Any]) -> Callable[[ReportContext], Any]:
    def wrapped(ctx: ReportContext) -> Any:
        s = build(ctx)
        return s if ctx.compare or s is None else _without_paper(s)
    wrapped.__name__ = build.__name__
    return wrapped


def _multi_window(build: Callable[[ReportContext], Any]) -> Callable[[ReportContext], Any]:
    def wrapped(ctx: ReportContext) -> Any:
        return build(ctx) if ctx.results.sizes.get("window", 1) > 1 else None
    wrapped.__name__ = build.__name__
    return wrapped


register_section("verdicts", _section_verdicts, views=("paper",), order=10)
register_section("runs", _runs_overview, views=("own",), order=15)
register_section("runs_paper", _runs_overview, views=("paper",), order=85)
register_section("band_fits", _own_or_paper(_with_figures(_section_band_fits, _fig2)), order=20)
register_section("ordering", _own_or_paper(_with_figures(_section_ordering, _fig_ordering)), order=30)
register_section("full_loss", _own_or_paper(_with_figures(_section_full_loss, _fig_full_loss)), order=40)
register_section("saturation", _section_saturation, order=50)
register_section("by_window", _own_or_paper(_multi_window(_section_by_window)), order=60)
register_section("ordering_by_window", _own_or_paper(_multi_window(_section_ordering_by_window)), order=61)
register_section("gamma", _own_or_paper(_section_gamma), order=70)
register_section("forecast", _forecast_section, order=80)
register_section("per_run", _per_run_figures, order=90)


def sections(results: Any, window: str | None = None, *, view: str | None = None, tables: Any = None,
             forecasts: dict | None = None, max_runs: int = 12) -> list[Section]:
    """The report as a list of :class:`Section`, in print order (:func:`registered_sections`).

    ``results`` is a results Dataset or a :class:`ReportContext`; ``view`` ``"own"`` (default)
    or ``"paper"``; ``tables`` a :class:`~bandscope.report.tables.ReportTables` to reuse;
    ``forecasts`` a mapping run → forecast Dataset (adds the forecast section). The first
    section that uses a column term explains it (its ``legend``); later sections refer back.
    """
    ctx = report_context(results, window, view=view, tables=tables, forecasts=forecasts, max_runs=max_runs)
    out = []
    for key in registered_sections(ctx.view):
        made = _REGISTRY[key].build(ctx)
        if made is None:
            continue
        out += list(made) if isinstance(made, (list, tuple)) else [made]
    seen = set()
    for s in out:
        s.legend = [t for t in s.legend if t not in seen]
        seen.update(s.legend)
    return out
