"""The results schema: every variable of :func:`bandscope.analyze`'s Dataset, defined once.

One table, :data:`RESULTS`, gives each results variable its name, dims, units, definition,
paper section and (where it has one) its key in the JSON of ``bandscope analyze --json``.
Everything that writes or describes results reads it:

* :func:`bandscope.keysearch.analysis.analyze` builds every variable with :func:`variable` (dims and
  attrs come from here, the data from the computation);
* :func:`bandscope.report.results_json.results_to_dict` takes its per-window and full-loss key tables from
  :func:`json_keys`;
* the results-variable table of ``docs/format.md`` is :func:`markdown_table` (a test checks
  the page against it; :func:`update_docs` rewrites it);
* the tables module can read a column's meaning with :func:`describe`.

Units and definitions may hold placeholders filled from the run and the options:
``{loss}`` (the units of ``band_loss``), ``{time}`` (the units of ``param_time``), ``{k}``,
``{floor}``, ``{deflation}``, ``{saturation_tol_pct}``; :func:`attrs` fills them.

Renames are listed in :data:`RENAMED` (old name → new name) so that files written with an
old name stay readable (:func:`upgrade`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Mapping
    from typing import Literal

    import numpy.typing as npt

__all__ = ["Variable", "RESULTS", "COORDS", "RENAMED", "FORMAT", "attrs", "variable",
           "describe", "json_keys", "markdown_table", "update_docs", "upgrade",
           "REACH", "REACH_COORDS", "REACH_FORMAT", "reach_attrs", "reach_markdown_table", "update_reach_docs"]

#: ``attrs['bandscope_results']`` of a results Dataset. Additive changes keep the version.
FORMAT = "results/1"

RWB = ("run", "window", "band")
RB = ("run", "band")
R = ("run",)
PCT = "% of band range (max L_i - min L_i)"


@dataclass(frozen=True)
class Variable:
    """One results variable (or coordinate).

    ``json`` is ``"fit:<key>"`` (per band and threshold window under ``fits``),
    ``"total:<key>"`` (under ``total``), ``"band:<key>"`` (per band) or ``""`` (not in the
    JSON runs section).
    """

    name: str
    dims: tuple[str, ...]
    units: str
    definition: str
    section: str = ""
    json: str = ""


def _v(name: str, dims: Iterable[str], units: str, definition: str, section: str = "", json: str = "") -> Variable:
    return Variable(name, tuple(dims), units, definition, section, json)


_FIT = "Weibull R = A exp(-((s - s_start)/omega)^beta) fitted in the threshold window, s_start = s at fit_start"
_TOTAL = "full-loss fit to R_tot over all saved checkpoints, s rebased to s_0: "

_VARIABLES = [
    # inputs carried along
    _v("band_loss", ("run", "checkpoint", "band"), "{loss}",
       "the run's band losses L_i (NaN where a shorter run is padded)", "A.6"),
    _v("param_time", ("run", "checkpoint"), "{time}",
       "the run's parameter time s_k (NaN where padded)", "A.7"),
    _v("step", ("run", "checkpoint"), "optimizer steps",
       "raw training time t; -1 = unknown or padding", "A.7"),
    # floors
    _v("floor", RB, "{loss}", "band floor L_i^inf under the convention attrs['floor_convention'] "
       "(here: {floor})", "A.9", "band:floor"),
    _v("floor_final", RB, "{loss}", "L_i at the last saved checkpoint", "A.9", "band:floor_final"),
    _v("floor_mean_last_k", RB, "{loss}", "mean of L_i over the last k={k} saved checkpoints",
       "A.9"),
    _v("floor_convention_diff_pct", RB, PCT,
       "|mean of last k - final| / (max L_i - min L_i) * 100", "A.9",
       "band:floor_convention_diff_pct"),
    _v("floor_window_drift_pct", RB, PCT,
       "(max - min of L_i over the last k={k} checkpoints) / (max L_i - min L_i) * 100: how far "
       "the band still moved while its floor was measured", "A.9", "band:floor_window_drift_pct"),
    _v("floor_window_trend_pct", RB, PCT,
       "-(least-squares slope of L_i on s over the last k={k} checkpoints) x (s span of those "
       "checkpoints) / (max L_i - min L_i) * 100: the steady part of the drift (positive = still "
       "falling); informational, 'saturated' does not use it", "A.9",
       "band:floor_window_trend_pct"),
    _v("late_noise_pct", RB, PCT,
       "sd of L_i from checkpoint to checkpoint over the last 2k+2 checkpoints, from second "
       "differences in s that cancel any linear trend, / (max L_i - min L_i) * 100; 5 noisy "
       "checkpoints span ~2.33 sd, so noise > saturation_tol_pct/2.33 makes the drift exceed "
       "the tolerance by itself; informational", "A.9", "band:late_noise_pct"),
    _v("saturated", RB, "1", "floor_window_drift_pct < saturation_tol_pct ({saturation_tol_pct} %)",
       "5", "band:saturated"),
    # residuals and crossings
    _v("residual", ("run", "checkpoint", "band"), "{loss}",
       "R_i = L_i - L_i^inf (floor convention in attrs['floor_convention'])", "5.1"),
    _v("total_residual", ("run", "checkpoint"), "{loss}",
       "R_tot = sum_i R_i = L_tot - sum_i L_i^inf", "A.9"),
    _v("initial_residual", RB, "{loss}", "R_i(s_0)", "6.2", "band:initial_residual"),
    _v("crossing", ("run", "band", "alpha"), "{time}",
       "c_i(alpha): first k with q_{k-1} > alpha >= q_k, q = R_i/R_i(s_0), linear interpolation; "
       "NaN if never crossed or R_i(s_0) <= 0", "A.10"),
    # threshold windows
    _v("onset", RWB, "{time}", "tau_i = c_i(hi) of the threshold window", "5.1", "fit:onset"),
    _v("width", RWB, "{time}", "w_i = c_i(lo) - c_i(hi) of the threshold window", "5.1",
       "fit:width"),
    _v("fit_n", RWB, "1", "saved checkpoints with c_i(hi) < s_k < c_i(lo) (strict)", "5.1",
       "fit:n"),
    _v("fit_start", RWB, "1", "first checkpoint index in the active window, -1 if none", "5.1"),
    _v("fit_stop", RWB, "1", "last checkpoint index in the active window, -1 if none", "5.1"),
    # band fits
    _v("A", RWB, "{loss}", "amplitude of the " + _FIT, "B.1", "fit:A"),
    _v("omega", RWB, "{time}", "Weibull scale omega", "B.1", "fit:omega"),
    _v("beta", RWB, "1", "Weibull shape beta, bounded to [0.05, 8]", "B.1", "fit:beta"),
    _v("r2", RWB, "1", "R^2 = 1 - SSE/SST of the Weibull fit on the linear scale", "5.2",
       "fit:r2"),
    _v("sse_weibull", RWB, "({loss})^2",
       "sum of squared residuals of the Weibull fit (linear scale; may under/overflow at extreme "
       "loss scales, the statistics are computed from the scaled SSE)", "5.2", "fit:sse_weibull"),
    _v("exp_A", RWB, "{loss}", "exponential (beta = 1) fit amplitude, same window", "5.2",
       "fit:exp_A"),
    _v("exp_omega", RWB, "{time}", "exponential fit scale", "5.2", "fit:exp_omega"),
    _v("exp_r2", RWB, "1", "R^2 of the exponential fit", "5.2", "fit:exp_r2"),
    _v("sse_exp", RWB, "({loss})^2", "SSE of the exponential fit", "5.2", "fit:sse_exp"),
    _v("bic_weibull", RWB, "1", "reduced BIC n log(SSE/n) + 3 log n", "A.11", "fit:bic_weibull"),
    _v("bic_exp", RWB, "1", "reduced BIC n log(SSE/n) + 2 log n", "A.11", "fit:bic_exp"),
    _v("delta_bic", RWB, "1", "bic_weibull - bic_exp; negative favours the Weibull", "5.2",
       "fit:delta_bic"),
    _v("delta_bic_neff", RWB, "1",
       "delta_bic with the paper's fixed n_eff = n / deflation (deflation = {deflation}): "
       "n_eff log(SSE/n) + p log n_eff per model; NaN where n_eff <= 1", "B.2",
       "fit:delta_bic_neff"),
    _v("n_eff_acf", RWB, "1",
       "data-driven effective sample size n / (1 + 2 sum_{k=1..K} rho_k) from the "
       "autocorrelation rho_k of the Weibull fit's residuals, K = the lag before the first "
       "rho_k <= 0 (at most n // 2); capped at n; NaN (with a reason) below p + 1 = 4", "B.2",
       "fit:n_eff_acf"),
    _v("delta_bic_acf", RWB, "1",
       "delta_bic with n_eff = n_eff_acf in place of n / deflation (same formula as "
       "delta_bic_neff)", "B.2", "fit:delta_bic_acf"),
    _v("status", RWB, "", "'ok', 'omitted' (fewer than min_points checkpoints in the window) or "
       "'failed'", "5.2", "fit:status"),
    _v("reason", RWB, "", "why a fit is not 'ok', or what to note about it (empty when ok)", "",
       "fit:reason"),
    # full-loss fit
    _v("total_A", R, "{loss}", _TOTAL + "Weibull amplitude A", "6.3", "total:A"),
    _v("total_omega", R, "{time}", _TOTAL + "Weibull scale omega", "6.3", "total:omega"),
    _v("total_beta", R, "1", _TOTAL + "Weibull shape beta", "6.3", "total:beta"),
    _v("total_r2", R, "1", _TOTAL + "R^2 of the Weibull fit", "6.3", "total:r2"),
    _v("total_sse_weibull", R, "({loss})^2", _TOTAL + "SSE of the Weibull fit", "6.3"),
    _v("total_exp_A", R, "{loss}", _TOTAL + "exponential amplitude", "6.3"),
    _v("total_exp_omega", R, "{time}", _TOTAL + "exponential scale", "6.3"),
    _v("total_exp_r2", R, "1", _TOTAL + "R^2 of the exponential fit", "6.3", "total:exp_r2"),
    _v("total_sse_exp", R, "({loss})^2", _TOTAL + "SSE of the exponential fit", "6.3"),
    _v("total_bic_weibull", R, "1", _TOTAL + "n log(SSE/n) + 3 log n", "A.11",
       "total:bic_weibull"),
    _v("total_bic_exp", R, "1", _TOTAL + "n log(SSE/n) + 2 log n", "A.11", "total:bic_exp"),
    _v("total_delta_bic", R, "1", _TOTAL + "bic_weibull - bic_exp", "6.3", "total:delta_bic"),
    _v("total_delta_bic_neff", R, "1", _TOTAL + "delta_bic with n_eff = n / deflation", "B.2",
       "total:delta_bic_neff"),
    _v("total_n_eff_acf", R, "1", _TOTAL + "n_eff from the residual autocorrelation", "B.2",
       "total:n_eff_acf"),
    _v("total_delta_bic_acf", R, "1", _TOTAL + "delta_bic with n_eff = total_n_eff_acf", "B.2",
       "total:delta_bic_acf"),
    _v("total_n", R, "1", _TOTAL + "checkpoints fitted", "6.3", "total:n"),
    _v("total_status", R, "", _TOTAL + "'ok', 'omitted' or 'failed'", "6.3", "total:status"),
    _v("total_reason", R, "", _TOTAL + "why the fit is not 'ok' (empty when ok)", "6.3"),
    # reconstruction
    _v("band_sum_fit", ("run", "window", "checkpoint"), "{loss}",
       "R_hat_Sigma = sum_i R_hat_i on the full grid; before band i's window starts "
       "R_hat_i = A_i (its value at s = 0), after it A_i exp(-((s - s_start)/omega_i)^beta_i); "
       "NaN for a run/window where any band's fit is not 'ok' (unless "
       "band_sum_missing='observed')", "6.3"),
    _v("band_sum_r2", ("run", "window"), "1",
       "R^2 of band_sum_fit against total_residual over the run's checkpoints; NaN if any "
       "band's fit is not 'ok' (a partial sum would not be the reconstruction) unless "
       "band_sum_missing='observed'", "6.3"),
    _v("band_sum_n_fitted", ("run", "window"), "1",
       "bands with an 'ok' fit in the reconstruction", "6.3"),
    # ordering
    _v("rho", ("run", "window", "metric"), "1",
       "Spearman rho between band resolution and the metric over bands with a finite metric; "
       "NaN with < 3 such bands or a constant metric", "6.2, B.3.2"),
    _v("rho_n", ("run", "window", "metric"), "1", "bands with a finite metric used for rho",
       "6.2"),
    # gamma
    _v("gamma", R, "1", "gamma of s(t) ~ a + b t^gamma over all checkpoints; NaN without step",
       "A.7"),
    _v("gamma_a", R, "{time}", "offset a of s(t) ~ a + b t^gamma", "A.7"),
    _v("gamma_b", R, "{time} / step^gamma", "scale b of s(t) ~ a + b t^gamma", "A.7"),
    _v("gamma_r2", R, "1", "R^2 of the s(t) fit", "A.7"),
    _v("gamma_w", ("run", "gamma_window"), "1",
       "gamma fitted in each epoch window of the gamma fit (lo <= epoch <= hi); NaN without "
       "epoch", "A.7"),
    _v("gamma_w_r2", ("run", "gamma_window"), "1", "R^2 of the s(t) fit in each epoch window",
       "A.7"),
]

#: name -> :class:`Variable` of every results data variable, in the Dataset's order.
RESULTS: dict[str, Variable] = {v.name: v for v in _VARIABLES}

#: name -> :class:`Variable` of every results coordinate.
COORDS: dict[str, Variable] = {v.name: v for v in [
    _v("run", ("run",), "", "run name"),
    _v("band", ("band",), "pixels per side", "band resolution r (1, 2, 4, ...)", "3"),
    _v("window", ("window",), "", "threshold window label 'hi/lo', e.g. '0.95/0.01'; the first is "
       "the primary window", "5.1"),
    _v("window_hi", ("window",), "1", "hi threshold of the window (onset crossing)", "5.1"),
    _v("window_lo", ("window",), "1", "lo threshold of the window (end crossing)", "5.1"),
    _v("checkpoint", ("checkpoint",), "", "checkpoint index 0, 1, ..."),
    _v("alpha", ("alpha",), "1", "every threshold of every window, descending", "A.10"),
    _v("metric", ("metric",), "", "onset, width, floor, initial_residual", "6.2"),
    _v("gamma_window", ("gamma_window",), "epochs",
       "epoch window 'lo-hi' of the gamma fit, e.g. '0-10'", "A.7"),
    _v("arch", ("run",), "", "architecture of each run (attrs['arch'] of the run)"),
    _v("seed", ("run",), "", "seed of each run, -1 if unknown"),
]}

#: Results names changed since ``results/1`` was introduced: old -> new. Empty: the results
#: Dataset kept every name (the renamed epoch windows are those of
#: :func:`bandscope.fit_power_time`, whose own renames live in
#: :data:`bandscope.transforms.paramtime.RENAMED`).
RENAMED: dict[str, str] = {}


# --------------------------------------------------------------------------- attrs
_PLACEHOLDER = re.compile(r"\{(loss|time|k|floor|deflation|saturation_tol_pct)\}")


def _fill(text: str, context: Mapping[str, object]) -> str:
    return _PLACEHOLDER.sub(lambda m: str(context.get(m.group(1), m.group(0))), text)


def attrs(name: str, **context: object) -> dict[str, str]:
    """The attrs of results variable (or coordinate) ``name``: units, definition, paper.

    Placeholders (``{loss}``, ``{time}``, ``{k}``, ...) are filled from ``context``; unknown
    ones stay as written.

    Examples
    --------
    >>> attrs("onset", time="parameter-space L2 distance")["units"]
    'parameter-space L2 distance'
    >>> attrs("delta_bic")["paper"]
    'key search 5.2'
    """
    v = RESULTS.get(name) or COORDS.get(name)
    if v is None:
        raise KeyError(f"{name!r} is not a results variable; known: {sorted(RESULTS)}")
    out = {"definition": _fill(v.definition, context)}
    if v.units:
        out["units"] = _fill(v.units, context)
    if v.section:
        out["paper"] = f"key search {v.section}"
    return out


def variable(name: str, data: npt.ArrayLike, **context: object) -> xr.Variable:
    """``xr.Variable`` of results variable ``name`` with its schema dims and attrs.

    Examples
    --------
    >>> variable("total_n", np.array([3, 4])).dims
    ('run',)
    """
    v = RESULTS[name]
    data = np.asarray(data)
    if data.ndim != len(v.dims):
        raise ValueError(f"results variable {name!r} has dims {v.dims}, got data of shape "
                         f"{data.shape}")
    return xr.Variable(v.dims, data, attrs(name, **context))


def describe(name: str) -> str:
    """One-line meaning of a results variable, for table captions and column notes.

    >>> describe("fit_n")
    'fit_n [1]: saved checkpoints with c_i(hi) < s_k < c_i(lo) (strict) (key search 5.1)'
    """
    a = attrs(name)
    paper = f" ({a['paper']})" if "paper" in a else ""
    return f"{name} [{a.get('units', '')}]: {a['definition']}{paper}"


def json_keys(group: Literal["fit", "total", "band"]) -> dict[str, str]:
    """JSON key -> results variable of one JSON group: ``"fit"`` (per band and threshold
    window), ``"total"`` (full-loss fit) or ``"band"`` (per band).

    >>> json_keys("total")["beta"]
    'total_beta'
    """
    out = {}
    for v in RESULTS.values():
        g, _, key = v.json.partition(":")
        if g == group:
            out[key] = v.name
    if not out:
        raise ValueError(f"unknown JSON group {group!r}; expected 'fit', 'total' or 'band'")
    return out


def upgrade(ds: xr.Dataset) -> xr.Dataset:
    """Rename variables/dims of a results Dataset written under an old name (:data:`RENAMED`)."""
    names = {old: new for old, new in RENAMED.items()
             if (old in ds.variables or old in ds.dims) and new not in ds.variables}
    return ds.rename(names) if names else ds


# --------------------------------------------------------------------------- docs
_START = "<!-- results-variables: generated by bandscope.schema.markdown_table; do not edit -->"
_END = "<!-- end results-variables -->"


def markdown_table() -> str:
    """The results-variable table of ``docs/format.md`` (generated from :data:`RESULTS`)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def json_cell(v: Variable) -> str:
        group, _, key = v.json.partition(":")
        where = {"fit": "bands.<r>.fits.<window>", "total": "total", "band": "bands.<r>"}
        return f"`{where[group]}.{key}`" if group else ""

    def rows(head: str, table: Mapping[str, Variable], with_json: bool) -> list[str]:
        out = [f"| {head} | dims | units | definition | paper |" + (" JSON |" if with_json else ""),
               "|---|---|---|---|---|" + ("---|" if with_json else "")]
        return out + [f"| `{v.name}` | {', '.join(v.dims)} | {cell(v.units)} | "
                      f"{cell(v.definition)} | {v.section} |"
                      + (f" {json_cell(v)} |" if with_json else "") for v in table.values()]

    rows = [*rows("variable", RESULTS, True), "", "Coordinates:", "",
            *rows("coordinate", COORDS, False)]
    return "\n".join([_START, *rows, _END])


