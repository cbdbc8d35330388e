"""LNPOptions: every option validated once, a bad value refused with its name, value and fix; legacy
keywords resolved by one rule (options_from_keywords); the module needs no torch."""
import dataclasses
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandscope.errors import BandscopeInputError
from bandscope.lnp.options import (
    BACKEND_NAMES,
    ESTIMATOR_NAMES,
    UNIT_NAMES,
    LNPOptions,
    ReachOptions,
    legacy_estimator,
    options_from_keywords,
)

# (field, bad value, a fragment of the fix the message must give)
BAD = [
    ("estimator", "opacus", "pass one of"),
    ("estimator", "Exact", "pass one of"),
    ("backend", "functorch", "pass one of"),
    ("n_probes", 0, "n_probes >= 1"),
    ("n_probes", -3, "n_probes >= 1"),
    ("n_probes", 2.5, "n_probes >= 1"),
    ("n_probes", "2", "n_probes >= 1"),
    ("n_probes", True, "n_probes >= 1"),
    ("chunk_size", 0, "chunk_size >= 1"),
    ("chunk_size", 1.5, "chunk_size >= 1"),
    ("n_units", 0, "positive number"),
    ("n_units", -2.0, "positive number"),
    ("n_units", float("nan"), "positive number"),
    ("n_units", float("inf"), "positive number"),
    ("n_units", "tokens", "pass one of"),
    ("n_units", True, "positive number"),
    ("n_units_b", [3], "positive number"),
    ("bands", "yes", "True or False"),
    ("bands", 2, "True or False"),
    ("exact_output_layer", None, "True or False"),
    ("distributed", "auto", "True or False"),
    ("output", 1.5, "pass a key"),
    ("output", True, "pass a key"),
]


@pytest.mark.parametrize("name, value, fix", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_each_bad_value_is_refused_naming_it(name, value, fix):
    with pytest.raises(BandscopeInputError) as err:
        LNPOptions(**{name: value})
    msg = str(err.value)
    assert msg.startswith("LNPOptions: ")  # where
    assert f"{name} = {value!r}" in msg  # the bad value, by its field's name
    assert fix in msg  # and the fix


GOOD = [
    ("estimator", e) for e in ESTIMATOR_NAMES] + [("backend", b) for b in BACKEND_NAMES] + [
    ("n_units", u) for u in UNIT_NAMES] + [
    ("n_probes", 1), ("n_probes", 7), ("n_probes", 3.0), ("chunk_size", 4), ("n_units", 12), ("n_units", 7.5),
    ("n_units", len), ("n_units_b", "sum"), ("bands", True), ("bands", 0), ("exact_output_layer", False),
    ("distributed", False), ("distributed", None), ("output", "logits"), ("output", 0), ("output", lambda o: o),
]


@pytest.mark.parametrize("name, value", GOOD, ids=[f"{n}={v!r}" for n, v in GOOD])
def test_good_values_pass_and_are_normalised(name, value):
    opts = LNPOptions(**{name: value})
    got = getattr(opts, name)
    if name in ("bands", "exact_output_layer", "distributed") and value is not None:
        assert got is bool(value)
    elif name in ("n_probes", "chunk_size"):
        assert type(got) is int and got == value
    else:
        assert got is value or got == value


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_n_probes_valid_exactly_from_one(n):
    if n >= 1:
        assert LNPOptions(n_probes=n).n_probes == n
    else:
        with pytest.raises(BandscopeInputError, match=rf"n_probes = {n}\b"):
            LNPOptions(n_probes=n)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_unit_count_valid_exactly_when_positive_and_finite(m):
    if m > 0 and m != float("inf"):
        assert LNPOptions(n_units=m).n_units == m
    else:
        with pytest.raises(BandscopeInputError, match="n_units = "):
            LNPOptions(n_units=m)


@given(st.text(max_size=20))
def test_estimator_names_are_a_closed_set(name):
    if name in ESTIMATOR_NAMES:
        assert LNPOptions(estimator=name).estimator == name
    else:
        with pytest.raises(BandscopeInputError, match="estimator = "):
            LNPOptions(estimator=name)


def test_frozen_and_validated_on_replace():
    opts = LNPOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.n_probes = 3  # type: ignore[misc]
    with pytest.raises(BandscopeInputError, match="n_probes = 0"):
        dataclasses.replace(opts, n_probes=0)


def test_keywords_resolve_by_one_rule():
    # keywords alone build the options; defaults count as not given
    assert options_from_keywords(LNPOptions, None, "f", {"n_probes": 3, "backend": "auto"}) == LNPOptions(n_probes=3)
    # typed options alone pass through (the same object)
    opts = LNPOptions(estimator="exact")
    assert options_from_keywords(LNPOptions, opts, "f", {"estimator": "hutchinson", "n_probes": None}) is opts
    # both set: refused, naming the keyword and the call
    with pytest.raises(BandscopeInputError, match=r"measure_lnp: the LNPOptions and the keyword\(s\) \['n_probes'\]"):
        options_from_keywords(LNPOptions, opts, "measure_lnp", {"n_probes": 4})
    with pytest.raises(BandscopeInputError, match=r"unknown LNPOptions field\(s\) \['window'\]"):
        options_from_keywords(LNPOptions, None, "f", {"window": 3})
    with pytest.raises(BandscopeInputError, match="is not a LNPOptions"):
        options_from_keywords(LNPOptions, ReachOptions(), "f", {})
    # the keyword's validation is the class's own, named by field
    with pytest.raises(BandscopeInputError, match="backend = 'gpu'"):
        options_from_keywords(LNPOptions, None, "f", {"backend": "gpu"})
    assert LNPOptions.from_keywords(None, "f", {"bands": True}) == LNPOptions(bands=True)


def test_legacy_estimator_keyword():
    assert legacy_estimator("exact", "hutchinson", "f") == "exact"
    assert legacy_estimator("exact", "exact", "f") == "exact"
    with pytest.raises(BandscopeInputError, match="network_scale must be one of"):
        legacy_estimator("opacus", "hutchinson", "f")
    with pytest.raises(BandscopeInputError, match="disagree; pass estimator= alone"):
        legacy_estimator("exact", "batch-hutchinson", "f")


def test_options_module_needs_no_torch():
    code = ("import sys; import bandscope.lnp.options as o; o.LNPOptions(estimator='exact'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
