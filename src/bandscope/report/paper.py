"""The key-search paper's published numbers, each with the section or table it comes from.

Every value a report prints as "paper" is read from here, and nowhere else. A value is a
:class:`Published`: the number (for "k/n" counts, the fraction k/n), the text exactly as the
paper prints it, and its source (section or table of the key-search paper). The
paper's runs: 12 CelebA 64×64 autoencoders (6 CNN + 6 ViT, seeds 45–50, §5, A.4), 7 bands
(r = 1 … 64), 84 run-band fits (B.2).

Where the paper prints one quantity twice with different digits, both are kept under their own
source: band 8's median R² is 0.996 in Table B.2 and 0.995 in Table B.3.1 (column .95/.01).

=====================  ========================================================  ===========
name                   content                                                   source
=====================  ========================================================  ===========
``BAND_FITS``          band → R², β, ΔBIC, wins, ΔBIC(n/10), wins(n/10)          Table B.2
``ALL_BAND_FITS``      the same over all 84 run-band fits (R² from B.2's text)   §6.1, B.2
``BAND_FITS_BY_WINDOW`` (window, band) → R², β, ΔBIC; absent where the paper       Table B.3.1
                       prints "—"
``ORDERING``           (metric, window) → median ρ, q25, q75, min, max           Table B.3.2
``ORDERING_62``        metric → the same at two digits, primary window           Table §6.2
``FULL_LOSS``          group ("overall", "cnn", "vit") → R², β, ΔBIC,            §6.3
                       band-sum R²
``GAMMA``              (epoch window, arch) → runs, γ, R²; overall γ             A.7
``FLOOR_CONVENTION``   largest mean-of-last-5 vs final floor difference, %       A.9
=====================  ========================================================  ===========

>>> BAND_FITS[1]["delta_bic"].text, BAND_FITS[1]["delta_bic"].source
('+1.14', 'Table B.2')
>>> ORDERING[("width", "0.95/0.01")]["median"].value
0.964
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pandas as pd

__all__ = ["Published", "N_RUNS", "N_BANDS", "BANDS", "PRIMARY_WINDOW", "BAND_FITS",
           "ALL_BAND_FITS", "BAND_FITS_BY_WINDOW", "ORDERING", "ORDERING_62", "FULL_LOSS",
           "GAMMA", "FLOOR_CONVENTION", "as_frame"]


@dataclass(frozen=True)
class Published:
    """One published number.

    Attributes
    ----------
    value : float
        The number; a count "k/n" is stored as the fraction k/n, "≈ x" as x.
    text : str
        As printed in the paper (sign, digits, "≈", "k/n").
    source : str
        Where it is printed, e.g. ``"Table B.2"`` or ``"§6.3"``.
    """

    value: float
    text: str
    source: str

    def __str__(self) -> str:
        return self.text


def _num(text: str, source: str) -> Published:
    t = text.strip()
    v = t.replace("≈", "").replace("+", "").strip()
    if "/" in v:
        k, n = v.split("/")
        value = int(k) / int(n)
    else:
        value = float(v)
    return Published(value, t, source)


def _freeze(d: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(d)


N_RUNS = 12
"""Runs in the paper: 6 CNN + 6 ViT, seeds 45–50 (§5, A.4)."""
BANDS = (1, 2, 4, 8, 16, 32, 64)
"""The paper's band resolutions r for 64×64 images (A.6)."""
N_BANDS = len(BANDS)
PRIMARY_WINDOW = "0.95/0.01"
"""The active-window thresholds of the paper's main results (§5.1)."""

_B2 = """\
1	0.982	0.90	+1.14	4/12	-0.52	12/12
2	0.992	3.13	-19.05	11/12	-1.97	12/12
4	0.995	1.31	-3.58	10/12	-0.49	8/12
8	0.996	1.29	-9.27	12/12	-0.80	11/12
16	0.998	1.28	-50.63	12/12	-4.28	12/12
32	0.999	1.26	-70.92	12/12	-6.03	12/12
64	0.999	1.16	-35.44	11/12	-2.49	11/12"""
_B2_KEYS = ("r2", "beta", "delta_bic", "wins", "delta_bic_neff", "wins_neff")