def update_docs(path: str | os.PathLike[str] = "docs/format.md") -> Path:
    """Rewrite the generated table in ``path`` (between its marker comments)."""
    path = Path(path)
    text = path.read_text()
    pat = re.compile(re.escape(_START) + ".*?" + re.escape(_END), re.S)
    if not pat.search(text):
        raise ValueError(f"{path} has no generated results table (marker {_START!r})")
    path.write_text(pat.sub(lambda m: markdown_table(), text))
    return path


# --------------------------------------------------------------------------- spectral reach
# The results of the spectral-reach analysis (``bandscope.lnp.reach.reach_analysis``) live in a
# table of their own: a different Dataset (dims run, lnp_window, size, ordering), the same
# :class:`Variable` rows. ``section`` is a section of spectral_reach.txt.

#: ``attrs['bandscope_results']`` of a spectral-reach results Dataset.
REACH_FORMAT = "reach/1"

_RW = ("run", "lnp_window")
_Q = {  # quantity -> (units, what it is)
    "spectral_position": ("1", "P = P_A, self spectral position of the update batch A (training batch)"),
    "spectral_position_cross": ("1", "P_AB, cross spectral position, step on A, loss on the held-out batch B "
                                "(the quantity of Figure 1)"),
    "spectral_position_b": ("1", "P_B, self spectral position of the held-out batch B"),
    "gradient_cosine": ("1", "cos(grad L_A, grad L_B); P_AB = cos * sqrt(P_A P_B) exactly"),
    "loss_scale_norm": ("as lnp_loss_scale_norm", "normalised loss scale M L_A (A.2)"),
    "network_scale_norm": ("as lnp_network_scale_norm", "normalised network scale N_A / M (A.2)"),
    "loss_scale": ("as lnp_loss_scale", "raw loss scale ||dL_A/df||^2"),
    "network_scale": ("as lnp_network_scale", "raw network scale Tr K_AA"),
}
_REACH_VARIABLES = []
for _name, (_units, _what) in _Q.items():
    _REACH_VARIABLES += [
        _v(_name, _RW, _units, f"window mean of {_what} (NaN where a run has fewer windows)", "C.1"),
        _v(f"{_name}_late_slope", ("run",), "1",
           f"least-squares slope of log(window mean) on log(window_step) over the windows with "
           f"window_step >= slope_start (default: a tenth of the last LNP step); {_name}; ~0 once flat", "4"),
        _v(f"{_name}_last_mean", ("run",), _units, f"mean of the last last_k window means of {_name}", "4"),
        _v(f"{_name}_last_sd", ("run",), _units,
           f"standard deviation (ddof 1) of the last last_k window means of {_name}", "4"),
    ]
