"""The ``bandscope`` command line (documented in ``docs/cli.md``): the parser, the error boundary
:func:`main` and the commands ``analyze`` and ``reproduce``.

Subcommands: ``analyze``, ``reproduce`` (here), ``bands``, ``param-time`` (pure numpy, from
:mod:`bandscope.cli.record`) and the commands of extensions registered through the
``bandscope.commands`` entry-point group (:mod:`bandscope.plugins`; the torch adapter adds
``train``). The core never imports :mod:`bandscope.torch`.

:func:`main` is the one error boundary: every expected failure (a
:class:`~bandscope.errors.BandscopeInputError` or ``ValueError`` raised by bandscope, an
``OSError`` such as a missing file, a full disk or an output path under a regular file) exits
with status 2 and one message naming the file and the problem; anything else is a bug and keeps
its traceback (status 1). ``--debug`` shows the traceback in every case.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BandscopeInputError

if TYPE_CHECKING:
    from ..keysearch.options import AnalysisOptions
    from ..lnp.options import ReachOptions

DEFAULT_WINDOWS = "0.95/0.01,0.90/0.10,0.80/0.20"


def _parse_pairs(text: str, sep: str, what: str, example: str, ok: Callable[[float, float], bool],
                 need: str) -> tuple[tuple[float, float], ...]:
    """Comma-separated ``A<sep>B`` pairs of floats, each checked with ``ok(a, b)``."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a_s, b_s = part.split(sep)
            a, b = float(a_s), float(b_s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {part!r} is not {example}") from None
        if not ok(a, b):
            raise argparse.ArgumentTypeError(f"{what} {part!r}: need {need}")
        out.append((a, b))
    if not out:
        raise argparse.ArgumentTypeError(f"no {what}s given")
    return tuple(out)


def parse_windows(text: str) -> tuple[tuple[float, float], ...]:
    """``"0.95/0.01,0.90/0.10"`` -> ``((0.95, 0.01), (0.9, 0.1))``; hi > lo, both in (0, 1).

    >>> parse_windows("0.95/0.01, 0.8/0.2")
    ((0.95, 0.01), (0.8, 0.2))
    """
    return _parse_pairs(text, "/", "window", "HI/LO, e.g. 0.95/0.01",
                        lambda hi, lo: 0 < lo < hi < 1, "0 < LO < HI < 1")


def parse_epoch_windows(text: str) -> tuple[tuple[float, float], ...]:
    """``"0-10,0-25"`` -> ``((0.0, 10.0), (0.0, 25.0))``: epoch windows of the γ fit.

    >>> parse_epoch_windows("0-10, 0-50")
    ((0.0, 10.0), (0.0, 50.0))
    """
    return _parse_pairs(text, "-", "epoch window", "START-END, e.g. 0-10",
                        lambda a, b: a < b, "START < END")


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    from ..keysearch.options import AnalysisOptions

    d = AnalysisOptions  # the dataclass's defaults, read without validating an instance
    p.add_argument("--json", metavar="OUT.json", help="write results as JSON (NaN as null)")
    p.add_argument("--netcdf", metavar="OUT.nc", help="write the full results Dataset as netCDF")
    p.add_argument("--plots", metavar="DIR", help="write figures (needs the 'plot' extra)")
    p.add_argument("--format", dest="figure_format", choices=["png", "svg", "pdf"], default="png",
                   help="file format of the --plots figures (default png; svg and pdf are vector)")
    p.add_argument("--windows", type=parse_windows, default=parse_windows(DEFAULT_WINDOWS),
                   help=f"threshold windows HI/LO, comma separated (default {DEFAULT_WINDOWS}); "
                   "the first is the primary window")
    p.add_argument("--floor", choices=["mean_last_k", "final"], default=d.floor,
                   help="floor convention (key search A.9; default mean of the last k checkpoints)")
    p.add_argument("-k", "--floor-k", type=int, default=d.k,
                   help=f"checkpoints in the floor window (default {d.k})")
    p.add_argument("--deflation", type=float, default=d.deflation,
                   help=f"n_eff = n / DEFLATION for the deflated BIC (default {d.deflation:g})")
    p.add_argument("--min-points", type=int, default=d.min_points,
                   help=f"fewest checkpoints in a fit window (default {d.min_points})")
    p.add_argument("--saturation-tol", type=float, default=d.saturation_tol_pct, metavar="PCT",
                   help="a band whose floor-window drift is >= PCT %% of its range is flagged "
                   f"unsaturated (default {d.saturation_tol_pct:g})")
    p.add_argument("--n-starts", type=int, default=d.n_starts,
                   help=f"starts of the lmfit fallback fit (default {d.n_starts})")
    p.add_argument("--gamma-windows", type=parse_epoch_windows,
                   default=d.gamma_windows, metavar="E0-E1,...",
                   help="epoch windows of the gamma fit (default 0-10,0-25,0-50)")
    p.add_argument("--no-fallback", dest="fallback", action="store_false",
                   help="do not re-fit unconverged curves with lmfit")
    p.add_argument("--band-sum-missing", choices=["nan", "observed"], default=d.band_sum_missing,
                   help="band-sum reconstruction with a band whose fit is not ok: NaN (default) "
                   "or use its observed residual")
    p.add_argument("--dropna", action="store_true", help="drop log rows with NaN (reported) instead of failing")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")


def analysis_options(args: argparse.Namespace) -> AnalysisOptions:
    """The :class:`~bandscope.keysearch.analysis.AnalysisOptions` of parsed ``analyze``/``reproduce`` args."""
    from ..keysearch.analysis import AnalysisOptions

    return AnalysisOptions(
        windows=args.windows, floor=args.floor, k=args.floor_k, deflation=args.deflation,
        min_points=args.min_points, saturation_tol_pct=args.saturation_tol,
        n_starts=args.n_starts, gamma_windows=args.gamma_windows, fallback=args.fallback,
        band_sum_missing=args.band_sum_missing)


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--html", metavar="OUT.html",
                   help="also write one self-contained HTML report (tables, verdicts and figures "
                   "embedded; figures need the 'plot' extra); see docs/report.md")
    p.add_argument("--html-figures", choices=["svg", "png"], default="svg",
                   help="figures of the HTML report: inline SVG (vector, default) or PNG")
    p.add_argument("--compare-paper", action=argparse.BooleanOptionalAction, default=None,
                   help="the report against the key-search paper (verdicts, the paper's rows); the default "
                   "for `reproduce` and for the shipped reference runs. --no-compare-paper: the runs alone "
                   "(the default for your own runs)")
    p.add_argument("--forecast", type=_fraction, nargs="?", const=1.0, default=None, metavar="F",
                   help="add forecasts to the report (docs/forecast.md), each run forecast from its first "
                   "fraction F of checkpoints (default 1: all); with F < 1 the figures show what the run "
                   "did afterwards")


