"""Comparison table for the learning-rate study: epochs to a target Dice, final and best Dice, AUC, oscillation.

Turns per-epoch learning curves of every trial into per-trial metrics, aggregates them per method over seeds
(mean and sample std), formats a fixed-width text table, and writes an honest verdict for a candidate method
against the best baseline on each criterion. Pure pandas/numpy: no Ray, no MLflow.

Input ``curves`` is a long DataFrame with one row per (trial, epoch) and columns ``run_id``, ``method``, ``seed``,
``epoch`` (1-based), ``dice`` (validation mean foreground Dice, NaN on the epoch a trial diverged), ``val_loss``,
``train_loss``, ``lr``, ``diverged`` (0/1) and optionally ``test_dice`` (held-out test Dice of the final model,
present on the last epoch only). Only ``run_id``, ``method``, ``seed``, ``epoch``, ``dice``, ``diverged``,
``test_dice``, ``lr`` and ``pbt_exploits`` (a PBT member's exploits so far; absent: none) are read here.

What each method did: a trial's *LR changes* are the epochs whose ``lr`` differs from the previous epoch's by more
than :data:`LR_TOL` relatively (a per-batch schedule such as ``onecycle`` counts the epochs whose LR differs), and a
``pbt`` member's *exploits* the times it copied another member. A method that is meant to move the LR (every
learned one, :data:`LEARNED`, and every classic schedule but those of :data:`CONSTANT_LR`) and changed no trial's LR
(``pbt``: that never exploited either) is *inactive*, for it trained exactly as ``fixed`` did (``step`` whose
``step_size`` exceeds the epochs, say): the table marks it, :func:`activity_warnings` says what to set, and it gets
no verdict and is never the strongest baseline. A method every trial of which failed has no numbers: the table marks it
*failed* (``failures=`` of :func:`compare_runs`), never a row of zeros.

Any other metric works the same way (``metric=`` and ``mode=`` on every function; a researcher's own training
compared by ``medtune.compare``): the curve column is named ``metric``, the held-out one ``test_<metric>``, and
the table's columns ``final_<metric>_mean`` etc. With ``mode='min'`` lower is better on the metric's own
criteria: best is the minimum, the target is reached at or below it, and a diverged trial has no final, test or
AUC value (NaN; there is no natural worst value as there is Dice 0) and counts in ``diverged``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from medtune.dashboards.stats import against_strongest
from medtune.searchers.lr_methods import METHODS as LR_METHODS
from medtune.searchers.lr_methods import MethodMap, MethodNames
from medtune.tags import TAG_ERROR

__all__ = [
    "CLASSIC", "CONSTANT_LR", "EXPLOITS", "FAILED", "FAILURE_COLUMNS", "INACTIVE", "LEARNED", "LR_TOL", "MODES",
    "ORDER_DEPENDENT", "REQUIRED_COLUMNS", "TABLE_COLUMNS", "TRIAL_COLUMNS", "activity_cell", "activity_warnings",
    "compare_runs", "criteria", "failure_lines", "failures_of", "format_table", "judged", "label_of", "lr_changes",
    "moves_lr", "order_note", "rank", "skipped_lines", "status_cell", "strongest_verdicts", "table_columns",
    "trial_columns", "trial_metrics", "verdict",
]

REQUIRED_COLUMNS = ("run_id", "method", "seed", "epoch", "dice", "diverged")
MODES = ("max", "min")
LR_TOL = 1e-9  # relative: an epoch whose LR differs from the previous one's by more than this changed the LR
FAILED, INACTIVE = "failed", "inactive"  # a method's ``status`` in the table ("" when it was measured and acted)
EXPLOITS = "pbt_exploits"  # the per-epoch metric of a PBT member's exploits (medtune.tags.EXPLOITS_KEY)


#: The schedules of paper 000's comparison, reduce-on-plateau, and the schedules and LR-free optimizers a
#: researcher would pick instead of a learned controller: each decided inside its trial from its own curve
#: (the records of kind ``classic`` in medtune.searchers.lr_methods, read at each use).
CLASSIC = MethodNames(lambda m: m.kind == "classic")
#: The adaptive controllers each study judges against the strongest other method (the records of kind ``learned``).
LEARNED = MethodNames(lambda m: m.kind == "learned")
#: Methods whose LR is constant by design (a fixed LR; Schedule-Free AdamW, which needs no schedule): they act
#: without changing the LR, so they are never *inactive* (the records' ``constant_lr``).
CONSTANT_LR = MethodNames(lambda m: m.constant_lr)
#: Methods whose trials share state, so their numbers depend on the order in which trials report, which the
#: machine's timing decides: a rerun of the same spec and seeds can move them. Every other method is a function
#: of its own seed and gives the same curve on a rerun, alone or beside other trials, at any concurrency
#: (method -> why: the records' ``order_dependent``).
ORDER_DEPENDENT: MethodMap[str] = MethodMap(lambda m: m.order_dependent or None)


def order_note(methods: list[str]) -> list[str]:
    """Lines saying which of ``methods`` are order-dependent (:data:`ORDER_DEPENDENT`) and why; none if none."""
    shared = [m for m in methods if m in ORDER_DEPENDENT]
    if not shared:
        return []
    return ["Order-dependent methods (shared state: a rerun of the same spec and seeds can move their numbers; "
            "every other method repeats exactly):", *(f"  {m}: {ORDER_DEPENDENT[m]}" for m in shared)]


def trial_columns(metric: str = "dice") -> list[str]:
    """Columns of :func:`trial_metrics` for ``metric``."""
    return ["run_id", "method", "seed", f"test_{metric}", f"final_{metric}", f"best_{metric}", "epochs_to_target",
            "auc", "oscillation", "epochs", "diverged", "lr_changes", "exploits"]


def table_columns(metric: str = "dice") -> list[str]:
    """Columns of :func:`compare_runs`'s table for ``metric``."""
    m = metric
    return ["seeds", f"test_{m}_mean", f"test_{m}_std", f"final_{m}_mean", f"final_{m}_std", f"best_{m}_mean",
            f"best_{m}_std", "epochs_to_target_mean", "epochs_to_target_std", "reached_target", "auc_mean", "auc_std",
            "oscillation_mean", "oscillation_std", "diverged", "lr_changes_mean", "exploits_mean", "failed", "status"]


