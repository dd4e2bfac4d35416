"""One self-contained HTML file per experiment: the :class:`medtune.dashboards.views.View` of its report, offline.

Plotly's JavaScript is inlined once in the head, each figure follows as a div and a script, tables are HTML
tables and pictures ``data:`` URIs, so the file opens from a disk, an e-mail or the MLflow UI's artifact viewer
without fetching anything (it is about 5 MB, almost all of it plotly.js). It is what ``medtune report EXPERIMENT
--html FILE`` writes and what the summary run holds as ``report.html``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from medtune.dashboards.views import Image, Links, Plot, Table, Text, View

__all__ = ["STYLE", "render", "write"]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 2rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
.meta { color: #555; margin-top: 0; }
section { margin: 1.5rem 0; }
h2 { font-size: 1.15rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table.comparison { border-collapse: collapse; font-size: .9rem; }
table.comparison th, table.comparison td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right;
                                          white-space: nowrap; }
.scroll { overflow-x: auto; }
table.comparison th { background: #f4f4f4; }
table.comparison td:first-child, table.comparison th:first-child { text-align: left; font-weight: 600; }
.caption { color: #555; font-size: .85rem; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .8rem; }
pre.warning { background: #fff4e5; border-left: 4px solid #e69500; }
img { max-width: 100%; }
"""


def _block(block) -> str:
    head = f'<section id="{html.escape(block.id)}"><h2>{html.escape(block.title)}</h2>'
    if isinstance(block, Plot):
        body = block.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{block.id}",
                                    config={"displaylogo": False, "responsive": True})
    elif isinstance(block, Table):
        body = '<div class="scroll">' + block.frame.to_html(index=False, escape=True, classes="comparison", border=0,
                                                            table_id=f"table-{block.id}") + "</div>"
        if block.caption:
            body += f'<p class="caption">{html.escape(block.caption)}</p>'
    elif isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        body = (f'<img id="image-{html.escape(block.id)}" alt="{html.escape(block.title)}" '
                f'src="data:image/png;base64,{data}">')
    elif isinstance(block, Text):
        body = f'<pre class="{"warning" if block.warning else ""}">{html.escape(block.text)}</pre>'
    elif isinstance(block, Links):  # offline: name each experiment and the command that shows it
        body = f'<ul id="links-{html.escape(block.id)}">' + "".join(
            f"<li>{html.escape(label)} — <code>medtune report {html.escape(name)}</code></li>"
            for label, name in block.items) + "</ul>"
    else:
        raise TypeError(f"cannot render a {type(block).__name__}")
    return head + body + "</section>"


def render(view: View) -> str:
    """The whole HTML document of ``view`` (a string of about 5 MB)."""
    from plotly.offline import get_plotlyjs

    meta = f"experiment <b>{html.escape(view.experiment)}</b>, session {html.escape(view.session)}"
    if view.status:
        meta += f" — {html.escape(view.status)}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(view.experiment)} — medtune report</title>",
        f"<style>{STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f'<h1 id="view-title">{html.escape(view.title)}</h1>',
        f'<p class="meta">{meta}</p>',
        *(_block(b) for b in view.blocks),
        '<p class="caption">Written by medtune from the MLflow store; every number above is in the runs of this '
        "experiment.</p>",
        "</body></html>",
    ])


def write(view: View, path: str | Path) -> Path:
    """Write ``view``'s HTML report to ``path`` (parent folders created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(view), encoding="utf-8")
    return out
