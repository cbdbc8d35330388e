"""The ``bandscope`` command line (documented in ``docs/cli.md``).

Subcommands: ``analyze``, ``reproduce`` (here) and ``train``, ``bands``, ``param-time``
(registered from :mod:`bandscope.recordcli`).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

DEFAULT_WINDOWS = "0.95/0.01,0.90/0.10,0.80/0.20"


def parse_windows(text: str) -> tuple[tuple[float, float], ...]:
    """``"0.95/0.01,0.90/0.10"`` -> ``((0.95, 0.01), (0.9, 0.1))``; hi > lo, both in (0, 1).

    >>> parse_windows("0.95/0.01, 0.8/0.2")
    ((0.95, 0.01), (0.8, 0.2))
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            hi_s, lo_s = part.split("/")
            hi, lo = float(hi_s), float(lo_s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"window {part!r} is not HI/LO, e.g. 0.95/0.01") from None
        if not (0 < lo < hi < 1):
            raise argparse.ArgumentTypeError(f"window {part!r}: need 0 < LO < HI < 1")
        out.append((hi, lo))
    if not out:
        raise argparse.ArgumentTypeError("no windows given")
    return tuple(out)


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT.json", help="write results as JSON (NaN as null)")
    p.add_argument("--netcdf", metavar="OUT.nc", help="write the full results Dataset as netCDF")
    p.add_argument("--plots", metavar="DIR", help="write figures (needs the 'plot' extra)")
    p.add_argument("--windows", type=parse_windows, default=parse_windows(DEFAULT_WINDOWS),
                   help=f"active-window threshold pairs HI/LO, comma separated (default {DEFAULT_WINDOWS}); "
                   "the first is the primary window")
    p.add_argument("--floor", choices=["mean_last_k", "final"], default="mean_last_k",
                   help="floor convention (key search A.9; default mean of the last k checkpoints)")
    p.add_argument("-k", "--floor-k", type=int, default=5, help="checkpoints in the floor window (default 5)")
    p.add_argument("--deflation", type=float, default=10.0,
                   help="n_eff = n / DEFLATION for the deflated BIC (default 10)")
    p.add_argument("--min-points", type=int, default=5, help="fewest checkpoints in a fit window (default 5)")
    p.add_argument("--dropna", action="store_true", help="drop log rows with NaN (reported) instead of failing")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")


def _run_analysis(runs, args) -> int:
    from . import analysis, tables
    from . import io as bio

    results = analysis.analyze(
        runs, windows=args.windows, floor=args.floor, k=args.floor_k,
        deflation=args.deflation, min_points=args.min_points,
    )
    if not args.quiet:
        print(tables.format_tables(results))
    if args.json:
        bio.write_json(results, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.netcdf:
        bio.write_results(results, args.netcdf)
        print(f"wrote {args.netcdf}", file=sys.stderr)
    if args.plots:
        from . import plot

        paths = plot.write_figures(results, args.plots)
        print(f"wrote {len(paths)} figures to {args.plots}", file=sys.stderr)
    return 0


def cmd_analyze(args) -> int:
    from . import io as bio

    runs = bio.read_runs(args.runs, dropna=args.dropna)
    return _run_analysis(runs, args)


def reference_dir(explicit: str | None = None) -> Path:
    """Where ``reproduce`` looks for runs: ``--dir`` when given, else the reference runs installed
    with the package (``bandscope/reference_runs/``, package data of a wheel), else the
    repository's ``reference_runs/`` beside ``src/`` (editable installs, source checkouts).

    The result does not depend on the working directory; it is shown relative to it when it lies
    below it.
    """
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve().parent
    candidates = (here / "reference_runs", here.parents[1] / "reference_runs")
    found = next((c for c in candidates if (c / "recorded").is_dir() or (c / "synthetic").is_dir()), candidates[0])
    try:
        return found.relative_to(Path.cwd().resolve())
    except ValueError:
        return found


def find_reference_runs(root: Path) -> tuple[list[Path], str]:
    """Recorded runs (``root/recorded/**/run.nc`` or ``*.nc``) if any, else the synthetic
    stand-ins (``root/synthetic/*.csv``). Returns the files and which kind they are."""
    recorded = sorted(p for p in (root / "recorded").glob("**/*.nc")) if (root / "recorded").is_dir() else []
    if recorded:
        return recorded, "recorded"
    synthetic = sorted((root / "synthetic").glob("*.csv"))
    return synthetic, "synthetic"


def cmd_reproduce(args) -> int:
    from . import io as bio

    root = reference_dir(args.dir)
    files, kind = find_reference_runs(root)
    if not files:
        print(f"no reference runs under {root}", file=sys.stderr)
        return 2
    if kind == "synthetic":
        print(
            f"NOTE: analysing {len(files)} SYNTHETIC runs from {root / 'synthetic'} (generated by "
            "tools/make_synthetic.py with known Weibull truth), not training runs.\n"
        )
    else:
        print(f"Analysing {len(files)} recorded training runs from {root / 'recorded'}.\n")
    runs = []
    for f in files:
        name = f.parent.name if f.stem == "run" else f.stem
        run = bio.read_run(f, name=name)
        total = run.attrs.get("total_steps")
        last = int(run["step"].values[-1])
        if total is not None and last < int(total):
            print(f"skipping {name}: unfinished ({last} of {int(total)} steps recorded)", file=sys.stderr)
            continue
        runs.append(run)
    if not runs:
        print("no finished reference runs", file=sys.stderr)
        return 2
    return _run_analysis(runs, args)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="bandscope", description="What a neural network learns when.")
    parser.add_argument("--version", action="version", version=f"bandscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("analyze", help="the key-search analysis of run logs (CSV, Parquet, netCDF)")
    p.add_argument("runs", nargs="+", metavar="RUN_FILE")
    _add_analysis_options(p)
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("reproduce", help="analyse the runs shipped in reference_runs/ and print the paper's tables")
    p.add_argument("--dir", help="reference runs directory (default: the reference runs installed with bandscope)")
    _add_analysis_options(p)
    p.set_defaults(func=cmd_reproduce)
    try:
        from . import recordcli
    except ImportError:  # pragma: no cover - module always ships
        recordcli = None
    if recordcli is not None:
        recordcli.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bandscope {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