TRIAL_COLUMNS = trial_columns()
TABLE_COLUMNS = table_columns()


def label_of(metric: str) -> str:
    """How a metric is named in text: ``Dice`` for ``dice``, else its own key."""
    return "Dice" if metric == "dice" else metric


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be 'max' (higher is better) or 'min'")


def _check_columns(curves: pd.DataFrame, metric: str = "dice") -> None:
    required = tuple(metric if c == "dice" else c for c in REQUIRED_COLUMNS)
    missing = [c for c in required if c not in curves.columns]
    if missing:
        raise ValueError(
            f"curves is missing column(s) {missing}; it has {list(curves.columns)}. "
            "Build it with one row per (run_id, epoch) and columns " + ", ".join(required) + "."
        )


def lr_changes(lr: np.ndarray, tol: float = LR_TOL) -> float:
    """Epochs whose LR differs from the previous epoch's by more than ``tol`` relatively; NaN without an LR."""
    lr = np.asarray(lr, dtype=float)
    if not np.isfinite(lr).any():
        return math.nan
    a, b = lr[:-1], lr[1:]
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.sum(both & (np.abs(b - a) > tol * np.maximum(np.abs(a), np.abs(b)))))


def _one_trial(trial: pd.DataFrame, target_dice: float, budget: int | None = None, metric: str = "dice",
               mode: str = "max") -> dict[str, object]:
    """Metrics of one trial; ``trial`` is sorted by epoch with one row per epoch.

    A diverged trial's curve is padded with Dice 0 up to ``budget`` (the longest trial's last epoch), so its
    AUC is over the same span as everyone else's. With ``mode='min'`` a diverged trial has no final, test or
    AUC value (NaN).
    """
    higher = mode == "max"
    epochs = trial["epoch"].to_numpy(dtype=float)
    dice = trial[metric].to_numpy(dtype=float)
    diverged = int(trial["diverged"].fillna(0).astype(float).max() > 0)
    finite = np.isfinite(dice)
    worst = 0.0 if higher else math.nan  # what a diverged trial scores

    last = dice[-1]
    final = worst if diverged or not np.isfinite(last) else float(last)
    best = (float(dice[finite].max() if higher else dice[finite].min())) if finite.any() else math.nan
    hit = np.flatnonzero(finite & ((dice >= target_dice) if higher else (dice <= target_dice)))
    to_target = float(epochs[hit[0]]) if hit.size else math.nan

    # Normalised area: trapezoid over epochs / span of epochs (= number of intervals for consecutive epochs).
    filled, at = np.where(finite, dice, 0.0), epochs
    if diverged and budget is not None and len(epochs) and epochs[-1] < budget:
        pad = np.arange(epochs[-1] + 1, budget + 1, dtype=float)
        filled, at = np.concatenate([filled, np.zeros(len(pad))]), np.concatenate([epochs, pad])
    span = at[-1] - at[0]
    auc = float(filled[0]) if len(filled) == 1 or span <= 0 else float(np.trapezoid(filled, at) / span)
    if diverged and not higher:
        auc = math.nan

    test_key = f"test_{metric}"
    test = trial[test_key].to_numpy(dtype=float) if test_key in trial else np.array([])
    test = test[np.isfinite(test)]
    test_dice = worst if diverged else (float(test[-1]) if test.size else math.nan)

    values = dice[finite]
    oscillation = float(np.std(np.diff(values), ddof=0)) if values.size >= 3 else 0.0
    changes = lr_changes(trial["lr"].to_numpy(dtype=float)) if "lr" in trial else math.nan
    exploits = math.nan
    if trial["method"].iloc[0] == "pbt":  # a member that never exploited logs no count
        counts = trial[EXPLOITS].to_numpy(dtype=float) if EXPLOITS in trial else np.array([])
        exploits = float(np.nanmax(counts)) if np.isfinite(counts).any() else 0.0
    return {
        "run_id": trial["run_id"].iloc[0], "method": trial["method"].iloc[0], "seed": trial["seed"].iloc[0],
        test_key: test_dice, f"final_{metric}": final, f"best_{metric}": best, "epochs_to_target": to_target,
        "auc": auc, "oscillation": oscillation, "epochs": len(trial), "diverged": diverged,
        "lr_changes": changes, "exploits": exploits,
    }