def _fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < f <= 1:
        raise argparse.ArgumentTypeError(f"{f}: need a fraction in (0, 1]")
    return f


def _view(args: argparse.Namespace) -> str:
    """The report's view: --compare-paper / --no-compare-paper when given, else the paper view
    for ``reproduce`` and for the shipped reference runs, the runs alone otherwise."""
    if args.compare_paper is not None:
        return "paper" if args.compare_paper else "own"
    return "paper" if getattr(args, "reference", False) else "own"


def _run_analysis(runs: Any, args: argparse.Namespace, analyze: Any = None, reach: Any = None) -> int:
    """Analyse, then write every output from one computed tables object; a figure that fails
    is named (status 2) after every other output has been written."""
    from .. import io as bio
    from .. import report
    from ..keysearch import analysis
    from ..report.tables import ReportTables

    if not runs:  # LNP runs only: the spectral-reach analysis alone
        return _report_reach(reach, args)
    results = (analyze or analysis.analyze)(runs, analysis_options(args))
    results.attrs.update(_input_report(runs))
    rt = ReportTables(results)
    view = _view(args)
    forecasts = _forecasts(runs, args.forecast) if getattr(args, "forecast", None) else None
    failed = {}

    def fail(name: str, exc: Exception) -> None:
        failed[name] = f"{type(exc).__name__}: {exc}"

    if not args.quiet:
        print(report.format_text(results, view=view, tables=rt, forecasts=forecasts))
    if args.json:
        from ..report.results_json import write_json

        write_json(results, args.json, tables=rt)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.netcdf:
        bio.write_results(results, args.netcdf)
        print(f"wrote {args.netcdf}", file=sys.stderr)
    if getattr(args, "html", None):
        path = report.write_html(results, args.html, header=getattr(args, "header", ""),
                                 title=f"bandscope {args.command}", view=view, tables=rt, forecasts=forecasts,
                                 figure_format=args.html_figures, on_figure_error=fail)
        print(f"wrote {path}", file=sys.stderr)
    if args.plots:
        from ..report import figures as plot

        paths = plot.write_figures(results, args.plots, format=args.figure_format, forecasts=forecasts,
                                   on_error=fail)
        print(f"wrote {len(paths)} figures to {args.plots}", file=sys.stderr)
    rc = _report_reach(reach, args, joined=True) if reach is not None else 0
    if failed:
        for name, why in failed.items():
            print(f"bandscope {args.command}: error: figure {name!r} could not be drawn ({why}); "
                  "every other output was written", file=sys.stderr)
        return 2
    return rc


