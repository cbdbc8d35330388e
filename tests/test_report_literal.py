"""A user's strings (run names, architectures) are literal text everywhere the report puts
them: the printed report, the HTML page, the JSON results and the figures. None of ``$ < & { %``,
quotes or newlines may reach a parser (matplotlib's mathtext, HTML, a format string)."""
import inspect
import json
import warnings
from functools import lru_cache
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bandscope import analyze, report
from bandscope.keysearch.synthetic import make_runs_synthetic
from bandscope.report.results_json import results_to_dict
from bandscope.report.sections import literal

# hypothesis renamed blacklist_* to exclude_* (the minimum-versions lane has the old names only)
_NO_SURROGATES_OR_NUL = ({"exclude_categories": ("Cs",), "exclude_characters": "\x00"}
                         if "exclude_categories" in inspect.signature(st.characters).parameters
                         else {"blacklist_categories": ("Cs",), "blacklist_characters": "\x00"})

SPECIAL = "$<>&{}%'\"\n\t\\ "
# NUL is left out: numpy's fixed-width strings (the run and arch coordinates) drop trailing NULs
# before bandscope sees them.
names = st.text(alphabet=st.one_of(st.sampled_from(SPECIAL),
                                   st.characters(**_NO_SURROGATES_OR_NUL)),
                min_size=1, max_size=12)


@lru_cache(maxsize=1)
def _results():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(make_runs_synthetic(2, n_bands=4))


def _named(a, b, arch_a, arch_b):
    return _results().assign_coords(run=[a, b], arch=("run", [arch_a, arch_b]))


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self._in = [], False

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._in, self._buf = True, []

    def handle_data(self, data):
        if self._in:
            self._buf.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._in:
            self.cells.append("".join(self._buf))
            self._in = False


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=names, b=names, arch_a=names, arch_b=names)
def test_user_strings_are_literal_text(a, b, arch_a, arch_b):
    if a == b:
        b = a + "2"
    res = _named(a, b, arch_a, arch_b)
    # text: every name in the runs table, control characters written as escapes (a name
    # longer than its column is cut with "…" to keep lines within 100 characters)
    text = report.format_text(res)
    assert max(len(line) for line in text.splitlines()) <= report.WIDTH
    for s in (a, b, arch_a, arch_b):
        lit = literal(s)
        assert lit in text or any(lit[:k] + "…" in text for k in range(11, len(lit))), lit
    # HTML: the table cells read back unchanged
    p = _Cells()
    p.feed(report.to_html(res, figures=False))
    for s in (a, b, arch_a, arch_b):
        assert s in p.cells
    # JSON: names and architectures round-trip exactly
    back = json.loads(json.dumps(results_to_dict(res, tables=False)))
    assert list(back["runs"]) == [a, b]
    assert [back["runs"][k]["arch"] for k in (a, b)] == [arch_a, arch_b]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=names, arch_a=names)
@example(a="_", arch_a="x")  # matplotlib leaves a label starting with "_" out of the legend
@example(a="_base", arch_a="_cnn")
def test_user_strings_in_figures(a, arch_a):
    pytest.importorskip("matplotlib")
    import io

    from bandscope.report import figures as plot

    res = _named(a, "other", arch_a, "").isel(run=[0, 1])
    axes = plot.plot_ordering(res)
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels[0] == plot.literal_text(f"{a} [{arch_a}]")
    assert labels[1] == "other"                       # no empty brackets without an architecture
    for fig in (axes[0].figure, plot.plot_band_fits(res, a)[0].figure, plot.plot_full_loss(res)[0].figure):
        fig.savefig(io.BytesIO(), format="svg")      # mathtext would raise on an unbalanced $
    name = plot.safe_name(a)
    assert name and "/" not in name and not name.startswith(".")
