"""The schema: every variable of every Dataset bandscope writes, defined once.

:data:`KINDS` holds one :class:`Kind` per Dataset: the run (``run``), its LNP variables
(``lnp_run``), the band losses (``bands``), the LNP statistics (``lnp``), the forecasts
(``forecast``, ``forecast_series``), the results (``results``, ``reach``), the language-model run
files of ``tools/lm_runs_to_runfiles.py`` (``lm_run``) and the Datasets of the functions beneath
the analyses. Each producer takes
its attrs from here (:func:`attrs` ``(kind, name)``, :func:`annotate`), ``tests/test_schema.py``
checks each producer's Dataset against it (:func:`mismatches`) and every table of variables in
``docs/`` is generated from it (:func:`kind_table`, :func:`update_all_docs`,
``tools/schema_docs.py``).

For the key-search results, one table, :data:`RESULTS`, gives each results variable its name, dims, units, definition,
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
``{floor}``, ``{deflation}``, ``{saturation_tol_pct}``, ``{start}`` (the first step of a log-log
slope); :func:`attrs` fills them. The units of the LNP statistics and of a run's losses are
templates in the units of the model (:attr:`Kind.unit_params`): ``{loss}`` (the loss as reduced),
``{output}`` (the model output), ``{param}`` (the parameters) and ``{unit}`` (what the
loss-reduction count M counts), each with its kind's default unless the producer gives it.

Renames are listed in :data:`RENAMED` (old name → new name) so that files written with an
old name stay readable (:func:`upgrade`).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Mapping
    from typing import Literal

    import numpy.typing as npt

__all__ = ["Variable", "RESULTS", "COORDS", "RENAMED", "FORMAT", "attrs", "variable",
           "describe", "json_keys", "markdown_table", "update_docs", "upgrade",
           "REACH", "REACH_COORDS", "REACH_FORMAT", "reach_attrs", "reach_markdown_table", "update_reach_docs",
           "Kind", "KINDS", "kind", "annotate", "annotate_coords", "mismatches", "kind_table", "docs_tables",
           "update_all_docs", "LNP_CONCEPTS", "lnp_concept_table"]

#: ``attrs['bandscope_results']`` of a results Dataset. Additive changes keep the version.
FORMAT = "results/1"

RWB = ("run", "window", "band")
RB = ("run", "band")
R = ("run",)
PCT = "% of band range (max L_i - min L_i)"


@dataclass(frozen=True)
class Variable:
    """One variable (or coordinate) of a Dataset bandscope writes.

    ``units`` is the ``units`` attr (``None``: the variable has no ``units`` attr; ``""`` in the
    results and spectral-reach tables: none either). ``definition`` and ``long_name`` are the
    attrs of the same names (empty: not written). ``section`` is the paper section (the ``paper``
    attr of kinds that write one). ``json`` is ``"fit:<key>"`` (per band and threshold window
    under ``fits``), ``"total:<key>"`` (under ``total``), ``"band:<key>"`` (per band) or ``""``
    (not in the JSON runs section). ``dtype`` is the dtype written (``""``: not fixed), ``when``
    says when the producer writes the variable (``""``: always) and ``note`` is documentation
    only (it is not an attr).
    """

    name: str
    dims: tuple[str, ...]
    units: str | None
    definition: str
    section: str = ""
    json: str = ""
    long_name: str = ""
    dtype: str = ""
    when: str = ""
    note: str = ""


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
_PLACEHOLDER = re.compile(r"\{(loss|time|k|floor|deflation|saturation_tol_pct|start|output|param|unit)\}")
_ONE_WORD = re.compile(r"[\w.]+")


def _fill(text: str, context: Mapping[str, object]) -> str:
    """``text`` with each known placeholder given in ``context`` replaced by its value.

    A value of more than one word raised to a power is parenthesised: ``{loss}**2`` with
    ``loss="nats / byte"`` is ``(nats / byte)**2``.
    """
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in context:
            return m.group(0)
        value = str(context[m.group(1)])
        return f"({value})" if m.string.startswith("**", m.end()) and not _ONE_WORD.fullmatch(value) else value

    return _PLACEHOLDER.sub(sub, text)


def attrs(kind_or_name: str, name: str | None = None, /, **context: object) -> dict[str, str]:
    """The attrs of a variable (or coordinate): ``attrs(name)`` for a results variable,
    ``attrs(kind, name)`` for one of any Dataset kind of :data:`KINDS`.

    Placeholders (``{loss}``, ``{time}``, ``{k}``, ...) are filled from ``context``; unknown
    ones stay as written.

    Examples
    --------
    >>> attrs("onset", time="parameter-space L2 distance")["units"]
    'parameter-space L2 distance'
    >>> attrs("delta_bic")["paper"]
    'key search 5.2'
    >>> attrs("lnp", "spectral_position")["units"]
    '1'
    """
    if name is None:
        if kind_or_name not in RESULTS and kind_or_name not in COORDS:
            raise KeyError(f"{kind_or_name!r} is not a results variable; known: {sorted(RESULTS)}")
        kind_or_name, name = "results", kind_or_name
    k = kind(kind_or_name)
    v = k.variables.get(name) or k.coords.get(name)
    if v is None:
        raise KeyError(f"{name!r} is not a variable of the {k.name!r} Dataset; known: {sorted(k.variables)}")
    return _kind_attrs(k, v, context)


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
    def json_cell(v: Variable) -> str:
        group, _, key = v.json.partition(":")
        where = {"fit": "bands.<r>.fits.<window>", "total": "total", "band": "bands.<r>"}
        return f"`{where[group]}.{key}`" if group else ""

    lines = [*_results_rows("variable", RESULTS, json_cell), "", "Coordinates:", "",
             *_results_rows("coordinate", COORDS)]
    return "\n".join([_START, *lines, _END])


def _results_rows(head: str, table: Mapping[str, Variable],
                  json_cell: Callable[[Variable], str] | None = None) -> list[str]:
    """Markdown rows (name, dims, units, definition, paper[, JSON]) of a results table."""
    def cell(text: str | None) -> str:
        return (text or "").replace("|", "\\|")

    out = [f"| {head} | dims | units | definition | paper |" + (" JSON |" if json_cell else ""),
           "|---|---|---|---|---|" + ("---|" if json_cell else "")]
    return out + [f"| `{v.name}` | {', '.join(v.dims)} | {cell(v.units)} | {cell(v.definition)} | {v.section} |"
                  + (f" {json_cell(v)} |" if json_cell else "") for v in table.values()]


def _replace_block(text: str, start: str, end: str, block: str, path: Path, what: str = "") -> str:
    """``text`` with the block between the marker comments ``start`` and ``end`` replaced by ``block``."""
    pat = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pat.search(text):
        raise ValueError(f"{path} has no generated {what + ' ' if what else ''}table (marker {start!r})")
    return pat.sub(lambda m: block, text)


def _rewrite_block(path: str | os.PathLike[str], start: str, end: str, block: str, what: str) -> Path:
    """Rewrite the generated block of the page ``path`` (between its marker comments) with ``block``."""
    path = Path(path)
    path.write_text(_replace_block(path.read_text(), start, end, block, path, what))
    return path


def update_docs(path: str | os.PathLike[str] = "docs/format.md") -> Path:
    """Rewrite the generated table in ``path`` (between its marker comments)."""
    return _rewrite_block(path, _START, _END, markdown_table(), "results")


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
    _v("time_lo", ("time_bin",), "1", "lower edge of the normalised-time bin tau", "5.1"),
    _v("time_hi", ("time_bin",), "1", "upper edge of the normalised-time bin tau", "5.1"),
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
    if name not in REACH and name not in REACH_COORDS:
        raise KeyError(f"{name!r} is not a spectral-reach results variable; known: {sorted(REACH)}")
    return attrs("reach", name)


_REACH_START = "<!-- reach-variables: generated by bandscope.schema.reach_markdown_table; do not edit -->"
_REACH_END = "<!-- end reach-variables -->"


def reach_markdown_table() -> str:
    """The spectral-reach results table of ``docs/format.md`` (generated from :data:`REACH`)."""
    return "\n".join([_REACH_START, *_results_rows("variable", REACH), "", "Coordinates:", "",
                      *_results_rows("coordinate", REACH_COORDS), _REACH_END])


def update_reach_docs(path: str | os.PathLike[str] = "docs/format.md") -> Path:
    """Rewrite the generated spectral-reach table in ``path`` (between its marker comments)."""
    return _rewrite_block(path, _REACH_START, _REACH_END, reach_markdown_table(), "spectral-reach")


# --------------------------------------------------------------------------- every Dataset kind
# Every Dataset (or DataArray) bandscope writes is a *kind*: the run (``run.make_run``, the torch
# recorder), the band losses (``transforms.bands.band_losses``), the LNP statistics
# (``lnp.statistics.lnp_components`` and ``torch.measure_lnp``), their ``lnp_*`` twins in a run
# file (``torch.LNPHook``), the forecast (``keysearch.forecasting.forecast``) and the two results
# Datasets above. :data:`KINDS` holds them all; :func:`attrs` ``(kind, name)`` gives a variable's
# attrs, :func:`annotate` writes them onto a Dataset, :func:`mismatches` checks one and
# :func:`kind_table` is its table in the docs.


@dataclass(frozen=True)
class Kind:
    """One kind of Dataset: its variables and coordinates, who writes it and where it is documented.

    ``paper`` prefixes the ``paper`` attr written from a variable's ``section`` (``""``: no
    ``paper`` attr). ``empty_units`` writes a ``units`` attr of ``""`` (the results tables leave
    it out). ``dynamic_attrs`` are attrs the producer adds from its call (e.g. the working
    ``dtype`` of the band losses) that the schema does not fix. ``unit_params`` are the placeholders
    of the kind's units that depend on the model, as ``(placeholder, meaning, default)``: the
    producer fills them at write time (``attrs(kind, name, loss="nats / byte")``), a placeholder it
    does not give takes the default (``None``: no default, the producer must give it).
    """

    name: str
    title: str
    producer: str
    variables: dict[str, Variable]
    coords: dict[str, Variable]
    paper: str = ""
    empty_units: bool = True
    dynamic_attrs: tuple[str, ...] = ()
    docs: str = ""
    tag: str = ""
    unit_params: tuple[tuple[str, str, str | None], ...] = ()

    def defaults(self) -> dict[str, str]:
        """placeholder -> default of the :attr:`unit_params` that have one."""
        return {name: default for name, _, default in self.unit_params if default is not None}


def _k(name: str, dims: tuple[str, ...], dtype: str, units: str | None, long_name: str = "",
       definition: str = "", section: str = "", when: str = "", note: str = "") -> Variable:
    return Variable(name, tuple(dims), units, definition, section, long_name=long_name, dtype=dtype,
                    when=when, note=note)


_BAND = _k("band", ("band",), "int64", "pixels per side", "band resolution r",
           note="r = 1, 2, 4, ..., 2^J (band 1 = final Haar approximation coefficient)")
_L2 = "parameter-space L2 distance"
_LOSS = "loss units of the training objective"
#: the placeholder of a run's loss units: what ``{loss}`` means and its default
_RUN_UNIT_PARAMS: tuple[tuple[str, str, str | None], ...] = (("loss", "units of the training loss", _LOSS),)

# ---- the run Dataset (docs/format.md "Run Dataset"; bandscope.run.make_run)
_RUN_VARIABLES = [
    _k("band_loss", ("checkpoint", "band"), "float64", "squared pixel value", "Haar band loss L_i",
       "sum of squared orthogonal Haar coefficients of band i of the panel error / number of pixel values "
       "(key search A.6); sums to the pixel MSE", "A.6", "with a panel"),
    _k("param_time", ("checkpoint",), "float64", _L2, "parameter time s_k (chord)",
       "s_k = sum_{m<=k} ||theta_m - theta_{m-1}||_2 between saved checkpoints (key search A.7)", "A.7",
       note="s_0 = 0"),
    _k("step", ("checkpoint",), "int64", "optimizer steps", "raw training time t", "", "A.7",
       note="optimizer steps taken at the checkpoint (0 at initialisation); -1 throughout = unknown"),
    _k("epoch", ("checkpoint",), "float64", "epochs", "epochs completed", when="optional",
       note="fractional"),
    _k("arc_length", ("checkpoint",), "float64", _L2, "parameter time (exact arc length)",
       "sum over every optimizer step of ||theta_t - theta_{t-1}||_2", "A.7", "optional",
       "the parameter time the spectral-reach analysis uses when present"),
    _k("mse", ("checkpoint",), "float64", "squared pixel value", "pixel MSE of the panel as logged",
       when="optional, with a panel", note="checked against sum of band_loss on read (relative 1e-3)"),
    _k("train_loss", ("checkpoint",), "float64", "{loss}", "training loss",
       "the loss the training loop reported for the update that reached this step (mean over its "
       "micro-batches); NaN where the loop did not report one", when="optional; always in a run without a panel",
       note="NaN at step 0"),
    _k("heldout_loss", ("checkpoint",), "float64", "{loss}", "held-out loss",
       "the loss of the model at this step on the fixed held-out batch (eval mode, no gradient)",
       when="with a held-out batch", section="D.1"),
    _k("lnp_arc_length", ("lnp_step",), "float64", _L2, "arc-length parameter time at the LNP step",
       "sum over every optimizer step up to lnp_step of ||theta_t - theta_{t-1}||_2 (the run's arc_length at "
       "that step)", when="with LNP, written by torch.Monitor"),
]
_RUN_COORDS = [
    dataclasses.replace(_BAND, when="with a panel"),
    _k("checkpoint", ("checkpoint",), "int64", None, note="0, 1, ..., K-1 in saved order"),
    _k("lnp_step", ("lnp_step",), "int64", "optimizer steps", "step of the LNP measurement (before the update)",
       when="with LNP", note="index coordinate of the lnp_* variables (table below)"),
    _k("lnp_window", ("lnp_step",), "int64", None, "measurement window index", section="B.1", when="with LNP",
       note="log window of the measurement (spectral reach B.1)"),
]

# ---- the band losses (bandscope.transforms.bands.band_losses)
_BANDS_VARIABLES = [
    _k("band_loss", ("band",), "float64", "squared pixel value", "Haar band loss L_i",
       "sum of squared orthogonal Haar coefficients of band i of the error e = x - recon / number of pixel "
       "values C*H*W of one image; band 1 = final approximation coefficient, band 2**j = detail sub-bands "
       "refining resolution 2**(j-1) to 2**j; sum over bands = pixel MSE", "§3 (band loss, Eq. 1) and appendix A.6",
       note="per_image=True: leading image dims before band; attrs reduction and dtype say how it was reduced "
       "and the working precision"),
]

# ---- the LNP statistics (lnp.statistics.lnp_components; torch.measure_lnp adds the rest)
# Units of the LNP statistics, templates in the units of the loss as loss_fn reduces it (``{loss}``), of the
# model output f (``{output}``), of the parameters (``{param}``) and of M's loss-reduction units (``{unit}``:
# samples, elements or tokens; docs/lnp.md), filled by the producer (defaults: the words themselves).
_LS = "{loss}**2 / {output}**2"
_NS = "{output}**2 / {param}**2"
_GS = "{loss}**2 / {param}**2"
#: the placeholders of the LNP units: (placeholder, meaning, default); the torch producers write the defaults
_LNP_UNIT_PARAMS: tuple[tuple[str, str, str | None], ...] = (
    ("loss", "units of the loss as loss_fn reduces it", "loss"),
    ("output", "units of the model output f", "output"),
    ("param", "units of the parameters", "param"),
    ("unit", "what the loss-reduction count M counts (samples, elements, tokens)", "unit"),
)
_MEASURED = " (bandscope.torch.measure_lnp, spectral reach B.1)"
_SE = "0 for exact; Hutchinson: over probes (needs n_probes >= 2), else NaN"


def _lnp(name: str, units: str | None, long_name: str, definition: str = "", section: str = "",
         when: str = "", dims: tuple[str, ...] = (), dtype: str = "float64") -> Variable:
    """An LNP statistic; one without a formula of its own is defined by its long name and producer."""
    return _k(name, dims, dtype, units, long_name, definition or long_name + _MEASURED, section, when)


_B = "with a held-out batch B"
_M = "with a loss-reduction count M (n_units)"
_LNP_VARIABLES = [
    _lnp("loss_scale", _LS, "loss scale of batch A (raw)", "||dL_A/df||^2", "3"),
    _lnp("network_scale", _NS, "network scale of batch A (raw)", "Tr K_AA = sum_n ||J_n||_F^2", "3"),
    _lnp("grad_norm_sq", _GS, "squared parameter-gradient norm ||grad L_A||^2",
         "g_A^T K_AA g_A: linear loss decrease per unit learning rate (LNP.md)", "3",
         "with grad_norm_sq (always in measure_lnp)"),
    _lnp("grad_dot", _GS, "gradient dot product grad L_B . grad L_A",
         "g_B^T K_BA g_A: linear decrease of L_B per unit learning rate of a step on A", "A.1", _B),
    _lnp("loss_scale_b", _LS, "loss scale of batch B (raw)", "||dL_B/df||^2", "A.1", _B),
    _lnp("network_scale_b", _NS, "network scale of batch B (raw)", "Tr K_BB = sum_n ||J_n||_F^2", "A.1", _B),
    _lnp("spectral_position", "1", "spectral position P (self)",
         "||grad L_A||^2 / (loss_scale * network_scale), spectral reach Eq. 49", "Eq. 49",
         "with grad_norm_sq (always in measure_lnp)"),
    _lnp("reason", "", "why spectral_position is NaN ('' = valid)", section="", when="with spectral_position",
         dtype="str"),
    _lnp("spectral_position_cross", "1", "spectral position P_AB (cross)",
         "grad L_B . grad L_A / sqrt(loss_scale loss_scale_b network_scale network_scale_b) (LNP.md choice: "
         "geometric means)", "A.1", _B),
    _lnp("reason_cross", "", "why spectral_position_cross is NaN ('' = valid)", when=_B, dtype="str"),
    _lnp("loss_scale_norm", _LS + " * {unit}", "normalised loss scale of batch A (raw)",
         "M * loss_scale (spectral reach appendix A.2)", "A.2", _M),
    _lnp("network_scale_norm", _NS + " / {unit}", "normalised network scale of batch A (raw)",
         "network_scale / M (spectral reach appendix A.2)", "A.2", _M),
    _lnp("loss_scale_b_norm", _LS + " * {unit}", "normalised loss scale of batch B (raw)",
         "M_b * loss_scale_b (spectral reach appendix A.2)", "A.2", _B + " and its M (n_units_b)"),
    _lnp("network_scale_b_norm", _NS + " / {unit}", "normalised network scale of batch B (raw)",
         "network_scale_b / M_b (spectral reach appendix A.2)", "A.2", _B + " and its M (n_units_b)"),
    # measure_lnp (bandscope.torch.lnp) adds:
    _lnp("loss", "{loss}", "loss on batch A as reduced by loss_fn", when="measure_lnp"),
    _lnp("network_scale_se", _NS, "standard error of the network-scale estimate", _SE, when="measure_lnp"),
    _lnp("spectral_position_se", "1", "standard error of P from the network-scale estimate (first order)",
         when="measure_lnp"),
    _lnp("loss_b", "{loss}", "loss on batch B as reduced by loss_fn", when="measure_lnp, " + _B),
    _lnp("grad_norm_sq_b", _GS, "||grad L_B||^2", when="measure_lnp, " + _B),
    _lnp("network_scale_b_se", _NS, "standard error of the network-scale estimate", _SE,
         when="measure_lnp, " + _B),
    _lnp("spectral_position_b", "1", "spectral position P of batch B (self)", when="measure_lnp, " + _B),
    _lnp("band_grad_dot", _GS, "grad L_i . grad L (linear decrease of the step, band i)",
         "J^T g_i . J^T g with g_i the Haar projection of dL/df; sums to grad_norm_sq", when="measure_lnp(bands=True)",
         dims=("band",)),
    _lnp("band_grad_norm_sq", _GS, "||J^T g_i||^2", when="measure_lnp(bands=True)", dims=("band",)),
    _lnp("band_loss_scale", _LS, "||g_i||^2 (sums to loss_scale)", when="measure_lnp(bands=True)", dims=("band",)),
    _lnp("band_spectral_position", "1", "per-band spectral position P_i",
         "||J^T g_i||^2 / (||g_i||^2 network_scale) (LNP.md, band-resolved)", when="measure_lnp(bands=True)",
         dims=("band",)),
]


# ---- the LNP measurement schedule (lnp.statistics.log_windows) and the probe ratio (lnp.statistics.probe_ratio)
_SCHEDULE_VARIABLES = [
    _k("window_start", ("window",), "int64", "optimizer steps", section="B.1", note="first step of each log window"),
    _k("window_stop", ("window",), "int64", "optimizer steps (exclusive)", section="B.1",
       note="first step after each window (window_start + steps_per_window)"),
    _k("lnp_window", ("lnp_step",), "int64", None, section="B.1",
       note="the window of each measured step (a step in overlapping windows belongs to the first)"),
]
_SCHEDULE_COORDS = [
    _k("window", ("window",), "int64", None, note="window index 0, 1, ..."),
    _k("lnp_step", ("lnp_step",), "int64", None, note="the optimizer steps to measure, ascending"),
]
_PROBE_RATIO = [
    _k("probe_ratio", ("time_bin",), "float64", "1",
       definition="<P_pretrained>_tau / <P_random>_tau, spectral reach Eq. 12/55",
       note="attr top_fraction: the fraction of P kept per window ('none': all)"),
]


def _lnp_run_variable(v: Variable) -> Variable:
    """The ``lnp_*`` twin in a run file of LNP statistic ``v``: one value per ``lnp_step``."""
    dims = ("lnp_step", *("lnp_band" if d == "band" else d for d in v.dims))
    return dataclasses.replace(v, name=f"lnp_{v.name}", dims=dims, when="with LNP" + (
        "" if v.when in ("", "measure_lnp") or v.when.startswith("with grad_norm_sq")
        else "; " + v.when.replace("measure_lnp, ", "").replace("measure_lnp(bands=True)", "LNPHook(bands=True)")))


# ---- the forecast (keysearch.forecasting.forecast): per band and for the full loss (total_)
_FORECAST = [  # name, units ({loss}, {time}: the run's band_loss and param_time units), definition
    ("floor", "{loss}", "forecast of the curve's late value (what a saturated curve settles at): the latest "
     "value moved toward the evidence-weighted ensemble floor by the calibrated weight k of its calibration "
     "group (docs/forecast.md)"),
    ("floor_low", "{loss}", "lower end of the conformal interval of floor (calibrated on real runs, "
     "leave-one-run-out validated; docs/forecast.md)"),
    ("floor_high", "{loss}", "upper end of the conformal interval of floor (inf: too few calibration "
     "scores for the confidence)"),
    ("floor_ensemble", "{loss}", "BIC-weighted mean of the asymptotes of the curve families pow3, weibull, "
     "exp, two_phase, saturated"),
    ("floor_spread", "{loss}", "spread of the family asymptotes: weighted sd + range of the families "
     "with weight >= 0.05 over 4"),
    ("family", "", "the curve family with the largest evidence weight"),
    ("stage", "1", "fall over the second half of the fitted checkpoints / range seen so far"),
    ("stage_group", "", "Mondrian calibration group: by stage 0 (at rest) ... 4 (still falling fast), or 5 "
     "(early: fewer than 20 checkpoints in the forecast's prefix, any stage); -1 without calibration"),
    ("weibull_floor", "{loss}", "floor L_inf of the single Weibull-with-onset fit "
     "L(s) = L_inf + A exp(-(max(s - onset, 0)/omega)^beta)"),
    ("weibull_floor_low", "{loss}", "lower end of its profile-likelihood interval (model-based: "
     "assumes the Weibull shape)"),
    ("weibull_floor_high", "{loss}", "upper end of its profile-likelihood interval (model-based)"),
    ("s_reach", "{time}", "parameter time at which the fitted residual L - L_inf falls to `level` "
     "times its value at s_start: onset + omega (ln 1/level)^(1/beta)"),
    ("s_reach_low", "{time}", "lower end of the profile-likelihood interval of s_reach"),
    ("s_reach_high", "{time}", "upper end of the profile-likelihood interval of s_reach "
     "(inf: not bounded by the data yet)"),
    ("s_remaining", "{time}", "max(s_reach - s_now, 0): parameter time still to go (0 = reached)"),
    ("s_remaining_low", "{time}", "max(s_reach_low - s_now, 0)"),
    ("s_remaining_high", "{time}", "max(s_reach_high - s_now, 0)"),
    ("A", "{loss}", "fitted amplitude: residual L - L_inf at s_start"),
    ("omega", "{time}", "fitted Weibull scale"),
    ("beta", "1", "fitted Weibull shape, bounded to [0.05, 8] (key search B.1)"),
    ("onset", "{time}", "fitted onset s_on in [s_start, ...): L = L_inf + A before it"),
    ("s_start", "{time}", "parameter time of the curve's peak, where the fit starts (s_0 for a "
     "curve falling from the start)"),
    ("start_index", "checkpoint", "index of the checkpoint at s_start"),
    ("n_fit", "checkpoints", "checkpoints fitted (from s_start to the latest)"),
    ("rose", "", "the curve rose significantly (> 3 noise sd) above its first value before its peak"),
    ("kappa_floor", "1", "sandwich (Newey-West, HC3) / model variance ratio of the floor, in [1, 20]: "
     "how much the floor interval was widened for unequal or correlated noise"),
    ("kappa_reach", "1", "the same ratio for log(s_reach - s_start), widening the s_reach interval"),
    ("status", "", "'ok', 'too_few_checkpoints', 'rising', 'not_started' or 'failed'"),
    ("reason", "", "why the forecast is NaN, or notes on an 'ok' one"),
]
_FORECAST_TEXT = ("family", "status", "reason")


def _fdtype(name: str) -> str:
    """dtype of forecast variable ``name``: text, a count or index, a flag, else a float."""
    return ("str" if name in _FORECAST_TEXT else "int64" if name in ("stage_group", "start_index", "n_fit")
            else "bool" if name == "rose" else "float64")


_FORECAST_TOTAL = ("full loss L_tot = sum_i L_i (= mse), fitted on its own (not the sum of the band fits): ")
_FORECAST_VARIABLES = [
    *(_k(n, ("band",), _fdtype(n), u, definition=d) for n, u, d in _FORECAST),
    *(_k("total_" + n, (), _fdtype(n), u, definition=_FORECAST_TOTAL + d)
      for n, u, d in _FORECAST),
    _k("s_now", (), "float64", "{time}", definition="parameter time of the latest checkpoint used"),
    _k("n_checkpoints", (), "int64", None, definition="checkpoints used (the prefix)"),
]
_SERIES_VARIABLES = [  # forecast() of a plain scalar curve: no band, no total_ twin, no units of its own
    *(_k(n, (), _fdtype(n), "" if u in ("{loss}", "{time}") else u, definition=d)
      for n, u, d in _FORECAST),
    _k("s_now", (), "float64", None, definition="time of the latest point used"),
    _k("n_checkpoints", (), "int64", None, definition="points used (the prefix)"),
]


# ---- the power law of parameter time (transforms.paramtime.fit_power_time)
_S_T = "s(t) = a + b t**gamma"
_POWER_TIME_VARIABLES = [
    _k("gamma", (), "float64", "1", f"exponent gamma of {_S_T}"),
    _k("a", (), "float64", _L2, f"offset a of {_S_T}"),
    _k("b", (), "float64", _L2 + " / step**gamma", f"scale b of {_S_T}"),
    _k("r2", (), "float64", "1", "R^2 = 1 - SSE/SST of the fit on the linear scale"),
    _k("gamma_stderr", (), "float64", "1", "asymptotic standard error of gamma (Jacobian, SSE/(n-3))"),
    _k("sse", (), "float64", f"({_L2})**2", "sum of squared residuals"),
    _k("n", (), "int64", None, "checkpoints used in the fit"),
    _k("status", (), "str", None, "ok / omitted (too few points) / failed"),
    _k("reason", (), "str", None, "why a fit is omitted or failed"),
]
_EPOCH_WINDOWS = "with epoch_windows"
_POWER_TIME_COORDS = [
    _k("epoch_window", ("epoch_window",), "str", None, when=_EPOCH_WINDOWS,
       note="label 'lo-hi' of each epoch window, e.g. '0-10'"),
    _k("epoch_lo", ("epoch_window",), "float64", "epochs", when=_EPOCH_WINDOWS,
       note="first epoch of the window (lo <= epoch, included)"),
    _k("epoch_hi", ("epoch_window",), "float64", "epochs", when=_EPOCH_WINDOWS,
       note="last epoch of the window (epoch <= hi, included)"),
]


def _per_run(v: Variable, dims: tuple[str, ...] | None = None) -> Variable:
    """Results variable ``v`` as one run's producer writes it: without the ``run`` dim (or with ``dims``)."""
    return dataclasses.replace(v, dims=tuple(d for d in v.dims if d != "run") if dims is None else dims)


