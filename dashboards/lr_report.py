"""The LR study's report, rebuilt from the MLflow store alone, and what every study's report shares.

``build_report`` reads one medtune session's trial runs (params ``method``,
``seed``, ``train.target_dice``; per-epoch metrics) from MLflow, computes the
comparison of :mod:`medtune.dashboards.comparison`, and ``log_summary`` stores it as the
session's summary run: ``comparison.csv``, ``trials.csv``, ``curves.csv``, the
PNG plots, ``qtable.json``, ``report.txt`` and the self-contained ``report.html``
(:mod:`medtune.dashboards.html_report`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.dashboards import figures
from medtune.dashboards.comparison import (
    CLASSIC,
    LEARNED,
    activity_cell,
    activity_warnings,
    compare_runs,
    failure_lines,
    failures_of,
    format_table,
    judged,
    order_note,
    skipped_lines,
    status_cell,
    strongest_verdicts,
    trial_metrics,
    verdict,
)
from medtune.dashboards.plots import plot_dice_curves, plot_lr_traces, plot_qtable
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.dashboards.views import Block, Plot, Table, Text, View, cell, report_text
from medtune.tags import TAG_KIND, TAG_SESSION

__all__ = [
    "CURVE_METRICS", "Report", "TITLE", "build_report", "decision_intervals", "load_curves", "lr_view",
    "write_artifacts",
]

TITLE = "Learning-rate study: the Q-learning agent against classic schedules"
CURVE_METRICS = ("dice", "val_loss", "train_loss", "lr", "diverged", "test_dice", "pbt_exploits")


@dataclass
class Report:
    experiment: str
    experiment_id: str
    session: str
    target_dice: float
    curves: pd.DataFrame
    table: pd.DataFrame
    qtable: dict[str, Any] | None = None
    failures: pd.DataFrame | None = None  # the failed trials (comparison.failures_of)
    epochs: int | None = None  # the trials' budget
    intervals: dict[str, int] = field(default_factory=dict)  # epochs before a learned method's first decision

    def warnings(self) -> list[str]:
        """The ``Warning:`` lines of the learned methods that never acted (see ``activity_warnings``)."""
        return activity_warnings(self.table, self.epochs, self.intervals)

    def trials(self) -> pd.DataFrame:
        """The per-trial metrics of the trials that did not fail (what the paired verdicts read)."""
        failed = set() if self.failures is None else set(self.failures["run_id"])
        return trial_metrics(self.curves[~self.curves["run_id"].isin(failed)], self.target_dice)

    def view(self) -> View:
        """This report as the dashboard and the HTML report draw it."""
        return lr_view(self)

    def text(self) -> str:
        n_trials = self.curves["run_id"].nunique() + (0 if self.failures is None else len(self.failures))
        lines = [
            f"Comparison of experiment {self.experiment!r}, session {self.session} ({n_trials} trials):",
            format_table(self.table, self.target_dice),
        ]
        failed = failure_lines(self.table, self.failures)
        if failed:
            lines += ["", *failed]
        if self.warnings():
            lines += ["", *self.warnings()]
        table = judged(self.table)  # a failed or inactive method is never judged as if measured
        skipped = skipped_lines(self.table, self.failures)
        if skipped:
            lines += ["", *skipped]
        if "qlearning" in table.index or "qlearning" not in self.table.index:
            lines += ["", "Q-learning against the best other method on each criterion:", *verdict(table)]
        methods = list(table.index)
        classic = [m for m in CLASSIC if m in methods]
        learned = [m for m in LEARNED if m in methods]
        if learned and len(methods) > 1:
            trials = self.trials()
            lines += ["", "Each learned method against the strongest other method on the held-out test Dice, paired "
                          "by seed (95% Student-t interval of the mean difference):"]
            lines += ["  " + line for line in strongest_verdicts(trials[trials["method"].isin(methods)], learned)]
        if classic and learned:
            lines += ["", f"Each learned controller against the best classic schedule ({', '.join(classic)}):"]
            lines += ["  " + verdict(table.loc[classic + [m]], m)[0] for m in learned]
        note = order_note([str(m) for m in self.table.index])
        if note:
            lines += ["", *note]
        if "pbt" in methods:
            lines += ["", "Note: pbt's members copy each other's weights, so its spread over seeds is not that of "
                          "independent runs."]
        if "qlearning" in methods and "qlearning_warm" in methods:
            lines += ["", "Warm-started against cold Q-learning:"]
            lines += verdict(table.loc[["qlearning", "qlearning_warm"]], "qlearning_warm")[:2]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        return write_artifacts(self, folder)

    def summary_metrics(self) -> dict[str, float]:
        """``<criterion>.<method>`` means logged on the summary run, so the MLflow UI can chart them."""
        out = {}
        for method, row in self.table.iterrows():
            for col in ("final_dice_mean", "best_dice_mean", "auc_mean", "oscillation_mean", "test_dice_mean"):
                value = row.get(col)
                if value is not None and pd.notna(value):
                    out[f"{col}.{method}"] = float(value)
        return out


def load_curves(client, runs: list) -> pd.DataFrame:
    """Long table, one row per (run, epoch): run_id, method, seed, epoch, dice, val_loss, train_loss, lr, diverged."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        rid = run.info.run_id
        method = run.data.params.get("method", "?")
        seed = int(run.data.params.get("seed", 0))
        for key in CURVE_METRICS:
            for m in client.get_metric_history(rid, key):
                row = rows.setdefault((rid, m.step), {"run_id": rid, "method": method, "seed": seed, "epoch": m.step})
                row[key] = m.value
    df = pd.DataFrame(list(rows.values()))
    if df.empty:
        return pd.DataFrame(columns=["run_id", "method", "seed", "epoch", *CURVE_METRICS])
    for key in CURVE_METRICS:
        if key not in df:
            df[key] = float("nan")
    df["diverged"] = df["diverged"].fillna(0).astype(int)
    return df.sort_values(["method", "seed", "epoch"]).reset_index(drop=True)


