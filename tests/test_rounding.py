"""The rounding lane's tools: the ulps perturbation (tests/rounding.py), the `rounding` fixture and
the list of numpy's AVX-512 features (tools/numpy_avx512.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rounding import ENV, Rounding, env_ulps, perturb, perturb_dataset, rng_for

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(allow_nan=True, allow_infinity=True)),
       st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_perturb_moves_each_float_by_at_most_ulps(x, ulps, seed):
    y = perturb(x, ulps, np.random.default_rng(seed))
    assert y.dtype == x.dtype and y.shape == x.shape
    fin = np.isfinite(x) & (x != 0)
    np.testing.assert_array_equal(y[~fin], x[~fin])  # zeros, NaN, inf stay
    # within ulps units in the last place (spacing of the larger neighbour at a binade edge)
    with np.errstate(over="ignore"):  # the spacing of the largest float is inf
        assert np.all(np.abs(y[fin] - x[fin]) <= ulps * np.spacing(np.abs(x[fin])) * 2)


def test_perturb_moves_most_elements_and_is_reproducible():
    x = np.linspace(1.0, 2.0, 1000)
    y = perturb(x, 4, rng_for("key", 0))
    assert 0.8 < np.mean(y != x) < 1.0  # k = 0 with probability 1/9
    np.testing.assert_array_equal(y, perturb(x, 4, rng_for("key", 0)))
    assert not np.array_equal(y, perturb(x, 4, rng_for("key", 1)))
    assert perturb(x, 0, rng_for("key")) is x


def test_perturb_keeps_other_kinds_and_float32():
    rng = np.random.default_rng(0)
    ints = np.arange(5)
    assert perturb(ints, 4, rng) is ints
    f32 = np.linspace(1, 2, 100, dtype=np.float32)
    y = perturb(f32, 2, rng)
    assert y.dtype == np.float32 and np.all(np.abs(y - f32) <= 2 * np.spacing(f32))
    assert isinstance(perturb(1.5, 3, rng), float)


def test_rounding_applies_to_datasets_and_dataarrays():
    ds = xr.Dataset({"band_loss": (("checkpoint", "band"), np.full((4, 2), 0.25)),
                     "step": ("checkpoint", np.arange(4))},
                    coords={"band": [1, 2]}, attrs={"name": "r"})
    r = Rounding(4, rng_for("ds"))
    out = r(ds)
    assert out.attrs == ds.attrs and out.step.dtype == ds.step.dtype
    np.testing.assert_array_equal(out.step, ds.step)
    assert (out.band_loss.values != 0.25).any()
    da = r(ds.band_loss)
    assert da.dims == ds.band_loss.dims and (da.values != 0.25).any()
    assert Rounding(0, rng_for("ds"))(ds) is ds and not Rounding(0, rng_for("ds"))
    assert perturb_dataset(ds, 0, rng_for("ds")) is ds


def test_env_ulps(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert env_ulps() == 0
    monkeypatch.setenv(ENV, "4")
    assert env_ulps() == 4
    for bad in ("-1", "four", "1.5"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=ENV):
            env_ulps()


def test_fixture_follows_the_environment(rounding):
    assert rounding.ulps == env_ulps()
    x = np.linspace(1, 2, 50)
    assert (rounding(x) is x) == (env_ulps() == 0)


def test_numpy_avx512_list_is_accepted_and_switches_avx512_off():
    """The names tools/numpy_avx512.py prints are ones this numpy accepts (a wrong name aborts or
    warns at import), and with them set no AVX-512 dispatch target is left on."""
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    tool = str(ROOT / "tools" / "numpy_avx512.py")
    names = subprocess.run([sys.executable, tool], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert all("AVX512" in n or n == "X86_V4" for n in names.split())
    env["NPY_DISABLE_CPU_FEATURES"] = names
    p = subprocess.run([sys.executable, "-W", "error", tool, "--check"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "still on: none" in p.stdout


def test_strict_warnings_catch_deprecations_raised_in_bandscope_modules():
    """BANDSCOPE_STRICT_WARNINGS=1 (the minimum-versions lane) adds these ini filters: a
    deprecation raised in any bandscope module is an error, one raised elsewhere is not."""
    import warnings

    from _pytest.config import parse_warning_filter

    from strict_warnings import FILTERS as STRICT_WARNINGS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for line in STRICT_WARNINGS:  # as pytest applies ini filterwarnings
            warnings.filterwarnings(*parse_warning_filter(line, escape=False))
        for module in ("bandscope", "bandscope.keysearch.fitting", "bandscope.io.runfiles"):
            for cat in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
                with pytest.raises(cat):
                    warnings.warn_explicit("deprecated", cat, "x.py", 1, module=module)
        warnings.warn_explicit("deprecated", DeprecationWarning, "x.py", 1, module="matplotlib._mathtext")
        warnings.warn_explicit("a note", UserWarning, "x.py", 1, module="bandscope.keysearch.analysis")


def test_docstring_examples():
    import doctest

    import rounding

    assert doctest.testmod(rounding).failed == 0
