"""What a researcher reads: the paper's tables (:mod:`.tables`), the report as text and HTML
(:mod:`.document`), figures (:mod:`.figures`), verdict rules (:mod:`.verdict`), the paper's
published numbers (:mod:`.paper`) and number formatting (:mod:`.numfmt`).

``bandscope.report.<name>`` is the public name of each function of :mod:`.document`.
"""
from .document import TERMS, WIDTH, Column, Section, format_text, render_table, sections, to_html, write_html

__all__ = ["WIDTH", "Column", "Section", "TERMS", "sections", "format_text", "to_html", "write_html", "render_table"]