# ------------------------------------------------------------------ spectral reach (runs with LNP)
def _add_reach_options(p: argparse.ArgumentParser) -> None:
    from ..lnp.options import ReachOptions

    d = ReachOptions()
    g = p.add_argument_group("spectral reach (runs with LNP variables; docs/lnp.md)")
    g.add_argument("--last-windows", type=int, default=d.last_k, metavar="K",
                   help=f"LNP windows averaged for the last-window means (default {d.last_k})")
    g.add_argument("--slope-start", type=int, default=None, metavar="STEP",
                   help="first optimizer step of the late log-log slopes (default: a tenth of the last LNP step)")
    g.add_argument("--probe-bins", type=int, default=d.probe_bins, metavar="N",
                   help=f"normalised-time bins of the linear-probe ratio (default {d.probe_bins})")


def reach_options(args: argparse.Namespace) -> ReachOptions:
    """The :class:`~bandscope.lnp.windows.ReachOptions` of parsed ``analyze`` args."""
    from ..lnp.options import ReachOptions

    return ReachOptions(last_k=args.last_windows, slope_start=args.slope_start, probe_bins=args.probe_bins)


def _split_runs(paths: list[str], dropna: bool) -> tuple[list[Any], list[Any]]:
    """(key-search runs, LNP runs) of the files: a file with band_loss goes to the key-search
    analysis, one with LNP variables to the spectral-reach analysis, one with both to both."""
    from ..io.lnp_runfiles import read_lnp_run
    from ..io.runfiles import read_runs_by_kind

    # each plain netCDF run file is opened once, for its kinds and its data
    runs, lnp_only, both = read_runs_by_kind(paths, dropna=dropna)
    lnp: list[Any] = []
    with_lnp, both_set = {*lnp_only, *both}, set(both)
    for p in (Path(q) for q in paths if Path(q) in with_lnp):
        if p in both_set:  # the key-search analysis must not fail for the LNP extras
            try:
                lnp.append(read_lnp_run(p))
            except BandscopeInputError as exc:
                print(f"bandscope analyze: no spectral-reach analysis of {p}: {exc}", file=sys.stderr)
        else:
            lnp.append(read_lnp_run(p))
    return runs, lnp


