"""Certified results of the shipped runs, compared digit by digit (as lmfit's NIST tests).

``tests/certified/reference_results.json`` holds every variable and coordinate of
``analyze()`` on the two shipped sets -- ``reference_runs/recorded/*/run.nc`` (6 training
runs) and ``reference_runs/synthetic/*.csv`` (12 synthetic stand-ins) -- at full precision
(floats as their shortest round-trip decimal, NaN as ``null``). The file was written by the
code before the results schema, the options object and the scale-free statistics were
introduced, so this test proves those refactors left every number as it was.

For every float variable the test reports the number of matching significant digits,
``-log10(|got - certified| / |certified|)`` (15 when equal, the minimum over elements), and
requires at least ``MIN_DIGITS`` = 8; integers, booleans and strings must be equal, and NaN
must sit exactly where the certified value is NaN. Variables added since (e.g.
``delta_bic_acf``) are not in the file and are not compared; variables renamed since are
looked up under their new name through :data:`bandscope.schema.RENAMED`.

Regenerate (only when a number is *meant* to change, and say why in the commit)::

    PYTHONPATH=src python tests/test_certified.py --write
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CERTIFIED = Path(__file__).resolve().parent / "certified" / "reference_results.json"
MIN_DIGITS = 8.0
EXACT_DIGITS = 15.0
SETS = {
    "recorded": ("reference_runs/recorded", "*/run.nc"),
    "synthetic": ("reference_runs/synthetic", "*.csv"),
}


def _files(kind):
    folder, pattern = SETS[kind]
    return sorted((ROOT / folder).glob(pattern))


def compute(kind):
    """``analyze()`` of one shipped set with the default options (what ``reproduce`` runs)."""
    from bandscope import io as bio
    from bandscope.keysearch import analysis

    files = _files(kind)
    runs = [bio.read_run(f, name=f.parent.name if f.stem == "run" else f.stem) for f in files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return analysis.analyze(runs)


def _encode(a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        flat = [None if not math.isfinite(x) else float(x) for x in a.ravel().tolist()]
        kind = "float"
    elif a.dtype.kind in "iu":
        flat, kind = [int(x) for x in a.ravel().tolist()], "int"
    elif a.dtype.kind == "b":
        flat, kind = [bool(x) for x in a.ravel().tolist()], "bool"
    else:
        flat, kind = [str(x) for x in a.ravel().tolist()], "str"
    return {"kind": kind, "shape": list(a.shape), "data": flat}


def to_certified(res):
    """Every variable and coordinate of a results Dataset as JSON-ready dicts."""
    return {name: {"dims": list(var.dims), **_encode(var.values)}
            for name, var in sorted(res.variables.items())}


def write():
    out = {kind: to_certified(compute(kind)) for kind in SETS}
    CERTIFIED.parent.mkdir(parents=True, exist_ok=True)
    CERTIFIED.write_text(json.dumps(out, allow_nan=False, separators=(",", ":")) + "\n")
    return CERTIFIED


def matching_digits(got, cert):
    """Matching significant digits of ``got`` against ``cert`` (NaN where cert is NaN skipped).

    >>> matching_digits(np.array([1.0, 2.0000001]), np.array([1.0, 2.0]))
    7.3
    """
    got = np.asarray(got, dtype=np.float64)
    cert = np.asarray(cert, dtype=np.float64)
    both = np.isfinite(cert)
    if not both.any():
        return EXACT_DIGITS
    g, c = got[both], cert[both]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(g - c) / np.where(c != 0, np.abs(c), 1.0)
    err = np.where(np.isnan(err), np.inf, err)
    worst = float(err.max())
    if worst == 0:
        return EXACT_DIGITS
    return round(min(EXACT_DIGITS, -math.log10(worst)), 1)


def _certified():
    if not CERTIFIED.exists():
        pytest.skip(f"{CERTIFIED} missing; write it with python tests/test_certified.py --write")
    return json.loads(CERTIFIED.read_text())


@pytest.mark.parametrize("kind", list(SETS))
def test_certified_digits(kind, capsys):
    from bandscope.schema import RENAMED

    if not _files(kind):
        pytest.skip(f"no {kind} reference runs shipped")
    cert = _certified()[kind]
    res = compute(kind)
    report, bad = [], []
    for name, c in cert.items():
        new = RENAMED.get(name, name)
        assert new in res.variables, f"certified variable {name!r} missing from the results"
        var = res.variables[new]
        assert list(var.dims) == [RENAMED.get(d, d) for d in c["dims"]], (name, var.dims)
        got = np.asarray(var.values)
        assert list(got.shape) == c["shape"], (name, got.shape, c["shape"])
        if c["kind"] == "float":
            cv = np.array([np.nan if x is None else x for x in c["data"]]).reshape(c["shape"])
            gv = got.astype(np.float64)
            nan_c, nan_g = np.isnan(cv), ~np.isfinite(gv)
            if not np.array_equal(nan_c, nan_g):
                where = np.argwhere(nan_c != nan_g)[:3].tolist()
                bad.append(f"{name}: NaN pattern differs at {where}")
                continue
            d = matching_digits(gv, cv)
            report.append((name, d))
            if d < MIN_DIGITS:
                bad.append(f"{name}: {d} matching digits < {MIN_DIGITS}")
        else:
            got_l = _encode(got)["data"]
            if got_l != c["data"]:
                i = next(j for j, (a, b) in enumerate(zip(got_l, c["data"])) if a != b)
                bad.append(f"{name}: element {i} is {got_l[i]!r}, certified {c['data'][i]!r}")
            report.append((name, "exact"))
    with capsys.disabled():
        worst = sorted((d, n) for n, d in report if d != "exact")[:5]
        print(f"\n[{kind}] {len(report)} variables; fewest matching digits: "
              + ", ".join(f"{n}={d}" for d, n in worst))
    assert not bad, "\n".join(bad)


def test_matching_digits_counts():
    assert matching_digits([1.0], [1.0]) == EXACT_DIGITS
    assert matching_digits([1.001], [1.0]) == 3.0
    assert matching_digits([np.nan, 5.0], [np.nan, 5.0]) == EXACT_DIGITS
    assert matching_digits([1e-9], [0.0]) == 9.0


if __name__ == "__main__":  # pragma: no cover
    if "--write" in sys.argv:
        print(f"wrote {write()}")
