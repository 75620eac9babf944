"""How the HTML pages (report.html, search.html) are rendered: Jinja with autoescape on, so every name a page shows
(a dataset, a strategy, a note, a grid's title) is text, never markup; what the suite built itself as HTML (tables
whose cells it escaped, SVG that matplotlib wrote) is marked `trusted` where it is made, and nowhere else."""

from __future__ import annotations

import html

import polars as pl
from jinja2 import Environment
from markupsafe import Markup

ENVIRONMENT = Environment(autoescape=True)


def trusted(markup: str) -> Markup:
    """HTML the suite built itself (its text already escaped): inserted as is."""
    return Markup(markup)


def render(template: str, **values: object) -> str:
    return ENVIRONMENT.from_string(template).render(**values)


def html_table(header: list[str], rows: list[list[object]], css_class: str = "", marked_row: int | None = None
               ) -> Markup:
    """A table with every cell escaped; `marked_row` gets class="baseline"."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    marked = ' class="baseline"'
    body = "".join(f"<tr{marked if i == marked_row else ''}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
                   + "</tr>" for i, row in enumerate(rows))
    opening = f'<table class="{css_class}">' if css_class else "<table>"
    return trusted(f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def frame_table(frame: pl.DataFrame, marked_row: int | None = None) -> Markup:
    """A sortable table of a frame's rows."""
    return html_table(list(frame.columns), [list(r) for r in frame.iter_rows()], "sortable", marked_row)