def _report_reach(reach: Any, args: argparse.Namespace, joined: bool = False) -> int:
    """Print and write the spectral-reach results; ``joined``: the key-search outputs were written
    first, and the reach section is added to them (--html, --json) or written beside them."""
    import json

    from ..report import reach as section

    if not args.quiet:
        print(section.format_reach_text(reach, header="" if joined else getattr(args, "header", "")))
    if getattr(args, "html", None):
        path = Path(args.html)
        if joined:
            path.write_text(section.insert_section(path.read_text(encoding="utf-8"),
                                                   section.reach_html_section(reach)), encoding="utf-8")
        else:
            section.write_reach_html(reach, path, header=getattr(args, "header", ""),
                                     title=f"bandscope {args.command}: spectral reach")
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        path = Path(args.json)
        data = json.loads(path.read_text()) if joined else {}
        data["spectral_reach"] = section.reach_to_dict(reach)
        path.write_text(json.dumps(data, indent=1, allow_nan=False))
        print(f"wrote {path}", file=sys.stderr)
    if args.netcdf:
        from .. import io as bio

        path = Path(args.netcdf)
        path = path.with_name(path.stem + "-reach" + path.suffix) if joined else path
        bio.write_results(reach, path)
        print(f"wrote {path}", file=sys.stderr)
    if args.plots:
        from ..report.lnp_figures import write_lnp_figures

        paths = write_lnp_figures(reach, args.plots)
        print(f"wrote {len(paths)} spectral-reach figures to {args.plots}", file=sys.stderr)
    return 0


def _forecasts(runs: list[Any], prefix: float) -> dict:
    """Run name → ``bandscope.forecast`` of the run from its first ``prefix`` of checkpoints."""
    from ..keysearch.forecasting import forecast

    if not isinstance(runs, (list, tuple)):
        raise BandscopeInputError("--forecast needs the runs in memory: drop --dask")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for run in runs:
            out[str(run.attrs["name"])] = forecast(run, prefix=None if prefix >= 1 else prefix)
    return out


def _is_reference(paths: list[str]) -> bool:
    """Whether every file lies under the shipped reference runs (``reference_dir()``)."""
    root = Path(reference_dir()).resolve()
    try:
        return bool(paths) and all(Path(p).resolve().is_relative_to(root) for p in paths)
    except OSError:
        return False


def cmd_analyze(args: argparse.Namespace) -> int:
    """``bandscope analyze FILES``: read the run files, analyse them (key search, spectral reach)
    and print or write the report (docs/cli.md); returns the exit status."""
    if args.dask or args.workers or args.scheduler:
        return _analyze_on_dask(args)
    runs, lnp_runs = _split_runs(args.runs, args.dropna)
    reach = None
    if lnp_runs:
        from ..lnp.reach import reach_analysis

        reach = reach_analysis(lnp_runs, reach_options(args))
    for run in runs:
        rows = run.attrs.get("dropped_rows")
        if rows is not None and len(rows):
            print(f"bandscope analyze: {run.attrs.get('source') or run.attrs['name']}: dropped {len(rows)} rows "
                  f"with NaN (0-based rows {list(rows)}; --dropna)", file=sys.stderr)
    from ..report.sections import plural

    named = {str(r.attrs.get("name", "?")): None for r in [*runs, *lnp_runs]}
    args.header = f"Analysing {plural(len(named), 'run')}: {', '.join(named)}."
    args.reference = _is_reference(args.runs)
    return _run_analysis(runs, args, reach=reach)


