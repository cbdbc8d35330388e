"""Package-level checks: the core imports and runs without torch."""
import subprocess
import sys
import textwrap


def test_core_imports_without_torch():
    # A meta-path finder that refuses torch, as on a machine where torch is not installed.
    code = textwrap.dedent(
        """
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == 'torch' or name.startswith('torch.'):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import bandscope
        for name in ['bands', 'paramtime', 'trajectory', 'fitting', 'ordering', 'analysis',
                     'io', 'tables', 'lnp', 'synthetic', 'run', 'cli', 'recordcli']:
            __import__(f'bandscope.{name}')
        from bandscope.keysearch.synthetic import make_run_synthetic
        res = bandscope.analyze(make_run_synthetic(1, n_bands=4))
        assert 'delta_bic' in res
        x = np.random.default_rng(0).random((2, 3, 8, 8))
        bl = bandscope.band_losses(x, x * 0.5)
        assert abs(float(bl.sum()) - float(((x * 0.5) ** 2).mean())) < 1e-12
        try:
            import bandscope.torch
        except ImportError as exc:
            assert "bandscope[torch]" in str(exc)
        else:
            raise AssertionError("bandscope.torch imported without torch")
        assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_version():
    import bandscope

    assert bandscope.__version__


def test_every_lazy_export_resolves():
    import bandscope

    for name in bandscope.__all__:
        assert getattr(bandscope, name) is not None, name


def test_every_torch_export_resolves():
    import pytest

    pytest.importorskip("torch")
    import bandscope.torch as bt

    for name in bt.__all__:
        assert getattr(bt, name) is not None, name


def test_pyproject_lists_every_package_and_only_data():
    """pyproject.toml lists packages by hand (the run sets are mapped in from reference_runs/):
    every package under src/ must be there, and the run-set mapping must carry data only."""
    import fnmatch
    from pathlib import Path

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    repo = Path(__file__).resolve().parents[1]
    cfg = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    src = repo / "src"
    found = {".".join(p.parent.relative_to(src).parts) for p in src.glob("**/__init__.py")}
    assert found <= set(cfg["packages"]), found - set(cfg["packages"])
    for pkg, rel in cfg["package-dir"].items():
        if not pkg:
            continue
        assert pkg in cfg["packages"]
        d = repo / rel
        assert not list(d.glob("**/*.py")) and not list(d.glob("**/*.sh")), f"scripts in {d}"
        files = [p.relative_to(d).as_posix() for p in d.glob("**/*") if p.is_file() and "state" not in p.parts]
        shipped = [f for f in files if any(fnmatch.fnmatch(f, g) for g in cfg["package-data"][pkg])]
        assert "README.md" in shipped and len(shipped) > 1, pkg


def test_minimum_versions_lane_pins_the_declared_floors():
    """constraints-min.txt (the minimum-versions lane) pins each declared floor exactly, so the
    floors in pyproject.toml are the versions that lane tests."""
    import re
    from pathlib import Path

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    repo = Path(__file__).resolve().parents[1]
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for x in ("test", "plot", "dask") for r in project["optional-dependencies"][x]]
    floors = {}
    for r in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?>=([0-9.]+)", r.replace(" ", ""))
        assert m, f"requirement {r!r} has no plain >= floor"
        floors[m.group(1).lower()] = m.group(3)
    pins = {}
    for line in (repo / "constraints-min.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    floors.pop("build")  # a test tool: any release that builds the wheel will do
    for name, floor in floors.items():
        assert name in pins, f"{name} (>= {floor}) is not pinned in constraints-min.txt"
        pinned = [int(x) for x in re.findall(r"\d+", pins[name].split(".post")[0])]
        wanted = [int(x) for x in floor.split(".")]
        pinned += [0] * (len(wanted) - len(pinned))
        assert pinned[: len(wanted)] == wanted, f"{name}: floor {floor}, but the lane pins {pins[name]}"