_REACH_VARIABLES += [
    _v("n_parameters", ("run",), "parameters", "trainable parameter count (run attrs['n_parameters']); "
       "groups runs by model size", "4"),
    _v("train_loss", ("run", "checkpoint"), "as the run's train_loss",
       "the run's training loss, carried along (NaN where not logged or padded)", "4"),
    _v("heldout_loss", ("run", "checkpoint"), "as the run's heldout_loss",
       "the run's held-out loss, carried along (NaN where not logged or padded)", "D.1"),
    _v("train_loss_final", ("run",), "as train_loss", "last finite train_loss of the run"),
    _v("heldout_loss_final", ("run",), "as heldout_loss", "last finite heldout_loss of the run", "D.1"),
    _v("probe_ratio", ("run", "time_bin"), "1",
       "<P_trained>_tau / <P_random>_tau of the linear probes (top probe_fraction of P per window, "
       "probe_bins bins of normalised time tau)", "5.1, Eq. 12/55"),
    _v("probe_ratio_median", ("run",), "1", "median of probe_ratio over the time bins", "5.1"),
    _v("probe_ratio_bins_below_1", ("run",), "1", "time bins with probe_ratio < 1 (trained backbone lower)",
       "5.1"),
    _v("probe_ratio_bins", ("run",), "1", "time bins with a finite probe_ratio", "5.1"),
    _v("size_mean", ("size", "quantity"), "as the quantity", "mean over the runs of one size", "4"),
    _v("size_sd", ("size", "quantity"), "as the quantity",
       "standard deviation (ddof 1) over the runs of one size; NaN for one run", "4"),
    _v("size_n_runs", ("size",), "1", "runs of this size", "4"),
    _v("ordering_rho", ("ordering",), "1",
       "Spearman rho between n_parameters (runs of one size tied) and the quantity over the runs", "4"),
    _v("ordering_p_value", ("ordering",), "1",
       "exact one-sided permutation p-value: fraction of all assignments of the runs to the size groups "
       "(group sizes kept) with rho as extreme: rho <= observed ('less'), >= ('greater'), |rho| >= |observed| "
       "('two-sided')", "4"),
    _v("ordering_n_assignments", ("ordering",), "1", "distinct assignments enumerated: n! / prod n_size!", "4"),
    _v("ordering_n_as_extreme", ("ordering",), "1", "assignments with rho as extreme as observed", "4"),
    _v("ordering_n_runs", ("ordering",), "1", "runs with a finite quantity used in the test", "4"),
    _v("ordering_n_sizes", ("ordering",), "1", "model sizes among them", "4"),
]

