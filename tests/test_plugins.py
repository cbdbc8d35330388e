"""Extensions (``bandscope.commands`` entry points): one error boundary, and a start-up that does
not import them (or scipy, xarray, torch) just to print ``--help``."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from bandscope import plugins
from bandscope.cli import main
from bandscope.plugins import GROUP


@pytest.fixture
def fake_extensions(tmp_path, monkeypatch):
    """Extension modules written to ``tmp_path``: ``boom`` raises at import, ``badreg`` raises in
    register(), ``ok`` adds a command ``hello``."""
    (tmp_path / "ext_boom.py").write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "ext_badreg.py").write_text("def register(sub):\n    raise ValueError('broken register')\n")
    (tmp_path / "ext_ok.py").write_text(
        "def register(sub):\n"
        "    p = sub.add_parser('hello', help='say hello')\n"
        "    p.set_defaults(func=lambda args: print('hello from ext') or 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("boom", "ext_boom:register", GROUP), EntryPoint("badreg", "ext_badreg:register", GROUP),
           EntryPoint("hello", "ext_ok:register", GROUP)]
    monkeypatch.setattr(plugins, "_entry_points", lambda: eps)
    monkeypatch.setattr(plugins, "command_names", lambda: {ep.name: ep.value for ep in eps})
    for m in ("ext_boom", "ext_badreg", "ext_ok"):
        sys.modules.pop(m, None)
    return eps


def test_any_exception_at_import_is_contained(fake_extensions):
    loaded, failed = plugins.load_plugins()
    assert set(loaded) == {"badreg", "hello"}
    assert set(failed) == {"boom"}
    f = failed["boom"]
    assert "RuntimeError: broken at import" in str(f) and "ext_boom:register" in str(f)
    assert "Traceback" in f.traceback


def test_help_lists_extension_commands_without_importing_them(fake_extensions, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr()
    assert "boom" in out.out and "hello" in out.out and "analyze" in out.out
    assert "ext_boom" not in sys.modules and "ext_ok" not in sys.modules
    assert "could not be loaded" not in out.err  # nothing was loaded, nothing to report


def test_a_working_extension_runs_beside_broken_ones(fake_extensions, capsys):
    assert main(["hello"]) == 0
    out = capsys.readouterr()
    assert "hello from ext" in out.out
    assert "boom" not in out.err  # only the extension the command needs is imported


def test_broken_extension_is_named_once_with_its_error(fake_extensions, capsys):
    assert main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.count("extension 'boom' could not be loaded") == 1
    assert "RuntimeError: broken at import" in err and "--debug shows the traceback" in err
    assert "Traceback" not in err


def test_debug_shows_the_extension_traceback(fake_extensions, capsys):
    assert main(["boom", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "broken at import" in err


def test_register_failure_is_contained_and_named(fake_extensions, capsys):
    assert main(["badreg"]) == 2
    err = capsys.readouterr().err
    assert "extension 'badreg' could not be loaded" in err and "ValueError: broken register" in err


def test_core_commands_run_whatever_the_extensions_do(fake_extensions, tmp_path, capsys):
    from bandscope.io.checkpoints import read_safetensors  # noqa: F401 -- the core reader needs no extension

    monkey_dir = tmp_path / "ck"
    monkey_dir.mkdir()
    x = np.zeros((2, 1, 4, 4), np.float32)
    np.savez(tmp_path / "panel.npz", images=x)
    np.savez(tmp_path / "recon.npz", recon=x + 0.5)
    assert main(["bands", str(tmp_path / "panel.npz"), str(tmp_path / "recon.npz")]) == 0
    assert "band_1" in capsys.readouterr().out


def test_checkpoint_reader_error_names_the_broken_extension(fake_extensions, tmp_path, capsys, monkeypatch):
    from bandscope.io import checkpoints

    monkeypatch.setattr(checkpoints, "_LOADERS", {".safetensors": checkpoints.read_safetensors})
    d = tmp_path / "ck"
    d.mkdir()
    (d / "a.pt").write_bytes(b"not really")
    assert main(["param-time", str(d)]) == 2
    err = capsys.readouterr().err
    assert "no reader for .pt checkpoints" in err and "boom" in err and "RuntimeError" in err


def test_unknown_checkpoint_type_names_the_readable_ones(tmp_path, monkeypatch, capsys):
    from bandscope.io import checkpoints

    monkeypatch.setattr(plugins, "_entry_points", lambda: [])
    monkeypatch.setattr(checkpoints, "_LOADERS", {".safetensors": checkpoints.read_safetensors})
    d = tmp_path / "ck"
    d.mkdir()
    (d / "a.msgpack").write_bytes(b"x")
    with pytest.raises(Exception, match=r"no reader for \.msgpack checkpoints: readable types: \.safetensors"):
        checkpoints.load_state_dict(d / "a.msgpack")


def test_help_and_version_import_neither_extensions_nor_the_analysis():
    code = ("import sys\nfrom bandscope.cli import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'scipy', 'xarray', 'pandas', 'bandscope.torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_command_names_read_from_files_match_importlib_metadata():
    from importlib.metadata import entry_points

    assert plugins.command_names() == dict(sorted({e.name: e.value for e in entry_points(group=GROUP)}.items()))


def test_command_names_parse_an_entry_points_file(tmp_path, monkeypatch):
    d = tmp_path / "demo-1.0.dist-info"
    d.mkdir()
    (d / "entry_points.txt").write_text("[console_scripts]\ndemo = demo:main\n\n[bandscope.commands]\n"
                                        "# a comment\nfit = demo.cli:register\nplot=demo.cli:register\n"
                                        "\n[other]\nx = y\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert plugins.command_names() == {"fit": "demo.cli:register", "plot": "demo.cli:register"}
