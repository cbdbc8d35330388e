"""The report a researcher reads, as text or one HTML file: the public names of the report,
gathered from the modules that build it by concern.

- :mod:`bandscope.report.sections` -- the report as data (:func:`sections`), its two views
  (``"own"``: the runs alone; ``"paper"``: against the key-search paper) and the section
  registry (:func:`register_section`);
- :mod:`bandscope.report.text` -- :func:`format_text`, at most :data:`WIDTH` columns;
- :mod:`bandscope.report.htmlpage` -- :func:`to_html` / :func:`write_html`, one self-contained
  page with inline SVG (or PNG) figures.

Every number comes from one :class:`~bandscope.report.tables.ReportTables`. Page:
``docs/report.md``.
"""
from __future__ import annotations

from .htmlpage import to_html, write_html
from .sections import (
                       TERMS,
                       VIEWS,
                       Column,
                       FigureSpec,
                       ReportContext,
                       Section,
                       register_section,
                       registered_sections,
                       report_context,
                       sections,
)
from .text import WIDTH, format_text, render_table

__all__ = ["WIDTH", "Column", "Section", "FigureSpec", "TERMS", "VIEWS", "ReportContext", "report_context",
           "register_section", "registered_sections", "sections", "format_text", "to_html", "write_html",
           "render_table"]
