"""One verdict across tasks: a suite's LR comparison aggregated with ranks, normalised scores and performance profiles.

A *suite* runs the same LR methods and seeds on several tasks (one ordinary LR session per task); this module
judges the methods across the tasks. Its core is pure pandas/numpy/scipy: it reads one long table

    ``task, method, seed, score, status``

with one row per trial: ``score`` is the trial's held-out test metric of the final model (``test_dice`` for the
LR study, ``test_<metric>`` for a user's own training), ``status`` is ``"ok"`` or the reason the trial cannot be
scored (``"failed"``: the trial errored or never ended; ``"inactive"``: a learned method that never changed the learning
rate on that task, the ``inactive`` status of :func:`medtune.dashboards.comparison.compare_runs`). Each task's direction
comes from ``modes`` (``{task: "max" | "min"}``, default ``max``).

Per task, each method's score is its mean over seeds. A method is **marked** on a task, and excluded from that
task's scoring (neither a loss nor a win), when any of its trials there is not ``ok`` or has no finite score: a
mean over the seeds that happened to succeed is not comparable with the others' means over every seed. The mark
names the reason (``failed``, ``inactive``, ``no score``). A diverged trial is measured, not marked: the reports
score it as Dice 0 (it is the method's outcome).

Among the scored methods of a task:

- **rank**: 1 = best mean, ties share the average rank;
- **normalised score** ``s = (x - worst) / (best - worst)`` on the oriented mean ``x`` (negated for ``min``
  tasks): 0 = the worst scored method of the task, 1 = the best; when every scored method has the same mean they
  all get 1. The scale is relative to the methods compared: adding a very bad method raises everyone else's ``s``.
- **performance profile** ``rho_m(tau)`` = share of the tasks on which ``m`` was scored where it is within ``tau``
  of the best *on the normalised scale*, i.e. ``s >= 1 - tau``, for ``tau`` in [0, 1]. ``rho_m(0)`` is the share
  of tasks it wins outright; ``rho_m(1) = 1``. The area under the profile over ``tau`` in [0, 1] equals the
  method's mean normalised score (``∫ 1[s >= 1 - tau] dtau = s``), the single number the table ranks by. The
  normalised scale (not AlgoPerf's time ratio) is used because the tasks' metrics differ in units and direction
  (Dice, accuracy, a loss), and a ratio of scores is meaningless for a metric that can be 0 or negative. The
  share's denominator is the number of tasks where the method was scored; the marked ones are counted beside it.

Against the **strongest baseline** of the suite (the method outside :data:`LEARNED` with the best mean
normalised score over the tasks it was scored on), each learned method gets:

- a **paired Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``, two-sided, zero differences dropped) over
  every (task, seed) pair where both were scored, of the difference of the seeds' scores in that task's
  normalised units (the difference divided by the task's range of method means, so tasks with different metrics
  weigh alike; a task whose scored methods all tie at the mean has no range and gives no pair). "BEATS" /
  "LOSES TO" only when p < 0.05; with fewer than 6 non-zero pairs no two-sided p can go below 0.05 and the line
  says so. Pairs from one task share its data, so they are not independent: read the test as a summary, the
  win/tie/lose counts beside it as the per-task evidence.
- **win / tie / lose task counts**: on each task where both were scored, its mean against the baseline's; a tie
  when the two means are equal at 3 decimals or (two seeds or more) their difference is within the larger of
  their seed standard deviations. Tasks where either is marked are counted as "not compared".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtune.dashboards import html_report
from medtune.dashboards.comparison import LEARNED
from medtune.dashboards.plots import _colours, _no_data, _save, plt
from medtune.dashboards.views import Block, Image, Links, Table, Text, View, png

__all__ = [
    "ALPHA", "Aggregate", "COLUMNS", "MIN_PAIRS", "OK", "SuiteReport", "SuiteTask", "TAUS", "TEXT_TAUS",
    "aggregate", "method_summary", "paired_differences", "plot_profile", "plot_ranks", "profile",
    "strongest_baseline", "task_table", "wilcoxon_test", "win_tie_lose",
]

COLUMNS = ("task", "method", "seed", "score", "status")
OK = "ok"
#: The profile's tau grid for the plot and the CSV, and the points the text shows.
TAUS = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 21), 2))
TEXT_TAUS = (0.0, 0.05, 0.1, 0.25, 0.5)
ALPHA = 0.05
#: The fewest non-zero pairs with which a two-sided signed-rank p can be below 0.05 (2 / 2**6 = 0.031).
MIN_PAIRS = 6


def _check(long: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in long.columns]
    if missing:
        raise ValueError(f"the suite table is missing column(s) {missing}; it has {list(long.columns)}. "
                         f"Build it with one row per trial and columns {', '.join(COLUMNS)}.")


def task_table(long: pd.DataFrame, modes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per (task, method): ``seeds``, ``mean``, ``std`` (sample, 0 for one seed), ``mark`` ("" when scored),
    ``rank`` and ``normalised`` (NaN when marked); tasks and methods in order of first appearance.

    Raises:
        ValueError: a missing column, or a mode other than ``max`` / ``min``.
    """
    _check(long)
    modes = dict(modes or {})
    rows = []
    for task in pd.unique(long["task"]):
        mode = modes.get(task, "max")
        if mode not in ("max", "min"):
            raise ValueError(f"modes[{task!r}]={mode!r} must be 'max' or 'min'")
        g = long[long["task"] == task]
        for method in pd.unique(g["method"]):
            t = g[g["method"] == method]
            scores = t["score"].to_numpy(dtype=float)
            statuses = [str(s) for s in t["status"]]
            mark = ""
            if "failed" in statuses:
                mark = "failed"
            elif any(s != OK for s in statuses):
                mark = next(s for s in statuses if s != OK)
            elif not np.isfinite(scores).all() or not len(scores):
                mark = "no score"
            finite = scores[np.isfinite(scores)]
            rows.append({
                "task": task, "method": method, "seeds": len(t),
                "mean": float(finite.mean()) if not mark else math.nan,
                "std": (float(finite.std(ddof=1)) if finite.size > 1 else 0.0) if not mark else math.nan,
                "mark": mark, "sign": 1.0 if mode == "max" else -1.0,
            })
    table = pd.DataFrame(rows, columns=["task", "method", "seeds", "mean", "std", "mark", "sign"])
    table["rank"] = math.nan
    table["normalised"] = math.nan
    for _, g in table.groupby("task", sort=False):
        scored = g[g["mark"] == ""]
        if scored.empty:
            continue
        oriented = scored["mean"] * scored["sign"]
        table.loc[scored.index, "rank"] = oriented.rank(ascending=False, method="average")
        lo, hi = float(oriented.min()), float(oriented.max())
        table.loc[scored.index, "normalised"] = 1.0 if hi == lo else (oriented - lo) / (hi - lo)
    return table


