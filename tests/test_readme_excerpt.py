"""The `bandscope reproduce` excerpts in README.md and reference_runs/recorded/README.md are what
the command prints today on the shipped runs (cut by reference_runs/readme_excerpt.py), so
neither README can drift from the data."""

import importlib.util
import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from bandscope.cli import main

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("readme_excerpt", REPO / "reference_runs" / "readme_excerpt.py")
excerpt = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(excerpt)

REPORT = """Analysing 2 runs.

A.1  First
----------
   x
a  1

B.2  Second  [w]
----------------
b  2


Saturation: third
-----------------
c  3
"""


def test_sections_split_on_heading_and_rule():
    secs = excerpt.sections(REPORT.splitlines())
    assert [h for h, _ in secs] == ["A.1  First", "B.2  Second  [w]", "Saturation: third"]
    assert secs[1][1] == ["----------------", "b  2"]  # trailing blank lines dropped


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


def _same(line_a, line_b):
    """Equal lines, numbers compared to 4 significant digits' worth (1e-3 relative)."""
    ta, tb = line_a.split(), line_b.split()
    if len(ta) != len(tb):
        return False
    for a, b in zip(ta, tb):
        try:
            fa, fb = float(a), float(b)
        except ValueError:
            if a != b:
                return False
            continue
        if abs(fa - fb) > 1e-3 * max(abs(fa), abs(fb)) + 1e-12:
            return False
    return True


@pytest.fixture(scope="module")
def excerpt_today():
    """The excerpt cut from `bandscope reproduce` on the shipped runs (run once per module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(["reproduce"]) == 0
        mp.setattr("sys.stdin", io.StringIO(buf.getvalue()))
        cut = io.StringIO()
        with redirect_stdout(cut):
            assert excerpt.main([]) == 0
    return cut.getvalue().splitlines()


@pytest.mark.parametrize("readme", ["README.md", "reference_runs/recorded/README.md"])
def test_readme_excerpt_matches_reproduce_today(readme, excerpt_today):
    want, have = excerpt_today, _readme_block(readme)
    assert len(have) == len(want), f"{readme} excerpt is stale: rerun the command it names"
    bad = [(h, w) for h, w in zip(have, want) if not _same(h, w)]
    assert not bad, f"{readme} excerpt is stale: rerun the command it names; first difference {bad[0]}"
