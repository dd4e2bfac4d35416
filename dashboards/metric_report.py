"""The comparison of a researcher's own training, in the words of its own metric, rebuilt from MLflow.

``medtune.compare`` logs one MLflow run per trial with the trial's own per-epoch metrics (``step = epoch``),
``lr`` and ``diverged``. :func:`build_metric_report` reads one session's trial runs back, builds the table of
:mod:`medtune.dashboards.comparison` for the user's ``metric`` and ``mode`` (columns ``final_<metric>_mean``
etc.), and the verdicts of every learned controller present (``qlearning``, ``qlearning_warm``, ``greedy``,
``effort``, ``pbt``) against the best other method and against the best classic schedule. Nothing here says
"Dice" unless the metric is Dice.

A held-out ``test_<metric>`` reported after the last epoch ranks the table and is the first criterion; when
no trial reported one, the text says so and the table ranks by the final validation value.

Edge cases: no trial runs in the session is an :class:`~medtune.errors.InputError`; a trial with no value of
the metric at all still appears (with NaN cells) so a broken trial is visible, not dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.dashboards import figures
from medtune.dashboards.comparison import (
    CLASSIC,
    EXPLOITS,
    LEARNED,
    activity_cell,
    activity_warnings,
    compare_runs,
    failure_lines,
    failures_of,
    format_table,
    judged,
    label_of,
    order_note,
    skipped_lines,
    status_cell,
    strongest_verdicts,
    trial_metrics,
    verdict,
)
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.dashboards.views import Block, Plot, Table, Text, View, cell, report_text

__all__ = ["MetricReport", "TITLE", "build_metric_report", "load_curves", "verdicts_of"]

TITLE = "Your own training: the LR controllers compared"



@dataclass
class MetricReport:
    """One session's comparison for ``metric``; ``table`` is indexed by method, best first."""

    experiment: str
    experiment_id: str
    session: str
    metric: str
    mode: str
    target: float
    target_note: str
    curves: pd.DataFrame
    table: pd.DataFrame
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    qtable: dict[str, Any] | None = None
    failures: pd.DataFrame | None = None  # the failed trials (comparison.failures_of)
    epochs: int | None = None  # the trials' budget
    intervals: dict[str, int] = field(default_factory=dict)  # epochs before a learned method's first decision
    notes: list[str] = field(default_factory=list)  # e.g. the settings adapted to the run's length

    def warnings(self) -> list[str]:
        """What failed and which learned methods never acted (``Warning:`` lines)."""
        return [*failure_lines(self.table, self.failures),
                *activity_warnings(self.table, self.epochs, self.intervals)]

    @property
    def has_test(self) -> bool:
        col = f"test_{self.metric}_mean"
        return col in self.table and bool(self.table[col].notna().any())

    def text(self) -> str:
        name = label_of(self.metric)
        n_trials = (self.curves["run_id"].nunique() if len(self.curves) else 0) + \
            (0 if self.failures is None else len(self.failures))
        lines = [
            f"Comparison of experiment {self.experiment!r}, session {self.session} "
            f"({n_trials} trials; {name}: "
            f"{'higher' if self.mode == 'max' else 'lower'} is better; {self.target_note}):",
            format_table(self.table, self.target, self.metric, self.mode),
        ]
        if not self.has_test:
            lines += ["", f"No held-out score: no trial reported test_{self.metric} after its last epoch, so the "
                          f"table ranks by the final validation {name}. Report test_{self.metric} in the last "
                          "epoch's metrics to compare on data nothing watched during training."]
        if self.warnings():
            lines += ["", *self.warnings()]
        if self.notes:
            lines += ["", *self.notes]
        skipped = skipped_lines(self.table, self.failures)
        if skipped:
            lines += ["", *skipped]
        for verdict_lines in self.verdicts.values():
            lines += ["", *verdict_lines]
        note = order_note([str(m) for m in self.table.index])
        if note:
            lines += ["", *note]
        if "pbt" in self.table.index:
            lines += ["", "Note: pbt's members copy each other's weights, so its spread over seeds is not that of "
                          "independent runs."]
        return "\n".join(lines)

    def view(self) -> View:
        """The comparison as the dashboard and the HTML report draw it, in the report's own metric."""
        m, name = self.metric, label_of(self.metric)
        rows = []
        for method, r in self.table.iterrows():
            n = int(r["seeds"])
            row = {"method": str(method), "seeds": str(n)}
            if self.has_test:
                row[f"test {name}"] = cell(r[f"test_{m}_mean"], r[f"test_{m}_std"], n=n)
            row[f"final {name}"] = cell(r[f"final_{m}_mean"], r[f"final_{m}_std"], n=n)
            row[f"best {name}"] = cell(r[f"best_{m}_mean"], r[f"best_{m}_std"], n=n)
            row["AUC"] = cell(r["auc_mean"], r["auc_std"], n=n)
            row["LR changes"] = activity_cell(r, str(method))
            row["status"] = status_cell(r)
            rows.append(row)
        caption = (f"mean ± sample std over seeds; {'higher' if self.mode == 'max' else 'lower'} is better; best first"
                   + ("" if self.has_test else f"; no held-out test_{m} reported"))
        warnings = self.warnings()
        blocks: list[Block] = [Table("comparison", "Comparison table", pd.DataFrame(rows), caption),
                  *([Text("warnings", "Failed and inactive methods", "\n".join(warnings), warning=True)]
                    if warnings else []),
                  Plot("metric-curves", f"Validation {name} per epoch", figures.dice_curves(self.curves, m, name)),
                  Plot("lr-traces", "Learning-rate traces", figures.lr_traces(self.curves)),
                  report_text(self)]
        return View("own", TITLE, self.experiment, self.session, blocks=blocks)

    def summary_metrics(self) -> dict[str, float]:
        """``<column>.<method>`` means, for the summary run."""
        out = {}
        m = self.metric
        for method, row in self.table.iterrows():
            for col in (f"final_{m}_mean", f"best_{m}_mean", "auc_mean", "oscillation_mean", f"test_{m}_mean"):
                value = row.get(col)
                if value is not None and pd.notna(value):
                    out[f"{col}.{method}"] = float(value)
        return out

    def write(self, folder: str | Path) -> list[Path]:
        """``comparison.csv``, ``trials.csv``, ``curves.csv``, ``report.txt`` (and ``qtable.json``) in ``folder``."""
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "comparison.csv", folder / "trials.csv", folder / "curves.csv", folder / "report.txt"]
        self.table.to_csv(paths[0])
        trial_metrics(self.curves, self.target, self.metric, self.mode).to_csv(paths[1], index=False)
        self.curves.to_csv(paths[2], index=False)
        paths[3].write_text(self.text() + "\n")
        if self.qtable:
            paths.append(folder / "qtable.json")
            paths[-1].write_text(json.dumps(self.qtable, indent=1))
        return paths


