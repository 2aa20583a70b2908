"""Read what a report shows: the Plotly figures inside an HTML page, the matplotlib figure behind a PNG,
the page's tables and text. No pixel hashes: the tests look at traces, axes, labels and legends."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.figure import Figure


def plotly_figures(page: str) -> list[dict]:
    """Every ``Plotly.newPlot(id, data, layout, config)`` call of a page, as {"data", "layout"}."""
    out, dec = [], json.JSONDecoder()
    for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", page):
        data, end = dec.raw_decode(page, m.end())
        rest = page[end:].lstrip()[1:].lstrip()  # skip the comma
        layout, _ = dec.raw_decode(rest)
        out.append({"data": data, "layout": layout})
    return out


def values(v) -> list:
    """A trace's x/y as a list: plotly 6 writes numeric arrays as {"dtype", "bdata"} (base64)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return arr.reshape(v["shape"]).tolist() if "shape" in v else arr.tolist()
    return list(v or [])


def traces(page: str) -> list[dict]:
    return [t for f in plotly_figures(page) for t in f["data"]]


class Tables(HTMLParser):
    """The page's tables (rows of cell texts, keyed by the table's id or its index), its title and text
    outside scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.title = ""
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._skip:
            return
        if self._in_title:
            self.title += data
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def read_page(path: Path) -> tuple[str, Tables]:
    page = path.read_text(encoding="utf-8")
    t = Tables()
    t.feed(page)
    return page, t


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib Figure saved while the test runs (pyplot or object-oriented), drawn once so that
    legends and ticks have their final positions and texts."""
    saved: list[Figure] = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


def axes_by_title(fig: Figure) -> dict[str, object]:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def find_axes(fig: Figure, pattern: str):
    hits = [ax for ax in fig.axes if re.search(pattern, ax.get_title(), re.I)]
    assert hits, f"no panel titled /{pattern}/: {[ax.get_title() for ax in fig.axes]}"
    return hits[0]


def figure_texts(fig: Figure) -> list[str]:
    from matplotlib.text import Text

    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]
