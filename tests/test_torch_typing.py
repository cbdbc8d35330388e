"""The torch adapter's public names (resolved lazily) are spelled out for type checkers in
``bandscope/torch/__init__.py``'s ``if TYPE_CHECKING:`` block, and a type checker reads the
Monitor's and the callbacks' keywords with their types."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from test_typing import ROOT, SRC, _type_checking_imports  # noqa: E402


def test_type_checking_names_are_the_lazy_names():
    pkg = importlib.import_module("bandscope.torch")
    typed = _type_checking_imports("bandscope.torch")
    assert set(typed) == set(pkg._LAZY), (sorted(set(pkg._LAZY) - set(typed)), sorted(set(typed) - set(pkg._LAZY)))
    for name, module in typed.items():
        assert module == pkg._LAZY[name], name
        # the lazy resolution itself: importing the deprecated module name bandscope.torch.train sets the
        # package attribute `train` to that module (a known defect of the old-name aliases), so not getattr(pkg)
        assert pkg.__getattr__(name) is getattr(importlib.import_module(module), name), name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mypy") is None and importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (the lint extra)")
def test_a_type_checker_checks_the_monitor_and_callback_keywords(tmp_path):
    """mypy, with the project's configuration, refuses a mistyped and a misspelt keyword of the Monitor and of
    both callbacks (``**monitor_options: Unpack[MonitorKeywords]``), and accepts a correct call."""
    pytest.importorskip("lightning.pytorch")
    pytest.importorskip("transformers")
    probe = tmp_path / "calls.py"
    probe.write_text(
        "import torch\n"
        "from bandscope.torch import Monitor\n"
        "from bandscope.torch.hf import BandscopeCallback as HF\n"
        "from bandscope.torch.lightning import BandscopeCallback as Lit\n"
        "Lit(panel=None, schedule=[1, 2], name='ok', probe_batch_size=64, forecast_budget=0.1)\n"  # line 5: fine
        "Lit(total_steps='many')\n"
        "HF(n_poinst=5)\n"
        "Monitor(torch.nn.Linear(2, 2), seed='x')\n")
    p = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
                        "--show-error-codes", "--no-pretty", str(probe)],
                       cwd=ROOT, env={"MYPYPATH": str(SRC), "PATH": ""}, capture_output=True, text=True, timeout=900)
    errors = sorted(ln.split(":")[1] for ln in p.stdout.splitlines() if ": error:" in ln)
    assert errors == ["6", "7", "8"], p.stdout + p.stderr
