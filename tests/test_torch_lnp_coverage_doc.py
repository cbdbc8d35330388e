"""docs/lnp.md's coverage table is what tools/lnp_coverage_table.py generates (registry and sweep list)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]


def test_coverage_table_in_the_docs_is_current():
    pytest.importorskip("torch")
    tool = load_tool("lnp_coverage_table")
    doc = (ROOT / "docs" / "lnp.md").read_text()
    i, j = doc.index(tool.START), doc.index(tool.END) + len(tool.END)
    assert doc[i:j] == tool.block(), "run: python tools/lnp_coverage_table.py --write"
