"""The active-learning study's report (paper 001's Tables 1-2), rebuilt from the MLflow store alone.

For each strategy: macro-F1 and micro-F1 on the held-out test split at each
reporting fraction of the training pool labeled (26, 40, 54, 68, 82 and 100%
by default), mean and std over seeds; the labels each needed to reach the
target macro-F1 (95% of ``all``'s when ``all`` ran, else ``loop.target_f1``);
and a verdict of ``drla`` against every other strategy, paired by seed on the
mean macro-F1 over the fractions below 100% (at 100% every strategy has every
label).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.dashboards import figures
from medtune.dashboards.plots import plot_f1_curves
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.dashboards.stats import against_strongest, paired_verdict
from medtune.dashboards.views import Block, Plot, Table, View, cell, report_text

__all__ = [
    "ActiveLearningReport", "CURVE_METRICS", "PAPER_FRACTIONS", "RELATIVE_TARGET", "TITLE", "al_view",
    "at_fractions", "build_report", "labels_to_target", "load_curves", "table",
]

TITLE = "Active-learning study: DRLA against hand-designed query strategies"

CURVE_METRICS = ("labeled", "labeled_fraction", "macro_f1", "micro_f1", "recoveries")
PAPER_FRACTIONS = (0.26, 0.40, 0.54, 0.68, 0.82, 1.0)
RELATIVE_TARGET = 0.95  # labels to reach 95% of ALL's macro-F1


def load_curves(client, runs: list) -> pd.DataFrame:
    """One row per (run, round): run_id, method, seed, round, and :data:`CURVE_METRICS`."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        base = {"run_id": run.info.run_id, "method": run.data.params.get("method", "?"),
                "seed": int(run.data.params.get("seed", 0))}
        by_step: dict[int, dict[str, Any]] = {}
        for key in CURVE_METRICS:
            for m in client.get_metric_history(run.info.run_id, key):
                by_step.setdefault(int(m.step), {**base, "round": int(m.step) - 1})[key] = m.value
        rows.extend(by_step[s] for s in sorted(by_step))
    return pd.DataFrame(rows, columns=["run_id", "method", "seed", "round", *CURVE_METRICS])


def at_fractions(curves: pd.DataFrame, fractions: tuple[float, ...]) -> pd.DataFrame:
    """Per (method, seed, fraction): the scores of the round that labeled ``round(f * N)`` samples.

    ``all`` labels everything at once: its single round stands for every fraction (the paper's ALL row).
    """
    rows = []
    for (method, seed), g in curves.groupby(["method", "seed"]):
        g = g.dropna(subset=["labeled", "labeled_fraction"])
        if g.empty:
            continue
        pool = float((g["labeled"] / g["labeled_fraction"]).iloc[-1])
        for f in fractions:
            if method == "all":
                hit = g.tail(1)
            else:
                hit = g[g["labeled"] == max(1, math.floor(f * pool + 0.5))]
            if len(hit):
                rows.append({"method": method, "seed": seed, "fraction": f,
                             "macro_f1": float(hit["macro_f1"].iloc[0]), "micro_f1": float(hit["micro_f1"].iloc[0])})
    return pd.DataFrame(rows, columns=["method", "seed", "fraction", "macro_f1", "micro_f1"])