_RUN_GAMMA_VARIABLES = [
    *(_per_run(RESULTS[n]) for n in ("gamma", "gamma_a", "gamma_b", "gamma_r2", "gamma_w", "gamma_w_r2")),
    Variable("note", (), None, "why a gamma is NaN (no step, a failed fit); '' if none is", dtype="str"),
]


# ---- one run's key-search steps (keysearch.trajectory, keysearch.ordering.band_ordering): the results
# variables without the run dim, and the intermediates the results do not keep
_TRAJECTORY_VARIABLES = [
    *(_per_run(RESULTS[n]) for n in ("floor_mean_last_k", "floor_final", "floor_convention_diff_pct",
                                     "floor_window_drift_pct", "floor_window_trend_pct", "late_noise_pct",
                                     "saturated")),
    _k("residual", ("checkpoint", "band"), "float64", "{loss}", "band residual R_i",
       "R_i = L_i - L_i^inf, L_i^inf the floor given to residuals()", "5.1"),
    _k("total_residual", ("checkpoint",), "float64", "{loss}", "total residual R_tot",
       "R_tot = sum_i R_i = L_tot - sum_i L_i^inf; NaN where a band loss is NaN", "A.9"),
    _k("normalized_residual", ("band", "checkpoint"), "float64", "1", "normalised residual q_i",
       "q_i(s_k) = R_i(s_k) / R_i(s_0); NaN for a band with R_i(s_0) <= 0 (within 16 ulps of max |R_i|)", "5.1"),
    _k("crossing", ("band", "alpha"), "float64", "{time}", "alpha-crossing c_i(alpha)",
       "first k with q_{k-1} > alpha >= q_k, q = R_i/R_i(s_0); c = s_{k-1} + (q_{k-1}-alpha)/(q_{k-1}-q_k)"
       "(s_k-s_{k-1}); NaN if never crossed or R_i(s_0) <= 0", "A.10"),
    *(_per_run(RESULTS[n]) for n in ("onset", "width")),
    _k("in_window", ("window", "band", "checkpoint"), "bool", None, "checkpoint in the active window",
       "c_i(hi) < s_k < c_i(lo) (strict: a checkpoint on a crossing is outside)", "5.1"),
    *(_per_run(RESULTS[n]) for n in ("fit_start", "fit_stop", "fit_n")),
    *(_per_run(RESULTS[n], ("metric", "window")) for n in ("rho", "rho_n")),
]
_TRAJECTORY_COORDS = [
    dataclasses.replace(_BAND, when="as the band losses'"),
    _k("checkpoint", ("checkpoint",), "", None, when="as the band losses'", note="the band losses' checkpoint index"),
    _k("alpha", ("alpha",), "float64", "1", definition="the thresholds alpha of the crossings, as given",
       section="A.10"),
    *(COORDS[n] for n in ("window", "window_hi", "window_lo", "metric")),
]