def _analyze_on_dask(args: argparse.Namespace) -> int:
    """``analyze --dask [--workers N]``: the files (quoted globs expanded here) opened lazily
    and analysed chunk by chunk on dask, with a progress bar on stderr (docs/sweeps.md)."""
    import contextlib

    from ..keysearch import sweep

    def on_dask(stack: Any, *options: Any, **overrides: Any) -> Any:
        return sweep.compute_sweep(sweep.analyze_sweep(stack, *options, **overrides), progress=True)

    if args.scheduler and args.workers:
        print("bandscope analyze: give --workers (a local cluster) or --scheduler (an existing "
              "one), not both", file=sys.stderr)
        return 2
    if args.workers:
        # local workers: one task per chunk of files, read where it is analysed (no scan, no graph)
        def on_workers(files: Any, *options: Any, **overrides: Any) -> Any:
            return sweep.analyze_files(files, *options, workers=args.workers, dropna=args.dropna,
                                       progress=True, **overrides)

        files = sweep.RunFiles([str(p) for p in sweep.find_run_files(args.runs)])
        return _run_analysis(files, args, analyze=on_workers)
    cluster: Any
    if args.scheduler:
        cluster = sweep.scheduler_client(args.scheduler)
    else:
        cluster = contextlib.nullcontext()
    with cluster:
        stack = sweep.open_runs(args.runs, dropna=args.dropna)
        return _run_analysis(stack, args, analyze=on_dask)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} workers: need at least 1")
    return n


def _input_report(runs: list[Any]) -> dict:
    """Results attrs saying what the readers did to the inputs (``--dropna``), as JSON text."""
    import json

    if not isinstance(runs, (list, tuple)):  # a lazy stack (--dask): the rows are not gathered
        return {}
    dropped = {str(r.attrs["name"]): [int(i) for i in r.attrs["dropped_rows"]]
               for r in runs if len(r.attrs.get("dropped_rows", ()))}
    if not dropped:
        return {}
    return {"dropped_rows": json.dumps(dropped),
            "dropped_rows_note": "rows with NaN in param_time or a band dropped by --dropna: run name -> "
            "0-based rows of its file (header excluded)"}


def reference_dir(explicit: str | None = None) -> Path:
    """Where ``reproduce`` looks for runs: ``--dir`` when given, else the reference runs installed
    with the package (``bandscope/reference_runs/``, package data of a wheel), else the
    repository's ``reference_runs/`` beside ``src/`` (editable installs, source checkouts).

    The result does not depend on the working directory; it is shown relative to it when it lies
    below it.
    """
    if explicit:
        return Path(explicit)
    here = Path(__file__).resolve().parents[1]  # the bandscope package
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


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``bandscope reproduce``: the shipped reference runs (:func:`reference_dir`), analysed and
    reported against the key-search paper (docs/cli.md); returns the exit status."""
    from .. import io as bio

    root = reference_dir(args.dir)
    files, kind = find_reference_runs(root)
    if not files:
        print(f"no reference runs under {root}", file=sys.stderr)
        return 2
    from ..report.sections import plural

    if kind == "synthetic":
        header = (f"NOTE: analysing {plural(len(files), 'SYNTHETIC run')} from {root / 'synthetic'} (generated by "
                  "tools/make_synthetic.py with known Weibull truth), not training runs.")
    else:
        header = f"Analysing {plural(len(files), 'recorded training run')} from {root / 'recorded'}."
    print(header + "\n")
    args.header = header
    args.reference = True
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


def build_parser(plugins: bool | set[str] = True, *, list_extensions: bool = True) -> argparse.ArgumentParser:
    """The ``bandscope`` parser. ``plugins``: True loads every extension (``bandscope.commands``
    entry points) and lets it register its commands; a set of entry-point names loads those; False
    loads none and, with ``list_extensions``, lists the extension commands by name (for ``--help``)."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="bandscope", description="What a neural network learns when.")
    parser.add_argument("--version", action="version", version=f"bandscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("analyze", help="the key-search analysis of run logs (CSV, Parquet, netCDF) with band losses, "
                       "and the spectral-reach analysis of runs with LNP variables")
    p.add_argument("runs", nargs="+", metavar="RUN_FILE")
    _add_analysis_options(p)
    _add_report_options(p)
    _add_reach_options(p)
    p.add_argument("--dask", action="store_true",
                   help="open the runs lazily and analyse them in chunks on dask (threaded scheduler), "
                   "with a progress bar; quote a glob ('runs/*.nc') and bandscope expands it")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="analyse the files on N local worker processes (one task per chunk of files)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --dask: compute on the dask.distributed scheduler already running at "
                   "ADDRESS (e.g. tcp://10.0.0.5:8786; workers on any number of machines, the run "
                   "files at the same paths on each)")
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("reproduce", help="analyse the runs shipped in reference_runs/ and print the paper's tables")
    p.add_argument("--dir", help="reference runs directory (default: the reference runs installed with bandscope)")
    _add_analysis_options(p)
    _add_report_options(p)
    p.set_defaults(func=cmd_reproduce)
    from . import record as recordcli

    recordcli.register(sub)
    from . import forecast as forecastcli
    forecastcli.register(sub)
    parser.set_defaults(_plugin_failures={})
    from .. import plugins as ext

    names = ext.command_names() if plugins or list_extensions else {}
    if plugins is True or plugins:
        registers, failures = ext.load_plugins(None if plugins is True else set(plugins))
        for name, register in registers.items():
            try:
                register(sub)
            except Exception as exc:  # noqa: BLE001 -- a broken extension must not take the core commands down
                import traceback

                failures[name] = ext.PluginFailure(name, names.get(name, name), f"register() failed: "
                                                   f"{type(exc).__name__}: {exc}", traceback.format_exc())
        parser.set_defaults(_plugin_failures=failures)
        if failures:
            parser.epilog = "Extensions that could not be loaded: " + "; ".join(
                f"{k} ({v})" for k, v in failures.items())
    else:  # list extension commands by name: importing them (torch) is left to the command that needs them
        taken = set(sub.choices)
        for name, target in names.items():
            if name not in taken:
                sub.add_parser(name, help=f"(extension {target.split(':')[0]}; `bandscope {name} --help` loads it)",
                               add_help=False)
    return parser


