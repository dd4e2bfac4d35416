"""What the dashboard and the HTML report show of each study: a :class:`View`, an ordered list of blocks.

A view is built from a study's report object (the same one ``medtune report`` prints), so the page, the HTML
report and the text report cannot disagree. The blocks are plain data (a Plotly figure, a table of display
strings, a PNG, a text), rendered twice: by :mod:`medtune.dashboards.app` into Dash components and by
:mod:`medtune.dashboards.html_report` into one self-contained HTML file. Every block has an ``id`` that the page uses as
its DOM id, so a browser test (or a user's bookmark) can find it.

Per study:

- ``lr``: Dice curves with spread, LR traces, the Q-table heatmap(s), the comparison table, the verdicts.
- ``active-learning``: macro/micro-F1 against the labeled share with spread, the table at each share.
- ``paser``: the Pareto plot of IoU against GFLOPs (every lam and baseline), the table, the routing pictures.
- ``apga``: the accuracy table, accuracy curves, the mask pictures, the collapse warnings.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "Block", "Image", "Links", "Plot", "Table", "Text", "View", "cell", "png", "report_text", "run_status", "slug",
]


def slug(text: str) -> str:
    """``text`` as a DOM id: letters, digits, ``-`` and ``_`` only (method names and lambdas come from MLflow)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


@dataclass
class _Block:
    id: str
    title: str

    def __post_init__(self) -> None:
        self.id = slug(self.id)


@dataclass
class Plot(_Block):
    figure: Any  # plotly.graph_objects.Figure


@dataclass
class Table(_Block):
    """``frame`` holds display strings; its first column names the method (what a reader scans for)."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Image(_Block):
    png: bytes


@dataclass
class Text(_Block):
    text: str
    warning: bool = False


@dataclass
class Links(_Block):
    """Links to other experiments' views: ``(label, experiment)`` pairs (a suite links each task's view)."""

    items: list[tuple[str, str]]


Block = Plot | Table | Image | Text | Links


@dataclass
class View:
    """One experiment's page. ``status`` says how many trials ran, run and failed (empty for a finished report
    without run statuses); ``blocks`` are shown in order."""

    study: str
    title: str
    experiment: str
    session: str
    status: str = ""
    blocks: list[Block] = field(default_factory=list)


def cell(mean: float, std: float, fmt: str = ".3f", n: int | None = None) -> str:
    """``mean ± std``; the value alone for a single seed (``n`` <= 1, or no std), where a spread means nothing."""
    if mean is None or pd.isna(mean):
        return "—"
    if (n is not None and n <= 1) or std is None or pd.isna(std):
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} ± {std:{fmt.lstrip('+')}}"


def png(draw: Callable[[Path], Path]) -> bytes:
    """The bytes of a matplotlib picture of :mod:`medtune.dashboards.plots` (they write files)."""
    with tempfile.TemporaryDirectory() as d:
        return Path(draw(Path(d) / "picture.png")).read_bytes()


def report_text(report: Any) -> Text:
    return Text("report-text", "Full text report with the verdicts", report.text())


def run_status(runs: list) -> str:
    """``"12 runs: 9 finished, 3 running"`` from MLflow runs' statuses."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    words = {"FINISHED": "finished", "RUNNING": "running", "FAILED": "failed", "KILLED": "killed",
             "SCHEDULED": "scheduled"}
    order = list(words)
    parts = [f"{n} {words.get(s, s.lower())}" for s, n in
             sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))]
    return f"{len(runs)} run{'' if len(runs) == 1 else 's'}: {', '.join(parts)}"