def profile(table: pd.DataFrame, taus: Sequence[float] = TAUS) -> pd.DataFrame:
    """``rho_m(tau)``: rows are methods (order of first appearance), columns the ``taus``; NaN for a method scored
    on no task. See the module docstring for the definition."""
    out = {}
    for method in pd.unique(table["method"]):
        s = table.loc[(table["method"] == method) & (table["mark"] == ""), "normalised"].to_numpy(dtype=float)
        # a hair of slack so that a score of exactly 1 - tau (0.9 for tau 0.1) counts despite float rounding
        out[method] = [float(np.mean(s >= 1.0 - tau - 1e-12)) if s.size else math.nan for tau in taus]
    return pd.DataFrame.from_dict(out, orient="index", columns=list(taus))


def method_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: ``tasks_scored``, ``marked`` (``"task: reason"`` list), ``mean_rank``, ``mean_normalised``
    (= the area under its profile), ``wins`` (tasks where it has the best mean); best mean normalised first."""
    rows = []
    for method in pd.unique(table["method"]):
        g = table[table["method"] == method]
        scored = g[g["mark"] == ""]
        rows.append({
            "method": method, "tasks_scored": len(scored),
            "marked": [f"{t}: {m}" for t, m in zip(g["task"], g["mark"]) if m],
            "mean_rank": float(scored["rank"].mean()) if len(scored) else math.nan,
            "mean_normalised": float(scored["normalised"].mean()) if len(scored) else math.nan,
            "wins": int((scored["normalised"] >= 1.0).sum()),
        })
    out = pd.DataFrame(rows).set_index("method")
    return out.sort_values("mean_normalised", ascending=False, kind="stable", na_position="last")


def strongest_baseline(table: pd.DataFrame, learned: Iterable[str] = LEARNED) -> str | None:
    """The method outside ``learned`` with the best mean normalised score, among those scored on the most tasks
    (a baseline that failed or never acted on the hard tasks cannot become the strongest from the easy ones; ties:
    the first in the table); None when there is none."""
    summary = method_summary(table)
    base = summary[~summary.index.isin(list(learned))].dropna(subset=["mean_normalised"])
    if base.empty:
        return None
    base = base[base["tasks_scored"] == base["tasks_scored"].max()]
    return str(base["mean_normalised"].idxmax())


def paired_differences(long: pd.DataFrame, table: pd.DataFrame, method: str, baseline: str) -> pd.DataFrame:
    """The (task, seed) pairs of the signed-rank test: columns ``task``, ``seed``, ``diff`` (``method`` minus
    ``baseline``, oriented so positive is better, in the task's normalised units)."""
    rows = []
    for task, g in table.groupby("task", sort=False):
        scored = g[g["mark"] == ""].set_index("method")
        if method not in scored.index or baseline not in scored.index:
            continue
        oriented = scored["mean"] * scored["sign"]
        span = float(oriented.max() - oriented.min())
        if span <= 0:
            continue
        sign = float(scored.loc[method, "sign"])
        t = long[long["task"] == task]
        a = t[t["method"] == method].groupby("seed")["score"].mean()
        b = t[t["method"] == baseline].groupby("seed")["score"].mean()
        for seed in sorted(set(a.index) & set(b.index)):
            # rounded: float noise must not break the ties the signed ranks share ((.9 - .7) / .4 != .5 exactly)
            d = round(sign * (float(a[seed]) - float(b[seed])) / span, 12)
            if math.isfinite(d):
                rows.append({"task": task, "seed": seed, "diff": d})
    return pd.DataFrame(rows, columns=["task", "seed", "diff"])


def wilcoxon_test(diffs: pd.DataFrame) -> dict[str, Any]:
    """The signed-rank test of :func:`paired_differences`: ``pairs`` (all), ``nonzero``, ``statistic``, ``p``
    (NaN without a non-zero pair), ``median`` difference and the ``verdict`` word."""
    d = diffs["diff"].to_numpy(dtype=float)
    nonzero = int(np.count_nonzero(d))
    out: dict[str, Any] = {"pairs": int(d.size), "nonzero": nonzero, "statistic": math.nan, "p": math.nan,
                           "median": float(np.median(d)) if d.size else math.nan}
    if nonzero == 0:
        out["verdict"] = "no test (no non-zero paired difference)"
        return out
    from scipy.stats import wilcoxon

    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
    if out["p"] < ALPHA:
        positive = float(np.sum(np.sign(d) * (np.abs(d) > 0)))
        out["verdict"] = "BEATS" if (out["median"] > 0 or (out["median"] == 0 and positive > 0)) else "LOSES TO"
    elif nonzero < MIN_PAIRS:
        out["verdict"] = f"no verdict possible (only {nonzero} non-zero pairs; {MIN_PAIRS} are needed for p < {ALPHA})"
    else:
        out["verdict"] = "no clear difference"
    return out


def win_tie_lose(table: pd.DataFrame, method: str, baseline: str) -> dict[str, list[str]]:
    """Tasks where ``method``'s mean wins, ties or loses against ``baseline``'s, and those ``not compared``
    (either marked, or absent); see the module docstring for the tie rule."""
    out: dict[str, list[str]] = {"win": [], "tie": [], "lose": [], "not compared": []}
    for task, g in table.groupby("task", sort=False):
        g = g.set_index("method")
        if method not in g.index or baseline not in g.index or g.loc[method, "mark"] or g.loc[baseline, "mark"]:
            out["not compared"].append(str(task))
            continue
        a, b = g.loc[method], g.loc[baseline]
        diff = float(a["sign"]) * (float(a["mean"]) - float(b["mean"]))
        spread = max(float(a["std"]), float(b["std"])) if min(a["seeds"], b["seeds"]) >= 2 else 0.0
        if round(abs(diff), 3) == 0 or abs(diff) <= spread:
            out["tie"].append(str(task))
        else:
            out["win" if diff > 0 else "lose"].append(str(task))
    return out


@dataclass
class Aggregate:
    """Everything the suite's cross-task verdict says, computed once from the long table."""

    long: pd.DataFrame
    modes: dict[str, str]
    table: pd.DataFrame
    profile: pd.DataFrame
    summary: pd.DataFrame
    baseline: str | None
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def ranks(self) -> pd.DataFrame:
        """Methods x tasks: the rank, or the mark word where the method is marked (display strings)."""
        tasks = list(pd.unique(self.table["task"]))
        methods = list(self.summary.index)
        cells = {m: {t: "" for t in tasks} for m in methods}
        for r in self.table.itertuples(index=False):
            cells[r.method][r.task] = r.mark.upper() if r.mark else f"{r.rank:g}"
        return pd.DataFrame.from_dict(cells, orient="index", columns=tasks)

    def lines(self) -> list[str]:
        """The cross-task section of the suite's text report."""
        tasks = list(pd.unique(self.table["task"]))
        out = [f"Across {len(tasks)} tasks ({', '.join(tasks)}): rank per task (1 = best; a mark instead of a rank: "
               "the method is not scored there), mean normalised score (0 = worst, 1 = best method of each task; "
               "= area under the profile), performance profile rho(tau) = share of its scored tasks within tau of "
               "the best on the normalised scale"]
        ranks = self.ranks()
        head = ["method", *tasks, "mean rank", "mean score", *(f"rho({t:g})" for t in TEXT_TAUS), "scored"]
        rows = [head]
        for m, r in self.summary.iterrows():
            prof = self.profile.loc[m]
            rows.append([str(m), *(ranks.loc[m, t] for t in tasks), _f(r["mean_rank"], 2), _f(r["mean_normalised"], 3),
                         *(_f(prof[t], 2) for t in TEXT_TAUS), f"{int(r['tasks_scored'])}/{len(tasks)}"])
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                for row in rows]
        marked = [f"  {m}: {', '.join(r['marked'])}" for m, r in self.summary.iterrows() if r["marked"]]
        if marked:
            out += ["Marked (not scored on these tasks: neither a loss nor a win):", *marked]
        out.append("")
        if self.baseline is None:
            out.append("No baseline (a method outside the learned ones) was scored on any task: no paired test.")
            return out
        out.append(f"Strongest baseline across the suite: {self.baseline} (best mean normalised score among the "
                   "non-learned methods). Each learned method against it: Wilcoxon signed-rank over task x seed "
                   "pairs (differences in each task's normalised units), and the tasks it wins, ties and loses:")
        if not self.tests:
            out.append("  (no learned method in the suite)")
        for m, t in self.tests.items():
            o = self.outcomes[m]
            stat = (f"W = {t['statistic']:g}, p = {t['p']:.3g}, " if math.isfinite(t["p"]) else "")
            word = f"{m} {t['verdict']} {self.baseline}" if t["verdict"] in ("BEATS", "LOSES TO") else \
                f"{m} against {self.baseline}: {t['verdict']}"
            out.append(f"  {word}; {stat}median difference {_f(t['median'], 3, '+')} over "
                       f"{t['pairs']} pairs ({t['nonzero']} non-zero); tasks won {len(o['win'])}, tied "
                       f"{len(o['tie'])}, lost {len(o['lose'])}"
                       + (f", not compared {len(o['not compared'])} ({', '.join(o['not compared'])})"
                          if o["not compared"] else ""))
        return out


