"""Print the AVX-512 features numpy may dispatch to on this CPU, for ``NPY_DISABLE_CPU_FEATURES``.

The rounding lane (``make test-rounding``) runs the numeric tests with numpy's AVX-512 kernels
switched off, so that results rounded by AVX2 kernels are checked on an AVX-512 machine too. The
names differ between numpy releases (numpy 2.0: ``AVX512F AVX512CD AVX512_SKX ...``; numpy 2.4:
``X86_V4 AVX512_ICL AVX512_SPR``), and numpy refuses names it does not dispatch to (baseline
features cannot be switched off). So the list is read from the numpy that runs the tests: every
dispatch target that is AVX-512 (or the x86-64-v4 level, which is AVX-512) and that this CPU has.
Prints nothing on a CPU without AVX-512.

Run with the environment of the tests but without ``NPY_DISABLE_CPU_FEATURES`` set::

    NPY_DISABLE_CPU_FEATURES="$(python tools/numpy_avx512.py)" python -m pytest ...

``--check`` instead checks, under ``NPY_DISABLE_CPU_FEATURES``, that no AVX-512 dispatch target
is left enabled (exit 1 and the names if one is).
"""
from __future__ import annotations

import os
import sys

try:  # numpy >= 2
    from numpy._core import _multiarray_umath as _mu
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import _multiarray_umath as _mu


def _is_avx512(name: str) -> bool:
    return "AVX512" in name or name == "X86_V4"


def avx512_targets() -> list[str]:
    """AVX-512 dispatch targets of this numpy that this CPU has (and that are switched on now)."""
    return [f for f in _mu.__cpu_dispatch__ if _is_avx512(f) and _mu.__cpu_features__.get(f, False)]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        left = avx512_targets()
        print(f"NPY_DISABLE_CPU_FEATURES={os.environ.get('NPY_DISABLE_CPU_FEATURES', '')!r}; "
              f"numpy AVX-512 dispatch targets still on: {left or 'none'}")
        return 1 if left else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get("NPY_DISABLE_CPU_FEATURES"):
        print("unset NPY_DISABLE_CPU_FEATURES first: it hides the features to list", file=sys.stderr)
        return 2
    print(" ".join(avx512_targets()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
