"""The key-search paper's tables as pandas DataFrames, computed from an ``analyze()`` result.

Every median is over runs whose fit has status ``"ok"`` (omitted/failed fits are left out
and the count of fitted runs is shown). "wins" is the number of fitted runs with ΔBIC < 0
(Weibull preferred) written ``"k/n"``. ``df.attrs`` records the window and definitions.

=====================  ==============================================  =================
function               content                                         paper
=====================  ==============================================  =================
``table_b2``           per-band medians of R², β, ΔBIC, wins, ΔBIC      B.2, §6.1
                       (n/deflation), wins (n/deflation) + overall
``table_b31``          R², β, ΔBIC per band under every window          B.3.1
``table_ordering``     median ρ, IQR, min--max per metric × window      B.3.2
``table_62``           the same, primary window only                    §6.2
``table_a7``           γ by epoch window and architecture               A.7
``table_full_loss``    full-loss Weibull and band-sum R², by arch       §6.3
``table_saturation``   per band: floor-window drift (% of range),       A.9 (our check)
                       floors of both conventions, unsaturated runs
``table_verdicts``     per test of the three predictions: verdict and   §4.1, §6, B
                       its reason, for our runs and for the paper's
                       published values (rules: :mod:`bandscope.report.verdict`)
=====================  ==============================================  =================

:class:`ReportTables` holds the tables of one results Dataset, each computed once on first use;
the text and HTML reports, the JSON writer and the figures read that one object
(``ReportTables(results)``), so a report never recomputes a table.

These DataFrames are the data (their column names are a contract: the JSON ``summary`` is
written from them). The printed and HTML reports (:mod:`bandscope.report`) format them and set
the paper's values (:mod:`bandscope.report.paper`) beside ours.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from ..keysearch.ordering import METRICS, summarize_runs

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping, Sequence
    from typing import Any

    import numpy.typing as npt
from . import paper
from . import verdict as V
from .arrays import values

__all__ = ["ReportTables", "table_b2", "table_b31", "table_ordering", "table_62", "table_a7",
           "table_full_loss", "table_saturation", "table_verdicts", "paper_arch",
           "all_tables", "METRIC_NAMES"]

METRIC_NAMES = {"onset": "onset τ_i", "width": "width w_i", "floor": "floor L_i^∞",
                "initial_residual": "initial residual R_i(s_0)"}
"""metric → its row label in the ordering tables (index ``metric``)."""
_METRIC_NAMES = METRIC_NAMES


def _window_labels(results: xr.Dataset) -> list[str]:
    """The results' window labels as strings (read from the coordinate's Variable)."""
    return [str(w) for w in np.asarray(results.variables["window"].values)]


def _primary(results: xr.Dataset, window: str | None, labels: list[str] | None = None) -> str:
    """``window``, checked against the results' windows (``labels`` when already read), or the
    first window when None."""
    labels = _window_labels(results) if labels is None else labels
    if window is None:
        return labels[0]
    if window not in labels:
        raise ValueError(f"window {window!r} not in the results; have {labels}")
    return window


def _wins(dbic: npt.ArrayLike) -> str:
    d = np.asarray(dbic, dtype=np.float64)
    d = d[np.isfinite(d)]
    return f"{int((d < 0).sum())}/{d.size}"


def _median(x: npt.ArrayLike) -> float:
    """Median of the finite values of ``x`` (NaN when none): the middle value of the sorted
    values, or the mean of the middle two, as ``np.median`` computes it (the same number to the
    bit: ``(a + b) / 2``), without its general-axis machinery (a table takes a few hundred)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = np.sort(v[np.isfinite(v)])
    n = v.size
    if n == 0:
        return np.nan
    return float(v[n // 2]) if n % 2 else float((v[n // 2 - 1] + v[n // 2]) / 2)


def _band_stats(arrays: Mapping[str, npt.ArrayLike], deflation: float) -> dict[str, Any]:
    """Medians of the fit statistics over the fits in ``arrays`` (name → 1-d numpy array of
    the fits, ``status`` among them); only fits with status ``"ok"`` enter."""
    ok = np.asarray(arrays["status"]) == "ok"
    get = lambda v: np.where(ok, np.asarray(arrays[v], dtype=np.float64), np.nan)  # noqa: E731
    d = f"n/{deflation:g}"
    return {
        "median R²": _median(get("r2")),
        "median β": _median(get("beta")),
        "median ΔBIC": _median(get("delta_bic")),
        "wins (ΔBIC<0)": _wins(get("delta_bic")),
        f"median ΔBIC ({d})": _median(get("delta_bic_neff")),
        f"wins ({d})": _wins(get("delta_bic_neff")),
        "median ΔBIC (n_eff acf)": _median(get("delta_bic_acf")),
        "fitted runs": int(ok.sum()),
    }


_FIT_STATS = ("status", "r2", "beta", "delta_bic", "delta_bic_neff", "delta_bic_acf")


def table_b2(results: xr.Dataset, window: str | None = None) -> pd.DataFrame:
    """Per-band Weibull vs exponential medians across runs plus an overall row (B.2).

    Parameters
    ----------
    results : xarray.Dataset from :func:`bandscope.analyze`
    window : str, optional
        Window label (default: the first, ``"0.95/0.01"`` by default).
    """
    w = _primary(results, window)
    deflation = float(results.attrs.get("deflation", 10.0))
    k = [str(x) for x in results["window"].values].index(w)
    arr = {v: values(results, v, ("run", "band", "window"))[:, :, k] for v in _FIT_STATS}
    rows = {str(int(b)): _band_stats({v: a[:, j] for v, a in arr.items()}, deflation)
            for j, b in enumerate(results["band"].values)}
    rows["overall"] = _band_stats({v: a.ravel() for v, a in arr.items()}, deflation)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "band"
    df.attrs.update(window=w, definition="medians across runs of 'ok' fits; ΔBIC = BIC_Weibull - "
                    "BIC_exp (negative favours Weibull); wins = fitted runs with ΔBIC < 0",
                    deflation=deflation)
    return df


def table_b31(results: xr.Dataset, *, b2: Callable[[str], pd.DataFrame] | None = None) -> pd.DataFrame:
    """R², β and ΔBIC medians per band under every window side by side (B.3.1).

    Columns are a MultiIndex (window, statistic); NaN where no run had enough checkpoints
    (the paper's "—"); ``fitted runs`` shows how many runs entered each median. ``b2``: the
    :func:`table_b2` of each window already computed (a callable window → DataFrame), so
    they are not computed again.
    """
    deflation = float(results.attrs.get("deflation", 10.0))
    b2 = b2 or (lambda w: table_b2(results, w))
    columns: dict = {}
    index = None
    for w in results["window"].values:
        t = b2(str(w))
        keep = t.index != "overall"
        index = t.index[keep] if index is None else index
        for stat in ("median R²", "median β", "median ΔBIC", "fitted runs"):
            columns[(str(w), stat)] = t[stat].to_numpy()[keep]
    # the frame ``pd.concat`` of the windows' columns makes, built from the columns at once
    df = pd.DataFrame(columns, index=index)
    df.columns.names = ["window", "statistic"]
    df.attrs.update(definition="medians across runs of 'ok' fits per window", deflation=deflation)
    return df


def table_ordering(results: xr.Dataset, windows: Sequence[str] | None = None) -> pd.DataFrame:
    """Spearman ρ(band resolution, metric) across runs: median, IQR, min--max (B.3.2)."""
    ws = [str(w) for w in results["window"].values] if windows is None else list(windows)
    rho = results["rho"]
    # the summary of the values alone (positions from ``rho``'s own coordinates): the same
    # numbers, without aligning the run, arch and seed coordinates of six results
    summ = summarize_runs(xr.DataArray(rho.variable.transpose("run", "metric", "window")), "run")
    mi = {str(m): i for i, m in enumerate(rho["metric"].values)}
    wi = {str(w): i for i, w in enumerate(rho["window"].values)}
    arr = {k: np.asarray(summ[k].values) for k in ("median", "q25", "q75", "min", "max", "n_runs")}
    rows = []
    for m in METRICS:
        for w in ws:
            i, j = mi[m], wi[w]
            rows.append({
                "metric": _METRIC_NAMES[m], "window": w,
                "median ρ": float(arr["median"][i, j]), "IQR low (q25)": float(arr["q25"][i, j]),
                "IQR high (q75)": float(arr["q75"][i, j]), "min": float(arr["min"][i, j]),
                "max": float(arr["max"][i, j]), "runs": int(arr["n_runs"][i, j]),
            })
    df = pd.DataFrame(rows).set_index(["metric", "window"])
    df.attrs.update(definition="within-run Spearman rho between band resolution and the metric; "
                    "summary across runs with finite rho (IQR = 25th-75th percentile)")
    return df


def table_62(results: xr.Dataset) -> pd.DataFrame:
    """§6.2 ordering table: :func:`table_ordering` for the primary window only."""
    df = table_ordering(results, windows=[_primary(results, None)])
    return df.droplevel("window")


def table_a7(results: xr.Dataset) -> pd.DataFrame:
    """γ of s(t) ≈ a + b·t^γ by epoch window and architecture: runs, median γ, median R² (A.7).

    Rows (epoch window, arch) from ``gamma_w``; plus ("all checkpoints", arch) from ``gamma``.
    """
    rows = []
    archs = [str(a) for a in np.unique(results["arch"].values)]
    gws = [str(g) for g in results["gamma_window"].values] if "gamma_window" in results.dims else []
    run_arch = np.asarray(results["arch"].values).astype(str)
    for g in gws + ["all checkpoints"]:
        if g == "all checkpoints":
            g_all, r_all = np.asarray(results["gamma"].values), np.asarray(results["gamma_r2"].values)
        else:
            gi = gws.index(g)
            g_all = values(results, "gamma_w", ("run", "gamma_window"))[:, gi]
            r_all = values(results, "gamma_w_r2", ("run", "gamma_window"))[:, gi]
        for a in archs:
            m = run_arch == a
            gam, r2 = g_all[m], r_all[m]
            rows.append({"epoch window": g, "arch": a or "(no arch)",
                         "runs": int(np.isfinite(np.asarray(gam, dtype=float)).sum()),
                         "median γ": _median(gam), "median R²": _median(r2)})
    df = pd.DataFrame(rows).set_index(["epoch window", "arch"])
    df.attrs.update(definition="s(t) ~ a + b t^gamma, three-parameter fit; medians over runs")
    return df


def table_full_loss(results: xr.Dataset, window: str | None = None) -> pd.DataFrame:
    """Full-loss Weibull fit and band-sum reconstruction (§6.3), overall and by arch.

    Columns: runs fitted, median R², β, ΔBIC, ΔBIC(n/deflation), exponential R², and the
    band-sum R² for ``window`` (default the primary window).
    """
    w = _primary(results, window)
    deflation = float(results.attrs.get("deflation", 10.0))
    groups = {"overall": np.ones(results.sizes["run"], dtype=bool)}
    arch = np.asarray(results.variables["arch"].values)
    for a in np.unique(arch):
        groups[str(a) or "(no arch)"] = arch == a
    wk = [str(x) for x in results["window"].values].index(w)
    bsum = values(results, "band_sum_r2", ("run", "window"))[:, wk]
    status = np.asarray(results.variables["total_status"].values)
    rows = {}
    for g, m in groups.items():
        ok = (status == "ok") & m
        pick = lambda v, ok=ok: np.where(ok, results.variables[v].values, np.nan)  # noqa: E731
        rows[g] = {
            "runs fitted": int(ok.sum()),
            "median R²": _median(pick("total_r2")),
            "median β": _median(pick("total_beta")),
            "median ΔBIC": _median(pick("total_delta_bic")),
            "wins (ΔBIC<0)": _wins(pick("total_delta_bic")),
            f"median ΔBIC (n/{deflation:g})": _median(pick("total_delta_bic_neff")),
            "median ΔBIC (n_eff acf)": _median(pick("total_delta_bic_acf")),
            "median exp R²": _median(pick("total_exp_r2")),
            f"median band-sum R² ({w})": _median(np.where(m, bsum, np.nan)),
            "band-sum runs": int(np.isfinite(np.where(m, bsum, np.nan)).sum()),
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "group"
    df.attrs.update(window=w, definition="single Weibull vs exponential on R_tot over all "
                    "checkpoints; band-sum R^2 of sum_i R_hat_i against R_tot")
    return df


def table_saturation(results: xr.Dataset) -> pd.DataFrame:
    """Did every band reach its floor? Per band, across runs: median and max floor-window drift
    ((max − min of L_i over the floor window) / (max − min of L_i over the run) × 100), median
    floor-window trend (the steady fall by a least-squares line in parameter time, same units),
    median late noise (checkpoint scatter over the last 2k+2 checkpoints, same units), median
    A.9 difference between the mean-of-last-k and final-checkpoint floors (% of range), and how
    many runs have the band unsaturated (drift ≥ the analysis' ``saturation_tol_pct``).

    A band that has not saturated biases its floor upward, and with it every crossing, width
    and residual computed from that floor (key search §3, A.9).
    """
    def per_band(v: str) -> npt.NDArray[np.float64]:
        return np.asarray(values(results, v, ("run", "band")), dtype=np.float64)

    drift = per_band("floor_window_drift_pct")
    conv = per_band("floor_convention_diff_pct")
    trend = per_band("floor_window_trend_pct") if "floor_window_trend_pct" in results else None
    noise = per_band("late_noise_pct") if "late_noise_pct" in results else None
    unsat = ~np.asarray(values(results, "saturated", ("run", "band"))).astype(bool)
    n = results.sizes["run"]
    rows = {}
    for j, b in enumerate(results["band"].values):
        d = drift[:, j]
        rows[int(b)] = {
            "median drift %": _median(d),
            "max drift %": float(np.nanmax(d)) if np.isfinite(d).any() else np.nan,
            **({"median trend %": _median(trend[:, j])} if trend is not None else {}),
            **({"median noise %": _median(noise[:, j])} if noise is not None else {}),
            "median A.9 floor diff %": _median(conv[:, j]),
            "unsaturated runs": f"{int(unsat[:, j].sum())}/{n}",
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "band"
    tol = results.attrs.get("saturation_tol_pct", "")
    df.attrs.update(definition="floor-window drift = (max - min of L_i over the last k checkpoints) / "
                    f"(max - min of L_i over the run) x 100; unsaturated when >= {tol} %")
    return df


def paper_arch(arch: object) -> str | None:
    """The paper's architecture (``"cnn"``/``"vit"``) an ``arch`` label stands for, or None.

    ``"cnn"``, ``"CNN"`` and ``"synthetic-cnn"`` map to ``"cnn"``.

    >>> paper_arch("synthetic-vit"), paper_arch("mlp")
    ('vit', None)
    """
    a = str(arch).lower()
    for p in ("cnn", "vit"):
        if a == p or a.endswith("-" + p) or a.endswith("_" + p):
            return p
    return None


def _n_bands(results: xr.Dataset, window: str) -> int:
    """Bands entering each ρ: the median over runs of ``rho_n`` (all bands if absent)."""
    if "rho_n" in results:
        n = np.asarray(results["rho_n"].sel(window=window).values, dtype=float)
        n = n[np.isfinite(n) & (n > 0)]
        if n.size:
            return int(np.median(n))
    return int(results.sizes["band"])


def table_verdicts(results: xr.Dataset, window: str | None = None, *, b2: pd.DataFrame | None = None,
                   ordering: pd.DataFrame | None = None, full_loss: pd.DataFrame | None = None) -> pd.DataFrame:
    """Verdict per test of the paper's three predictions, ours and the paper's.

    Rows (index ``test``): ``all band fits`` and ``band <r>`` (prediction 1, from
    :func:`table_b2`), ``<metric>`` (prediction 2, from :func:`table_62`), ``full loss``,
    ``band-sum reconstruction`` and ``full loss <arch>`` (prediction 3, from
    :func:`table_full_loss`). Columns: ``prediction`` (1, 2, 3), ``verdict`` and ``reason``
    for these runs, ``paper verdict`` and ``paper reason`` for the same rule applied to the
    paper's published values (empty where the paper has no value). Rules and thresholds:
    :mod:`bandscope.report.verdict`. ``b2``, ``ordering`` (the ordering table of this window,
    index metric) and ``full_loss``: those tables already computed for ``window``
    (:class:`ReportTables` passes them), so they are not computed again.
    """
    w = _primary(results, window)
    rows = {}

    def put(test: str, pred: int, ours: V.Verdict, theirs: V.Verdict | None) -> None:
        rows[test] = {"prediction": pred, "verdict": ours.level, "reason": ours.reason,
                      "paper verdict": theirs.level if theirs else "",
                      "paper reason": theirs.reason if theirs else ""}

    b2 = table_b2(results, w) if b2 is None else b2
    d = f"n/{float(results.attrs.get('deflation', 10.0)):g}"

    def ours_b2(row: pd.Series) -> V.Verdict:
        return V.weibull_verdict(row["median R²"], row["median ΔBIC"], row["wins (ΔBIC<0)"],
                                 row[f"median ΔBIC ({d})"], neff_expected=True)

    def paper_b2(p: Mapping[str, Any]) -> V.Verdict:
        return V.weibull_verdict(p["r2"].value, p["delta_bic"].value, p["wins"].text,
                                 p["delta_bic_neff"].value, neff_expected=True)

    put("all band fits", 1, ours_b2(b2.loc["overall"]),
        paper_b2(paper.ALL_BAND_FITS) if w == paper.PRIMARY_WINDOW else None)
    for band in b2.index.drop("overall"):
        p = paper.BAND_FITS.get(int(band)) if w == paper.PRIMARY_WINDOW else None
        put(f"band {band}", 1, ours_b2(b2.loc[band]), paper_b2(p) if p else None)
    t62 = table_ordering(results, windows=[w]).droplevel("window") if ordering is None else ordering
    nb = _n_bands(results, w)
    for m in METRICS:
        row = t62.loc[_METRIC_NAMES[m]]
        sign = V.EXPECTED_SIGN[m]
        ours = V.ordering_verdict(row["median ρ"], row["IQR low (q25)"], row["IQR high (q75)"],
                                  expected_sign=sign, n_bands=nb)
        p = paper.ORDERING.get((m, w))
        theirs = V.ordering_verdict(p["median"].value, p["q25"].value, p["q75"].value,
                                    expected_sign=sign, n_bands=paper.N_BANDS) if p else None
        put(m, 2, ours, theirs)
    fl = table_full_loss(results, w) if full_loss is None else full_loss
    row = fl.loc["overall"]
    pf = paper.FULL_LOSS["overall"]
    put("full loss", 3, V.weibull_verdict(row["median R²"], row["median ΔBIC"], row["wins (ΔBIC<0)"]),
        V.weibull_verdict(pf["r2"].value, pf["delta_bic"].value))
    put("band-sum reconstruction", 3, V.r2_verdict(row[f"median band-sum R² ({w})"]),
        V.r2_verdict(pf["band_sum_r2"].value) if w == paper.PRIMARY_WINDOW else None)
    for g in fl.index.drop("overall"):
        r = fl.loc[g]
        pa = paper.FULL_LOSS.get(paper_arch(g) or "")
        put(f"full loss {g}", 3, V.weibull_verdict(r["median R²"], r["median ΔBIC"], r["wins (ΔBIC<0)"]),
            V.weibull_verdict(None, pa["delta_bic"].value) if pa else None)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "test"
    df.attrs.update(window=w, definition="verdict rules of bandscope.report.verdict (sign, then magnitude "
                    "against stated thresholds) applied to the medians of table_b2, table_62 and "
                    "table_full_loss, and to the paper's published values (bandscope.report.paper)")
    return df


def all_tables(results: xr.Dataset | ReportTables) -> dict[str, pd.DataFrame]:
    """Every table: dict name → DataFrame (:meth:`ReportTables.all` of a new
    :class:`ReportTables`; pass a :class:`ReportTables` to reuse its tables)."""
    rt = results if isinstance(results, ReportTables) else ReportTables(results)
    return rt.all()


class ReportTables:
    """The tables of one results Dataset, each computed once, on first use.

    The report's sections, its text and HTML renderings, the JSON ``summary`` and the figures'
    captions read these; nothing that formats a report calls a ``table_*`` function itself.
    Each method returns the same DataFrame object on every call (do not modify it).

    Parameters
    ----------
    results : xarray.Dataset
        From :func:`bandscope.analyze`.
    window : str, optional
        The primary window (default the first of the results).

    Examples
    --------
    >>> import warnings; warnings.simplefilter("ignore")
    >>> from bandscope import analyze
    >>> from bandscope.keysearch.synthetic import make_runs_synthetic
    >>> rt = ReportTables(analyze(make_runs_synthetic(2, n_bands=4)))
    >>> rt.b2() is rt.b2(), rt.window
    (True, '0.95/0.01')
    """

    def __init__(self, results: xr.Dataset, window: str | None = None) -> None:
        self.results = results
        self._windows = _window_labels(results)
        self.window = _primary(results, window, self._windows)
        self._cache: dict = {}

    def _once(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _w(self, window: str | None) -> str:
        return self.window if window is None else _primary(self.results, window, self._windows)

    @property
    def windows(self) -> list[str]:
        """Every window label of the results, the primary one first as in the results."""
        return list(self._windows)

    def b2(self, window: str | None = None) -> pd.DataFrame:
        """:func:`table_b2` of ``window`` (default the primary one)."""
        w = self._w(window)
        return self._once(("b2", w), lambda: table_b2(self.results, w))

    def b31(self) -> pd.DataFrame:
        """:func:`table_b31`, from the :meth:`b2` tables of every window."""
        return self._once("b31", lambda: table_b31(self.results, b2=self.b2))

    def ordering(self, window: str | None = None, *, all_windows: bool = False) -> pd.DataFrame:
        """:func:`table_ordering` over every window (``all_windows``), or one window's rows
        indexed by metric (the §6.2 table, :func:`table_62` for the primary window)."""
        full = self._once("ordering", lambda: table_ordering(self.results))
        if all_windows:
            return full
        w = self._w(window)
        return self._once(("ordering", w), lambda: full.xs(w, level="window"))

    def a7(self) -> pd.DataFrame:
        """:func:`table_a7`."""
        return self._once("a7", lambda: table_a7(self.results))

    def full_loss(self, window: str | None = None) -> pd.DataFrame:
        """:func:`table_full_loss` of ``window``."""
        w = self._w(window)
        return self._once(("full_loss", w), lambda: table_full_loss(self.results, w))

    def saturation(self) -> pd.DataFrame:
        """:func:`table_saturation`."""
        return self._once("saturation", lambda: table_saturation(self.results))

    def verdicts(self, window: str | None = None) -> pd.DataFrame:
        """:func:`table_verdicts` of ``window``, from this object's other tables."""
        w = self._w(window)
        return self._once(("verdicts", w), lambda: table_verdicts(
            self.results, w, b2=self.b2(w), ordering=self.ordering(w), full_loss=self.full_loss(w)))

    def n_bands(self, window: str | None = None) -> int:
        """Bands entering each ρ of ``window`` (sets the chance level of the ordering verdicts)."""
        w = self._w(window)
        return self._once(("n_bands", w), lambda: _n_bands(self.results, w))

    def all(self) -> dict[str, pd.DataFrame]:
        """Every table under its ``all_tables`` name (the JSON ``summary``), primary window."""
        return {
            "table_b2": self.b2(),
            "table_b31": self.b31(),
            "table_62": self.ordering(),
            "table_ordering": self.ordering(all_windows=True),
            "table_a7": self.a7(),
            "table_full_loss": self.full_loss(),
            "table_saturation": self.saturation(),
            "table_verdicts": self.verdicts(),
        }


def __getattr__(name: str) -> Any:
    if name == "format_tables":  # it was an alias of the report's text; the report builds on these tables
        raise AttributeError("bandscope.report.tables.format_tables is now bandscope.report.format_text(results, "
                             "window): the printed report lives in bandscope.report, above the tables it prints")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