def _f(value: float, decimals: int, sign: str = "") -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:{sign}.{decimals}f}"


def aggregate(long: pd.DataFrame, modes: Mapping[str, str] | None = None,
              learned: Iterable[str] = LEARNED) -> Aggregate:
    """The cross-task verdict of the long table (see the module docstring)."""
    learned = tuple(learned)
    table = task_table(long, modes)
    summary = method_summary(table)
    base = strongest_baseline(table, learned)
    agg = Aggregate(long, dict(modes or {}), table, profile(table), summary, base)
    if base is not None:
        for m in (m for m in summary.index if m in learned):
            agg.tests[m] = wilcoxon_test(paired_differences(long, table, m, base))
            agg.outcomes[m] = win_tie_lose(table, m, base)
    return agg


# ---------------------------------------------------------------------------------------------------------------
# Pictures


def plot_profile(prof: pd.DataFrame, path: str | Path) -> Path:
    """The performance profiles as a step plot (one line per method), PNG."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = [str(m) for m in prof.index]
    colours = _colours(methods)
    drawn = False
    for m in methods:
        y = prof.loc[m].to_numpy(dtype=float)
        if np.isfinite(y).any():
            ax.step([float(t) for t in prof.columns], y, where="post", label=m, color=colours[m], linewidth=1.8)
            drawn = True
    if not drawn:
        _no_data(ax)
    ax.set_xlabel("tau (distance from the best, normalised score)")
    ax.set_ylabel("share of tasks within tau of the best")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Performance profiles")
    if drawn:
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ranks(agg: Aggregate, path: str | Path) -> Path:
    """Methods x tasks heat map of the per-task ranks (marked cells grey, with their mark), PNG."""
    ranks = agg.ranks()
    methods, tasks = list(ranks.index), list(ranks.columns)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(tasks) + 2.5), max(2.5, 0.45 * len(methods) + 1.5)))
    if not methods or not tasks:
        _no_data(ax)
        return _save(fig, path)
    values = np.full((len(methods), len(tasks)), np.nan)
    for i, m in enumerate(methods):
        for j, t in enumerate(tasks):
            try:
                values[i, j] = float(ranks.loc[m, t])
            except ValueError:
                pass
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#d9d9d9")
    top = max(2, len(methods))
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", vmin=1, vmax=top)
    for i, m in enumerate(methods):
        for j, t in enumerate(tasks):
            v = values[i, j]
            dark = not np.isnan(v) and v > (1 + top) / 2  # the dark end of viridis_r: white text
            ax.text(j, i, str(ranks.loc[m, t]).lower() if np.isnan(v) else f"{v:g}",
                    ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    ax.set_title("Rank per task (1 = best; grey: marked, not scored)")
    fig.colorbar(im, ax=ax, label="rank")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# The report object (the interface every study's report has: text, write, view, summary_metrics)


@dataclass
class SuiteTask:
    """One task of a suite as the report shows it: its MLflow experiment and session, how its session ended
    (``exit``: 0 finished, 1 failed trials or a failure, 2 bad input, 130 interrupted; ``message`` says why)
    and its own report's text ("" when it has none)."""

    name: str
    experiment: str
    session: str
    exit: int
    message: str = ""
    text: str = ""


