"""Package-level checks: the core imports without torch."""
import subprocess
import sys
import textwrap


def test_core_imports_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.modules['torch'] = None  # any 'import torch' now raises ImportError
        import bandscope
        for name in ['bands', 'paramtime', 'trajectory', 'fitting', 'ordering',
                     'analysis', 'io', 'tables', 'lnp', 'synthetic']:
            try:
                getattr(bandscope, name)
            except ModuleNotFoundError as exc:
                if exc.name != f'bandscope.{name}':
                    raise
        assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_version():
    import bandscope

    assert bandscope.__version__
