"""A matplotlib Figure as SVG text: the same bytes as ``Figure.savefig(format="svg")``, written
faster (the HTML report's figures).

matplotlib's SVG renderer writes one ``<use>`` element per marker (scatter points, tick marks),
each through its XML writer with the marker's style worked out again, and (from 3.11) reads the
font's ascent and descent again for every text it lays out. Here the renderer draws the first
marker of each call as matplotlib does and writes the others as copies of that element with
their positions changed, and reads each font's heights once per figure (:func:`font_height`):
the same text, with fewer Python calls (``benchmarks/bench_report.py`` times the page).
Within :func:`shared_text_metrics` (the HTML page enters it once), the width, height and descent
of each string in each font are measured once (:func:`text_metrics`) and reused by every figure
drawn and laid out there: matplotlib measures them again for every new renderer, i.e. for every
figure, and the figures of one page share most of their tick labels.
``tests/test_report_svg.py`` checks that every figure of the report comes out byte for byte as
``savefig`` writes it; where matplotlib does something this module does not expect (a marker
with a link, a path with curves, a first point that is not finite, a newer renderer that writes
markers differently), the markers are drawn by matplotlib itself.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import io
from collections.abc import Iterator
from typing import Any

__all__ = ["figure_svg", "font_height", "text_metrics", "shared_text_metrics"]

_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bandscope_text_metrics", default=None)
"""The measurements of the innermost :func:`shared_text_metrics` block of this context, if any."""


class _Parts:
    """The file the SVG renderer writes to: its pieces, joined once at the end."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


def _number(x: float) -> str:
    """A coordinate as matplotlib's SVG writer prints it (fixed notation, no trailing zeros)."""
    return f"{x:f}".rstrip("0").rstrip(".")


def font_height(prop: Any) -> tuple[Any, Any, Any]:
    """(ascent, descent, line gap) in points of the font of ``prop`` at its size, from the font's
    OS/2 or hhea table as matplotlib's text layout reads them (matplotlib >= 3.11); a table
    without those fields (matplotlib 3.10's OS/2 table has no ``sTypo*`` entries) is skipped;
    (None, None, None) lets matplotlib measure the text instead."""
    from matplotlib.font_manager import findfont, get_font

    font: Any = get_font(findfont(prop))  # its tables are TypedDicts keyed by literal names
    for name, gap, ascent, descent in (("OS/2", "sTypoLineGap", "sTypoAscender", "sTypoDescender"),
                                       ("hhea", "lineGap", "ascent", "descent")):
        table = font.get_sfnt_table(name)
        if table is None or not all(k in table for k in (gap, ascent, descent)):
            continue
        scale = prop.get_size_in_points() / font.get_sfnt_table("head")["unitsPerEm"]
        return table[ascent] * scale, -table[descent] * scale, table[gap] * scale
    return None, None, None


@contextlib.contextmanager
def shared_text_metrics() -> Iterator[dict]:
    """A block in which :func:`text_metrics` measures each (string, font) once and the SVG
    renderer of :func:`figure_svg` reads the same measurements (one HTML page: its figures share
    most of their tick labels). The measurements are dropped when the block ends; outside any
    block each figure measures its texts once (as matplotlib does per renderer).

    Yields the dict of measurements (string, font properties, math flag) → (width, height,
    descent) in points."""
    token = _SHARED.set({})
    try:
        yield _SHARED.get()  # type: ignore[misc]
    finally:
        _SHARED.reset(token)


@functools.cache
def _text_to_path() -> Any:
    from matplotlib.textpath import TextToPath

    return TextToPath()


def text_metrics(s: str, prop: Any, ismath: Any = False, memo: dict | None = None) -> tuple[float, float, float]:
    """(width, height, descent) in points of ``s`` in the font ``prop``, as matplotlib's SVG
    renderer measures it (``TextToPath.get_text_width_height_descent``: unhinted outlines at
    72 dpi), remembered in ``memo`` (default: the current :func:`shared_text_metrics` block's,
    none outside one). Keys compare fonts as matplotlib does (``FontProperties.__eq__``: the
    same family, style, variant, weight, stretch, size, file and math family); stored with a
    copy of ``prop``, which is mutable."""
    memo = _SHARED.get() if memo is None else memo
    if memo is None:
        return _text_to_path().get_text_width_height_descent(s, prop, ismath)
    key = (s, prop, ismath)
    got = memo.get(key)
    if got is None:
        got = memo[(s, prop.copy(), ismath)] = _text_to_path().get_text_width_height_descent(s, prop, ismath)
    return got


