"""ruff's allow list may only shrink.

``[tool.ruff.lint.per-file-ignores]`` in pyproject.toml holds two kinds of entries: folder globs
(``"tests/*"``: a policy, such as no docstring rules for tests) and single files (the allow list:
a file and the complexity or docstring codes it breaks today). Two checks keep the allow list a
ratchet:

- every listed (file, code) still breaks: ruff runs once, with the allow list removed, over the
  listed files; a code that no longer fires must leave the list (so a fixed file shrinks it);
- the list holds at most ``FROZEN_ENTRIES`` (file, code) pairs, so growing it is a visible edit
  of this test, not only of pyproject.toml.

The mypy error codes switched off per module (``disable_error_code`` in ``[tool.mypy]``
overrides, for bodies mypy cannot yet follow) are held the same way: at most
``FROZEN_MYPY_CODES``, and each must still fire in its module with the overrides removed (slow:
one cold mypy run).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: (file, code) pairs in the allow list; lower it when you fix one, never raise it
FROZEN_ENTRIES = 12

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _per_file_ignores() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["ruff"]["lint"]["per-file-ignores"]


def _allow_list() -> dict[str, list[str]]:
    return {k: v for k, v in _per_file_ignores().items() if not any(c in k for c in "*?[")}


def _toml_inline(table: dict[str, list[str]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()) + "}"


def test_allow_list_names_files_that_exist():
    allow = _allow_list()
    assert allow, "no allow list found in [tool.ruff.lint.per-file-ignores]"
    missing = [f for f in allow if not (ROOT / f).is_file()]
    assert not missing, f"allow-list entries for files that do not exist (delete them from pyproject.toml): {missing}"


def test_allow_list_does_not_grow():
    n = sum(len(codes) for codes in _allow_list().values())
    assert n <= FROZEN_ENTRIES, (
        f"the ruff allow list has {n} (file, code) pairs, more than the {FROZEN_ENTRIES} frozen in "
        "tests/test_lint_ratchet.py: fix the new violation instead of listing it")


def test_every_listed_code_still_breaks():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (the lint extra)")
    allow = _allow_list()
    policy = {k: v for k, v in _per_file_ignores().items() if k not in allow}
    files = [f for f in allow if (ROOT / f).is_file()]
    p = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--exit-zero", "--output-format", "json",
         "--config", f"lint.per-file-ignores = {_toml_inline(policy)}", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    found: dict[str, set[str]] = {}
    for d in json.loads(p.stdout):
        found.setdefault(Path(d["filename"]).resolve().relative_to(ROOT).as_posix(), set()).add(d["code"])
    stale = sorted((f, c) for f, codes in allow.items() for c in codes if c not in found.get(f, set()))
    assert not stale, (
        f"these files no longer break these codes: delete them from the allow list in pyproject.toml "
        f"and lower FROZEN_ENTRIES in tests/test_lint_ratchet.py: {stale}")


# --------------------------------------------------------------------------- mypy
#: (module, error code) pairs switched off in [tool.mypy] overrides; lower it when you drop one
FROZEN_MYPY_CODES = 21


def _mypy_config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mypy"]


def _disabled_codes() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for o in _mypy_config().get("overrides", []):
        if "disable_error_code" in o:
            mods = o["module"] if isinstance(o["module"], list) else [o["module"]]
            for m in mods:
                out.setdefault(m, []).extend(o["disable_error_code"])
    return out


def test_mypy_disabled_codes_do_not_grow():
    n = sum(len(v) for v in _disabled_codes().values())
    assert n <= FROZEN_MYPY_CODES, (
        f"{n} (module, code) pairs are switched off for mypy, more than the {FROZEN_MYPY_CODES} frozen in "
        "tests/test_lint_ratchet.py: annotate the body instead")


def _ini_value(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, list):
        return ", ".join(v)
    return str(v)


@pytest.mark.slow
def test_every_disabled_mypy_code_still_fires(tmp_path):
    """mypy once, without the disable_error_code overrides: each switched-off code must still occur
    in its module (else it leaves the list)."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (the lint extra)")
    cfg = _mypy_config()
    lines = ["[mypy]"] + [f"{k} = {_ini_value(v)}" for k, v in cfg.items() if k != "overrides"]
    for o in cfg.get("overrides", []):
        if "disable_error_code" in o:
            continue
        mods = o["module"] if isinstance(o["module"], list) else [o["module"]]
        lines.append(f"[mypy-{','.join(mods)}]")
        lines += [f"{k} = {_ini_value(v)}" for k, v in o.items() if k != "module"]
    ini = tmp_path / "mypy.ini"
    ini.write_text("\n".join(lines) + "\n")
    p = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ini), "--cache-dir", str(tmp_path / "cache"),
                        "--show-error-codes", "--no-pretty"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    found: dict[str, set[str]] = {}
    for ln in p.stdout.splitlines():
        if ": error:" in ln and ln.rstrip().endswith("]"):
            path, code = ln.split(":", 1)[0], ln.rstrip().rsplit("[", 1)[1][:-1]
            mod = ".".join(Path(path).with_suffix("").parts[1:]).removesuffix(".__init__")
            found.setdefault(mod, set()).add(code)
    assert found, p.stdout[-3000:] + p.stderr[-3000:]
    stale = sorted((m, c) for m, codes in _disabled_codes().items() for c in codes if c not in found.get(m, set()))
    assert not stale, (f"mypy no longer reports these codes in these modules: drop them from the overrides in "
                       f"pyproject.toml and lower FROZEN_MYPY_CODES: {stale}")
    unexpected = sorted(set(found) - set(_disabled_codes()))
    assert not unexpected, f"mypy errors outside the overridden modules: {unexpected}\n{p.stdout[-3000:]}"
