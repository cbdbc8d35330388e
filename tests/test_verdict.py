"""bandscope.report.verdict (rules), bandscope.report.paper (published values), bandscope.report.numfmt (digits)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandscope.report import paper
from bandscope.report import verdict as V
from bandscope.report.numfmt import fmt_r2, fmt_rho, fmt_sig, fmt_signed


def _crit_oracle(n, alpha=0.05):
    """Slow oracle: ρ of every order of n bands, smallest c with P(ρ >= c) <= alpha."""
    rhos = sorted((1 - 6 * sum((i - p) ** 2 for i, p in enumerate(perm)) / (n * (n * n - 1))
                   for perm in itertools.permutations(range(n))), reverse=True)
    best = math.inf
    for c in sorted(set(round(r, 12) for r in rhos), reverse=True):
        if sum(r >= c - 1e-12 for r in rhos) / len(rhos) <= alpha:
            best = c
        else:
            break
    return best


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7])
def test_spearman_critical_against_enumeration(n):
    assert V.spearman_critical(n) == pytest.approx(_crit_oracle(n))


def test_spearman_critical_large_n_is_between_tables():
    # published one-sided 5 % critical values: n=10 0.564, n=20 0.380 (t approximation close)
    assert V.spearman_critical(10) == pytest.approx(0.564, abs=0.02)
    assert V.spearman_critical(20) == pytest.approx(0.380, abs=0.01)


@pytest.mark.parametrize("args,level", [
    ((0.99, -21.4, "33/36", -1.69), V.HOLDS),
    ((0.99, -21.4, "33/36", +0.3), V.WEAKER),      # only at nominal n
    ((0.99, -1.0, "5/6", -0.1), V.WEAKER),         # below the evidence threshold
    ((0.95, -10.0, "6/6", -1.0), V.WEAKER),        # R² below 0.98
    ((0.85, -10.0, "6/6", -1.0), V.FAILS),         # R² below 0.90
    ((0.99, +0.5, "6/6", -1.0), V.FAILS),          # exponential as good
    ((0.99, -10.0, "3/6", -1.0), V.FAILS),         # wins only half
    ((0.99, float("nan"), "0/0", None), V.UNTESTED),
    ((0.99, -10.0, "6/6", float("nan")), V.WEAKER),  # n/10 undefined
])
def test_weibull_verdict_rules(args, level):
    assert V.weibull_verdict(*args, neff_expected=True).level == level


@given(st.floats(-1, 1), st.sampled_from([+1, -1]), st.integers(3, 9))
def test_ordering_verdict_sign_symmetry(rho, sign, n):
    """Flipping ρ and the predicted sign together never changes the verdict; the wrong sign
    never holds."""
    a = V.ordering_verdict(rho, expected_sign=sign, n_bands=n).level
    b = V.ordering_verdict(-rho, expected_sign=-sign, n_bands=n).level
    assert a == b
    if rho * sign <= 0:
        assert a == V.FAILS
    if abs(rho) >= 1 - 1e-12 and rho * sign > 0 and n >= 4:
        assert a == V.HOLDS


def test_ordering_verdict_spread():
    assert V.ordering_verdict(0.9, q25=-0.1, expected_sign=+1, n_bands=7).level == V.WEAKER
    assert V.ordering_verdict(0.9, q25=0.8, expected_sign=+1, n_bands=7).level == V.HOLDS
    assert V.ordering_verdict(np.nan, expected_sign=+1, n_bands=7).level == V.UNTESTED


def test_paper_values_as_printed():
    assert paper.BAND_FITS[2]["beta"].value == 3.13
    assert paper.BAND_FITS[1]["wins"].value == pytest.approx(4 / 12)
    assert paper.ALL_BAND_FITS["delta_bic"].text == "-19.65"
    assert paper.FULL_LOSS["vit"]["delta_bic"].value == -73.83
    assert paper.FULL_LOSS["cnn"]["delta_bic"].value == 0.95
    assert ("0.80/0.20", 1) not in paper.BAND_FITS_BY_WINDOW       # "—" in Table B.3.1
    assert paper.BAND_FITS_BY_WINDOW[("0.80/0.20", 8)]["delta_bic"].text == "+1.47"
    # §6.2 is Table B.3.2's primary window rounded to two digits
    for m, row in paper.ORDERING_62.items():
        for q, p in row.items():
            assert p.value == pytest.approx(paper.ORDERING[(m, "0.95/0.01")][q].value, abs=0.0051)
    df = paper.as_frame()
    assert df["source"].str.len().min() > 0 and len(df) > 100


def test_numfmt_keeps_digits_and_signs():
    assert fmt_r2(0.999965) == "0.999965"
    assert fmt_r2(0.9999999) != "1"
    assert fmt_r2(1.0) == "1"
    assert fmt_signed(-0.0) in ("0", "-0")
    assert fmt_signed(2.0) == "+2.00"
    assert fmt_sig(-42.9) == "-42.9" and fmt_sig(9.996) == "10.0"
    assert fmt_rho(0.6857) == "+0.686"


@given(st.floats(0.0, 0.99999999))
def test_fmt_r2_never_prints_one_below_one(x):
    text = fmt_r2(x)
    if text.startswith("1-"):
        assert float(text[2:]) == pytest.approx(1 - x, rel=0.06)
    else:
        assert text != "1" and float(text) < 1.0
        assert abs(float(text) - x) <= 0.5 * 10.0 ** -len(text.split(".")[1]) + 1e-15