def verdicts_of(table: pd.DataFrame, metric: str, mode: str,
                trials: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Every learned controller's verdict: paired against the strongest other method on the held-out score (when
    ``trials``, the :func:`~medtune.dashboards.comparison.trial_metrics`, are given), then against the best other
    method on each criterion, then against the best classic schedule. A failed or inactive method (its
    ``status``) is neither judged nor a baseline."""
    table = judged(table)
    if trials is not None:
        trials = trials[trials["method"].astype(str).isin([str(m) for m in table.index])]
    methods = [str(m) for m in table.index]
    classic = [m for m in CLASSIC if m in methods]
    out: dict[str, list[str]] = {}
    for candidate in (m for m in LEARNED if m in methods):
        paired = (strongest_verdicts(trials, [candidate], metric, mode)
                  if trials is not None and len(methods) > 1 else [])
        lines = [*(f"Paired: {line}" for line in paired),
                 f"{candidate} against the best other method on each criterion:",
                 *verdict(table, candidate, metric, mode)]
        if classic and len(methods) > len(classic) + 1:  # other learned methods too: also the classic-only verdict
            against = verdict(table.loc[classic + [candidate]], candidate, metric, mode)
            overall = next((line for line in against if line.startswith("Overall")), against[-1])
            lines += [f"{candidate} against the best classic schedule ({', '.join(classic)}): {overall}"]
        out[candidate] = lines
    return out


def load_curves(client: Any, runs: list, keys: tuple[str, ...]) -> pd.DataFrame:
    """Long table, one row per (run, epoch): ``run_id, method, seed, epoch`` and every key of ``keys``."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        rid = run.info.run_id
        base = {"run_id": rid, "method": run.data.params.get("method", "?"),
                "seed": int(run.data.params.get("seed", 0))}
        rows.setdefault((rid, 0), dict(base, epoch=0))  # a trial with no metric at all still shows (dropped below)
        for key in keys:
            for m in client.get_metric_history(rid, key):
                rows.setdefault((rid, m.step), dict(base, epoch=m.step))[key] = m.value
    df = pd.DataFrame(list(rows.values()))
    for key in keys:
        if key not in df:
            df[key] = math.nan
    with_epochs = set(df.loc[df["epoch"] > 0, "run_id"])
    df = df[(df["epoch"] > 0) | ~df["run_id"].isin(with_epochs)]
    df["diverged"] = df["diverged"].fillna(0).astype(int)
    return df.sort_values(["method", "seed", "epoch"]).reset_index(drop=True)