# ---- a quantity summarised across runs (keysearch.ordering.summarize_runs); units: the quantity's
_ACROSS = "over the runs' finite values (NaN runs ignored; all NaN: NaN)"
_ACROSS_RUNS_VARIABLES = [
    _k("median", (), "float64", None, definition="median " + _ACROSS),
    _k("q25", (), "float64", None, definition="25th percentile (linear interpolation) " + _ACROSS),
    _k("q75", (), "float64", None, definition="75th percentile (linear interpolation) " + _ACROSS),
    _k("min", (), "float64", None, definition="smallest " + _ACROSS.replace("; all NaN: NaN", "")),
    _k("max", (), "float64", None, definition="largest " + _ACROSS.replace("; all NaN: NaN", "")),
    _k("n_runs", (), "int64", "1", definition="runs with a finite value"),
]

# ---- one run's spectral-reach summary (lnp.windows.summarise_run, window_means): the reach results
# variables without the run dim, and what the functions beneath it return
_SUMMARY_VARIABLES = [_per_run(v) for v in _REACH_VARIABLES
                      if not v.name.startswith(("size_", "ordering_"))]
_SUMMARY_COORDS = [_per_run(REACH_COORDS[n]) for n in ("lnp_window", "window_step", "checkpoint", "checkpoint_step",
                                                       "time_bin", "time_lo", "time_hi")]
