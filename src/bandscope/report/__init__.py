"""What a researcher reads: the paper's tables (:mod:`.tables`), the report as data
(:mod:`.sections`), text (:mod:`.text`) and HTML (:mod:`.htmlpage`), figures (:mod:`.figures`),
verdict rules (:mod:`.verdict`), the paper's published numbers (:mod:`.paper`) and number
formatting (:mod:`.numfmt`).

``bandscope.report.<name>`` is the public name of each name of :mod:`.document`, whose
``__all__`` is the one list of them.
"""
from . import document
from .document import *  # noqa: F403 -- exactly document.__all__ (a literal list static tools read)

__all__ = document.__all__
