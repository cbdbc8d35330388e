"""Sweep benchmark: ``bandscope analyze`` over 2,000 (and 10,000) run files, plain vs ``--workers 2``.

One command, one run::

    nice python benchmarks/bench_sweep.py --dir /tmp/sweeps-bench --json sweep.json   # 2,000 runs
    nice python benchmarks/bench_sweep.py --sizes 2000,10000 --rounds 2 --dir /tmp/sweeps-bench

It writes synthetic runs (:func:`bandscope.keysearch.synthetic.make_run_synthetic`, 53 checkpoints x 7
bands) once into ``--dir`` (default a temporary directory; an existing one is reused) and
then, for each size N and each path, starts a fresh Python process that runs the command on
the first N files (in-process ``bandscope.cli.main``, ``--quiet``: reading, analysis and
the report's tables, nothing printed):

* ``numpy``: ``bandscope analyze FILES`` (the plain path; the baseline of every ratio);
* ``workers-2``: ``bandscope analyze FILES --workers 2`` (a pool of two forked worker processes,
  one task per chunk of files; its start is included);
* ``dask-threads``: ``bandscope analyze FILES --dask`` (threaded scheduler);
* ``PATH@other``: each path again with the package in ``--compare-src`` (e.g. the previous
  version's ``src``), run just before this tree's.

Before the paths of each round (sizes of 750 runs or more, with a ``workers`` path), the row
``capacity`` measures what the two CPUs deliver together for this work at that moment
(:func:`parallel_capacity`: one task's files analysed alone, then two tasks at once): 2.0 on two
free cores, less when the virtual CPUs share a physical core or something else runs, and the
bound of any two-worker speed-up in that round.

Under each ``workers-2`` row, its serial part: the seconds the command's own process works
alone, before the worker pool starts (imports, the warm-up analysis) and after the last result
is back (gathering, the report's tables), timed inside the run; and the speed-up that part
leaves possible (:func:`amdahl_bound`): on two free cores, and at the round's ``capacity``.

With ``--rounds R`` the paths run R times, interleaved, and every ratio is taken against the
numpy run of the same round and the same tree (``numpy@other`` for the ``@other`` paths); with
``--compare-src`` the summary also gives each path's CPU per run against its ``@other`` twin of
the same round (``PATH_N_cpu_vs_other_median``). Reported: wall time (total and per run), the speed-up against
numpy, CPU time per run (this process and its finished children, i.e. the workers), peak RSS,
and the 1-minute load average (``os.getloadavg``; printed before and after too): other work on
the same cores slows every path, so wall-time ratios mean something only on a quiet machine.
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

PATHS = ("numpy", "workers-2", "dask-threads")


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


_CHUNK_TIMER = """
import sys, time
from bandscope.keysearch import executors, sweep
files = open(sys.argv[1]).read().split()[int(sys.argv[2]):int(sys.argv[3])]
executors._warm()
sweep._chunk_results(files[:20], {}, False, None, {})
t = time.perf_counter()
sweep._chunk_results(files, {}, False, None, {})
print(time.perf_counter() - t)
"""


def parallel_capacity(listfile: Path, n: int = 250) -> float:
    """What two processes reach together, in units of one: the work of one ``--workers`` task
    (reading and analysing ``n`` run files) timed alone in a fresh process, then two such tasks
    (other files) at once in two, then the first task alone again; ``2 x alone / slower of the
    pair``, alone the faster of its two runs.

    2.0 on two free cores. Less when something else runs, or when the two virtual CPUs share a
    physical core of the host (hyperthreads): then no two-process path can reach 2x, and the
    ``--workers 2`` speed-up is bounded by this figure (it is measured in every round because
    the host's placement changes).

    Parameters
    ----------
    listfile : Path
        The run files, one per line (at least ``3 * n``).
    n : int
        Files per task.

    Returns
    -------
    float
        The capacity of the two CPUs for this work.
    """
    def start(a: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _CHUNK_TIMER, str(listfile), str(a), str(a + n)],
                                stdout=subprocess.PIPE, text=True)

    def wait(p: subprocess.Popen) -> float:
        return float(p.communicate()[0].strip().splitlines()[-1])

    first = wait(start(0))
    pair = [start(n), start(2 * n)]
    together = max(wait(p) for p in pair)
    return 2.0 * min(first, wait(start(0))) / together  # alone: the faster of before and after


def _cpu_all() -> float:
    """CPU seconds of this process and of its finished children (the forked workers).

    Returns
    -------
    float
        User plus system time, seconds.
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _mark_serial_part() -> dict:
    """Wrap the ``--workers`` path's pool start and gathering (``bandscope.keysearch.sweep``) to
    record when each happens (``perf_counter``): what runs before the first and after the last is
    this process alone. Empty for a tree without them (``--compare-src`` of an older version).

    Returns
    -------
    dict
        Filled during the run: ``forked`` (the pool is created) and ``gathering`` (every result
        is in).
    """
    from bandscope.keysearch import sweep

    marks: dict = {}
    if not (hasattr(sweep, "_process_pool") and hasattr(sweep, "_gather_chunks")):
        return marks
    pool, gather = sweep._process_pool, sweep._gather_chunks

    def timed_pool(*a, **k):
        marks.setdefault("forked", time.perf_counter())
        return pool(*a, **k)

    def timed_gather(*a, **k):
        marks["gathering"] = time.perf_counter()
        return gather(*a, **k)

    sweep._process_pool, sweep._gather_chunks = timed_pool, timed_gather
    return marks


def amdahl_bound(numpy_s: float, serial_s: float, cores: float) -> float:
    """The speed-up over the plain command that ``cores`` can give a path whose part
    ``serial_s`` runs in one process: ``numpy_s / (serial_s + (numpy_s - serial_s) / cores)``
    (Amdahl's law, everything else of the plain command's time divided among the cores).

    >>> round(amdahl_bound(10.0, 1.0, 2.0), 3)
    1.818
    """
    return numpy_s / (serial_s + (numpy_s - serial_s) / cores)


def one(path_kind: str, files: list[str]) -> dict:
    """Run one configuration of the command in this process and return its measurements.

    Parameters
    ----------
    path_kind : {"numpy", "workers-2", "dask-threads"}
        Which command line (see the module docstring).
    files : list of str
        The run files.

    Returns
    -------
    dict
        ``total_s``, ``ms_per_run``, ``cpu_s``, ``cpu_ms_per_run``, ``peak_rss_mb``,
        ``load_1min``; for ``workers-2`` also ``serial_s``: the seconds this process worked
        alone (before the pool started and after the last result came back).
    """
    warnings.simplefilter("ignore")
    import contextlib
    import io

    from bandscope.cli import main as cli

    out = {"path": path_kind, "n": len(files)}
    extra = {"numpy": [], "workers-2": ["--workers", "2"], "dask-threads": ["--dask"]}[path_kind]
    marks = _mark_serial_part() if path_kind == "workers-2" else {}
    t0 = time.perf_counter()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli(["analyze", *files, "--quiet", *extra])
    if rc:
        raise SystemExit(f"bandscope analyze returned {rc}: {err.getvalue()[-2000:]}")
    end = time.perf_counter()
    out["total_s"] = end - t0
    if {"forked", "gathering"} <= marks.keys():
        # before the pool (imports, warm-up) and after the last result (gathering, report)
        out["serial_s"] = (marks["forked"] - t0) + (end - marks["gathering"])
    out["cpu_s"] = _cpu_all()  # imports included, as a user pays them
    out["cpu_ms_per_run"] = 1000 * out["cpu_s"] / len(files)
    out["load_1min"] = os.getloadavg()[0]
    out["ms_per_run"] = 1000 * out["total_s"] / len(files)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def summarise(rows: list[dict], n: int) -> dict:
    """Medians over the rounds at ``n`` runs, per path: CPU ms per run, the speed-up against
    numpy, CPU against the ``@other`` twin, the serial part and its bounds; and the capacity.

    Parameters
    ----------
    rows : list of dict
        The rows of :func:`main`.
    n : int
        The sweep size.

    Returns
    -------
    dict
        ``capacity_N_median`` and ``PATH_N_<measure>_median`` keys.
    """
    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    out: dict = {}
    caps = [r["capacity"] for r in rows if r["n"] == n and r["path"] == "capacity"]
    if caps:
        out[f"capacity_{n}_median"] = median(caps)
    for kind in {r["path"] for r in rows if r["n"] == n} - {"capacity"}:
        mine = [r for r in rows if r["n"] == n and r["path"] == kind]
        out[f"{kind}_{n}_cpu_ms_per_run_median"] = median([r["cpu_ms_per_run"] for r in mine])
        measures = ["cpu_vs_other", "serial_s", "bound_2_cores", "bound_capacity"]
        if kind.split("@")[0] != "numpy":
            measures.insert(0, "speedup_vs_numpy")
        for key in measures:
            got = [r[key] for r in mine if r.get(key)]
            if got:
                out[f"{kind}_{n}_{key}_median"] = median(got)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Write the files once, run every configuration in a fresh process, print and return rows.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        ``rows`` (one per configuration and round), ``summary`` (per size and path: median CPU
        ms per run and median speed-up against the numpy run of the same round), the load
        averages before and after.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000", help="numbers of runs (comma separated)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"which of {PATHS}")
    ap.add_argument("--format", default="nc", choices=["nc", "parquet", "zarr"])
    ap.add_argument("--dir", help="where the run files are written once and reused (default: a temp dir)")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--compare-src", metavar="DIR",
                    help="also run every path with the package in DIR (e.g. a previous version's src), "
                    "as path 'PATH@other', each just before this tree's")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the paths this many times (interleaved)")
    ap.add_argument("--one", nargs=2, metavar=("PATH", "LISTFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        files = Path(args.one[1]).read_text().split("\n")
        print(json.dumps(one(args.one[0], files)))
        return {}
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bandscope-sweep-bench-"))
    files = write_files(root / args.format, max(sizes), args.format)
    load0 = os.getloadavg()
    print(f"# bandscope sweep benchmark: {args.format} files in {root}, {os.cpu_count()} CPUs, "
          f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"{'runs':>6} {'round':>5} {'path':<13} {'total s':>8} {'ms/run':>7} {'vs numpy':>8} "
          f"{'CPU ms/run':>10} {'peak RSS MB':>11} {'load':>5}")
    rows = []
    failed: list[str] = []
    summary: dict = {}
    for n in sizes:
        lst = root / f"files-{n}.txt"
        lst.write_text("\n".join(str(f) for f in files[:n]))
        for rnd in range(max(1, args.rounds)):
            base: dict[str, float] = {}  # tree ("" or "@other") -> its numpy wall time this round
            if any(p.startswith("workers") for p in paths) and n >= 750:
                cap = parallel_capacity(lst)
                rows.append({"path": "capacity", "n": n, "round": rnd, "capacity": cap,
                             "load_after": os.getloadavg()[0]})
                print(f"{n:>6} {rnd:>5} {'capacity':<13} two processes reach {cap:.2f}x one "
                      "(the bound of any two-worker speed-up this round)", flush=True)
            kinds = [k for p in paths for k in ([f"{p}@other"] if args.compare_src else []) + [p]]
            for kind in kinds:
                env = dict(os.environ)
                if kind.endswith("@other"):  # every path of the other tree runs the other tree's package
                    env["PYTHONPATH"] = str(Path(args.compare_src).resolve())
                cmd = [sys.executable, __file__, "--one", kind.split("@")[0], str(lst)]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if r.returncode:
                    print(f"{n:>6} {rnd:>5} {kind:<13} FAILED: {r.stderr.strip().splitlines()[-1:]}")
                    failed.append(f"{kind} at {n} runs, round {rnd}")
                    continue
                row = json.loads(r.stdout.strip().splitlines()[-1])
                row.update(path=kind, round=rnd, load_after=os.getloadavg()[0])
                tree = kind[kind.index("@"):] if "@" in kind else ""
                if kind.split("@")[0] == "numpy":
                    base[tree] = row["total_s"]
                row["speedup_vs_numpy"] = base[tree] / row["total_s"] if tree in base else None
                twin = [r for r in rows if r["n"] == n and r["round"] == rnd and r["path"] == f"{kind}@other"]
                row["cpu_vs_other"] = row["cpu_ms_per_run"] / twin[0]["cpu_ms_per_run"] if twin else None
                if row.get("serial_s") is not None and tree in base:
                    cap = next((r["capacity"] for r in rows if r["n"] == n and r["round"] == rnd
                                and r["path"] == "capacity"), None)
                    row["bound_2_cores"] = amdahl_bound(base[tree], row["serial_s"], 2.0)
                    row["bound_capacity"] = amdahl_bound(base[tree], row["serial_s"], cap) if cap else None
                rows.append(row)
                ratio = f"{row['speedup_vs_numpy']:.2f}x" if row["speedup_vs_numpy"] else "-"
                print(f"{n:>6} {rnd:>5} {kind:<13} {row['total_s']:8.2f} {row['ms_per_run']:7.1f} {ratio:>8} "
                      f"{row['cpu_ms_per_run']:10.1f} {row['peak_rss_mb']:11.0f} {row['load_1min']:5.1f}",
                      flush=True)
                if row.get("bound_2_cores"):
                    at_cap = (f", {row['bound_capacity']:.2f}x at this round's capacity"
                              if row.get("bound_capacity") else "")
                    print(f"{'':>26}serial part {row['serial_s']:.2f} s: Amdahl bound {row['bound_2_cores']:.2f}x "
                          f"on two free cores{at_cap}", flush=True)
        summary.update(summarise(rows, n))
    load1 = os.getloadavg()
    print(f"# load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print("# targets: numpy_2000_cpu_ms_per_run <= 8; workers-2 speed-up >= 1.6 at 2,000 runs, >= 1.8 at 10,000")
    for k, v in sorted(summary.items()):
        print(f"  {k:45s} {v:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    if failed:  # after every other path ran and the rows were written
        raise SystemExit(f"bench_sweep: {len(failed)} path(s) failed: {'; '.join(failed)}")
    return {"rows": rows, "summary": summary, "load_before": load0[0], "load_after": load1[0]}


if __name__ == "__main__":
    main()
