"""Sweep benchmark: numpy vs dask (threaded, distributed) on 100, 1,000 and 10,000 run files.

One command, one run::

    nice python benchmarks/bench_sweep.py            # sizes 12,100,1000,10000, netCDF files

It writes synthetic runs (:func:`bandscope.keysearch.synthetic.make_run_synthetic`, 53 checkpoints x 7
bands) once into ``--dir`` (default a temporary directory; an existing one is reused) and
then, for each size N and each path, starts a fresh Python process that reads the first N files
and analyses them:

* ``numpy``: ``bandscope.read_runs`` + ``bandscope.analyze`` (the CLI without ``--dask``);
* ``dask-threads``: ``sweep.open_runs`` + ``analyze_sweep`` + ``compute_sweep()`` (threaded
  scheduler, 2 threads on this machine);
* ``dask-2-workers``: the same on ``LocalCluster(n_workers=2, threads_per_worker=1,
  processes=True)``; the cluster's start-up (~2-4 s) is included in the total and shown apart.

Reported: wall time (total and per run), the speed-up against numpy at the same N, CPU time
per run (this process's threads plus, for the distributed path, the workers' CPU since they
started, imports included), peak RSS of the process (``getrusage``) and, for the distributed
path, of the largest worker, and the 1-minute load average when the configuration ended
(``os.getloadavg``; also printed before and after): other work on the same cores slows every
path and makes the ratios noisy, while CPU time per run depends much less on it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

PATHS = ("numpy", "dask-threads", "dask-2-workers")


def _write_some(args):
    from bandscope import write_run
    from bandscope.keysearch.synthetic import make_run_synthetic

    for i, path in args:
        write_run(make_run_synthetic(i, name=Path(path).stem), path)


def write_files(root: Path, n: int, fmt: str) -> list[Path]:
    """Synthetic run i (seed i) as ``run-<i>.<fmt>``; files already there are kept."""
    from concurrent.futures import ProcessPoolExecutor

    root.mkdir(parents=True, exist_ok=True)
    suffix = {"nc": ".nc", "parquet": ".parquet", "zarr": ".zarr"}[fmt]
    paths = [root / f"run-{i:05d}{suffix}" for i in range(n)]
    todo = [(i, str(p)) for i, p in enumerate(paths) if not p.exists()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(4) as pool:  # writing is done once; spread it
        list(pool.map(_write_some, [todo[j::4] for j in range(4)]))
    if todo:
        print(f"wrote {len(todo)} {fmt} run files to {root} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return paths


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(path_kind: str, files: list[str], chunk_runs: int) -> dict:
    """Run one configuration in this process and return its measurements."""
    warnings.simplefilter("ignore")
    import bandscope
    from bandscope.keysearch import sweep

    out = {"path": path_kind, "n": len(files)}
    t0 = time.perf_counter()
    if path_kind == "numpy":
        res = bandscope.analyze(bandscope.read_runs(files))
    elif path_kind == "dask-threads":
        lazy = sweep.analyze_sweep(sweep.open_runs(files, chunk_runs=chunk_runs))
        out["graph_s"] = time.perf_counter() - t0
        res = sweep.compute_sweep(lazy)
    else:
        with sweep.local_cluster(2) as client:
            out["cluster_start_s"] = time.perf_counter() - t0
            lazy = sweep.analyze_sweep(sweep.open_runs(files, chunk_runs=chunk_runs))
            out["graph_s"] = time.perf_counter() - t0 - out["cluster_start_s"]
            res = sweep.compute_sweep(lazy)
            rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            out["worker_peak_rss_mb"] = max(rss.values()) / 1024
            out["worker_cpu_s"] = sum(client.run(_cpu).values())  # since worker start, imports included
    out["total_s"] = time.perf_counter() - t0
    out["cpu_s"] = _cpu() + out.get("worker_cpu_s", 0.0)  # this process (all threads) + workers
    out["cpu_ms_per_run"] = 1000 * out["cpu_s"] / len(files)
    out["load_1min"] = os.getloadavg()[0]
    out["ms_per_run"] = 1000 * out["total_s"] / len(files)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["ok_fits"] = int((res["status"] == "ok").sum())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="12,100,1000,10000", help="numbers of runs (comma separated)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"which of {PATHS}")
    ap.add_argument("--format", default="nc", choices=["nc", "parquet", "zarr"])
    ap.add_argument("--dir", help="where the run files are written once and reused (default: a temp dir)")
    ap.add_argument("--chunk-runs", type=int, default=None, help="runs per dask chunk (default sweep's)")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--one", nargs=2, metavar=("PATH", "LISTFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from bandscope.keysearch import sweep

    chunk = args.chunk_runs or sweep.DEFAULT_CHUNK_RUNS
    if args.one:
        files = Path(args.one[1]).read_text().split("\n")
        print(json.dumps(one(args.one[0], files, chunk)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bandscope-sweep-bench-"))
    files = write_files(root / args.format, max(sizes), args.format)
    load0 = os.getloadavg()
    print(f"# bandscope sweep benchmark: {args.format} files in {root}, chunk_runs={chunk}, "
          f"{os.cpu_count()} CPUs, load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"{'runs':>6} {'path':<15} {'total s':>8} {'ms/run':>7} {'vs numpy':>8} {'CPU ms/run':>10} "
          f"{'peak RSS MB':>11} {'worker MB':>9} {'cluster s':>9} {'load':>5}")
    rows = []
    for n in sizes:
        lst = root / f"files-{n}.txt"
        lst.write_text("\n".join(str(f) for f in files[:n]))
        base = None
        for kind in paths:
            env = dict(os.environ)
            r = subprocess.run([sys.executable, __file__, "--one", kind, str(lst),
                                "--chunk-runs", str(chunk)], capture_output=True, text=True, env=env)
            if r.returncode:
                print(f"{n:>6} {kind:<15} FAILED: {r.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["load_after"] = os.getloadavg()[0]
            rows.append(row)
            if kind == "numpy":
                base = row["total_s"]
            ratio = f"{base / row['total_s']:.2f}x" if base else "-"
            print(f"{n:>6} {kind:<15} {row['total_s']:8.2f} {row['ms_per_run']:7.1f} {ratio:>8} "
                  f"{row['cpu_ms_per_run']:10.1f} {row['peak_rss_mb']:11.0f} "
                  f"{row.get('worker_peak_rss_mb', float('nan')):9.0f} "
                  f"{row.get('cluster_start_s', float('nan')):9.2f} {row['load_1min']:5.1f}", flush=True)
    load1 = os.getloadavg()
    print(f"# load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
