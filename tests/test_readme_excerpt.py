"""The `bandscope reproduce` excerpts in README.md and reference_runs/recorded/README.md are what
the command prints today on the shipped runs (cut by tools/readme_excerpt.py), so neither
README can drift from the data. Numbers are compared to the digits printed (one unit in the last
place), so a fit that differs in its last bits on another CPU does not fail the test."""

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from bandscope.cli import main
from tools_loader import load_tool

REPO = Path(__file__).resolve().parents[1]
excerpt = load_tool("readme_excerpt")

REPORT = """Analysing 2 runs.

A.1  First
----------
   x
a  1

B.2  Second  [w]
================
b  2


Saturation: third
-----------------
c  3
"""


def test_sections_split_on_heading_and_rule():
    secs = excerpt.sections(REPORT.splitlines())
    assert [h for h, _ in secs] == ["A.1  First", "B.2  Second  [w]", "Saturation: third"]
    assert secs[1][1] == ["================", "b  2"]  # trailing blank lines dropped


def test_main_selects_in_report_order_and_rejects_unknown(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(REPORT))
    assert excerpt.main(["Saturation", "A.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Analysing 2 runs.\n\nA.1  First")
    assert out.index("A.1") < out.index("Saturation") and "B.2" not in out
    monkeypatch.setattr("sys.stdin", io.StringIO(REPORT))
    assert excerpt.main(["Z"]) == 1
    assert "no section starts with Z" in capsys.readouterr().err


def _readme_block(readme):
    text = (REPO / readme).read_text()
    m = re.search(r"readme_excerpt\.py`:\n\n```\n(.*?)```\n", text, re.S)
    assert m, f"{readme} has no reproduce excerpt block"
    return m.group(1).splitlines()


_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _ulp(token):
    """One unit in the last printed place of a decimal token (``"-0.0657"`` -> 1e-4); 0 for an
    integer (counts must match exactly)."""
    mant, _, exp = token.partition("e")
    if "." not in mant:
        return 0.0
    return 10.0 ** (-len(mant.split(".")[1]) + (int(exp) if exp else 0))


def _same(line_a, line_b):
    """Equal lines (spacing aside), numbers equal to within one unit of the last printed digit."""
    text_a, text_b = (" ".join(_NUM.sub("#", x).split()) for x in (line_a, line_b))
    na, nb = _NUM.findall(line_a), _NUM.findall(line_b)
    if text_a != text_b or len(na) != len(nb):
        return False
    return all(abs(float(a) - float(b)) <= max(_ulp(a), _ulp(b)) * 1.0001 + 1e-15 for a, b in zip(na, nb))


def test_same_allows_one_unit_in_the_last_place():
    assert _same("R² 0.973  -14.0  5/6", "R² 0.974  -14.1  5/6")
    assert not _same("R² 0.973  -14.0", "R² 0.975  -14.0")
    assert not _same("holds 0.973", "weaker 0.973")
    assert not _same("+1.000", "-1.000")
    assert not _same("wins 5/6", "wins 6/6")


@pytest.fixture(scope="module")
def reproduce_today():
    """What `bandscope reproduce` prints on the shipped runs (run once per module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(["reproduce"]) == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def excerpt_today(reproduce_today):
    """The excerpt cut from it by tools/readme_excerpt.py."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO(reproduce_today))
        cut = io.StringIO()
        with redirect_stdout(cut):
            assert excerpt.main([]) == 0
    return cut.getvalue().splitlines()


def test_reproduce_fits_100_columns_and_has_verdicts(reproduce_today):
    lines = reproduce_today.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[2].startswith("Verdicts")


@pytest.mark.parametrize("readme", ["README.md", "reference_runs/recorded/README.md"])
def test_readme_excerpt_matches_reproduce_today(readme, excerpt_today):
    want, have = excerpt_today, _readme_block(readme)
    assert len(have) == len(want), f"{readme} excerpt is stale: rerun the command it names"
    bad = [(h, w) for h, w in zip(have, want) if not _same(h, w)]
    assert not bad, f"{readme} excerpt is stale: rerun the command it names; first difference {bad[0]}"
