"""One self-contained HTML page: a menu of sections holding tables, plots and text.

Everything the page needs is inside it (plotly's JavaScript and the CSS are inlined), so
a report opens on a laptop with no network. Every string that comes from data (test names,
parameters, config text) is escaped: the template autoescapes and tables are rendered
with escaping on; only plotly's own output is inserted as is (it escapes `</` itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Block:
    kind: str  # html | table | pre | empty | warn | defs | links
    html: Markup | str = ""
    text: str = ""
    heading: str = ""
    note: str = ""
    items: list[tuple[str, str]] = field(
        default_factory=list
    )  # defs: term, text; links: text, href


@dataclass
class Section:
    id: str
    title: str
    help: str
    blocks: list[Block] = field(default_factory=list)


def fmt(v: Any) -> str:
    """A cell for people: 4 significant digits, thousands separators above a million."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def table(df: pd.DataFrame, heading: str = "", note: str = "", empty: str = "nothing") -> Block:
    """A data table block (escaped), or a note that there is nothing to show."""
    if df is None or df.empty:
        return Block("empty", text=empty, heading=heading, note=note)
    shown = df.map(fmt)
    html = shown.to_html(index=False, escape=True, classes="data", border=0)
    return Block("table", html=Markup(html), heading=heading, note=note)


def figure(fig: Any, heading: str = "", note: str = "") -> Block:
    """A plotly figure; the page holds plotly.js once, so the figure does not include it."""
    html = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
    return Block("html", html=Markup(html), heading=heading, note=note)


def render(title: str, meta: list[tuple[str, str]], sections: list[Section]) -> str:
    """The page as text (HTML5, UTF-8)."""
    from plotly.offline import get_plotlyjs

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(
        title=title, meta=meta, sections=sections, plotly_js=Markup(get_plotlyjs())
    )