BAND_FITS = _freeze({
    int(row.split("\t")[0]): _freeze({k: _num(t, "Table B.2") for k, t in zip(_B2_KEYS, row.split("\t")[1:])})
    for row in _B2.splitlines()
})
"""Per-band medians across 12 runs, window 0.95/0.01 (Table B.2). Keys: ``r2``, ``beta``,
``delta_bic`` (BIC_Weibull − BIC_exp), ``wins`` (fits with ΔBIC < 0, k/12), ``delta_bic_neff``
and ``wins_neff`` (the same with n_eff = n/10)."""

ALL_BAND_FITS = _freeze({
    "r2": _num("0.997", "B.2 (text)"),
    "delta_bic": _num("-19.65", "§6.1, B.2"),
    "wins": _num("72/84", "§6.1, B.2"),
    "delta_bic_neff": _num("-1.73", "§6.1, B.2"),
    "wins_neff": _num("78/84", "§6.1, B.2"),
})
"""Medians over all 84 run-band fits (§6.1; B.2 "Overall"; B.2 "Robustness to effective sample
size"). The paper gives no overall median β."""

_B31 = """\
1	0.982	0.90	+1.14	—	—	—	—	—	—
2	0.992	3.13	-19.05	0.979	2.62	-11.88	—	—	—
4	0.995	1.31	-3.58	0.994	1.36	-3.60	0.993	1.60	-5.47
8	0.995	1.29	-9.27	0.993	1.32	-5.05	0.994	1.03	+1.47
16	0.998	1.28	-50.63	0.997	1.21	-14.09	0.997	1.10	-8.63
32	0.999	1.26	-70.92	0.999	1.29	-45.73	0.999	1.22	-19.37
64	0.999	1.16	-35.44	0.999	1.17	-36.09	1.000	1.19	-38.79"""
_B31_WINDOWS = ("0.95/0.01", "0.90/0.10", "0.80/0.20")


def _b31() -> MappingProxyType[Any, Any]:
    out = {}
    for row in _B31.splitlines():
        cells = row.split("\t")
        band = int(cells[0])
        for j, w in enumerate(_B31_WINDOWS):
            trio = cells[1 + 3 * j: 4 + 3 * j]
            if "—" in trio:
                continue
            out[(w, band)] = _freeze({k: _num(t, "Table B.3.1") for k, t in zip(("r2", "beta", "delta_bic"), trio)})
    return _freeze(out)


BAND_FITS_BY_WINDOW = _b31()
"""(window, band) → ``r2``, ``beta``, ``delta_bic`` medians (Table B.3.1). Pairs the paper
prints as "—" (fewer than five checkpoints in the window) are absent."""

_B32 = """\
onset	0.95/0.01	0.786	0.750	0.786	0.750	0.893
onset	0.90/0.10	0.786	0.750	0.786	0.750	0.893
onset	0.80/0.20	0.804	0.750	0.929	0.750	0.964
width	0.95/0.01	0.964	0.964	0.964	0.929	1.000
width	0.90/0.10	1.000	0.964	1.000	0.964	1.000
width	0.80/0.20	1.000	1.000	1.000	0.964	1.000
floor	0.95/0.01	0.964	0.964	0.964	0.964	0.964
floor	0.90/0.10	0.964	0.964	0.964	0.964	0.964
floor	0.80/0.20	0.964	0.964	0.964	0.964	0.964
initial_residual	0.95/0.01	-0.893	-0.893	-0.875	-0.893	-0.821
initial_residual	0.90/0.10	-0.893	-0.893	-0.875	-0.893	-0.821
initial_residual	0.80/0.20	-0.893	-0.893	-0.875	-0.893	-0.821"""
_RHO_KEYS = ("median", "q25", "q75", "min", "max")

ORDERING = _freeze({
    (c[0], c[1]): _freeze({k: _num(t, "Table B.3.2") for k, t in zip(_RHO_KEYS, c[2:])})
    for c in (row.split("\t") for row in _B32.splitlines())
})
"""(metric, window) → within-run Spearman ρ(band resolution, metric) across 12 runs: ``median``,
``q25``, ``q75`` (the IQR), ``min``, ``max`` (Table B.3.2). Metrics as in
:data:`bandscope.keysearch.ordering.METRICS`: onset τ_i, width w_i, floor L_i^∞, initial residual R_i(s_0)."""

