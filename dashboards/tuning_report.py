"""The tuning section of a comparison: what each method's search chose, how it got there, and whether it was fair.

:class:`TunedReport` wraps any study's report (the final runs' comparison) and adds, from the search outcomes
of :mod:`medtune.cluster.studies.tuning` (plain dicts, one per method):

* the chosen configuration of each method and its best validation score;
* the budget each method actually got: search trials, epochs trained (ASHA stops some trials early) and wall
  time, with a warning when the methods' trials or epochs differ;
* a warning for a chosen value within 5% of a bound of its space (in its own scale: log10 for a log scale);
  the optimum may lie outside the space, so widen it;
* the search curve: the best validation score so far against the trial number (``search_curve.csv`` and
  ``search_curve.png``), and ``tuning.csv`` / ``tuning.json``.

Everything else (the table, the verdicts on the final runs, the dashboard view) is the wrapped report's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["TunedReport", "plot_search_curves"]


class TunedReport:
    """``report`` (the final runs' comparison) plus the tuning section.

    Args:
        report: any study report (``text``, ``write``, ``summary_metrics``, ``view``, ``experiment_id``,
            ``session``).
        outcomes: one dict per searched method: ``method``, ``chosen`` ({param: value}), ``best_val``, ``metric``,
            ``trials``, ``epochs``, ``wall_s``, ``curve`` (``[{trial, val_dice, epochs, best_so_far}]``),
            ``edges`` (lines), ``space`` ({param: [low, high, log]}).
        settings: the budget asked for (``trials``, ``epochs``, ``searcher``, ``asha``, ``search_seed``,
            ``final_seeds``).
        notes: extra lines (methods not searched, how qlearning was searched).
    """

    def __init__(self, report: Any, outcomes: list[dict[str, Any]], settings: dict[str, Any],
                 notes: Sequence[str] = ()) -> None:
        self.report = report
        self.outcomes = list(outcomes)
        self.settings = dict(settings)
        self.notes = list(notes)

    def __getattr__(self, name: str) -> Any:  # experiment, experiment_id, session, table, ...
        if name == "report":
            raise AttributeError(name)
        return getattr(self.report, name)

    def view(self):
        return self.report.view()

    def budget_table(self) -> pd.DataFrame:
        rows = [{"method": o["method"], "trials": o["trials"], "epochs": o["epochs"], "wall_s": round(o["wall_s"], 1),
                 f"best_val_{o.get('metric', 'score')}": o["best_val"],
                 "chosen": ", ".join(f"{k}={_fmt(v)}" for k, v in o["chosen"].items())} for o in self.outcomes]
        return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()

    def curve_table(self) -> pd.DataFrame:
        rows = [{"method": o["method"], **point} for o in self.outcomes for point in o["curve"]]
        return pd.DataFrame(rows, columns=["method", "trial", "val_score", "epochs", "best_so_far"])

    def fairness(self) -> list[str]:
        """Warnings: unequal budgets, chosen values on the edge of their space."""
        lines = []
        trials = {o["method"]: o["trials"] for o in self.outcomes}
        if len(set(trials.values())) > 1:
            lines.append("WARNING: the methods ran different numbers of search trials: "
                         + ", ".join(f"{m} {n}" for m, n in trials.items()))
        for o in self.outcomes:
            for edge in o.get("edges", []):
                lines.append(f"WARNING: {o['method']}: {edge}; the best setting may lie outside the space, "
                             f"widen tuning.spaces.{o['method']}")
        return lines

    def tuning_text(self) -> str:
        s = self.settings
        lines = [f"Equal tuning budget: {s['trials']} {s['searcher']} search trials x {s['epochs']} epochs per method "
                 f"(ASHA {'on' if s['asha'] else 'off'}, search seed {s['search_seed']}), judged on the validation "
                 f"{s.get('metric', 'dice')}; the best configuration retrained on seeds {s['final_seeds']} and "
                 "scored on the test split (the table above).", ""]
        table = self.budget_table()
        if not table.empty:
            lines += ["Chosen configuration and the budget each method got (epochs: trained, ASHA stops some "
                      "trials early):", table.to_string(float_format=lambda v: f"{v:.4f}"), ""]
        lines += [f"Search curve (best validation {s.get('metric', 'dice')} after each trial):"]
        for o in self.outcomes:
            curve = " ".join("-" if p["best_so_far"] is None else f"{p['best_so_far']:.3f}" for p in o["curve"])
            lines.append(f"  {o['method']:<14} {curve}")
        for o in self.outcomes:
            if o.get("test_keys"):
                lines.append(f"WARNING: {o['method']}: search trials reported {', '.join(o['test_keys'])}: the "
                             "trainable scored its test split during the search (skip it when config['search'])")
        fair = self.fairness()
        lines += ["", *(fair or ["Fairness: every method got the same trials; no chosen value is on the edge of its "
                                 "space."])]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines)

    def text(self) -> str:
        return self.report.text() + "\n\n" + self.tuning_text()

    def write(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        paths = self.report.write(folder)
        (folder / "report.txt").write_text(self.text() + "\n")  # the wrapped report wrote its own text there
        budget = folder / "tuning.csv"
        self.budget_table().to_csv(budget)
        curve = folder / "search_curve.csv"
        self.curve_table().to_csv(curve, index=False)
        raw = folder / "tuning.json"
        raw.write_text(json.dumps({"settings": self.settings, "outcomes": self.outcomes, "notes": self.notes},
                                  indent=1, default=str))
        paths += [budget, curve, raw, plot_search_curves(self.curve_table(), folder / "search_curve.png")]
        return paths

    def summary_metrics(self) -> dict[str, float]:
        out = dict(self.report.summary_metrics())
        for o in self.outcomes:
            out[f"tuning.best_val.{o['method']}"] = float(o["best_val"])
            out[f"tuning.epochs.{o['method']}"] = float(o["epochs"])
            out[f"tuning.wall_s.{o['method']}"] = float(o["wall_s"])
        return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_search_curves(curves: pd.DataFrame, path: str | Path) -> Path:
    """Best validation Dice so far against the trial number, one line per method; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, part in curves.groupby("method", sort=False):
        ax.plot(part["trial"], part["best_so_far"].astype(float), marker="o", label=str(method))
    ax.set_xlabel("search trial")
    ax.set_ylabel("best validation score so far")
    ax.set_title("Search curves (equal budget)")
    ax.grid(alpha=0.3)
    if len(curves):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