def labels_to_target(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per (method, seed): the fewest labels with macro-F1 >= ``target`` (NaN: never reached)."""
    rows = []
    for (method, seed), g in curves.groupby(["method", "seed"]):
        hit = g[g["macro_f1"] >= target]
        rows.append({"method": method, "seed": seed, "labels": float(hit["labeled"].min()) if len(hit) else math.nan})
    return pd.DataFrame(rows, columns=["method", "seed", "labels"])


def table(points: pd.DataFrame, reach: pd.DataFrame, fractions: tuple[float, ...],
          methods: list[str] | None = None) -> pd.DataFrame:
    """One row per method: ``macro@f`` / ``micro@f`` means and stds, labels to target, sorted best first.

    ``methods`` (default: those in ``points``) lists every method to show: a method still before its first
    reporting fraction (a running session) gets a row of NaN scores rather than no row.
    """
    rows = []
    for method in methods if methods is not None else sorted(points["method"].unique()):
        g = points[points["method"] == method]
        r = reach[reach["method"] == method]["labels"]
        row: dict[str, Any] = {"method": method, "seeds": g["seed"].nunique() if len(g) else len(r)}
        for f in fractions:
            at = g[g["fraction"] == f]
            for key in ("macro", "micro"):
                row[f"{key}@{f:g}_mean"] = at[f"{key}_f1"].mean() if len(at) else math.nan
                row[f"{key}@{f:g}_std"] = at[f"{key}_f1"].std(ddof=1) if len(at) > 1 else (0.0 if len(at) else math.nan)
        row["labels_to_target_mean"] = r.mean() if len(r) else math.nan
        row["labels_to_target_reached"] = f"{int(r.notna().sum())}/{len(r)}"
        below = g[g["fraction"] < 1.0]
        row["mean_macro_below_100"] = below["macro_f1"].mean() if len(below) else math.nan
        rows.append(row)
    columns = ["method", "seeds",
               *(f"{k}@{f:g}_{s}" for f in fractions for k in ("macro", "micro") for s in ("mean", "std")),
               "labels_to_target_mean", "labels_to_target_reached", "mean_macro_below_100"]
    out = pd.DataFrame(rows, columns=columns)
    out = out.sort_values("mean_macro_below_100", ascending=False, na_position="last", kind="stable")
    return out.reset_index(drop=True)


@dataclass
class ActiveLearningReport:
    experiment: str
    experiment_id: str
    session: str
    fractions: tuple[float, ...]
    target: float
    target_rule: str
    curves: pd.DataFrame
    points: pd.DataFrame
    table: pd.DataFrame

    def view(self) -> View:
        """This report as the dashboard and the HTML report draw it."""
        return al_view(self)

    def text(self) -> str:
        lines = [f"Active-learning study {self.experiment!r}, session {self.session} "
                 f"({self.curves['run_id'].nunique()} trials): test F1 at each share of the training pool labeled, "
                 "mean +/- std over seeds"]
        for key in ("macro", "micro"):
            lines += ["", f"{key}-F1:", f"  {'method':17s} " + " ".join(f"{f:>15.0%}" for f in self.fractions)]
            for _, r in self.table.iterrows():
                cells = []
                for f in self.fractions:
                    m, s = r[f"{key}@{f:g}_mean"], r[f"{key}@{f:g}_std"]
                    cells.append(f"{'—':>15s}" if pd.isna(m) else f"{m:8.3f} +/- {s:.3f}")
                lines.append(f"  {r['method']:17s} " + " ".join(cells))
        lines += ["", f"labels to reach macro-F1 {self.target:.3f} ({self.target_rule}):"]
        for _, r in self.table.sort_values("labels_to_target_mean", na_position="last").iterrows():
            if r["method"] == "all":
                continue  # labels everything in one request: the reference, not a contender
            v = r["labels_to_target_mean"]
            lines.append(f"  {r['method']:17s} {'never' if pd.isna(v) else f'{v:7.0f}'} (reached by "
                         f"{r['labels_to_target_reached']} seeds)")
        methods = set(self.table["method"])
        if "drla" in methods:
            lines += ["", "DRLA against each strategy (mean macro-F1 over the fractions below 100%, paired by seed):"]
            per_seed = (self.points[self.points["fraction"] < 1.0].groupby(["method", "seed"])["macro_f1"].mean())
            scores = {m: per_seed.get(m, pd.Series(dtype=float)) for m in sorted(methods - {"all"})}
            lines.append("  drla " + against_strongest("drla", scores, "mean macro-F1", exclude=("all",)))
            for other in sorted(methods - {"drla", "all"}):
                lines.append("  " + paired_verdict("drla", other, per_seed.get("drla", pd.Series(dtype=float)),
                                                   per_seed.get(other, pd.Series(dtype=float))))
        if self.curves["recoveries"].fillna(0).max() > 0:
            n = int(self.curves.groupby("run_id")["recoveries"].max().fillna(0).sum())
            lines += ["", f"Note: {n} actor restart(s) were recovered from during this session."]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in (("comparison.csv", self.table), ("at_fractions.csv", self.points),
                         ("curves.csv", self.curves)):
            df.to_csv(folder / name, index=False)
            paths.append(folder / name)
        paths.append(plot_f1_curves(self.curves, folder / "f1_curves.png"))
        (folder / "report.txt").write_text(self.text() + "\n")
        paths.append(folder / "report.txt")
        return paths

    def summary_metrics(self) -> dict[str, float]:
        out = {}
        for _, r in self.table.iterrows():
            for f in self.fractions:
                v = r[f"macro@{f:g}_mean"]
                if pd.notna(v):
                    out[f"macro_f1_at_{f:g}.{r['method']}"] = float(v)
        return out


def _fractions(runs: list) -> tuple[float, ...]:
    raw = runs[0].data.params.get("loop.fractions")
    try:
        return tuple(float(f) for f in ast.literal_eval(raw)) if raw else PAPER_FRACTIONS
    except (ValueError, SyntaxError, TypeError):
        return PAPER_FRACTIONS


def build_report(tracking_uri: str, experiment: str, session: str | None = None) -> ActiveLearningReport:
    """Rebuild the active-learning comparison of ``experiment`` from MLflow.

    Raises:
        InputError: unknown experiment, or no trial runs in it.
    """
    client = mlflow_client(tracking_uri)
    exp, session, runs = session_runs(client, tracking_uri, experiment, session)
    fractions = _fractions(runs)
    curves = load_curves(client, runs)
    points = at_fractions(curves, fractions)
    all_f1 = curves[curves["method"] == "all"].groupby("seed")["macro_f1"].last()
    if len(all_f1):
        target, rule = RELATIVE_TARGET * float(all_f1.mean()), f"{RELATIVE_TARGET:.0%} of ALL's macro-F1"
    else:
        target, rule = float(runs[0].data.params.get("loop.target_f1", 0.95)), "loop.target_f1"
    reach = labels_to_target(curves[curves["method"] != "all"], target)
    methods = sorted(curves["method"].unique())
    return ActiveLearningReport(experiment, exp.experiment_id, session, fractions, target, rule, curves, points,
                                table(points, reach, fractions, methods))


def al_view(report: ActiveLearningReport) -> View:
    """The active-learning study (:class:`medtune.dashboards.al_report.ActiveLearningReport`)."""
    tables = []
    for key in ("macro", "micro"):
        rows = []
        for _, r in report.table.iterrows():
            row = {"method": r["method"]}
            for f in report.fractions:
                row[f"{f:.0%}"] = cell(r[f"{key}@{f:g}_mean"], r[f"{key}@{f:g}_std"])
            if key == "macro":
                v = r["labels_to_target_mean"]
                row[f"labels to {report.target:.3f}"] = ("" if r["method"] == "all" else
                                                          "never" if pd.isna(v) else f"{v:.0f}")
            rows.append(row)
        caption = "mean ± std over seeds" + (f"; labels to reach {report.target_rule}" if key == "macro" else "")
        tables.append(Table(f"{key}-f1", f"Test {key}-F1 at each share of the pool labeled", pd.DataFrame(rows),
                            caption))
    blocks: list[Block] = [tables[0],
                           Plot("f1-curves", "F1 against the labeled share", figures.f1_curves(report.curves)),
                           tables[1], report_text(report)]
    return View("active-learning", TITLE, report.experiment, report.session, blocks=blocks)