# Commands that never need an extension: their parser is built without loading any (fast, and
# torch is not imported). ``param-time`` needs one only for ``--arch`` (torch models); its
# ``.pt`` reader is loaded on demand when such a file is met.
_CORE_ONLY = frozenset({"analyze", "reproduce", "bands", "forecast"})


def _needs_plugins(argv: list[str], first: str | None) -> bool | set[str]:
    """Which extensions the parser needs: False (none: a core command, or just --help /
    --version), the names of the extension providing command ``first``, or True (all of them:
    an option that extends a core command, or a command no extension names)."""
    if first is None or first in _CORE_ONLY:
        return False
    if first == "param-time":
        return any(a == "--arch" or a.startswith("--arch=") for a in argv)
    from ..plugins import command_names

    return {first} if first in command_names() else True


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, BandscopeInputError):
        text = exc.strerror or str(exc)
        name = exc.filename
        if name is not None and str(name) not in text:
            text = f"{text}: {name}"
        return text
    return str(exc) or type(exc).__name__


def _raised_by_bandscope(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in bandscope's own code (a deliberate check), not deep in a
    library (which, for a plain ValueError, means a bug to report with its traceback)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return True
    pkg = str(Path(__file__).resolve().parents[1])  # the bandscope package
    return str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(pkg)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 expected failure, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    wants_help = first is None and any(a in ("-h", "--help") for a in argv) or not argv
    parser = build_parser(plugins=_needs_plugins(argv, first), list_extensions=wants_help)
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    failures = parser.get_default("_plugin_failures") or {}
    if failures:  # named once, with its error, before anything else; the command still runs
        from ..plugins import describe_failures

        print(describe_failures(failures, debug="--debug" in argv), file=sys.stderr)
        if first in failures:
            print(f"bandscope: command {first!r} is unavailable: the extension that provides it could not be "
                  "loaded (above)", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if first is not None and failures:
            print(f"bandscope: unknown command {first!r} (an extension that could not be loaded may provide it)",
                  file=sys.stderr)
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"bandscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except (BandscopeInputError, OSError) as exc:
        if args.debug:
            raise
        print(f"bandscope {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if args.debug or not _raised_by_bandscope(exc):
            raise  # a ValueError from deep inside a library is a bug: keep the traceback
        print(f"bandscope {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