def _download_qtable(client, experiment_id: str, session: str) -> dict[str, Any] | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'summary' and tags.`{TAG_SESSION}` = '{session}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    try:
        with tempfile.TemporaryDirectory() as d:
            path = client.download_artifacts(runs[0].info.run_id, "qtable.json", d)
            return json.loads(Path(path).read_text())
    except Exception:
        return None


def build_report(tracking_uri: str, experiment: str, session: str | None = None, qtable: dict | None = None) -> Report:
    """Rebuild the comparison of ``experiment`` (latest session unless ``session``) from MLflow.

    Raises:
        InputError: unknown experiment, or no trial runs in it (one line, exit 2 in the CLI).
    """
    client = mlflow_client(tracking_uri)
    exp, session, runs = session_runs(client, tracking_uri, experiment, session)
    curves = load_curves(client, runs)
    params = runs[0].data.params
    target = float(params.get("train.target_dice", 0.8))
    if qtable is None:
        qtable = _download_qtable(client, exp.experiment_id, session)
    failures = failures_of(runs)
    table = compare_runs(curves, target, failures=failures)
    # Best first: by the held-out test Dice where there is one, else by the final validation Dice.
    key = "test_dice_mean" if table["test_dice_mean"].notna().any() else "final_dice_mean"
    table = table.sort_values(key, ascending=False, kind="stable", na_position="last")
    return Report(experiment, exp.experiment_id, session, target, curves, table, qtable, failures,
                  _int(params.get("train.epochs")), decision_intervals(params))


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def decision_intervals(params: dict[str, str], prefix: str = "") -> dict[str, int]:
    """Epochs before each learned method's first decision, from a trial run's params where they are logged
    (``pbt.perturbation_interval``, ``qlearning.patience``; ``prefix`` e.g. ``lr_control.``)."""
    out = {}
    pbt = _int(params.get(f"{prefix}pbt.perturbation_interval"))
    patience = _int(params.get(f"{prefix}qlearning.patience"))
    if pbt is not None:
        out["pbt"] = pbt
    if patience is not None:
        out["qlearning"] = out["qlearning_warm"] = patience
    return out


