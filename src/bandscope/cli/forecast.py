"""``bandscope forecast``: floors and crossing times of runs in progress (``docs/forecast.md``).

Registered into the ``bandscope`` CLI by :func:`register`. For each run file it calls
:func:`bandscope.forecast` and prints a table; ``--json OUT`` writes

    {"runs": {NAME: {"bands": {"1": {"floor": x, "floor_low": x, "floor_high": x,
                                    "s_reach_0.01": x, "s_reach_0.01_low": x,
                                    "s_reach_0.01_high": x}, ...},
                     "total": {...same keys...}}}}

with JSON ``null`` for unknown values (NaN: no forecast, see the table's status) and for an
unbounded ``s_reach_high`` (inf), "bands" keyed by resolution as in ``analyze --json``, and the
key suffix the residual level (``--level``, formatted with ``%g``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["register", "forecast_to_dict", "format_forecast", "parse_fraction"]


def parse_fraction(text: str) -> float:
    """A fraction in (0, 1] for ``--prefix``.

    >>> parse_fraction("0.4")
    0.4
    """
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction in (0, 1], e.g. 0.4") from None
    if not (math.isfinite(f) and 0 < f <= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1], e.g. 0.4")
    return f


def parse_level(text: str) -> float:
    """A residual fraction in (0, 1) for ``--level``."""
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give a residual fraction in (0, 1), e.g. 0.01") from None
    if not (math.isfinite(f) and 0 < f < 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a residual fraction in (0, 1), e.g. 0.01")
    return f


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _keys(level: float) -> tuple[str, str, str]:
    base = f"s_reach_{level:g}"
    return base, base + "_low", base + "_high"


def forecast_to_dict(fc: xr.Dataset) -> dict:
    """``{"bands": {"1": {...}, ...}, "total": {...}}`` of one :func:`bandscope.forecast` Dataset.

    Examples
    --------
    >>> from bandscope import forecast
    >>> from bandscope.keysearch.synthetic import make_run_synthetic
    >>> d = forecast_to_dict(forecast(make_run_synthetic(0, n_bands=3), prefix=0.5))
    >>> sorted(d), sorted(d["bands"])
    (['bands', 'total'], ['1', '2', '4'])
    >>> list(d["total"])
    ['floor', 'floor_low', 'floor_high', 's_reach_0.01', 's_reach_0.01_low', 's_reach_0.01_high']
    """
    k, klo, khi = _keys(float(fc.attrs["level"]))

    def entry(prefix: str, sel: int | None) -> dict[str, float | None]:
        get = lambda name: _num(fc[prefix + name].values[sel] if sel is not None else fc[prefix + name].values)  # noqa: E731
        return {"floor": get("floor"), "floor_low": get("floor_low"), "floor_high": get("floor_high"),
                k: get("s_reach"), klo: get("s_reach_low"), khi: get("s_reach_high")}

    bands = {str(int(b)): entry("", i) for i, b in enumerate(fc["band"].values)}
    return {"bands": bands, "total": entry("total_", None)}


def _fmt(x: Any, lo: Any, hi: Any) -> str:
    def g(v: Any) -> str:
        v = float(v)
        return "inf" if math.isinf(v) else ("-" if math.isnan(v) else f"{v:.4g}")
    if math.isnan(float(x)):
        return "-"
    return f"{g(x)} [{g(lo)}, {g(hi)}]"


def format_forecast(fc: xr.Dataset) -> str:
    """A readable table of one forecast: one row per band and one for the full loss."""
    level = float(fc.attrs["level"])
    conf = float(fc.attrs["confidence"])
    head = (f"{fc.attrs.get('name', 'run')}: {int(fc.n_checkpoints)} checkpoints, s_now = "
            f"{float(fc.s_now):.4g}; {conf:g} intervals; s_reach = residual at {level:g} of its start")
    cols = ("band", "status", "floor [low, high]", f"s_reach_{level:g} [low, high]",
            "s_remaining [low, high]")
    rows = []
    for i, b in enumerate(fc["band"].values):
        rows.append((str(int(b)), str(fc.status.values[i]),
                     _fmt(fc.floor.values[i], fc.floor_low.values[i], fc.floor_high.values[i]),
                     _fmt(fc.s_reach.values[i], fc.s_reach_low.values[i], fc.s_reach_high.values[i]),
                     _fmt(fc.s_remaining.values[i], fc.s_remaining_low.values[i],
                          fc.s_remaining_high.values[i])))
    rows.append(("total", str(fc.total_status.values),
                 _fmt(fc.total_floor, fc.total_floor_low, fc.total_floor_high),
                 _fmt(fc.total_s_reach, fc.total_s_reach_low, fc.total_s_reach_high),
                 _fmt(fc.total_s_remaining, fc.total_s_remaining_low, fc.total_s_remaining_high)))
    width = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
    line = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, width)).rstrip()  # noqa: E731
    out = [head, line(cols)] + [line(r) for r in rows]
    notes = [f"  {r}: {fc.reason.values[i]}" for i, r in enumerate(fc["band"].values) if fc.reason.values[i]]
    if str(fc.total_reason.values):
        notes.append(f"  total: {fc.total_reason.values}")
    if notes:
        out += ["notes:"] + notes
    return "\n".join(out)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``--calibrate RUNS``: fit a floor-forecast calibration on finished runs, print its
    leave-one-run-out coverage and write it (``--calibration-out``)."""
    import numpy as np

    from .. import io as bio
    from ..errors import BandscopeInputError
    from ..keysearch.calibrate import calibrate, leave_one_run_out, prefix_records

    if not args.calibration_out:
        raise BandscopeInputError("--calibrate needs --calibration-out FILE.json (where to write the calibration)")
    runs = bio.read_runs(args.calibrate, dropna=args.dropna)
    recs = prefix_records(runs)
    cal = calibrate(recs, source=f"bandscope forecast --calibrate ({len(runs)} files)")
    loro = leave_one_run_out(recs, args.confidence)
    print(f"calibration from {len(cal.runs)} runs, {sum(len(s) for s in cal.scores)} forecasts of saturated "
          f"curves; k per stage group {cal.k}")
    print("leave-one-run-out, floor interval coverage of the late value (mean of the last 10 % of checkpoints):")
    for p in sorted({r["prefix"] for r in loro}):
        rr = [r for r in loro if r["prefix"] == p]
        ok = [r for r in rr if "low" in r]
        cov = np.mean([r["low"] <= r["truth"] <= r["high"] for r in ok]) if ok else float("nan")
        print(f"  prefix {p:.1f}: {len(ok)}/{len(rr)} forecast, coverage {cov:.2f}")
    from ..io.atomic import write_text_atomic

    write_text_atomic(args.calibration_out, json.dumps(cal.to_dict(), indent=1))
    print(f"wrote {args.calibration_out}", file=sys.stderr)
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from .. import io as bio
    from ..errors import BandscopeInputError
    from ..keysearch.forecasting import ForecastOptions, forecast

    if args.calibrate:
        return cmd_calibrate(args)
    if not args.runs:
        raise BandscopeInputError("bandscope forecast needs RUN_FILE... (or --calibrate RUN_FILE...)")
    opts = ForecastOptions(level=args.level, confidence=args.confidence)
    runs = bio.read_runs(args.runs, dropna=args.dropna)
    cal = args.calibration if args.calibration else None
    result = {}
    for run in runs:
        name = str(run.attrs.get("name", "run"))
        fc = forecast(run, options=opts, prefix=args.prefix, calibration=cal)
        result[name] = forecast_to_dict(fc)
        if not args.quiet:
            print(format_forecast(fc))
            print()
    if args.json:
        from ..io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps({"runs": result}, indent=1, allow_nan=False))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add the ``forecast`` subcommand to the ``bandscope`` subparsers ``sub``."""
    p = sub.add_parser("forecast", help="forecast each band's floor and 1%%-crossing from runs "
                       "in progress (docs/forecast.md)")
    p.add_argument("runs", nargs="*", metavar="RUN_FILE")
    p.add_argument("--json", metavar="OUT.json", help="write the forecasts as JSON (null = unknown)")
    p.add_argument("--prefix", type=parse_fraction, metavar="F",
                   help="forecast from the first fraction F in (0, 1] of each run's checkpoints")
    p.add_argument("--level", type=parse_level, default=0.01, metavar="Q",
                   help="residual fraction of s_reach (default 0.01: 1%% of the initial residual)")
    p.add_argument("--confidence", type=parse_level, default=0.95, metavar="C",
                   help="interval level (default 0.95)")
    p.add_argument("--dropna", action="store_true", help="drop log rows with NaN instead of failing")
    p.add_argument("--quiet", action="store_true", help="do not print the tables")
    p.add_argument("--calibration", metavar="CAL.json",
                   help="floor calibration to use (default: the one shipped with bandscope)")
    p.add_argument("--calibrate", nargs="+", metavar="RUN_FILE",
                   help="fit a floor calibration on these finished runs (write it with --calibration-out)")
    p.add_argument("--calibration-out", metavar="CAL.json", help="where --calibrate writes the calibration")
    p.set_defaults(func=cmd_forecast)