_WINDOW_FUNCTIONS = [  # definitions only: summarise_run gives the same values the attrs of REACH
    _k("gradient_cosine", ("lnp_step",), "float64", "1",
       definition="cos(grad L_A, grad L_B) = grad L_B . grad L_A / sqrt(||grad L_A||^2 ||grad L_B||^2); P_AB = "
       "cos * sqrt(P_A P_B) exactly; NaN where a squared norm is not positive", section="C.1",
       note="gradient_cosine(); dims of its inputs"),
    _k("late_slope", (), "float64", "1",
       definition="least-squares slope of log Q on log step over step >= {start}; NaN with fewer than 3 finite "
       "positive entries", section="4", note="loglog_slope(); the dims of its input but dim"),
    _k("last_mean", (), "float64", None, definition="mean of the last k finite window means", section="4",
       note="last_windows()[0]; units: those of its input"),
    _k("last_sd", (), "float64", None, definition="standard deviation (ddof 1) of the last k finite window means",
       section="4", note="last_windows()[1]; units: those of its input"),
]

# ---- the linear probes of a spectral-reach run file (tools/lm_runs_to_runfiles.py; spectral reach 5.1)
_PROBE_HEAD = ("; only a re-initialised output head trained on the frozen trained (end of training) or random "
               "(initialisation) backbone, spectral reach 5.1")
