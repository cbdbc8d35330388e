"""Start-up of the command line: `bandscope --help` and `--version` against `python -c "import numpy"`.

Target (docs/cli.md): each ≤ 1.5× the numpy import, in fresh processes. Every command is run
`REPEATS` times, interleaved (numpy, help, version, numpy, ...) so that machine load hits them
alike; the figure is the ratio of medians, with the ratio of minima beside it. ``main()`` returns
(and ``--json`` writes) ``rows``: per command ``median_s``, ``min_s``, ``ratio_median``, ``ratio_min``.

    python benchmarks/bench_startup.py [--repeats N] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TARGET = 1.5
COMMANDS = {
    "import numpy (baseline)": [sys.executable, "-c", "import numpy"],
    "bandscope --help": [sys.executable, "-c", "import sys; from bandscope.cli import main; sys.argv[0] = 'bandscope'; "
                         "main(['--help'])"],
    "bandscope --version": [sys.executable, "-c", "from bandscope.cli import main; main(['--version'])"],
}


def measure(repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for cmd in COMMANDS.values():  # warm the file cache once
        subprocess.run(cmd, capture_output=True)
    for _ in range(repeats):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True)
            times[name].append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"{name} failed: {r.stderr.decode()[-500:]}")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args(argv if argv is not None else [])
    times = measure(args.repeats)
    base = times["import numpy (baseline)"]
    rows = []
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'ratio (median)':>15} {'ratio (min)':>12}  target")
    for name, ts in times.items():
        med, lo = statistics.median(ts), min(ts)
        r_med, r_min = med / statistics.median(base), lo / min(base)
        ok = "" if name.startswith("import") else ("pass" if r_med <= TARGET else f"above {TARGET}")
        print(f"{name:<26} {med:9.3f} {lo:7.3f} {r_med:15.2f} {r_min:12.2f}  {ok}")
        rows.append({"command": name, "median_s": med, "min_s": lo, "ratio_median": r_med, "ratio_min": r_min})
    result = {"benchmark": "startup", "target_ratio": TARGET, "repeats": args.repeats, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result  # what benchmarks/run.py --json records


if __name__ == "__main__":
    main(sys.argv[1:])
