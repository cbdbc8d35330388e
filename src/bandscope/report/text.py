"""The report as printed text: every :func:`~bandscope.report.sections.sections` block as a
title underlined with ``=``, a subtitle, an aligned table, its legend and notes, at most
:data:`WIDTH` columns wide. Figures are left to the HTML report and ``--plots``.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from .sections import TERMS, Column, Section, literal, report_context, sections  # noqa: F401 (Column: doctest)

__all__ = ["WIDTH", "render_table", "format_text"]

WIDTH = 100
"""Longest printed line."""


def _cell(row: dict[str, Any], c: Column) -> str:
    return literal(row.get(c.key, ""))


def render_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]], gap: int = 2) -> list[str]:
    """Rows of text cells as aligned lines (group labels over their columns, a header, the
    rows; ``"head"`` rows printed as a line of their own). A table wider than :data:`WIDTH`
    whose first column is a left-aligned label has that label shortened with "…" to fit.

    >>> render_table([Column("a", "a"), Column("b", "bb", "<")], [{"a": "1", "b": "x"}])
    ['a  bb', '1  x']
    """
    widths = [max([len(c.header)] + [len(_cell(r, c)) for r in rows if r.get("_kind") != "head"])
              for c in columns]
    sep = " " * gap
    over = sum(widths) + gap * (len(columns) - 1) - WIDTH
    while over > 0:
        # too wide (long labels: run or architecture names): shorten the widest left-aligned
        # label column with "…", never below 12 characters
        labels = [j for j, c in enumerate(columns) if c.align == "<" and widths[j] > 12]
        if not labels:
            break
        j = max(labels, key=lambda i: widths[i])
        cut = min(over, widths[j] - 12)
        widths[j] -= cut
        over -= cut
        c = columns[j]
        rows = [r if r.get("_kind") == "head" or len(_cell(r, c)) <= widths[j] else
                {**r, c.key: _cell(r, c)[:widths[j] - 1] + "…"} for r in rows]
    lines = []
    if any(c.group for c in columns):
        parts, j = [], 0
        while j < len(columns):
            g = columns[j].group
            k = j
            while k + 1 < len(columns) and columns[k + 1].group == g:
                k += 1
            span = sum(widths[j:k + 1]) + gap * (k - j)
            parts.append(g.center(span) if g else " " * span)
            j = k + 1
        lines.append(sep.join(parts).rstrip())
    lines.append(sep.join(f"{c.header:{c.align}{w}}" for c, w in zip(columns, widths)).rstrip())
    for r in rows:
        if r.get("_kind") == "head":
            text = literal(r.get("_text", ""))
            level = r.get("verdict", "")
            if level:
                # the verdict in its column, the text before it
                pos = sum(widths[:-1]) + gap * (len(columns) - 1)
                text = f"{text[:pos - 1]:<{pos}}{level}"
            lines.append(text.rstrip())
            continue
        lines.append(sep.join(f"{_cell(r, c):{c.align}{w}}" for c, w in zip(columns, widths)).rstrip())
    return lines


def _wrap(text: str, indent: str = "", width: int = WIDTH, sub: str = "") -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=sub or indent,
                         break_long_words=False, break_on_hyphens=False)


def _format_section(s: Section) -> str:
    if not s.columns:  # a section of figures only
        return ""
    title = literal(s.title)
    lines = [title, "=" * len(title)]
    lines += _wrap(s.subtitle)
    lines.append("")
    if s.columns:
        lines += render_table(s.columns, s.rows)
    if s.legend or s.notes:
        lines.append("")
    if s.legend:
        hw = max(len(t) for t in s.legend)
        for t in s.legend:
            lines += _wrap(f"{t:<{hw}}  {TERMS[t]}", indent="  ", sub=" " * (hw + 4))
    for n in s.notes:
        lines += _wrap(n, indent="  ")
    return "\n".join(lines)


def format_text(results: Any, window: str | None = None, header: str = "", *, view: str | None = None,
                tables: Any = None, forecasts: dict | None = None) -> str:
    """The printed report: ``header`` (if any), then every section of
    :func:`~bandscope.report.sections.sections` that has a table or notes, each a title
    underlined with ``=``, a subtitle naming the paper section, the table, and its legend.

    ``view``: ``"own"`` (default; the runs alone) or ``"paper"`` (against the key-search
    paper, verdicts first); ``tables``: a :class:`~bandscope.report.tables.ReportTables` to
    reuse; ``forecasts``: run → forecast Dataset. ``results`` may also be a
    :class:`~bandscope.report.sections.ReportContext`. No line exceeds :data:`WIDTH`
    characters except a table that cannot fit.
    """
    ctx = report_context(results, window, view=view, tables=tables, forecasts=forecasts)
    blocks = [literal_lines(header.rstrip())] if header else []
    blocks += [b for b in (_format_section(s) for s in sections(ctx)) if b]
    return "\n\n\n".join(blocks) + "\n"


def literal_lines(text: str) -> str:
    """``text`` line by line through :func:`~bandscope.report.sections.literal`."""
    return "\n".join(literal(line) for line in str(text).split("\n"))