def build_metric_report(
    tracking_uri: str,
    experiment: str,
    session: str,
    metric: str,
    mode: str = "max",
    loss_metric: str | None = None,
    target: float | None = None,
    qtable: dict[str, Any] | None = None,
    intervals: dict[str, int] | None = None,
    notes: list[str] | None = None,
) -> MetricReport:
    """The comparison of ``session`` in ``experiment`` for ``metric``.

    Args:
        target: the level for "epochs to target"; None: the median over trials of each trial's best value
            (about half the trials reach it), stated in the text.
        intervals: epochs before each learned method's first decision (``{"pbt": 3, "qlearning": 2}``), named
            in the warning of a method that never acted; notes: lines the text adds (the adapted settings).

    Raises:
        InputError: unknown experiment, or no trial runs in the session.
    """
    client = mlflow_client(tracking_uri)
    exp, session, runs = session_runs(client, tracking_uri, experiment, session)
    keys = tuple(dict.fromkeys((metric, f"test_{metric}", loss_metric or metric, "lr", "diverged", EXPLOITS)))
    curves = load_curves(client, runs, keys)
    failures = failures_of(runs)
    measured = curves[~curves["run_id"].isin(set(failures["run_id"]))] if len(curves) else curves
    note = f"target {label_of(metric)} {target:g}" if target is not None else ""
    if target is None:
        best = trial_metrics(measured, 0.0, metric, mode)[f"best_{metric}"].astype(float).dropna()
        target = float(f"{best.median():.3g}") if len(best) else 0.0  # 3 significant digits: a readable level
        note = f"target {label_of(metric)} {target:g}: the median of the trials' best values; set target= to fix it"
    table = compare_runs(curves, target, metric, mode, failures)
    test_col = f"test_{metric}_mean"
    key = test_col if table[test_col].notna().any() else f"final_{metric}_mean"
    table = table.sort_values(key, ascending=mode == "min", kind="stable", na_position="last")
    try:
        epochs = int(float(runs[0].data.params.get("lr_control.epochs")))
    except (TypeError, ValueError):
        epochs = None
    return MetricReport(experiment, exp.experiment_id, session, metric, mode, target, note, curves, table,
                        verdicts_of(table, metric, mode, trial_metrics(measured, target, metric, mode)), qtable,
                        failures, epochs, dict(intervals or {}), list(notes or []))
