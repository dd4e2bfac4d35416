"""Interactive Plotly figures of the studies, shared by the live dashboard and the static HTML report.

Each function takes the frames a report already holds (see :mod:`medtune.dashboards.lr_report`,
:mod:`medtune.dashboards.al_report`, :mod:`medtune.dashboards.apga_report`, :mod:`medtune.dashboards.paser_report`) and
returns a ``plotly.graph_objects.Figure``; none reads MLflow. A spread band is mean ± sample std over seeds, drawn only
where two or more seeds have a value. Empty input gives a figure with a "no data yet" note rather than an error, since
the live page draws runs that have not logged anything yet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from medtune.searchers.qlearning_agent import ACTIONS, STATES

__all__ = [
    "LAYOUT", "PALETTE", "accuracy_curves", "add_mean_band", "colours", "dice_curves", "f1_curves", "lr_traces",
    "pareto", "qtable_heatmap",
]

PALETTE = qualitative.Plotly + qualitative.D3
# uirevision: a redraw of the live page (a running study logged an epoch) keeps the user's zoom and hidden traces.
LAYOUT: dict[str, Any] = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "height": 420,
          "legend": {"font": {"size": 11}}, "uirevision": "medtune"}


def colours(methods: list[str]) -> dict[str, str]:
    """One stable colour per method, in the order given."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _no_data(fig: go.Figure, text: str = "no data yet") -> go.Figure:
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"color": "grey", "size": 14})
    return fig