def trial_metrics(curves: pd.DataFrame, target_dice: float, metric: str = "dice", mode: str = "max") -> pd.DataFrame:
    """Per-trial learning-curve metrics.

    Args:
        curves: Long per-epoch curves (see module docstring). Rows need not be sorted; a repeated
            (run_id, epoch) keeps its last row (a re-reported epoch after a restore).
        target_dice: Dice threshold for ``epochs_to_target`` (of ``metric``: reached at or above it with
            ``mode='max'``, at or below it with ``mode='min'``).
        metric: the curve column; ``dice`` in the names below is this name.
        mode: ``max`` (higher is better) or ``min``.

    Returns:
        One row per ``run_id`` in order of first appearance, with columns ``run_id, method, seed``,
        ``test_dice`` (held-out test Dice of the final model; 0.0 if diverged, NaN without a test split),
        ``final_dice``
        (last epoch's Dice; 0.0 for a diverged trial or a NaN last Dice), ``best_dice`` (max finite Dice, NaN if
        none), ``epochs_to_target`` (first epoch number with Dice >= target, NaN if never), ``auc`` (trapezoid of
        the Dice curve over epochs divided by the epoch span, so in [0, 1]; NaN Dice counts as 0; a single epoch
        gives its Dice), ``oscillation`` (std, ddof=0, of epoch-to-epoch changes of the finite Dice values; 0.0
        with fewer than 3 finite values), ``epochs`` (rows), ``diverged`` (0/1), ``lr_changes`` (see
        :func:`lr_changes`; NaN without an ``lr`` column) and ``exploits`` (a ``pbt`` member's; NaN for others).

    Raises:
        ValueError: If a required column is missing.
    """
    _check_mode(mode)
    _check_columns(curves, metric)
    if curves.empty:
        return pd.DataFrame(columns=trial_columns(metric))
    order = pd.unique(curves["run_id"])
    data = curves.drop_duplicates(["run_id", "epoch"], keep="last").sort_values(["run_id", "epoch"], kind="stable")
    budget = int(data["epoch"].max())
    rows = {rid: _one_trial(g, target_dice, budget, metric, mode) for rid, g in data.groupby("run_id", sort=False)}
    return pd.DataFrame([rows[rid] for rid in order], columns=trial_columns(metric))


