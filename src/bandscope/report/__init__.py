"""What a researcher reads: the paper's tables (:mod:`.tables`), the report as data
(:mod:`.sections`), text (:mod:`.text`) and HTML (:mod:`.htmlpage`), figures (:mod:`.figures`),
verdict rules (:mod:`.verdict`), the paper's published numbers (:mod:`.paper`) and number
formatting (:mod:`.numfmt`).

``bandscope.report.<name>`` is the public name of each function of :mod:`.document`.
"""
from .document import (
                       TERMS,
                       VIEWS,
                       WIDTH,
                       Column,
                       FigureSpec,
                       ReportContext,
                       Section,
                       format_text,
                       register_section,
                       registered_sections,
                       render_table,
                       report_context,
                       sections,
                       to_html,
                       write_html,
)

__all__ = ["WIDTH", "Column", "Section", "FigureSpec", "TERMS", "VIEWS", "ReportContext", "report_context",
           "register_section", "registered_sections", "sections", "format_text", "to_html", "write_html",
           "render_table"]