def add_mean_band(fig: go.Figure, x: np.ndarray, mean: np.ndarray, std: np.ndarray, name: str, colour: str,
                  row: int | None = None, col: int | None = None, show_legend: bool = True,
                  mode: str = "lines") -> None:
    """A mean line with a ± std band (the band as a closed polygon, so gaps in ``x`` do not break it).

    Args:
        x, mean, std: equal-length 1-D arrays; NaN std (one seed) draws no band at that point.
    """
    where = {"row": row, "col": col} if row else {}
    band = np.isfinite(std) & np.isfinite(mean)
    if band.sum() >= 2 and np.nanmax(np.where(band, std, 0.0)) > 0:
        xb, lo, hi = x[band], (mean - std)[band], (mean + std)[band]
        fig.add_trace(go.Scatter(x=np.concatenate([xb, xb[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                 fillcolor=_rgba(colour, 0.18), line={"width": 0}, hoverinfo="skip",
                                 legendgroup=name, showlegend=False, name=f"{name} ± std"), **where)
    fig.add_trace(go.Scatter(x=x, y=mean, mode=mode, name=name, legendgroup=name, showlegend=show_legend,
                             line={"color": colour, "width": 2}, marker={"color": colour, "size": 8},
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra></extra>"), **where)


def _mean_std(frame: pd.DataFrame, by: str, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = frame.groupby(by)[value].agg(["mean", "std"]).sort_index()
    return g.index.to_numpy(float), g["mean"].to_numpy(float), g["std"].to_numpy(float)


# ----------------------------------------------------------------------------- LR study


def dice_curves(curves: pd.DataFrame, metric: str = "dice", label: str = "Dice") -> go.Figure:
    """Validation ``metric`` (Dice by default) per epoch, mean ± std over seeds, one colour per method (``curves``:
    long per-epoch frame with ``method``, ``epoch``, ``metric``; a diverged epoch's NaN is left out of its mean)."""
    fig = go.Figure(layout={**LAYOUT, "title": f"Validation {label} per epoch (mean ± std over seeds)",
                            "xaxis_title": "epoch", "yaxis_title": f"validation {label}"})
    methods = [str(m) for m in pd.unique(curves["method"])] if len(curves) else []
    col = colours(methods)
    for method in methods:
        x, mean, std = _mean_std(curves[curves["method"] == method], "epoch", metric)
        add_mean_band(fig, x, mean, std, method, col[method])
    return fig if methods else _no_data(fig)


def lr_traces(curves: pd.DataFrame) -> go.Figure:
    """Learning rate per epoch on a log axis, one line per trial, one colour per method (non-positive LRs dropped)."""
    fig = go.Figure(layout={**LAYOUT, "title": "Learning rate per epoch (one line per seed)", "xaxis_title": "epoch",
                            "yaxis_title": "learning rate", "yaxis_type": "log"})
    lr = curves["lr"].astype(float) if len(curves) else pd.Series(dtype=float)
    data = curves[np.isfinite(lr) & (lr > 0)] if len(curves) else curves
    methods = [str(m) for m in pd.unique(data["method"])] if len(data) else []
    col = colours([str(m) for m in pd.unique(curves["method"])] if len(curves) else [])
    for method in methods:
        for i, (_, run) in enumerate(data[data["method"] == method].groupby("run_id", sort=False)):
            run = run.sort_values("epoch")
            seed = int(run["seed"].iloc[0]) if "seed" in run else i
            fig.add_trace(go.Scatter(x=run["epoch"], y=run["lr"], mode="lines", name=method, legendgroup=method,
                                     showlegend=i == 0, line={"color": col[method], "width": 1.3},
                                     hovertemplate=f"{method} seed {seed}<br>epoch %{{x}}: %{{y:.2e}}<extra></extra>"))
    return fig if methods else _no_data(fig)


def qtable_heatmap(state: dict[str, Any], title: str = "Q-table") -> go.Figure:
    """The Q-learning agent's Q-values, states x actions, each cell labelled with its value and visit count.

    Args:
        state: ``{"q": {state: {action: float}}, "visits": {state: {action: int}}}``; the known states and actions
            come first in their fixed order, unknown ones after; a missing value is blank.
    """
    q = state.get("q", {}) or {}
    visits = state.get("visits", {}) or {}
    states = list(STATES) + sorted({str(s) for s in q} - set(STATES))
    actions = list(ACTIONS) + sorted({str(a) for row in q.values() for a in row} - set(ACTIONS))
    z = [[q.get(s, {}).get(a) for a in actions] for s in states]
    text = [[("—" if z[i][j] is None else f"{z[i][j]:.3f}") + f"<br>n={int(visits.get(s, {}).get(a, 0) or 0)}"
             for j, a in enumerate(actions)] for i, s in enumerate(states)]
    fig = go.Figure(go.Heatmap(z=z, x=actions, y=states, text=text, texttemplate="%{text}", colorscale="Viridis",
                               colorbar={"title": {"text": "Q"}}, hovertemplate="%{y} / %{x}: %{z:.4f}<extra></extra>"),
                    layout={**LAYOUT, "title": f"{title}: Q-values (n = visits)", "xaxis_title": "action",
                            "yaxis_title": "state", "yaxis_autorange": "reversed"})
    return fig


# ----------------------------------------------------------------------------- active learning


def f1_curves(curves: pd.DataFrame) -> go.Figure:
    """Test macro- and micro-F1 against the share of the pool labeled, mean ± std over seeds (``all`` as points)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("macro-F1", "micro-F1"), horizontal_spacing=0.08)
    fig.update_layout(**{**LAYOUT, "margin": {**LAYOUT["margin"], "t": 90}},
                      title="Test F1 against the share of the training pool labeled (mean ± std over seeds)")
    methods = sorted(curves["method"].unique()) if len(curves) else []
    col = colours(methods)
    for c, key in enumerate(("macro_f1", "micro_f1"), start=1):
        for method in methods:
            x, mean, std = _mean_std(curves[curves["method"] == method], "labeled_fraction", key)
            add_mean_band(fig, x, mean, std, method, col[method], row=1, col=c, show_legend=c == 1,
                          mode="markers" if method == "all" else "lines+markers")
        fig.update_xaxes(title_text="share labeled", tickformat=".0%", row=1, col=c)
    return fig if methods else _no_data(fig)


# ----------------------------------------------------------------------------- APGA


def accuracy_curves(curves: pd.DataFrame) -> go.Figure:
    """Test accuracy per epoch, mean ± std over seeds, one panel per regime (``curves``: ``regime``, ``method``,
    ``epoch``, ``accuracy``)."""
    regimes = sorted(curves["regime"].unique()) if len(curves) else []
    fig = make_subplots(rows=1, cols=max(1, len(regimes)), subplot_titles=[f"regime {r}" for r in regimes] or None)
    fig.update_layout(**{**LAYOUT, "margin": {**LAYOUT["margin"], "t": 90}},
                      title="Test accuracy per epoch (mean ± std over seeds)")
    col = colours(sorted(curves["method"].unique()) if len(curves) else [])
    for c, regime in enumerate(regimes, start=1):
        part = curves[curves["regime"] == regime]
        for method in sorted(part["method"].unique()):
            x, mean, std = _mean_std(part[part["method"] == method], "epoch", "accuracy")
            add_mean_band(fig, x, mean, std, method, col[method], row=1, col=c, show_legend=c == 1)
        fig.update_xaxes(title_text="epoch", row=1, col=c)
    return fig if regimes else _no_data(fig)


# ----------------------------------------------------------------------------- PaSeR


def pareto(table: pd.DataFrame, labels: list[str], front: list[int]) -> go.Figure:
    """IoU against GFLOPs executed per image (log axis), one point per method and lam with std error bars;
    PaSeR's and random's points joined in order of lam, the Pareto front dashed.

    Args:
        table: :func:`medtune.dashboards.paser_report.summarise`'s table; ``labels[i]`` names row ``i``; ``front`` holds
            the row positions on the front.
    """
    fig = go.Figure(layout={**LAYOUT, "height": 480, "title": "IoU against compute (mean ± std over seeds)",
                            "xaxis_title": "GFLOPs executed per image", "yaxis_title": "test IoU"})
    if not len(table):
        return _no_data(fig)
    kinds = list(dict.fromkeys(table["method"]))
    col = colours(kinds)
    for method in kinds:
        part = table[table["method"] == method].sort_values("lam")
        idx = [table.index.get_loc(i) for i in part.index]
        fig.add_trace(go.Scatter(
            x=part["gflops_mean"], y=part["iou_mean"], name=method, text=[labels[i] for i in idx],
            mode=("lines+markers" if method == "random" else "lines+markers+text") if len(part) > 1 and method in
            ("paser", "random") else "markers+text",  # random's labels would sit on top of paser's: hover instead
            textposition="top right", textfont={"size": 10}, marker={"size": 10, "color": col[method]},
            line={"color": col[method], "width": 1},
            error_x={"type": "data", "array": part["gflops_std"].fillna(0), "visible": True, "thickness": 1},
            error_y={"type": "data", "array": part["iou_std"].fillna(0), "visible": True, "thickness": 1},
            hovertemplate="%{text}<br>%{x:.4f} GFLOPs, IoU %{y:.3f}<extra></extra>"))
    if front:
        f = table.iloc[front].sort_values("gflops_mean")
        fig.add_trace(go.Scatter(x=f["gflops_mean"], y=f["iou_mean"], mode="lines", name="Pareto front",
                                 line={"color": "black", "dash": "dash", "width": 1}, hoverinfo="skip"))
    if (table["gflops_mean"] > 0).all():
        fig.update_xaxes(type="log")  # the models' costs span two orders of magnitude
    return fig
