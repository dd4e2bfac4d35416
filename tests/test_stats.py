"""The paired verdicts every study's report prints: against one method, and against the strongest other one."""

import math

import pandas as pd

from medtune.dashboards.comparison import strongest_verdicts
from medtune.dashboards.stats import against_strongest, paired_verdict, strongest


def _s(*values):
    return pd.Series(values, index=range(len(values)), dtype=float)


def test_the_strongest_is_the_best_mean_of_the_others_and_skips_excluded_and_empty_methods():
    scores = {"rl": _s(0.9, 0.9, 0.9), "weak": _s(0.1, 0.2, 0.1), "good": _s(0.8, 0.7, 0.8),
              "ref": _s(1.0, 1.0, 1.0), "none": _s(math.nan, math.nan, math.nan)}
    assert strongest(scores, "rl") == "ref"
    assert strongest(scores, "rl", exclude=("ref",)) == "good"
    assert strongest(scores, "rl", exclude=("ref",), higher_better=False) == "weak"
    assert strongest({"rl": _s(1.0)}, "rl") is None


def test_a_verdict_names_the_strongest_baseline_not_a_weak_one():
    scores = {"rl": _s(0.60, 0.62, 0.61), "weak": _s(0.30, 0.31, 0.29), "strong": _s(0.70, 0.72, 0.71)}
    line = against_strongest("rl", scores, "test Dice")
    assert "strongest other method on test Dice, strong" in line
    assert "rl LOSES TO strong" in line and "weak" not in line
    assert "higher on 0 of 3 seeds" in line


def test_lower_is_better_flips_the_winner_but_prints_the_raw_difference():
    loss_rl, loss_base = _s(0.10, 0.11, 0.12), _s(0.30, 0.32, 0.31)
    line = paired_verdict("rl", "base", loss_rl, loss_base, higher_better=False)
    assert line.startswith("rl BEATS base: mean paired difference -0.200")
    assert "lower on 3 of 3 seeds" in line
    assert "rl LOSES TO base" in paired_verdict("rl", "base", loss_base, loss_rl, higher_better=False)


def test_the_lr_verdict_reads_test_dice_and_keeps_a_method_s_own_variant_out_of_its_baselines():
    rows = []
    for seed in range(3):
        for method, test, final in (("qlearning", 0.60, 0.9), ("qlearning_warm", 0.95, 0.9),
                                    ("cosine", 0.70 + 0.01 * seed, 0.1), ("fixed", 0.5, 0.99)):
            rows.append({"method": method, "seed": seed, "test_dice": test + 0.001 * seed, "final_dice": final})
    lines = strongest_verdicts(pd.DataFrame(rows), ["qlearning", "effort"])
    assert len(lines) == 1  # effort is absent
    assert lines[0].startswith("qlearning against the strongest other method on test Dice, cosine")
    assert "LOSES TO cosine" in lines[0]
    no_test = pd.DataFrame(rows).assign(test_dice=math.nan)
    assert "on final validation Dice, fixed" in strongest_verdicts(no_test, ["qlearning"])[0]


def test_the_order_note_names_only_the_methods_with_shared_state():
    from medtune.dashboards.comparison import order_note

    assert order_note(["fixed", "cosine"]) == []
    note = order_note(["fixed", "qlearning", "pbt"])
    assert note[0].startswith("Order-dependent methods")
    assert [line.split(":")[0].strip() for line in note[1:]] == ["qlearning", "pbt"]