@dataclass
class SuiteReport:
    """A suite session's report: each task's table and verdicts, then the cross-task aggregate."""

    suite: str
    experiment_id: str
    session: str
    tasks: list[SuiteTask]
    agg: Aggregate

    @property
    def experiment(self) -> str:
        return self.suite

    def text(self) -> str:
        lines = [f"Suite {self.suite!r}, session {self.session}: {len(self.tasks)} tasks"]
        for t in self.tasks:
            state = {0: "finished", 130: "interrupted", 2: "bad input"}.get(t.exit, "failed")
            lines += ["", f"=== task {t.name}: experiment {t.experiment!r}, session {t.session or '—'} ({state}"
                          + (f": {t.message}" if t.message else "") + ")"]
            if t.text:
                lines.append(t.text)
        lines += ["", "=== across the tasks", *self.agg.lines()]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, frame, index in (("suite-trials.csv", self.agg.long, False),
                                   ("suite-tasks.csv", self.agg.table.drop(columns=["sign"]), False),
                                   ("suite-profile.csv", self.agg.profile, True),
                                   ("suite-methods.csv", self.agg.summary, True)):
            frame.to_csv(folder / name, index=index)
            paths.append(folder / name)
        paths.append(plot_profile(self.agg.profile, folder / "suite-profile.png"))
        paths.append(plot_ranks(self.agg, folder / "suite-ranks.png"))
        (folder / "report.txt").write_text(self.text() + "\n")
        paths.append(folder / "report.txt")
        paths.append(html_report.write(self.view(), folder / "report.html"))
        return paths

    def summary_metrics(self) -> dict[str, float]:
        out = {}
        for m, r in self.agg.summary.iterrows():
            for col in ("mean_normalised", "mean_rank"):
                if np.isfinite(r[col]):
                    out[f"{col}.{m}"] = float(r[col])
        return out

    def view(self) -> View:
        """The suite's page: the profile plot, the rank heat map, the cross-task text, links to each task's view."""
        ranks = self.agg.ranks().reset_index().rename(columns={"index": "method"})
        blocks: list[Block] = [
            Image("suite-profile", "Performance profiles across the tasks",
                  png(lambda p: plot_profile(self.agg.profile, p))),
            Image("suite-ranks", "Rank per task", png(lambda p: plot_ranks(self.agg, p))),
            Table("suite-rank-table", "Rank per task", ranks,
                  "1 = best mean test score over seeds; a mark (FAILED, INACTIVE, NO SCORE) instead of a rank: not "
                  "scored on that task"),
            Text("suite-verdicts", "Across the tasks", "\n".join(self.agg.lines())),
            Links("suite-tasks", "Each task's comparison",
                  [(f"{t.name}: {t.experiment}" + ("" if t.exit == 0 else f" ({t.message or 'exit ' + str(t.exit)})"),
                    t.experiment) for t in self.tasks]),
        ]
        return View("suite", f"Suite {self.suite}: the LR methods across {len(self.tasks)} tasks", self.suite,
                    self.session, blocks=blocks)
