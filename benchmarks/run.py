"""Run every benchmark in this folder: `python benchmarks/run.py [--json OUT] [NAME ...]`.

Each `bench_<topic>.py` has a `main()` that measures its baselines in the same run and prints
ratios against them; with ``--json OUT`` what each `main()` returns is written to OUT as one
object keyed by topic (a regression shows as a ratio in it). Speed targets live here, never in
unit tests.
"""
import importlib.util
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent


def main(argv=None):
    import json

    argv = list(argv if argv is not None else sys.argv[1:])
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out = argv[i + 1]
        del argv[i: i + 2]
    names = argv or sorted(p.stem[6:] for p in here.glob("bench_*.py"))
    results = {}
    for name in names:
        path = here / f"bench_{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        print(f"\n===== bench_{name} =====", flush=True)
        t0 = time.perf_counter()
        argv0, sys.argv = sys.argv, [str(path)]  # each benchmark with its own defaults
        try:
            got = mod.main()
        finally:
            sys.argv = argv0
        results[name] = got if isinstance(got, (dict, list)) else {"returned": got}
        results[name + "_seconds"] = time.perf_counter() - t0
        print(f"(bench_{name} took {time.perf_counter() - t0:.1f} s)", flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1, default=float))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