_LNP_BY_NAME = {v.name: v for v in _LNP_VARIABLES}
_LNP_PROBES = [  # the LNP statistic of the same name (units, long name, definition), measured on the probe
    _k(f"probe_{name}", ("probe_backbone", "probe_lnp_step"), "float64", _LNP_BY_NAME[name].units,
       "linear probe: " + _LNP_BY_NAME[name].long_name, _LNP_BY_NAME[name].definition + _PROBE_HEAD,
       when="" if name == "spectral_position" else "optional")
    for name in ("spectral_position", "spectral_position_cross", "network_scale_norm", "loss_scale_norm")
]
_LNP_PROBE_COORDS = [
    _k("probe_backbone", ("probe_backbone",), "str", None, note="'trained' and 'random': the backbone the probe "
       "head was trained on"),
    _k("probe_lnp_step", ("probe_lnp_step",), "int64", "probe optimizer steps",
       note="optimizer step of the probe head's own training at the measurement"),
    _k("probe_lnp_window", ("probe_lnp_step",), "int64", None, "log-window index of the probe schedule",
       note="log windows as spectral reach B.1"),
]


# ---- a language-model run file of spectral reach (tools/lm_runs_to_runfiles.py): the run's losses (here
# cross-entropies, logged by tools/lm_scaling.py), every scalar LNP statistic of measure_lnp as its lnp_*
# twin and the linear probes; units in the model's units (``{loss}`` given by the tool)
_RUN_BY_NAME = {v.name: v for v in _RUN_VARIABLES}
_LM_TRAIN_LOSS = dataclasses.replace(
    _RUN_BY_NAME["train_loss"], when="", note="NaN at step total_steps (no update taken there)",
    definition="mean cross-entropy per token of the training batch of the update taken at this step, as the loop "
    "logged it before that optimizer step (a recorded run's train_loss at step + 1: there it is the update that "
    "reached the step)")
