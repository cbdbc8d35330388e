"""Run every benchmark in this folder: `python benchmarks/run.py [NAME ...]`.

Each `bench_<topic>.py` has a `main()` that measures its baselines in the same run and prints
ratios against them. Speed targets live here, never in unit tests.
"""
import importlib.util
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or sorted(p.stem[6:] for p in here.glob("bench_*.py"))
    for name in names:
        path = here / f"bench_{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        print(f"\n===== bench_{name} =====", flush=True)
        t0 = time.perf_counter()
        mod.main()
        print(f"(bench_{name} took {time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