#: name -> :class:`Variable` of every spectral-reach results variable.
REACH: dict[str, Variable] = {v.name: v for v in _REACH_VARIABLES}

#: name -> :class:`Variable` of every spectral-reach results coordinate.
REACH_COORDS: dict[str, Variable] = {v.name: v for v in [
    _v("run", ("run",), "", "run name"),
    _v("lnp_window", ("lnp_window",), "", "log-window index of the LNP schedule", "B.1"),
    _v("window_step", _RW, "optimizer steps", "mean optimizer step of the window's LNP measurements", "C.1"),
    _v("checkpoint", ("checkpoint",), "", "checkpoint index 0, 1, ... of each run"),
    _v("checkpoint_step", ("run", "checkpoint"), "optimizer steps", "optimizer step of each checkpoint (NaN: padding)"),
    _v("time_bin", ("time_bin",), "1", "centre of a normalised-time bin tau in [0, 1] (time_lo, time_hi: edges)",
       "5.1"),
    _v("size", ("size",), "parameters", "model size: the n_parameters of its runs, ascending", "4"),
    _v("quantity", ("quantity",), "", "name of a per-run scalar"),
    _v("ordering", ("ordering",), "", "per-run quantity tested for the size ordering"),
    _v("ordering_alternative", ("ordering",), "", "direction tested: 'less' = larger models lower, 'two-sided' = no "
       "predicted direction"),
]}


