"""Tests for medtune.dashboards.comparison and medtune.dashboards.plots on hand-built curves (no Ray, no MLflow)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from medtune.dashboards.comparison import compare_runs, format_table, rank, trial_metrics, verdict
from medtune.dashboards.plots import plot_dice_curves, plot_lr_traces, plot_qtable


def _trial(run_id: str, method: str, seed: int, dice: list[float], diverged: bool = False,
           lr: float = 1e-3) -> pd.DataFrame:
    n = len(dice)
    return pd.DataFrame({
        "run_id": run_id, "method": method, "seed": seed, "epoch": np.arange(1, n + 1), "dice": dice,
        "val_loss": [1.0 - (d if np.isfinite(d) else 0.0) for d in dice], "train_loss": 0.5,
        "lr": [lr * 0.9**i for i in range(n)], "diverged": [int(diverged and i == n - 1) for i in range(n)],
    })


def _curves(q_dice: list[list[float]], base_dice: list[list[float]]) -> pd.DataFrame:
    """Candidate 'qlearning' and baselines 'fixed' (given) and 'cosine' (clearly worse), one trial per seed."""
    parts = [_trial(f"q{s}", "qlearning", s, d, lr=1e-3) for s, d in enumerate(q_dice)]
    parts += [_trial(f"f{s}", "fixed", s, d, lr=1e-4) for s, d in enumerate(base_dice)]
    parts += [_trial(f"c{s}", "cosine", s, [0.1, 0.2, 0.25, 0.3], lr=1e-2) for s in range(len(base_dice))]
    return pd.concat(parts, ignore_index=True)


def test_trial_metrics_match_hand_computed_values() -> None:
    m = trial_metrics(_trial("r", "fixed", 0, [0.2, 0.5, 0.7, 0.6]), target_dice=0.65).iloc[0]
    assert m["final_dice"] == pytest.approx(0.6)
    assert m["best_dice"] == pytest.approx(0.7)
    assert m["epochs_to_target"] == 3
    assert m["auc"] == pytest.approx(((0.2 + 0.5) / 2 + (0.5 + 0.7) / 2 + (0.7 + 0.6) / 2) / 3)
    assert m["oscillation"] == pytest.approx(np.std([0.3, 0.2, -0.1]))
    assert (m["epochs"], m["diverged"], m["method"], m["seed"]) == (4, 0, "fixed", 0)


def test_trial_metrics_edge_cases_single_epoch_never_reached_and_unsorted_rows() -> None:
    one = trial_metrics(_trial("r", "fixed", 0, [0.4]), target_dice=0.9).iloc[0]
    assert one["auc"] == pytest.approx(0.4) and one["oscillation"] == 0.0 and math.isnan(one["epochs_to_target"])
    shuffled = _trial("r", "fixed", 0, [0.2, 0.5, 0.7, 0.6]).iloc[[3, 1, 0, 2]]
    assert trial_metrics(shuffled, 0.65).iloc[0]["final_dice"] == pytest.approx(0.6)


def test_diverged_trial_counts_final_dice_as_zero_and_nan_as_zero_in_auc() -> None:
    m = trial_metrics(_trial("r", "qlearning", 1, [0.3, 0.5, float("nan")], diverged=True), 0.9).iloc[0]
    assert m["final_dice"] == 0.0 and m["diverged"] == 1
    assert m["best_dice"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx(((0.3 + 0.5) / 2 + (0.5 + 0.0) / 2) / 2)
    assert m["oscillation"] == 0.0  # only 2 finite values


def test_missing_column_names_it() -> None:
    with pytest.raises(ValueError, match="dice"):
        trial_metrics(pd.DataFrame({"run_id": ["a"], "method": ["m"], "seed": [0], "epoch": [1]}), 0.5)


def test_compare_aggregates_seeds_with_sample_std_and_keeps_method_order() -> None:
    q = [[0.2, 0.5, 0.7, 0.6], [0.3, 0.6, 0.8, 0.9], [0.3, 0.4, float("nan")]]
    curves = _curves(q, [[0.5, 0.6]])
    curves.loc[(curves["run_id"] == "q2") & (curves["epoch"] == 3), "diverged"] = 1
    table = compare_runs(curves, target_dice=0.65)
    assert list(table.index) == ["qlearning", "fixed", "cosine"]
    r = table.loc["qlearning"]
    assert r["seeds"] == 3 and r["diverged"] == 1
    assert r["final_dice_mean"] == pytest.approx(np.mean([0.6, 0.9, 0.0]))
    assert r["final_dice_std"] == pytest.approx(np.std([0.6, 0.9, 0.0], ddof=1))
    assert r["reached_target"] == 2
    assert r["epochs_to_target_mean"] == pytest.approx(3.0) and r["epochs_to_target_std"] == 0.0
    single = table.loc["fixed"]
    assert single["final_dice_std"] == 0.0 and single["reached_target"] == 0
    assert math.isnan(single["epochs_to_target_mean"])
    assert rank(table) == ["fixed", "qlearning", "cosine"]  # 0.6 > 0.5 > 0.3


def test_verdict_says_does_not_beat_when_candidate_is_worse() -> None:
    worse = [[0.3, 0.5, 0.6]] * 3
    better = [[0.4, 0.7, 0.85], [0.4, 0.7, 0.86], [0.4, 0.7, 0.87]]
    lines = verdict(compare_runs(_curves(worse, better), 0.8))
    final = next(line for line in lines if line.startswith("final Dice"))
    assert "does not beat fixed" in final and "0.600" in final and "0.860" in final
    assert "within the seed spread" not in final
    assert not any(" beats " in line for line in lines[:-1] if not line.startswith("oscillation"))


def test_verdict_says_beats_when_candidate_is_better_and_flags_seed_spread() -> None:
    clear = [[0.4, 0.7, 0.85], [0.4, 0.7, 0.86], [0.4, 0.7, 0.87]]
    lines = verdict(compare_runs(_curves(clear, [[0.3, 0.5, 0.6]] * 3), 0.8))
    final = next(line for line in lines if line.startswith("final Dice"))
    assert "qlearning beats fixed" in final and "within the seed spread" not in final

    noisy = [[0.4, 0.5, 0.9], [0.4, 0.5, 0.5], [0.4, 0.5, 0.7]]  # mean 0.7, std 0.2
    lines = verdict(compare_runs(_curves(noisy, [[0.3, 0.5, 0.65]] * 3), 0.8))
    final = next(line for line in lines if line.startswith("final Dice"))
    assert "qlearning beats fixed" in final and "within the seed spread" in final
    assert "differences are within the seed spread" in lines[-1]


def test_verdict_ties_and_missing_candidate() -> None:
    same = [[0.3, 0.5, 0.6]] * 2
    lines = verdict(compare_runs(_curves(same, same), 0.8))
    assert "ties fixed" in next(line for line in lines if line.startswith("final Dice"))
    assert len(verdict(compare_runs(_curves(same, same), 0.8), candidate="ddpg")) == 1
    assert "not in the table" in verdict(compare_runs(_curves(same, same), 0.8), candidate="ddpg")[0]


def test_format_table_names_every_method_and_the_target() -> None:
    table = compare_runs(_curves([[0.2, 0.5, 0.7, 0.6]] * 2, [[0.5, 0.6]]), 0.65)
    text = format_table(table, 0.65)
    for method in table.index:
        assert method in text
    assert "0.65" in text and "± " in text and "(2/2)" in text and "— (0/1)" in text
    assert "3.0 ± 0.0 (2/2)" in text


def _assert_real_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.ndim == 3 and np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 1


def test_plots_write_non_blank_pngs(tmp_path: Path) -> None:
    curves = _curves([[0.2, 0.5, 0.7, 0.6], [0.3, 0.6, 0.8, 0.9]], [[0.5, 0.6, 0.62], [0.4, 0.55, 0.6]])
    _assert_real_png(plot_dice_curves(curves, tmp_path / "a" / "dice.png"))
    _assert_real_png(plot_lr_traces(curves, tmp_path / "b" / "lr.png"))
    states = ["improving", "worsening", "plateau", "oscillating", "mixed", "insufficient_data"]
    actions = ["maintain", "decrease", "increase"]
    rng = np.random.default_rng(0)
    qtable = {"q": {s: {a: float(rng.uniform(0, 0.1)) for a in actions} for s in states},
              "visits": {s: {a: int(rng.integers(0, 9)) for a in actions} for s in states}}
    _assert_real_png(plot_qtable(qtable, tmp_path / "c" / "q.png"))
    import matplotlib.pyplot as plt
    assert plt.get_fignums() == []


def test_held_out_test_dice_is_taken_from_the_last_epoch_and_judged_first():
    import pandas as pd

    from medtune.dashboards.comparison import compare_runs, trial_metrics, verdict

    rows = []
    for method, seed, tests in (("qlearning", 0, 0.70), ("qlearning", 1, 0.60), ("fixed", 0, 0.50), ("fixed", 1, 0.40)):
        for epoch, dice in enumerate((0.3, 0.5), start=1):
            rows.append({"run_id": f"{method}{seed}", "method": method, "seed": seed, "epoch": epoch, "dice": dice,
                         "diverged": 0, "test_dice": tests if epoch == 2 else float("nan")})
    curves = pd.DataFrame(rows)
    assert trial_metrics(curves, 0.9)["test_dice"].tolist() == [0.70, 0.60, 0.50, 0.40]
    table = compare_runs(curves, 0.9)
    # qlearning: mean (0.7+0.6)/2 = 0.65, sample std = 0.0707; fixed: 0.45
    assert table.loc["qlearning", "test_dice_mean"] == pytest.approx(0.65)
    assert table.loc["qlearning", "test_dice_std"] == pytest.approx(0.0707107, rel=1e-5)
    first = verdict(table)[0]
    assert first.startswith("held-out test Dice: qlearning beats fixed (0.650 vs 0.450)")


def test_a_diverged_trial_is_scored_over_the_whole_budget_for_auc():
    import pandas as pd

    from medtune.dashboards.comparison import trial_metrics

    rows = [{"run_id": "ok", "method": "fixed", "seed": 0, "epoch": e, "dice": 0.5, "diverged": 0}
            for e in (1, 2, 3, 4, 5)]
    rows += [{"run_id": "bad", "method": "qlearning", "seed": 0, "epoch": 1, "dice": 0.5, "diverged": 0},
             {"run_id": "bad", "method": "qlearning", "seed": 0, "epoch": 2, "dice": 0.5, "diverged": 0},
             {"run_id": "bad", "method": "qlearning", "seed": 0, "epoch": 3, "dice": float("nan"), "diverged": 1}]
    t = trial_metrics(pd.DataFrame(rows), 0.9).set_index("run_id")
    # padded with 0 to epoch 5: trapezoid of [0.5, 0.5, 0, 0, 0] over 4 intervals = (0.5 + 0.25) / 4
    assert t.loc["bad", "auc"] == pytest.approx(0.1875)
    assert t.loc["ok", "auc"] == pytest.approx(0.5)
    assert t.loc["bad", "oscillation"] == 0.0  # only two finite values: no padding in the oscillation


# -- any metric, either direction (medtune.compare on a researcher's own training) ------------------------


def _error_curves() -> pd.DataFrame:
    """'error' (lower is better): qlearning ends at 0.1, fixed at 0.3; a diverged greedy trial."""
    def trial(rid, method, values, diverged=False):
        n = len(values)
        return pd.DataFrame({"run_id": rid, "method": method, "seed": 0, "epoch": np.arange(1, n + 1),
                             "error": values, "diverged": [int(diverged and i == n - 1) for i in range(n)]})

    return pd.concat([trial("q", "qlearning", [0.5, 0.3, 0.1]), trial("f", "fixed", [0.5, 0.4, 0.3]),
                      trial("g", "greedy", [0.5, math.nan], diverged=True)], ignore_index=True)


def test_a_min_mode_metric_ranks_lower_as_better_and_gives_a_diverged_trial_no_value() -> None:
    trials = trial_metrics(_error_curves(), target_dice=0.2, metric="error", mode="min").set_index("method")
    assert trials.loc["qlearning", "best_error"] == pytest.approx(0.1)
    assert trials.loc["qlearning", "epochs_to_target"] == 3  # first epoch at or below 0.2
    assert math.isnan(trials.loc["fixed", "epochs_to_target"])
    assert math.isnan(trials.loc["greedy", "final_error"]) and math.isnan(trials.loc["greedy", "auc"])
    table = compare_runs(_error_curves(), 0.2, metric="error", mode="min")
    assert "final_error_mean" in table.columns and "final_dice_mean" not in table.columns
    lines = verdict(table, "qlearning", metric="error", mode="min")
    assert lines[1].startswith("final error: qlearning beats fixed (0.100 vs 0.300)")


def test_the_table_and_verdict_name_the_metric_and_never_dice() -> None:
    table = compare_runs(_error_curves(), 0.2, metric="error", mode="min")
    text = format_table(table, 0.2, metric="error", mode="min") + "\n".join(verdict(table, "qlearning", "error", "min"))
    assert "final error" in text and "epochs to error≤0.2" in text
    assert "Dice" not in text and "dice" not in text