def _mean_std(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the finite values; std 0.0 for one value, both NaN for none."""
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


FAILURE_COLUMNS = ("run_id", "method", "seed", "error")


def compare_runs(curves: pd.DataFrame, target_dice: float, metric: str = "dice", mode: str = "max",
                   failures: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-method comparison table aggregated over seeds.

    Args:
        curves: Long per-epoch curves (see module docstring).
        target_dice: Dice threshold for ``epochs_to_target`` and ``reached_target``.
        metric, mode: the curve column and its direction (see :func:`trial_metrics`); ``dice`` in the column
            names below is ``metric``.
        failures: the failed trials (columns ``run_id, method, seed, error``): their epochs are left out of
            every number, and a method all of whose trials failed gets a row with no numbers and status
            ``failed``.

    Returns:
        DataFrame indexed by ``method`` (order of first appearance) with columns ``seeds`` (trials of the method
        that did not fail), ``{test_dice,final_dice,best_dice,auc,oscillation}_{mean,std}``,
        ``epochs_to_target_{mean,std}`` over the seeds that reached the target (NaN when none did),
        ``reached_target`` (count), ``diverged`` (count), ``lr_changes_mean`` (LR changes per trial),
        ``exploits_mean`` (``pbt``'s exploits per member; NaN for other methods), ``failed`` (count) and
        ``status``: ``failed`` (every trial failed), ``inactive`` (a learned method that changed no trial's LR;
        ``pbt``: that never exploited either) or ``""``. std is the sample std (ddof=1) and 0.0 for a single seed.
    """
    failures = failures if failures is not None and len(failures) else pd.DataFrame(columns=list(FAILURE_COLUMNS))
    if len(failures) and len(curves):
        curves = curves[~curves["run_id"].isin(set(failures["run_id"]))]
    trials = trial_metrics(curves, target_dice, metric, mode)
    failed = failures.groupby(failures["method"].astype(str), sort=False).size().to_dict() if len(failures) else {}
    rows: dict[str, dict[str, float | int | str]] = {}
    for method, g in trials.groupby("method", sort=False):
        row: dict[str, float | int | str] = {"seeds": len(g)}
        for col in (f"test_{metric}", f"final_{metric}", f"best_{metric}", "epochs_to_target"):
            row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(g[col])
        row["reached_target"] = int(g["epochs_to_target"].notna().sum())
        for col in ("auc", "oscillation"):
            row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(g[col])
        row["diverged"] = int(g["diverged"].sum())
        row["lr_changes_mean"] = _mean_std(g["lr_changes"])[0]
        row["exploits_mean"] = _mean_std(g["exploits"])[0]
        changes, exploits = g["lr_changes"].astype(float), g["exploits"].astype(float)
        idle = changes.notna().all() and (changes == 0).all() and not (exploits > 0).any()
        row["failed"] = int(failed.get(str(method), 0))
        row["status"] = INACTIVE if moves_lr(str(method)) and idle else ""
        rows[str(method)] = row
    for method, n in failed.items():
        if method not in rows:
            rows[method] = {"seeds": 0, "reached_target": 0, "diverged": 0, "failed": int(n), "status": FAILED}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=table_columns(metric))
    table.index.name = "method"
    for col in ("seeds", "reached_target", "diverged", "failed"):
        table[col] = table[col].fillna(0).astype(int)
    table["status"] = table["status"].fillna("").astype(str)
    return table