def reach_attrs(name: str) -> dict[str, str]:
    """The attrs (units, definition, paper) of spectral-reach results variable or coordinate ``name``.

    >>> reach_attrs("ordering_p_value")["paper"]
    'spectral reach 4'
    """
    v = REACH.get(name) or REACH_COORDS.get(name)
    if v is None:
        raise KeyError(f"{name!r} is not a spectral-reach results variable; known: {sorted(REACH)}")
    out = {"definition": v.definition}
    if v.units:
        out["units"] = v.units
    if v.section:
        out["paper"] = f"spectral reach {v.section}"
    return out


_REACH_START = "<!-- reach-variables: generated by bandscope.schema.reach_markdown_table; do not edit -->"
_REACH_END = "<!-- end reach-variables -->"


def reach_markdown_table() -> str:
    """The spectral-reach results table of ``docs/format.md`` (generated from :data:`REACH`)."""
    def rows(head: str, table: Mapping[str, Variable]) -> list[str]:
        return [f"| {head} | dims | units | definition | paper |", "|---|---|---|---|---|",
                *(f"| `{v.name}` | {', '.join(v.dims)} | {v.units.replace('|', chr(92) + '|')} | "
                  f"{v.definition.replace('|', chr(92) + '|')} | {v.section} |" for v in table.values())]
    return "\n".join([_REACH_START, *rows("variable", REACH), "", "Coordinates:", "",
                      *rows("coordinate", REACH_COORDS), _REACH_END])


def update_reach_docs(path: str | os.PathLike[str] = "docs/format.md") -> Path:
    """Rewrite the generated spectral-reach table in ``path`` (between its marker comments)."""
    path = Path(path)
    text = path.read_text()
    pat = re.compile(re.escape(_REACH_START) + ".*?" + re.escape(_REACH_END), re.S)
    if not pat.search(text):
        raise ValueError(f"{path} has no generated spectral-reach table (marker {_REACH_START!r})")
    path.write_text(pat.sub(lambda m: reach_markdown_table(), text))
    return path
