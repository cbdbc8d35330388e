"""Number formatting for printed reports: significant digits, signs kept, R² never rounded to 1.

Every formatter takes a float (or NaN/None, printed ``"—"``) and returns a string. They are the
only place the reports decide how many digits to show; the numbers themselves are untouched.

>>> fmt_r2(0.999965), fmt_r2(0.9732), fmt_r2(1.0)
('0.999965', '0.973', '1')
>>> fmt_sig(-0.06572), fmt_sig(-14.0), fmt_sig(2.525), fmt_signed(0.7146)
('-0.0657', '-14.0', '2.52', '+0.715')
>>> fmt_rho(1.0), fmt_rho(-0.8857142), fmt_sig(float("nan"))
('+1.000', '-0.886', '—')
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["DASH", "fmt_sig", "fmt_signed", "fmt_r2", "fmt_rho", "fmt_int", "fmt_range"]

DASH = "—"


def _bad(x: Any) -> bool:
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def fmt_sig(x: Any, sig: int = 3, *, signed: bool = False) -> str:
    """``x`` to ``sig`` significant digits in fixed notation (trailing zeros kept, so the digits
    shown are the digits meant); scientific below 1e-4 or from 1e6 in magnitude.

    >>> fmt_sig(1234.5), fmt_sig(0.00038071), fmt_sig(3.2e-7), fmt_sig(0.0)
    ('1234', '0.000381', '3.20e-07', '0')
    """
    if _bad(x):
        return DASH
    x = float(x)
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    a = abs(x)
    if a < 1e-4 or a >= 1e6:
        return f"{x:{'+' if signed else ''}.{sig - 1}e}"
    dec = max(0, sig - 1 - math.floor(math.log10(a)))
    text = f"{x:.{dec}f}"
    # rounding can carry into a new digit (9.996 -> 10.00): re-derive the decimals
    if dec and len(text.lstrip("-").replace(".", "").lstrip("0")) > sig:
        text = f"{x:.{dec - 1}f}"
    return sign + text


def fmt_signed(x: Any, sig: int = 3) -> str:
    """:func:`fmt_sig` with an explicit ``+`` on positive values (ΔBIC, trends)."""
    return fmt_sig(x, sig, signed=True)


def fmt_r2(x: Any) -> str:
    """R² with enough decimals that 1 − R² shows two significant digits (at least 3 decimals,
    at most 6); exactly 1 prints ``"1"``, within 5e-7 of 1 prints ``"1-<gap>"``, so a value
    below 1 never prints as 1.

    >>> fmt_r2(0.9996), fmt_r2(0.5), fmt_r2(-0.25), fmt_r2(0.99999999)
    ('0.99960', '0.500', '-0.250', '1-1.0e-08')
    """
    if _bad(x):
        return DASH
    x = float(x)
    if x == 1.0:
        return "1"
    gap = 1.0 - x
    if 0 < gap < 5e-7:  # more than six 9s: say how far from 1
        return f"1-{gap:.1e}"
    dec = 3 if gap >= 0.1 else min(6, max(3, 1 - math.floor(math.log10(abs(gap)))))
    text = f"{x:.{dec}f}"
    if text.startswith("1.") and x < 1:  # rounds up to 1 at this many decimals
        text = f"{x:.6f}"
    return text


def fmt_rho(x: Any) -> str:
    """Spearman ρ with sign and three decimals (as the paper's Table B.3.2)."""
    if _bad(x):
        return DASH
    return f"{float(x):+.3f}"


def fmt_int(x: Any) -> str:
    """An integer count; NaN as ``"—"``."""
    if _bad(x):
        return DASH
    return str(int(x))


def fmt_range(lo: Any, hi: Any, fmt: Callable[[Any], str] = fmt_rho) -> str:
    """``"[lo, hi]"`` with ``fmt``; ``"—"`` if either end is missing.

    >>> fmt_range(0.6, 0.7714)
    '[+0.600, +0.771]'
    """
    if _bad(lo) or _bad(hi):
        return DASH
    return f"[{fmt(lo)}, {fmt(hi)}]"