def moves_lr(method: str) -> bool:
    """Whether ``method`` is meant to change the LR within a run (so a run where it never did is *inactive*): every
    method of :data:`LEARNED` and :data:`CLASSIC` but those of :data:`CONSTANT_LR` (its record's ``moves_lr``);
    False for a name medtune does not know (a user's own method, judged on its numbers alone)."""
    record = LR_METHODS.get(method)
    return record is not None and record.moves_lr


def judged(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a verdict may read: the methods that were measured and acted (no ``failed`` or ``inactive``)."""
    if "status" not in table:
        return table
    return table[table["status"].fillna("").astype(str) == ""]


def failures_of(runs: list) -> pd.DataFrame:
    """The failed trials among MLflow trial runs (status ``FAILED``, or ``KILLED``: stopped unfinished when the run
    was stopped for another trial's error): ``run_id, method, seed, error`` (the
    ``medtune.error`` tag the tracker set, or a note that none was recorded)."""
    rows = [{"run_id": r.info.run_id, "method": r.data.params.get("method", "?"),
             "seed": int(r.data.params.get("seed", 0)),
             "error": r.data.tags.get(TAG_ERROR) or "no error recorded (see the trial's error.txt)"}
            for r in runs if getattr(r.info, "status", "") in ("FAILED", "KILLED")]
    return pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))


def failure_lines(table: pd.DataFrame, failures: pd.DataFrame) -> list[str]:
    """How many trials failed per method and why (the first error's line); none when nothing failed."""
    if failures is None or not len(failures):
        return []
    lines = [f"Failed trials ({len(failures)} of {int(table['seeds'].sum()) + len(failures)}); a failed trial is "
             "left out of every number:"]
    for method, g in failures.groupby(failures["method"].astype(str), sort=False):
        total = int(table.loc[method, "seeds"]) + len(g) if method in table.index else len(g)
        first = g.sort_values("seed", kind="stable").iloc[0]
        lines.append(f"  {method}: {len(g)} of {total} trials failed; first error (seed {first['seed']}): "
                     f"{first['error']}")
    return lines


def skipped_lines(table: pd.DataFrame, failures: pd.DataFrame | None = None) -> list[str]:
    """One line per method a verdict skips: failed (with the first error's line) or inactive."""
    lines = []
    for method, r in table.iterrows():
        if r.get("status") == FAILED:
            g = (failures[failures["method"].astype(str) == str(method)]
                 if failures is not None and len(failures) else None)
            why = f": {g.sort_values('seed', kind='stable').iloc[0]['error']}" if g is not None and len(g) else ""
            lines.append(f"No verdict for {method}: every trial failed{why}.")
        elif r.get("status") == INACTIVE:
            lines.append(f"No verdict for {method}: it never {'exploited' if method == 'pbt' else 'changed the LR'} "
                         "(see the warning).")
    return lines


def activity_warnings(table: pd.DataFrame, epochs: int | None = None,
                      intervals: dict[str, int] | None = None) -> list[str]:
    """A ``Warning:`` line for every inactive method of ``table`` (:func:`moves_lr`): it never changed the LR (``pbt``:
    never exploited), why when its budget is shorter than its decision interval, and what to set.

    Args:
        epochs: the trials' budget, when known; intervals: ``{method: epochs before its first decision}``
            where known (``pbt``: its perturbation interval; ``qlearning``: its patience).
    """
    lines = []
    for method, r in table.iterrows():
        if r.get("status") != INACTIVE:
            continue
        m = str(method)
        what = "never exploited (no member copied another in any trial)" if m == "pbt" else \
            "never changed the LR in any trial"
        k = (intervals or {}).get(m)
        record = LR_METHODS.get(m)
        todo = f"{(record.inactive_hint if record else '') or 'make it decide earlier'} or train longer"
        if k is not None and epochs is not None and k >= epochs:
            why = f"; its first decision is due after {k} epochs, and the trials ran {epochs}"
        elif m == "pbt" and int(r.get("seeds", 0)) + int(r.get("failed", 0) or 0) < 2:
            why, todo = "; a population of one member has no one to copy", "run at least 2 seeds (one member each)"
        elif m.startswith("qlearning") and k is not None and epochs is not None:
            why = f"; it decided (its first decision after {k} epochs) but kept the LR every time"
            todo = "raise qlearning.epsilon to explore more, or train longer"
        else:
            why = ""
        lines.append(f"Warning: {m} {what}{why}, so it acted like fixed and is not judged; {todo}.")
    return lines


def activity_cell(row: pd.Series, method: str) -> str:
    """The table's ``LR changes`` cell: per trial, with ``pbt``'s exploits."""
    changes = row.get("lr_changes_mean")
    text = "—" if changes is None or not np.isfinite(changes) else f"{changes:.3g}"
    exploits = row.get("exploits_mean")
    if method == "pbt" and exploits is not None and np.isfinite(exploits):
        text += f" ({exploits:.3g} exploits)"
    return text


def status_cell(row: pd.Series) -> str:
    """The table's ``status`` cell: ``failed (3/3)``, ``inactive``, ``1 failed`` or empty."""
    failed, status = int(row.get("failed", 0) or 0), row.get("status", "")
    if status == FAILED:
        return f"failed ({failed}/{failed})"
    parts = [status] if status else []
    if failed:
        parts.append(f"{failed} failed")
    return ", ".join(parts)


def _fmt(value: float, decimals: int) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{decimals}f}"


def _cell(mean: float, std: float, decimals: int, n: int = 2) -> str:
    """``mean ± std``; the value alone for one seed (``n``), where a spread means nothing."""
    if mean is None or not np.isfinite(mean):
        return "—"
    if n <= 1:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {_fmt(std if np.isfinite(std) else 0.0, decimals)}"


def format_table(table: pd.DataFrame, target_dice: float, metric: str = "dice", mode: str = "max") -> str:
    """Fixed-width text rendering of :func:`compare_runs`'s table.

    Args:
        table: Output of :func:`compare_runs`.
        target_dice: The target Dice the table was built with (named in the header).
        metric, mode: the metric the table was built for; its name (``Dice`` for ``dice``) heads the columns,
            and the target reads ``≥`` or ``≤`` by ``mode``.

    Returns:
        Multi-line string: a title naming the target and the splits, a header, a rule and one line per method with
        "mean ± std" cells (3 decimals for Dice/AUC/oscillation, 1 for epochs; the value alone for one seed);
        epochs to target reads ``12.3 ± 1.5 (3/3)`` or ``— (0/3)``; ``LR changes`` per trial (``pbt``: and its
        exploits); ``status`` ``failed (n/n)`` (no numbers), ``inactive`` or how many trials failed.
    """
    _check_mode(mode)
    name, m, sign = label_of(metric), metric, "≥" if mode == "max" else "≤"
    header = ["method", "seeds", f"test {name}", f"final {name}", f"best {name}",
              f"epochs to {name}{sign}{target_dice:g}",
              "AUC", "oscillation", "diverged", "LR changes", "status"]
    lines = [header]
    for method, r in table.iterrows():
        if r.get("status") == FAILED:  # no numbers: never a row of zeros
            lines.append([str(method), "0", *(["—"] * 7), "—", status_cell(r)])
            continue
        n = int(r["seeds"])
        reach = f"({int(r['reached_target'])}/{n})"
        ett = _cell(r["epochs_to_target_mean"], r["epochs_to_target_std"], 1, int(r["reached_target"]))
        lines.append([
            str(method), str(n), _cell(r[f"test_{m}_mean"], r[f"test_{m}_std"], 3, n),
            _cell(r[f"final_{m}_mean"], r[f"final_{m}_std"], 3, n),
            _cell(r[f"best_{m}_mean"], r[f"best_{m}_std"], 3, n), f"{ett} {reach}",
            _cell(r["auc_mean"], r["auc_std"], 3, n), _cell(r["oscillation_mean"], r["oscillation_std"], 3, n),
            f"{int(r['diverged'])}/{n}", activity_cell(r, str(method)), status_cell(r),
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]

    def render(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    title = (f"LR study comparison — mean ± sample std over seeds; test {name}: held-out split, final model; "
             f"other columns: validation split; target {name} {target_dice:g}")
    return "\n".join([title, render(header), "-" * len(render(header))] + [render(r) for r in lines[1:]])


class _Criterion(NamedTuple):
    label: str
    mean: str
    std: str | None
    higher_better: bool
    decimals: int


def criteria(metric: str = "dice", mode: str = "max") -> tuple[_Criterion, ...]:
    """The verdict's criteria for ``metric``: its own (test, final, best, AUC) follow ``mode``."""
    name, m, higher = label_of(metric), metric, mode == "max"
    return (
        _Criterion(f"held-out test {name}", f"test_{m}_mean", f"test_{m}_std", higher, 3),
        _Criterion(f"final {name}", f"final_{m}_mean", f"final_{m}_std", higher, 3),
        _Criterion(f"best {name}", f"best_{m}_mean", f"best_{m}_std", higher, 3),
        _Criterion(f"AUC of the {name} curve", "auc_mean", "auc_std", higher, 3),
        _Criterion("share of seeds reaching the target", "reached_share", None, True, 2),
        _Criterion("epochs to target", "epochs_to_target_mean", "epochs_to_target_std", False, 1),
        _Criterion("oscillation", "oscillation_mean", "oscillation_std", False, 3),
    )


_CRITERIA = criteria()


def verdict(table: pd.DataFrame, candidate: str = "qlearning", metric: str = "dice", mode: str = "max") -> list[str]:
    """Plain-language comparison of ``candidate`` with the best baseline on each criterion.

    The first criterion is the held-out test Dice of the final model (the split nothing watched during training);
    the others are read off the validation curves. For each criterion the best baseline is the other method with
    the best mean (higher is better for final and best Dice, AUC and share of seeds reaching the target; lower for
    epochs to target and oscillation). A line
    says "beats", "does not beat" or "ties" (equal at the displayed precision), names the baseline and both
    numbers, and adds that the difference is within the seed spread when |difference of means| is smaller than
    the larger of the two stds. Reaching the target is compared as a share of seeds so unequal seed counts stay
    fair; epochs to target is averaged only over seeds that reached it, which each line states.

    Args:
        table: Output of :func:`compare_runs`.
        candidate: Method to judge.
        metric, mode: the metric the table was built for (its name replaces "Dice"; ``mode='min'``: lower is
            better on its own criteria).

    Returns:
        Lines of text; a single line when the candidate or every baseline is absent.
    """
    _check_mode(mode)
    crit = criteria(metric, mode)
    name = label_of(metric)
    methods = [str(m) for m in table.index]
    if candidate not in methods:
        return [f"No verdict: candidate '{candidate}' is not in the table (methods: {', '.join(methods) or 'none'})."]
    baselines = [m for m in methods if m != candidate]
    if not baselines:
        return [f"No verdict: '{candidate}' is the only method in the table; there is no baseline to compare with."]
    t = table.copy()
    t["reached_share"] = t["reached_target"] / t["seeds"].where(t["seeds"] > 0)
    cand = t.loc[candidate]

    def show(method: str, c: _Criterion) -> str:
        if c.mean == "reached_share":
            return f"{int(t.loc[method, 'reached_target'])}/{int(t.loc[method, 'seeds'])}"
        return _fmt(float(t.loc[method, c.mean]), c.decimals)

    lines: list[str] = []
    wins = within = losses = judged = 0
    for c in crit:
        base = t.loc[baselines, c.mean].astype(float).dropna()
        cv = float(cand[c.mean])
        if base.empty and not np.isfinite(cv):
            lines.append(f"{c.label}: no method has a value, nothing to compare.")
            continue
        judged += 1
        if base.empty:
            wins += 1
            extra = (f" (reached the target in {show(candidate, crit[4])} seeds; no baseline reached it)"
                     if c.mean == "epochs_to_target_mean" else "; no baseline has a value")
            lines.append(f"{c.label}: {candidate} beats every baseline — {candidate} has {show(candidate, c)}{extra}.")
            continue
        best = str(base.idxmax() if c.higher_better else base.idxmin())
        bv = float(base[best])
        note = ""
        if c.mean == "epochs_to_target_mean":
            note = (f" (mean over the seeds that reached it: {candidate} {show(candidate, crit[4])}, "
                    f"{best} {show(best, crit[4])})")
        if not np.isfinite(cv):
            losses += 1
            lines.append(f"{c.label}: {candidate} does not beat {best} — {candidate} has no value (never reached "
                         f"the target or no finite {name}), {best} has {show(best, c)}{note}.")
            continue
        cs, bs = show(candidate, c), show(best, c)
        if cs == bs or cv == bv:
            word = "ties"
        else:
            word = "beats" if (cv > bv if c.higher_better else cv < bv) else "does not beat"
        spread = ""
        if c.std is not None and word != "ties":
            largest = max((float(x) for x in (cand[c.std], t.loc[best, c.std]) if np.isfinite(x)), default=0.0)
            diff = abs(cv - bv)
            if diff < largest:
                spread = (f"; the difference ({diff:.{c.decimals}f}) is within the seed spread "
                          f"(std up to {largest:.{c.decimals}f}), so it is not a clear difference")
        wins += word == "beats"
        within += bool(spread)
        losses += word == "does not beat"
        lines.append(f"{c.label}: {candidate} {word} {best} ({cs} vs {bs}){note}{spread}.")
    lines.append(f"Overall: {candidate} beats the best baseline on {wins} of {judged} criteria, does not beat it on "
                 f"{losses}, ties on {judged - wins - losses}; {within} of these differences are within the seed "
                 "spread.")
    n_seeds = int(cand["seeds"])
    if n_seeds < 3:
        lines.append(f"Caution: {candidate} has only {n_seeds} seed(s); spread estimates are unreliable.")
    return lines


def strongest_verdicts(trials: pd.DataFrame, candidates: list[str], metric: str = "dice",
                       mode: str = "max") -> list[str]:
    """Each candidate against the strongest other method of the experiment, paired by seed.

    The score is the held-out ``test_<metric>`` of the final model (``final_<metric>``, the last validation value,
    when no trial has a test score: the line says which). The strongest other method is the one with the best
    mean score; a candidate's own variants (``qlearning`` and ``qlearning_warm``) are not each other's baseline.
    The verdict is :func:`medtune.dashboards.stats.against_strongest`: "BEATS" only when the 95% Student-t interval
    of the mean paired difference over seeds excludes zero.

    Args:
        trials: Output of :func:`trial_metrics`.
        candidates: the methods to judge, in order; absent ones are skipped.

    Returns:
        One line per candidate present.
    """
    _check_mode(mode)
    name = label_of(metric)
    column = f"test_{metric}"
    what = f"test {name}"
    if column not in trials or not trials[column].notna().any():
        column, what = f"final_{metric}", f"final validation {name}"
    methods = list(pd.unique(trials["method"].astype(str)))
    scores = {m: trials[trials["method"].astype(str) == m].set_index("seed")[column].astype(float) for m in methods}
    lines = []
    for cand in (c for c in candidates if c in methods):
        variants = [m for m in methods if m != cand and (m.startswith(cand + "_") or cand.startswith(m + "_"))]
        lines.append(f"{cand} " + against_strongest(cand, scores, what, exclude=variants, higher_better=mode == "max"))
    return lines


def rank(table: pd.DataFrame) -> list[str]:
    """Methods sorted by mean final Dice, best first (stable for ties; NaN last).

    Args:
        table: Output of :func:`compare_runs`.

    Returns:
        Method names.
    """
    order = table["final_dice_mean"].astype(float).sort_values(ascending=False, kind="stable", na_position="last")
    return [str(m) for m in order.index]
