"""tools/lm_reach_evidence.py: the P_AB = cos · sqrt(P_A P_B) decomposition of the stored scaling runs
and the exact permutation test over runs, each against its definition."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from tools_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
report = load_tool("lm_reach_evidence", register=True)


def test_permutation_test_against_a_loop_over_scipy():
    rng = np.random.default_rng(3)
    size = np.array([1, 1, 2, 2, 3, 3])  # two runs per size, as the scaling sets
    value = rng.normal(size=6)
    got = report.size_permutation_test(size, value)
    rho = spearmanr(size, value).statistic
    perms = np.array([spearmanr(size, value[list(p)]).statistic for p in itertools.permutations(range(6))])
    assert got["rho"] == pytest.approx(rho, abs=1e-12)
    assert got["p_lower"] == pytest.approx((perms <= rho + 1e-12).mean(), abs=1e-12)
    assert got["p_two"] == pytest.approx((np.abs(perms) >= abs(rho) - 1e-12).mean(), abs=1e-12)


def test_permutation_test_known_answer():
    # four distinct sizes, values strictly decreasing: only the identity order reaches ρ = -1
    got = report.size_permutation_test(np.array([1, 2, 3, 4]), np.array([4.0, 3.0, 2.0, 1.0]))
    assert got["rho"] == pytest.approx(-1.0)
    assert got["p_lower"] == pytest.approx(1 / 24)
    assert got["p_two"] == pytest.approx(2 / 24)


def test_cross_position_factorises_on_the_stored_runs():
    runs = report.load(REPO / "reference_runs" / "lm-scaling-long")
    assert len(runs) == 8
    for r in runs:
        d = r["lnp"]
        cos = d["lnp_grad_dot"] / np.sqrt(d["lnp_grad_norm_sq"] * d["lnp_grad_norm_sq_b"])
        rhs = cos * np.sqrt(d["lnp_spectral_position"] * d["lnp_spectral_position_b"])
        np.testing.assert_allclose(d["lnp_spectral_position_cross"], rhs, rtol=1e-12)
    dec = report.decomposition(runs)
    np.testing.assert_allclose(dec["P_AB"], dec["c_hat"] * np.sqrt(dec["P_A"] * dec["P_B"]), rtol=1e-12)
    assert ((dec["cos_mean"] > -1) & (dec["cos_mean"] < 1)).all()