_LM_HELDOUT_LOSS = dataclasses.replace(
    _RUN_BY_NAME["heldout_loss"], when="",
    definition="mean cross-entropy per token of the model at this step on the fixed held-out pool (config.json "
    "heldout_pool sequences; eval mode, no gradient)",
    note="logged at the first step of each LNP window and at total_steps; NaN at the other steps")
_LM_RUN_VARIABLES = [
    _LM_TRAIN_LOSS, _LM_HELDOUT_LOSS,
    *(dataclasses.replace(_lnp_run_variable(v), when="")  # the scalar statistics of measure_lnp
      for v in _LNP_VARIABLES if v.dtype == "float64" and not v.dims),
    *(dataclasses.replace(v, when="with probes") for v in _LNP_PROBES),
]
_LM_RUN_COORDS = [
    dataclasses.replace(_RUN_BY_NAME["step"], when=""),
    *(dataclasses.replace(c, when="") for c in _RUN_COORDS if c.name in ("lnp_step", "lnp_window")),
    *(dataclasses.replace(c, when="with probes") for c in _LNP_PROBE_COORDS),
]
_LM_UNIT_PARAMS: tuple[tuple[str, str, str | None], ...] = (
    ("loss", "units of the cross-entropy: nats / byte for a byte-level vocabulary (256), else nats / token", None),
    ("output", "units of the model output", "logit"),
    ("param", "units of the parameters", "param"),
    ("unit", "what M counts (measure_lnp n_units='targets')", "tokens"),
)


def _table(rows: list[Variable]) -> dict[str, Variable]:
    out = {v.name: v for v in rows}
    if len(out) != len(rows):
        raise ValueError(f"duplicate names in a schema table: {[v.name for v in rows]}")
    return out


