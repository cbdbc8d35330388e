"""bandscope.schema: one definition of every results variable, used by analyze, JSON and docs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bandscope import io as bio
from bandscope import schema
from bandscope.keysearch.analysis import analyze
from bandscope.keysearch.synthetic import make_runs_synthetic
from bandscope.report import results_json

DOCS = Path(__file__).resolve().parents[1] / "docs" / "format.md"


@pytest.fixture(scope="module")
def res():
    return analyze(make_runs_synthetic(3))


def test_analyze_writes_exactly_the_schema(res):
    assert list(res.data_vars) == list(schema.RESULTS)
    for name, v in schema.RESULTS.items():
        assert res[name].dims == v.dims, name
        assert res[name].attrs["definition"], name
        assert "{" not in res[name].attrs.get("units", ""), (name, res[name].attrs)
    for name, v in schema.COORDS.items():
        assert name in res.coords and res[name].dims == v.dims, name
    assert res.attrs["bandscope_results"] == schema.FORMAT


def test_units_filled_from_the_run(res):
    assert res.onset.attrs["units"] == res.param_time.attrs["units"]
    assert res.floor.attrs["units"] == "squared pixel value"
    assert res.sse_weibull.attrs["units"] == "(squared pixel value)^2"
    pct = {res[v].attrs["units"] for v in res.data_vars if v.endswith("_pct")}
    assert pct == {schema.PCT}  # one wording for every % statistic
    assert "k=5" in res.floor_mean_last_k.attrs["definition"]


def test_docs_table_is_the_schema():
    text = DOCS.read_text()
    assert schema.markdown_table() in text, (
        "docs/format.md's results table differs from bandscope.schema; regenerate it with "
        "python -c \"from bandscope import schema; schema.update_docs('docs/format.md')\"")


def test_docs_table_rows_name_every_variable_once():
    block = schema.markdown_table()
    names = re.findall(r"^\| `([^`]+)` \|", block, flags=re.M)
    assert sorted(names) == sorted([*schema.RESULTS, *schema.COORDS])


def test_json_keys_come_from_the_schema(res, tmp_path):
    out = results_json.write_json(res, tmp_path / "r.json")
    d = json.loads(out.read_text())
    run = d["runs"][str(res.run.values[0])]
    band = run["bands"]["1"]
    fit = band["fits"]["0.95/0.01"]
    assert set(schema.json_keys("fit")) <= set(fit)
    assert set(schema.json_keys("total")) <= set(run["total"])
    assert set(schema.json_keys("band")) <= set(band)
    assert fit["n"] == int(res.fit_n.sel(window="0.95/0.01", band=1)[0])
    assert fit["delta_bic_acf"] == pytest.approx(
        float(res.delta_bic_acf.sel(window="0.95/0.01", band=1)[0]), nan_ok=True)


def test_attrs_and_errors():
    assert schema.attrs("floor", floor="final", loss="L")["definition"].endswith("(here: final)")
    assert schema.attrs("floor", loss="L")["units"] == "L"
    with pytest.raises(KeyError, match="not a results variable"):
        schema.attrs("nope")
    with pytest.raises(ValueError, match="dims"):
        schema.variable("onset", np.zeros(3))
    with pytest.raises(ValueError, match="JSON group"):
        schema.json_keys("nope")
    assert schema.describe("delta_bic").startswith("delta_bic [1]: ")


def test_results_netcdf_roundtrip_and_old_names(res, tmp_path, monkeypatch):
    p = bio.write_results(res, tmp_path / "r.nc")
    back = bio.read_results(p)
    np.testing.assert_array_equal(back.delta_bic.values, res.delta_bic.values)
    # a file written under an old name is read back under the new one
    monkeypatch.setitem(schema.RENAMED, "old_delta_bic", "delta_bic")
    old = res.rename({"delta_bic": "old_delta_bic"})
    p2 = bio.write_results(old, tmp_path / "old.nc")
    np.testing.assert_array_equal(bio.read_results(p2).delta_bic.values, res.delta_bic.values)
    with pytest.raises(FileNotFoundError):
        bio.read_results(tmp_path / "missing.nc")


def test_update_docs_rewrites_the_block(tmp_path):
    page = tmp_path / "format.md"
    page.write_text("intro\n" + schema.markdown_table().replace("| `A` |", "| `stale` |")
                    + "\noutro\n")
    schema.update_docs(page)
    assert schema.markdown_table() in page.read_text()
    page.write_text("no table")
    with pytest.raises(ValueError, match="no generated results table"):
        schema.update_docs(page)
