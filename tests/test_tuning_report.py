"""The tuning section of a report: budget, edge and test-split warnings, the written files (no MLflow)."""

from __future__ import annotations

import pandas as pd

from medtune.dashboards.tuning_report import TunedReport


class Base:
    experiment_id, session = "1", "s"

    def text(self):
        return "TABLE"

    def write(self, folder):
        (folder / "report.txt").write_text("TABLE\n")
        return [folder / "report.txt"]

    def summary_metrics(self):
        return {"test_dice_mean.fixed": 0.5}


def outcome(method, trials=3, edges=(), test_keys=()):
    curve = [{"trial": i, "val_score": 0.1 * i, "epochs": 4, "best_so_far": 0.1 * i} for i in range(1, trials + 1)]
    return {"method": method, "chosen": {"base_lr": 0.001}, "best_val": 0.1 * trials, "metric": "dice",
            "trials": trials, "epochs": 4 * trials, "wall_s": 12.0, "curve": curve, "edges": list(edges),
            "test_keys": list(test_keys), "space": {"base_lr": [1e-6, 1e-2, True]}}


SETTINGS = {"trials": 3, "epochs": 4, "searcher": "tpe", "asha": True, "metric": "dice", "search_seed": 0,
            "final_seeds": [100]}


def test_fair_budgets_say_so_and_the_files_hold_the_curve(tmp_path):
    report = TunedReport(Base(), [outcome("fixed"), outcome("cosine")], SETTINGS, ["pbt: not searched"])
    text = report.text()
    assert text.startswith("TABLE") and "every method got the same trials" in text and "pbt: not searched" in text
    assert "0.100 0.200 0.300" in text  # the search curve of each method
    paths = report.write(tmp_path)
    assert {p.name for p in paths} >= {"report.txt", "tuning.csv", "search_curve.csv", "search_curve.png"}
    assert "Equal tuning budget" in (tmp_path / "report.txt").read_text()
    curve = pd.read_csv(tmp_path / "search_curve.csv")
    assert list(curve["method"].unique()) == ["fixed", "cosine"]
    assert all(part.is_monotonic_increasing for _, part in curve.groupby("method")["best_so_far"])
    assert report.summary_metrics()["tuning.best_val.cosine"] == outcome("cosine")["best_val"]
    assert report.session == "s"  # the wrapped report's fields


def test_unequal_trials_an_edge_and_a_test_score_in_the_search_are_warned():
    report = TunedReport(Base(), [outcome("fixed", trials=3, edges=["base_lr=1e-06 is at the low edge"]),
                                  outcome("greedy", trials=2, test_keys=["test_accuracy"])], SETTINGS)
    text = report.text()
    assert "WARNING: the methods ran different numbers of search trials: fixed 3, greedy 2" in text
    assert "WARNING: fixed: base_lr=1e-06 is at the low edge; the best setting may lie outside the space" in text
    assert "WARNING: greedy: search trials reported test_accuracy" in text