#: kind -> :class:`Kind` of every Dataset bandscope writes.
KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("run", "Run Dataset", "bandscope.run.make_run (every reader, the torch recorder)",
         _table(_RUN_VARIABLES), _table(_RUN_COORDS), docs="docs/format.md", tag="run-variables",
         unit_params=_RUN_UNIT_PARAMS),
    Kind("lnp_run", "LNP variables of a run file", "bandscope.torch.LNPHook (through the recorder)",
         _table([_lnp_run_variable(v) for v in _LNP_VARIABLES]),
         _table([_RUN_COORDS[2], _RUN_COORDS[3],
                 dataclasses.replace(_BAND, name="lnp_band", dims=("lnp_band",), when="LNPHook(bands=True)")]),
         dynamic_attrs=("reason",), docs="docs/format.md", tag="lnp-run-variables", unit_params=_LNP_UNIT_PARAMS),
    Kind("bands", "Band losses", "bandscope.transforms.bands.band_losses", _table(_BANDS_VARIABLES),
         _table([_BAND]), paper="key search ", dynamic_attrs=("reduction", "dtype"), docs="docs/bands.md",
         tag="band-loss-variables"),
    Kind("lnp", "LNP statistics", "bandscope.lnp.statistics.lnp_components, bandscope.torch.measure_lnp",
         _table(_LNP_VARIABLES), _table([dataclasses.replace(_BAND, when="measure_lnp(bands=True)")]),
         dynamic_attrs=("reason",), docs="docs/lnp.md", tag="lnp-variables", unit_params=_LNP_UNIT_PARAMS),
    Kind("lnp_schedule", "LNP measurement schedule", "bandscope.lnp.statistics.log_windows",
         _table(_SCHEDULE_VARIABLES), _table(_SCHEDULE_COORDS)),
    Kind("probe_ratio", "Probe ratio", "bandscope.lnp.statistics.probe_ratio", _table(_PROBE_RATIO),
         {n: REACH_COORDS[n] for n in ("time_bin", "time_lo", "time_hi")}, paper="spectral reach ",
         empty_units=False, dynamic_attrs=("top_fraction",)),
    Kind("forecast", "Forecast of a run", "bandscope.keysearch.forecasting.forecast(run)",
         _table(_FORECAST_VARIABLES), _table([_BAND]), docs="docs/forecast.md", tag="forecast-variables"),
    Kind("forecast_series", "Forecast of a plain curve", "bandscope.keysearch.forecasting.forecast(values)",
         _table(_SERIES_VARIABLES), {}, docs="docs/forecast.md", tag="forecast-series-variables"),
    Kind("results", "Results Dataset", "bandscope.keysearch.analysis.analyze", RESULTS, COORDS,
         paper="key search ", empty_units=False),
    Kind("reach", "Spectral-reach results Dataset", "bandscope.lnp.reach.reach_analysis", REACH, REACH_COORDS,
         paper="spectral reach ", empty_units=False, dynamic_attrs=("units",)),
    Kind("across_runs", "A quantity across runs", "bandscope.keysearch.ordering.summarize_runs",
         _table(_ACROSS_RUNS_VARIABLES), {}, empty_units=False, dynamic_attrs=("units",), docs="docs/format.md",
         tag="across-runs-variables"),
    Kind("power_time", "Power law of parameter time", "bandscope.transforms.paramtime.fit_power_time",
         _table(_POWER_TIME_VARIABLES), _table(_POWER_TIME_COORDS), docs="docs/paramtime.md",
         tag="power-time-variables"),
    Kind("run_gamma", "Gamma of a run", "bandscope.transforms.paramtime.fit_run_gamma", _table(_RUN_GAMMA_VARIABLES),
         {"gamma_window": COORDS["gamma_window"]}, paper="key search ", empty_units=False, docs="docs/paramtime.md",
         tag="run-gamma-variables"),
    Kind("trajectory", "One run's key-search steps",
         "bandscope.keysearch.trajectory (floors, residuals, normalized_residual, crossings, onset_width, "
         "active_windows), bandscope.keysearch.ordering.band_ordering", _table(_TRAJECTORY_VARIABLES),
         _table(_TRAJECTORY_COORDS), paper="key search ", empty_units=False, docs="docs/format.md",
         tag="trajectory-variables"),
    Kind("lnp_summary", "One run's spectral-reach summary", "bandscope.lnp.windows.summarise_run, window_means",
         _table(_SUMMARY_VARIABLES), _table(_SUMMARY_COORDS), paper="spectral reach ", empty_units=False,
         dynamic_attrs=("units", "top_fraction"), docs="docs/lnp.md", tag="lnp-summary-variables"),
    Kind("lnp_windows", "LNP window functions", "bandscope.lnp.windows (gradient_cosine, loglog_slope, last_windows)",
         _table(_WINDOW_FUNCTIONS), {}, paper="spectral reach ", empty_units=False, dynamic_attrs=("units",),
         docs="docs/lnp.md", tag="lnp-window-functions"),
    Kind("lnp_probes", "Linear probes of a spectral-reach run file", "tools/lm_runs_to_runfiles.py",
         _table(_LNP_PROBES), _table(_LNP_PROBE_COORDS), paper="spectral reach ", docs="docs/format.md",
         tag="lnp-probe-variables", unit_params=_LNP_UNIT_PARAMS),
    Kind("lm_run", "Language-model run file", "tools/lm_runs_to_runfiles.py", _table(_LM_RUN_VARIABLES),
         _table(_LM_RUN_COORDS), docs="docs/lnp.md", tag="lm-run-variables", unit_params=_LM_UNIT_PARAMS),
]}


def kind(name: str) -> Kind:
    """The :class:`Kind` called ``name`` (a key of :data:`KINDS`).

    >>> kind("run").variables["step"].units
    'optimizer steps'
    """
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a Dataset kind; known: {sorted(KINDS)}") from None


def _kind_attrs(k: Kind, v: Variable, context: Mapping[str, object]) -> dict[str, str]:
    context = {**k.defaults(), **context}
    missing = [n for n, _, default in k.unit_params if default is None and n not in context
               and "{" + n + "}" in (v.units or "") + v.definition]
    if missing:
        raise ValueError(f"the units of {v.name!r} of kind {k.name!r} depend on the model: give "
                         f"{', '.join(f'{n}=...' for n in missing)} (e.g. attrs({k.name!r}, {v.name!r}, "
                         f"{missing[0]}='...'))")
    out = {}
    if v.units is not None and (v.units or k.empty_units):
        out["units"] = _fill(v.units, context)
    if v.long_name:
        out["long_name"] = v.long_name
    if v.definition:
        out["definition"] = _fill(v.definition, context)
    if k.paper and v.section:
        out["paper"] = k.paper + v.section
    return out


def annotate(ds: xr.Dataset, kind_name: str, *, coords_only: bool = False, **context: object) -> xr.Dataset:
    """``ds`` with every variable and coordinate of kind ``kind_name`` given its schema attrs.

    Attrs the producer sets from its call (the kind's ``dynamic_attrs``: a ``reason``, the units
    of the run a spectral-reach quantity came from) are kept;
    variables the kind does not define are left alone (:func:`mismatches` reports them).
    With ``coords_only``, only the kind's coordinates that have no attrs yet are given theirs, in
    ``ds`` itself (changed in place and returned: several producers build one results Dataset's
    coordinates, :func:`annotate_coords`).

    Examples
    --------
    >>> ds = annotate(xr.Dataset({"step": ("checkpoint", [0, 10])}), "run")
    >>> ds.step.attrs["long_name"]
    'raw training time t'
    """
    k = kind(kind_name)
    if not coords_only:
        ds = ds.copy()
    for name in (ds.coords if coords_only else ds.variables):
        v = (None if coords_only else k.variables.get(str(name))) or k.coords.get(str(name))
        var = ds.variables[name]  # the stored Variable: ``ds[name]`` of an index coordinate is a copy in older xarray
        if v is None or (coords_only and var.attrs):
            continue
        var.attrs = {**_kind_attrs(k, v, context), **{a: x for a, x in var.attrs.items() if a in k.dynamic_attrs}}
    return ds