@functools.cache
def _classes() -> tuple[type, type]:
    """The renderer and canvas classes (made on first use: matplotlib is an optional extra)."""
    import numpy as np
    from matplotlib.backends.backend_mixed import MixedModeRenderer
    from matplotlib.backends.backend_svg import FigureCanvasSVG, RendererSVG
    from matplotlib.path import Path

    class Renderer(RendererSVG):
        """``RendererSVG`` whose markers after the first of each call are copies of the first."""

        def __init__(self, width: float, height: float, out: _Parts, **kwargs: Any) -> None:
            super().__init__(width, height, out, **kwargs)
            self._out = out
            self._font_heights: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
            shared = _SHARED.get()
            self._metrics: dict = {} if shared is None else shared

        def draw_markers(self, gc: Any, marker_path: Any, marker_trans: Any, path: Any, trans: Any,
                         rgbFace: Any = None) -> None:
            verts = path.vertices
            if len(verts) < 2 or path.codes is not None or gc.get_url() is not None:
                return super().draw_markers(gc, marker_path, marker_trans, path, trans, rgbFace)
            flip = self._make_flip_transform(trans)
            clip = (0, 0, self.width * 72, self.height * 72)
            x0, y0 = flip.transform(verts[:1])[0]
            if not (np.isfinite([x0, y0]).all() and 0 <= x0 <= clip[2] and 0 <= y0 <= clip[3]):
                return super().draw_markers(gc, marker_path, marker_trans, path, trans, rgbFace)
            points = [v[-2:] for v, _ in path.iter_segments(flip, clip=clip, simplify=False) if len(v)]
            parts, markers = self._out.parts, dict(getattr(self, "_markers", {}))
            start = len(parts)
            super().draw_markers(gc, marker_path, marker_trans, Path(verts[:1]), trans, rgbFace)
            text = "".join(parts[start:])
            use = text.rfind("<use ")
            line_start, line_end = text.rfind("\n", 0, use) + 1, text.find("\n", use) + 1
            first = text[line_start:line_end]
            xy = f' x="{_number(points[0][0])}" y="{_number(points[0][1])}"'
            if use < 0 or line_end <= 0 or first.count(xy) != 1:
                # not the element this expects: matplotlib writes them all, as if this had not been
                del parts[start:]
                if isinstance(getattr(self, "_markers", None), dict):
                    self._markers = markers
                return super().draw_markers(gc, marker_path, marker_trans, path, trans, rgbFace)
            before, after = first.split(xy)
            rest = "".join(f'{before} x="{_number(x)}" y="{_number(y)}"{after}' for x, y in points[1:])
            parts[start:] = [text[:line_end], rest, text[line_end:]]
            return None

        def _get_font_height_metrics(self, prop: Any) -> tuple[float, float, float]:
            # What matplotlib (>= 3.11) otherwise works out for every text it lays out, and again
            # each time: the ascent, descent and line gap of the font's OS/2 (else hhea) table at
            # the text's size (the figure's dpi is 72 while it prints SVG), once per font here.
            key = (tuple(prop.get_family()), prop.get_style(), prop.get_variant(), prop.get_weight(),
                   prop.get_stretch(), prop.get_size_in_points(), prop.get_file(), prop.get_math_fontfamily())
            if key not in self._font_heights:
                self._font_heights[key] = font_height(prop)
            return self._font_heights[key]

        def get_text_width_height_descent(self, s: str, prop: Any, ismath: Any) -> tuple[float, float, float]:
            # the same measurement (RendererSVG asks its TextToPath), made once per page or figure
            if ismath:
                return super().get_text_width_height_descent(s, prop, ismath)
            return text_metrics(s, prop, ismath, self._metrics)

    class Canvas(FigureCanvasSVG):
        """``FigureCanvasSVG`` printing through :class:`Renderer`, into a text stream."""

        def print_svg(self, filename: Any, *, bbox_inches_restore: Any = None, metadata: Any = None,
                      **ignored: Any) -> None:
            # ``ignored``: dpi, facecolor, edgecolor, orientation, which savefig has already applied
            # (matplotlib drops them before calling its own print_svg, not a third party's)
            out = _Parts()
            dpi = self.figure.dpi
            self.figure.dpi = 72
            width, height = self.figure.get_size_inches()
            renderer: Any = MixedModeRenderer(  # a RendererBase by delegation, as in matplotlib's print_svg
                self.figure, width, height, dpi,
                Renderer(width * 72, height * 72, out, image_dpi=dpi, metadata=metadata),
                bbox_inches_restore=bbox_inches_restore)
            self.figure.draw(renderer)
            renderer.finalize()
            filename.write("".join(out.parts))

    return Renderer, Canvas


def figure_svg(fig: Any, *, fast: bool = True) -> str:
    """``fig`` as SVG text, as ``fig.savefig(buf, format="svg")`` writes it (under the caller's
    rcParams: ``svg.fonttype``, ``svg.hashsalt``); ``fast=False`` is that call itself (the oracle
    of the tests). The figure's canvas is what it was before."""
    buf = io.StringIO()
    if not fast:
        fig.savefig(buf, format="svg")
        return buf.getvalue()
    old = fig.canvas
    try:
        _classes()[1](fig)
        fig.savefig(buf, format="svg")
    finally:
        fig.set_canvas(old)
    return buf.getvalue()