def write_artifacts(report: Report, folder: str | Path) -> list[Path]:
    """Write the report's files into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    table_path = folder / "comparison.csv"
    report.table.to_csv(table_path)
    paths.append(table_path)
    trials_path = folder / "trials.csv"
    trial_metrics(report.curves, report.target_dice).to_csv(trials_path, index=False)
    paths.append(trials_path)
    curves_path = folder / "curves.csv"
    report.curves.to_csv(curves_path, index=False)
    paths.append(curves_path)
    paths.append(plot_dice_curves(report.curves, folder / "dice_curves.png"))
    paths.append(plot_lr_traces(report.curves, folder / "lr_traces.png"))
    if report.qtable:
        tables = report.qtable.get("tables") or {"qlearning": report.qtable.get("table", report.qtable)}
        for method, table_state in tables.items():
            name = "qtable.png" if method == "qlearning" or len(tables) == 1 else f"qtable-{method}.png"
            paths.append(plot_qtable(table_state, folder / name, title=f"Q-table of {method}"))
        qpath = folder / "qtable.json"
        qpath.write_text(json.dumps(report.qtable, indent=1))
        paths.append(qpath)
    text_path = folder / "report.txt"
    text_path.write_text(report.text() + "\n")
    paths.append(text_path)
    return paths


def lr_view(report: Report) -> View:
    """The LR study (:class:`medtune.dashboards.lr_report.Report`)."""

    rows = []
    for method, r in report.table.iterrows():
        n, reached = int(r["seeds"]), int(r["reached_target"])
        rows.append({
            "method": str(method), "seeds": str(n), "test Dice": cell(r["test_dice_mean"], r["test_dice_std"], n=n),
            "final Dice": cell(r["final_dice_mean"], r["final_dice_std"], n=n),
            "best Dice": cell(r["best_dice_mean"], r["best_dice_std"], n=n),
            f"epochs to Dice ≥ {report.target_dice:g}":
                f"{cell(r['epochs_to_target_mean'], r['epochs_to_target_std'], '.1f', reached)} ({reached}/{n})",
            "AUC": cell(r["auc_mean"], r["auc_std"], n=n),
            "oscillation": cell(r["oscillation_mean"], r["oscillation_std"], n=n),
            "diverged": f"{int(r['diverged'])}/{int(r['seeds'])}",
            "LR changes": activity_cell(r, str(method)), "status": status_cell(r),
        })
    blocks: list[Block] = [
        Table("comparison", "Comparison table", pd.DataFrame(rows),
              "mean ± sample std over seeds; test Dice on the held-out split with the final model, the other columns "
              "on the validation split; best first"),
        Plot("dice-curves", "Validation Dice per epoch", figures.dice_curves(report.curves)),
        Plot("lr-traces", "Learning-rate traces", figures.lr_traces(report.curves)),
    ]
    if report.qtable:
        tables = report.qtable.get("tables") or {"qlearning": report.qtable.get("table", report.qtable)}
        for method, state in tables.items():
            blocks.append(Plot(f"qtable-{method}", f"Q-table of {method}",
                               figures.qtable_heatmap(state, title=f"Q-table of {method}")))
    elif any(m.startswith("qlearning") for m in report.table.index):
        blocks.append(Text("qtable-pending", "Q-table", "The Q-table is logged with the session's summary run, "
                           "when the session finishes."))
    warnings = [*failure_lines(report.table, report.failures), *report.warnings()]
    if warnings:
        blocks.insert(1, Text("warnings", "Failed and inactive methods", "\n".join(warnings), warning=True))
    table = judged(report.table)
    if "qlearning" in table.index and len(table) > 1:
        trials = report.trials()
        paired = strongest_verdicts(trials[trials["method"].isin(list(table.index))],
                                    [m for m in LEARNED if m in table.index])
        blocks.append(Text("verdicts", "Each learned method against the strongest other method",
                           "\n".join([*paired, "", *verdict(table)])))
    blocks.append(report_text(report))
    return View("lr", TITLE, report.experiment, report.session, blocks=blocks)
