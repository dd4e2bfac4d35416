"""PNG plots of the studies' reports: LR curves, traces and Q-table; APGA accuracy and masks; active-learning F1.

matplotlib with the Agg backend only (no display needed); every function creates the parent folder, saves the
figure, closes it, and returns the path. ``curves`` has the long layout described in
:mod:`medtune.dashboards.comparison` (one row per (run_id, epoch)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

__all__ = [
    "plot_accuracy_curves", "plot_dice_curves", "plot_f1_curves", "plot_lr_traces", "plot_masks", "plot_pareto",
    "plot_qtable", "plot_routing",
]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medtune.searchers.qlearning_agent import ACTIONS, STATES  # noqa: E402  (pure Python, no Ray/torch import)


def _colours(methods: list[str]) -> dict[str, Any]:
    """One colour per method: tab10 for up to 10 methods, tab20 beyond (the full LR study compares 14, active
    learning 12)."""
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out


def _no_data(ax: plt.Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_dice_curves(curves: pd.DataFrame, path: str | Path) -> Path:
    """Validation Dice per epoch: mean over seeds per method with a ± std band.

    NaN Dice (the epoch a trial diverged) is left out of that epoch's mean; the band uses the sample std and is
    empty where only one seed has a value.

    Args:
        curves: Long per-epoch curves with ``method``, ``epoch`` and ``dice``.
        path: PNG file to write.

    Returns:
        The written path.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = [str(m) for m in pd.unique(curves["method"])] if len(curves) else []
    colours = _colours(methods)
    for method in methods:
        g = curves[curves["method"] == method].groupby("epoch")["dice"].agg(["mean", "std"]).sort_index()
        x, mean, std = g.index.to_numpy(float), g["mean"].to_numpy(float), g["std"].fillna(0.0).to_numpy(float)
        ax.plot(x, mean, color=colours[method], lw=1.8, label=method)
        ax.fill_between(x, mean - std, mean + std, color=colours[method], alpha=0.2, lw=0)
    if methods:
        ax.legend(loc="lower right", fontsize=8)
    else:
        _no_data(ax)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation Dice (mean foreground)")
    ax.set_title("Validation Dice per epoch (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_lr_traces(curves: pd.DataFrame, path: str | Path) -> Path:
    """Learning rate per epoch on a log scale: one thin line per trial (seed), one colour per method.

    Non-positive or non-finite LRs are dropped (they cannot be drawn on a log axis).

    Args:
        curves: Long per-epoch curves with ``run_id``, ``method``, ``epoch`` and ``lr``.
        path: PNG file to write.

    Returns:
        The written path.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = curves[np.isfinite(curves["lr"].astype(float)) & (curves["lr"].astype(float) > 0)] if len(curves) else curves
    methods = [str(m) for m in pd.unique(data["method"])] if len(data) else []
    colours = _colours(methods)
    for method in methods:
        for i, (_, run) in enumerate(data[data["method"] == method].groupby("run_id", sort=False)):
            run = run.sort_values("epoch")
            ax.plot(run["epoch"], run["lr"], color=colours[method], lw=0.9, alpha=0.8,
                    label=method if i == 0 else None)
    if methods:
        ax.set_yscale("log")
        ax.legend(loc="best", fontsize=8)
    else:
        _no_data(ax)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate per epoch (one line per seed)")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_qtable(
    qtable: dict[str, dict[str, dict[str, float]]], path: str | Path, title: str = "Q-learning LR agent"
) -> Path:
    """Heatmap of the Q-learning LR agent's Q-values, each cell annotated with the value and its visit count.

    Rows are the states (the six known ones first, in a fixed order, then any others), columns the actions
    (maintain, decrease, increase, then any others). A missing Q-value is drawn blank and labelled "—";
    a missing visit count reads ``n=0``.

    Args:
        qtable: ``{"q": {state: {action: float}}, "visits": {state: {action: int}}}``.
        path: PNG file to write.
        title: the plot's title; ": Q-values (n = visits)" is appended.

    Returns:
        The written path.
    """
    q = qtable.get("q", {}) or {}
    visits = qtable.get("visits", {}) or {}
    states = list(STATES) + sorted({str(s) for s in q} - set(STATES))
    actions = list(ACTIONS) + sorted({str(a) for row in q.values() for a in row} - set(ACTIONS))
    values = np.array([[float(q.get(s, {}).get(a, np.nan)) for a in actions] for s in states])

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    for i, s in enumerate(states):
        for j, a in enumerate(actions):
            v = values[i, j]
            n = int(visits.get(s, {}).get(a, 0) or 0)
            light = np.isfinite(v) and (v - lo) / (hi - lo) > 0.6
            ax.text(j, i, f"{v:.3f}\nn={n}" if np.isfinite(v) else f"—\nn={n}", ha="center", va="center",
                    fontsize=8, color="black" if light or not np.isfinite(v) else "white")
    ax.set_xticks(range(len(actions)), actions)
    ax.set_yticks(range(len(states)), states)
    ax.set_xlabel("action")
    ax.set_ylabel("state")
    ax.set_title(f"{title}: Q-values (n = visits)")
    fig.colorbar(image, ax=ax, label="Q-value")
    return _save(fig, path)


# ----------------------------------------------------------------------------- APGA study


def plot_accuracy_curves(curves: pd.DataFrame, path: str | Path) -> Path:
    """Test accuracy per epoch, mean and +/- std band over seeds, one panel per regime (APGA study)."""
    regimes = sorted(curves["regime"].unique()) if len(curves) else []
    fig, axes = plt.subplots(1, max(1, len(regimes)), figsize=(5.5 * max(1, len(regimes)), 4), squeeze=False)
    if not regimes:
        _no_data(axes[0, 0])
    colours = _colours(sorted(curves["method"].unique()) if len(curves) else [])
    for ax, regime in zip(axes[0], regimes):
        part = curves[curves["regime"] == regime]
        for method, g in part.groupby("method"):
            stats = g.groupby("epoch")["accuracy"].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, stats["mean"], label=method, color=colours[method])
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color=colours[method], alpha=0.15)
        ax.set_title(f"test accuracy ({regime})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_masks(masks: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "masks") -> Path:
    """One row per method: each example image with the pixels its mask erases tinted red.

    Args:
        masks: ``{method: (images, masks)}``, both ``(n, H, W)`` uint8 (masks 0/1).
    """
    methods = list(masks)
    n = max((len(v[0]) for v in masks.values()), default=1)
    fig, axes = plt.subplots(max(1, len(methods)), n, figsize=(1.2 * n, 1.3 * max(1, len(methods))), squeeze=False)
    for i, method in enumerate(methods):
        images, keep = masks[method]
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(images):
                continue
            grey = images[j].astype(float) / 255.0
            rgb = np.stack([grey, grey, grey], -1)
            erased = keep[j] == 0
            rgb[erased] = 0.35 * rgb[erased] + 0.65 * np.array([0.85, 0.1, 0.1])
            ax.imshow(rgb, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(f"{method}\n{float(keep.mean()):.0%} kept", fontsize=8)
    if not methods:
        _no_data(axes[0, 0])
    fig.suptitle(f"{title}: red = erased", fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------- active-learning study


def plot_f1_curves(curves: pd.DataFrame, path: str | Path) -> Path:
    """Test macro- and micro-F1 against the share of the training pool labeled: mean +/- std over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = sorted(curves["method"].unique()) if len(curves) else []
    colours = _colours(methods)
    for ax, key in zip(axes, ("macro_f1", "micro_f1")):
        for method in methods:
            g = curves[curves["method"] == method].groupby("labeled_fraction")[key].agg(["mean", "std"]).sort_index()
            x, mean, std = g.index.to_numpy(float), g["mean"].to_numpy(float), g["std"].fillna(0.0).to_numpy(float)
            style = {"marker": "o", "ls": ""} if method == "all" else {"lw": 1.6}
            ax.plot(x, mean, color=colours[method], label=method, **style)
            ax.fill_between(x, mean - std, mean + std, color=colours[method], alpha=0.15, lw=0)
        if not methods:
            _no_data(ax)
        ax.set_xlabel("share of the training pool labeled")
        ax.set_ylabel(f"test {key.replace('_', '-')}")
        ax.grid(alpha=0.3)
    if methods:
        axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle("Active learning: test F1 per round (mean ± std over seeds)", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- PaSeR study


def plot_pareto(table: pd.DataFrame, labels: list[str], front: list[int], path: str | Path) -> Path:
    """IoU against GFLOPs executed per image, one point per method and lam (error bars: std over seeds);
    PaSeR's points joined in order of lam, the Pareto front dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    kinds = list(dict.fromkeys(table["method"])) if len(table) else []
    colours = _colours(kinds)
    for i, (_, r) in enumerate(table.iterrows()):
        ax.errorbar(r["gflops_mean"], r["iou_mean"], xerr=r["gflops_std"], yerr=r["iou_std"], fmt="o",
                    color=colours[r["method"]], ms=6, capsize=2)
        ax.annotate(labels[i], (r["gflops_mean"], r["iou_mean"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    for method in ("paser", "random"):
        part = table[table["method"] == method].sort_values("lam")
        if len(part) > 1:
            ax.plot(part["gflops_mean"], part["iou_mean"], color=colours[method], lw=1, alpha=0.7, label=method)
    if front:
        f = table.iloc[front].sort_values("gflops_mean")
        ax.plot(f["gflops_mean"], f["iou_mean"], "k--", lw=0.8, alpha=0.6, label="Pareto front")
    if not len(table):
        _no_data(ax)
    if len(table) and (table["gflops_mean"] > 0).all():
        ax.set_xscale("log")  # the models' costs span two orders of magnitude
    ax.set_xlabel("GFLOPs executed per image")
    ax.set_ylabel("test IoU")
    ax.set_title("PaSeR: IoU against compute (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if len(table):
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_routing(routing: dict[str, Any], path: str | Path, title: str = "routing") -> Path:
    """Each example image with its patch grid tinted by the model that segmented it (f0 none, f1 blue,
    f2 orange), next to the routed prediction and the ground truth."""
    images, masks, preds, actions, grid = (routing[k] for k in ("images", "masks", "preds", "actions", "grid"))
    n = len(images)
    fig, axes = plt.subplots(3, max(1, n), figsize=(1.6 * max(1, n), 5.2), squeeze=False)
    tint = {1: np.array([0.2, 0.45, 0.95]), 2: np.array([0.98, 0.55, 0.1])}
    for j in range(n):
        grey = images[j].astype(float) / 255.0
        rgb = np.stack([grey] * 3, -1)
        side = grey.shape[0] // grid
        for p, a in enumerate(actions[j]):
            if int(a) in tint:
                r0, c0 = (p // grid) * side, (p % grid) * side
                rgb[r0:r0 + side, c0:c0 + side] = 0.55 * rgb[r0:r0 + side, c0:c0 + side] + 0.45 * tint[int(a)]
        for row, img in enumerate((rgb, preds[j], masks[j])):
            ax = axes[row, j]
            ax.imshow(img, cmap=None if row == 0 else "gray", interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        counts = np.bincount(np.asarray(actions[j]).astype(int), minlength=3)
        axes[0, j].set_title(f"f0 {counts[0]} f1 {counts[1]} f2 {counts[2]}", fontsize=7)
    for row, name in enumerate(("routing", "prediction", "truth")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"{title}: blue = f1, orange = f2, untinted = f0", fontsize=9)
    return _save(fig, path)