def annotate_coords(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (changed in place and returned) with every results coordinate of :data:`COORDS`
    that has no attrs given its schema attrs (``run``, ``window``, ``checkpoint``, ...):
    ``annotate(ds, "results", coords_only=True)``.

    Examples
    --------
    >>> annotate_coords(xr.Dataset(coords={"run": ["a"]})).run.attrs["definition"]
    'run name'
    """
    return annotate(ds, "results", coords_only=True)


def mismatches(ds: xr.Dataset | xr.DataArray, kinds: str | tuple[str, ...], *, complete: bool = False,
               **context: object) -> list[str]:
    """How ``ds`` differs from the schema of ``kinds`` (one kind or several, e.g. a run file with LNP).

    Lists every variable or coordinate that no kind defines, whose dims, dtype or attrs differ from
    its definition (attrs compared for equality after the kind's ``dynamic_attrs`` are dropped), and,
    with ``complete``, every defined variable that ``ds`` lacks. Empty: ``ds`` is as defined.

    >>> mismatches(xr.Dataset({"step": ("checkpoint", [0])}), "run")
    ["step: attrs {} != schema {'units': 'optimizer steps', 'long_name': 'raw training time t'}"]
    """
    names = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    ks = [kind(n) for n in names]
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=str(ds.name))
    out = []
    for name in ds.variables:
        found = [(k, v) for k in ks if (v := k.variables.get(str(name)) or k.coords.get(str(name))) is not None]
        if not found:
            out.append(f"{name}: not in the schema of {names}")
            continue
        k, v = found[0]
        if tuple(ds[name].dims) != v.dims:
            out.append(f"{name}: dims {tuple(ds[name].dims)} != schema {v.dims}")
        dt = ds[name].dtype
        if v.dtype and not (dt.kind in "OUS" if v.dtype == "str" else dt == np.dtype(v.dtype)):
            out.append(f"{name}: dtype {dt} != schema {v.dtype}")
        got = {a: x for a, x in ds[name].attrs.items() if a not in k.dynamic_attrs}
        want = {a: x for a, x in _kind_attrs(k, v, dict(context)).items() if a not in k.dynamic_attrs}
        if got != want:
            out.append(f"{name}: attrs {got} != schema {want}")
    if complete:
        out += [f"{name}: in the schema of {k.name}, not in the Dataset" for k in ks
                for name in [*k.variables, *k.coords] if name not in ds.variables]
    return out


def kind_table(kind_name: str) -> str:
    """The table of kind ``kind_name``'s variables in its docs page, between its marker comments.

    Columns: name (coordinates marked), dims, dtype, units, long name and definition, paper
    section, and when the producer writes it. Units are set as code (``**`` is not emphasis, a trailing
    ``{unit}`` not an attribute list). A kind with :attr:`Kind.unit_params` says first what
    each placeholder of its units means and its default.
    """
    k = kind(kind_name)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [f"<!-- {k.tag}: generated by bandscope.schema.kind_table({k.name!r}); do not edit -->"]
    if k.unit_params:
        rows += ["Units placeholders, filled by the producer when it writes: " + "; ".join(
            f"`{{{name}}}`: {meaning} ("
            + (f"default `{default}`" if default is not None else "no default: given by the producer") + ")"
            for name, meaning, default in k.unit_params) + ".", ""]
    rows += ["| name | dims | dtype | units | meaning | paper | written |", "|---|---|---|---|---|---|---|"]
    for v, coord in [*((c, True) for c in k.coords.values()), *((v, False) for v in k.variables.values())]:
        meaning = "; ".join(t for t in (v.long_name, v.definition if v.definition != v.long_name + _MEASURED
                                        else "", v.note) if t)
        units = f"`{cell(v.units)}`" if v.units else ""
        rows.append(f"| `{v.name}`{' (coord)' if coord else ''} | `{', '.join(v.dims) or '()'}` | {v.dtype} | "
                    f"{units} | {cell(meaning)} | {v.section} | {cell(v.when or 'always')} |")
    rows.append(f"<!-- end {k.tag} -->")
    return "\n".join(rows)




#: The LNP quantities of ``docs/lnp.md`` ("What is computed"): (quantity, formula, where the Dataset of
#: kind ``lnp`` holds it). Every plain name in backquotes in the last column is a variable of that kind
#: (:func:`lnp_concept_table` checks), so the table cannot name a variable the Dataset lacks.
LNP_CONCEPTS: list[tuple[str, str, str]] = [
    ("loss scale ℒ", "‖g‖²", "`loss_scale`"),
    ("network scale 𝒩", "Tr K = Σ_n ‖J_n‖_F²", "`network_scale` (+ `network_scale_se`)"),
    ("linear decrease", "‖∇L‖² = gᵀKg", "`grad_norm_sq`"),
    ("spectral position", "P = ‖∇L‖²/(ℒ𝒩) ∈ [0, 1] (Eq. 49)", "`spectral_position`"),
    ("cross (step on A, loss on B)", "∇L_B·∇L_A = g_BᵀK_BA g_A", "`grad_dot`"),
    ("cross position", "P_AB = ∇L_B·∇L_A / √(ℒ_Aℒ_B𝒩_A𝒩_B) ∈ [−1, 1] (LNP.md choice)", "`spectral_position_cross`"),
    ("normalised scales (A.2)", "ℒ̃ = Mℒ, 𝒩̃ = 𝒩/M",
     '`loss_scale_norm`, `network_scale_norm`; M in `attrs["n_units"]`'),
    ("band split (image MSE)", "g_i = Haar projection of g; ∇L_i·∇L (Σ_i = ‖∇L‖²)", "`band_grad_dot` (dim `band`)"),
    ("band position", "P_i = ‖Jᵀg_i‖² / (‖g_i‖² 𝒩)",
     "`band_spectral_position`, with `band_loss_scale` = ‖g_i‖², `band_grad_norm_sq`"),
]
_CONCEPTS_TAG = "lnp-concepts"


def lnp_concept_table() -> str:
    """The table of LNP quantities of ``docs/lnp.md`` (:data:`LNP_CONCEPTS`), between its marker comments.

    Raises ``ValueError`` if a quantity names a variable (or dim) that kind ``lnp`` does not define.
    """
    k = kind("lnp")
    rows = [f"<!-- {_CONCEPTS_TAG}: generated by bandscope.schema.lnp_concept_table; do not edit -->",
            "| quantity | formula | name in results |", "|---|---|---|"]
    for quantity, formula, where in LNP_CONCEPTS:
        unknown = [n for n in re.findall(r"`([A-Za-z_]\w*)`", where) if n not in k.variables and n not in k.coords]
        if unknown:
            raise ValueError(f"LNP_CONCEPTS row {quantity!r} names {unknown}, not variables of kind 'lnp'")
        rows.append(f"| {quantity} | {formula} | {where} |")
    rows.append(f"<!-- end {_CONCEPTS_TAG} -->")
    return "\n".join(rows)


def docs_tables() -> dict[str, list[str]]:
    """docs page -> the generated tables it holds (each a block with its own marker comments).

    >>> sorted(docs_tables())
    ['docs/bands.md', 'docs/forecast.md', 'docs/format.md', 'docs/lnp.md', 'docs/paramtime.md']
    """
    out: dict[str, list[str]] = {"docs/format.md": [markdown_table(), reach_markdown_table()],
                                 "docs/lnp.md": [lnp_concept_table()]}
    for k in KINDS.values():
        if k.docs:
            out.setdefault(k.docs, []).append(kind_table(k.name))
    return out


def update_all_docs(root: str | Path = ".", check: bool = False) -> list[Path]:
    """Rewrite every generated variable table of the docs under ``root`` from the schema.

    With ``check``, write nothing and return the pages whose tables differ from the schema.
    """
    root = Path(root)
    changed = []
    for page, blocks in docs_tables().items():
        path = root / page
        text = path.read_text()
        new = text
        for block in blocks:
            first, last = block.split("\n")[0], block.split("\n")[-1]
            new = _replace_block(new, first.split(":")[0], last, block, path)
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    return changed