_62 = """\
onset	0.79	0.75	0.79	0.75	0.89
width	0.96	0.96	0.96	0.93	1.00
floor	0.96	0.96	0.96	0.96	0.96
initial_residual	-0.89	-0.89	-0.88	-0.89	-0.82"""

ORDERING_62 = _freeze({
    c[0]: _freeze({k: _num(t, "§6.2 table") for k, t in zip(_RHO_KEYS, c[1:])})
    for c in (row.split("\t") for row in _62.splitlines())
})
"""metric → the §6.2 table (primary window 0.95/0.01, two digits); the same numbers as
:data:`ORDERING` rounded."""

FULL_LOSS = _freeze({
    "overall": _freeze({"r2": _num("0.996", "§6.3"), "delta_bic": _num("-28.83", "§6.3"),
                        "band_sum_r2": _num("0.986", "§6.3")}),
    "vit": _freeze({"beta": _num("0.79", "§6.3"), "delta_bic": _num("-73.83", "§6.3")}),
    "cnn": _freeze({"beta": _num("≈0.95", "§6.3"), "delta_bic": _num("≈+0.95", "§6.3")}),
})
"""Single Weibull fitted to R_tot over all checkpoints, medians over runs (§6.3): overall R²,
ΔBIC and the band-sum reconstruction's R²; by architecture β and ΔBIC (the paper calls the CNN
"a near-tie with exponential"). The paper gives no overall β, no win counts and no n/10 values
here."""

_A7 = """\
0-10	cnn	6	0.354	0.999
0-25	cnn	6	0.371	1.000
0-50	cnn	6	0.370	1.000
0-10	vit	6	0.472	0.999
0-25	vit	6	0.412	0.999
0-50	vit	6	0.365	0.999"""

GAMMA = _freeze({
    **{(c[0], c[1]): _freeze({"runs": _num(c[2], "Table A.7"), "gamma": _num(c[3], "Table A.7"),
                              "r2": _num(c[4], "Table A.7")})
       for c in (row.split("\t") for row in _A7.splitlines())},
    ("all checkpoints", "all"): _freeze({"runs": _num("12", "A.7 (text)"), "gamma": _num("0.368", "A.7 (text)"),
                                         "gamma_sd": _num("0.008", "A.7 (text)"),
                                         "r2": _num("0.999", "A.7 (text)")}),
})
"""(epoch window, arch) → ``runs``, median ``gamma`` and median ``r2`` of s(t) ≈ a + b·t^γ
(Table A.7); ("all checkpoints", "all") is the 50-epoch fit over all 12 runs (A.7 text)."""

FLOOR_CONVENTION = Published(0.51, "0.51%", "A.9")
"""Largest difference between the mean-of-last-5 and final-checkpoint floors over all run-band
pairs, in % of the band's range (A.9)."""


def as_frame() -> pd.DataFrame:
    """Every published value as one long table: ``name``, ``key``, ``quantity``, ``value``,
    ``text``, ``source``.

    >>> df = as_frame()
    >>> df.loc[(df.name == "BAND_FITS") & (df.key == "1") & (df.quantity == "wins"), "text"].item()
    '4/12'
    """
    rows = []
    tables = {"BAND_FITS": BAND_FITS, "ALL_BAND_FITS": {"all": ALL_BAND_FITS},
              "BAND_FITS_BY_WINDOW": BAND_FITS_BY_WINDOW, "ORDERING": ORDERING,
              "ORDERING_62": ORDERING_62, "FULL_LOSS": FULL_LOSS, "GAMMA": GAMMA,
              "FLOOR_CONVENTION": {"all": {"max_diff_pct": FLOOR_CONVENTION}}}
    for name, table in tables.items():
        for key, vals in table.items():
            k = " ".join(str(x) for x in key) if isinstance(key, tuple) else str(key)
            for q, p in vals.items():
                rows.append({"name": name, "key": k, "quantity": q, "value": p.value,
                             "text": p.text, "source": p.source})
    return pd.DataFrame(rows)
