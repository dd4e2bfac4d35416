"""The suite's cross-task verdict on hand-made tables: ranks, normalised scores, profiles, Wilcoxon, marks."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from medtune.dashboards.suite_report import (
    aggregate,
    paired_differences,
    profile,
    strongest_baseline,
    task_table,
    win_tie_lose,
)


def _long(rows):
    return pd.DataFrame([{"task": t, "method": m, "seed": s, "score": x, "status": st} for t, m, s, x, st in rows])


# Three tasks, two seeds. A and C: higher is better; B: lower is better (a loss).
#   A: fixed .5, cosine .7, qlearning .9, greedy .7        -> oriented range .4
#   B: fixed 1, cosine 2, qlearning 3 (min), pbt failed    -> oriented range 2
#   C: fixed .6, cosine .8, qlearning .8, greedy inactive  -> range .2
TABLE = _long(
    [(t, m, s, x, "ok") for t, m, x in (
        ("A", "fixed", .5), ("A", "cosine", .7), ("A", "qlearning", .9), ("A", "greedy", .7),
        ("B", "fixed", 1.0), ("B", "cosine", 2.0), ("B", "qlearning", 3.0),
        ("C", "fixed", .6), ("C", "cosine", .8), ("C", "qlearning", .8)) for s in (0, 1)]
    + [("B", "pbt", 0, math.nan, "failed"), ("B", "pbt", 1, 1.5, "ok")]
    + [("C", "greedy", s, .95, "inactive") for s in (0, 1)]
)
MODES = {"B": "min"}


def _cell(table, task, method, col):
    return table.set_index(["task", "method"]).loc[(task, method), col]


def test_normalised_scores_and_ranks_follow_each_tasks_direction():
    t = task_table(TABLE, MODES)
    assert [_cell(t, "A", m, "normalised") for m in ("fixed", "cosine", "qlearning", "greedy")] == \
        pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert [_cell(t, "A", m, "rank") for m in ("fixed", "cosine", "qlearning", "greedy")] == [4, 2.5, 1, 2.5]
    # B is a loss: the lowest mean is the best
    assert [_cell(t, "B", m, "normalised") for m in ("fixed", "cosine", "qlearning")] == pytest.approx([1, .5, 0])
    assert [_cell(t, "B", m, "rank") for m in ("fixed", "cosine", "qlearning")] == [1, 2, 3]
    assert [_cell(t, "C", m, "normalised") for m in ("fixed", "cosine", "qlearning")] == pytest.approx([0, 1, 1])


def test_a_failed_or_inactive_method_is_marked_not_scored():
    t = task_table(TABLE, MODES)
    # pbt failed on one seed of B (its other seed's 1.5 would have been the best): marked, no rank, no score
    assert _cell(t, "B", "pbt", "mark") == "failed"
    assert math.isnan(_cell(t, "B", "pbt", "rank")) and math.isnan(_cell(t, "B", "pbt", "normalised"))
    # greedy never acted on C (its .95 would have won C): marked, and C's scale ignores it
    assert _cell(t, "C", "greedy", "mark") == "inactive"
    assert math.isnan(_cell(t, "C", "greedy", "normalised"))
    assert _cell(t, "C", "cosine", "rank") == 1.5  # the best of C is still cosine/qlearning, not greedy
    agg = aggregate(TABLE, MODES)
    assert agg.ranks().loc["greedy", "C"] == "INACTIVE" and agg.ranks().loc["pbt", "B"] == "FAILED"
    # neither a loss nor a win against the strongest baseline: "not compared"
    assert win_tie_lose(agg.table, "greedy", "cosine") == {"win": [], "tie": ["A"], "lose": [],
                                                          "not compared": ["B", "C"]}
    assert agg.summary.loc["greedy", "tasks_scored"] == 1 and agg.summary.loc["greedy", "marked"] == ["C: inactive"]
    assert math.isnan(agg.summary.loc["pbt", "mean_normalised"])


def test_profile_is_the_share_of_scored_tasks_within_tau_and_its_area_is_the_mean_score():
    t = task_table(TABLE, MODES)
    prof = profile(t, taus=(0.0, 0.25, 0.5, 1.0))
    assert list(prof.loc["qlearning"]) == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1.0])  # 1, 0, 1
    assert list(prof.loc["cosine"]) == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])  # .5, .5, 1
    assert list(prof.loc["fixed"]) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])  # 0, 1, 0
    assert list(prof.loc["greedy"]) == pytest.approx([0.0, 0.0, 1.0, 1.0])  # scored on A only: .5
    assert prof.loc["pbt"].isna().all()
    agg = aggregate(TABLE, MODES)
    assert agg.summary.loc["cosine", "mean_normalised"] == pytest.approx(2 / 3)
    fine = profile(t, taus=[i / 1000 for i in range(1001)])  # area under the profile = mean normalised score
    for m in ("fixed", "cosine", "qlearning"):
        assert fine.loc[m].mean() == pytest.approx(agg.summary.loc[m, "mean_normalised"], abs=2e-3)


def test_strongest_baseline_wilcoxon_and_task_counts():
    agg = aggregate(TABLE, MODES)
    assert agg.baseline == "cosine"  # 2/3 against fixed's 1/3; learned methods are never the baseline
    d = paired_differences(TABLE, agg.table, "qlearning", "cosine")
    # A: (.9 - .7) / .4 = +.5 twice; B: -(3 - 2) / 2 = -.5 twice; C: 0 twice
    assert sorted(d["diff"]) == pytest.approx([-.5, -.5, 0, 0, .5, .5])
    test = agg.tests["qlearning"]
    assert (test["pairs"], test["nonzero"], test["statistic"]) == (6, 4, 5.0)  # W+ = W- = 2.5 + 2.5
    assert test["p"] == pytest.approx(1.0)
    assert test["verdict"].startswith("no verdict possible")
    assert agg.outcomes["qlearning"] == {"win": ["A"], "tie": ["C"], "lose": ["B"], "not compared": []}
    assert "qlearning against cosine: no verdict possible" in "\n".join(agg.lines())


def test_wilcoxon_beats_with_six_positive_pairs():
    # fixed .5 everywhere; qlearning's seeds above it by distinct amounts -> 6 positive pairs, exact p = 2/64
    rows = [(t, "fixed", s, .5, "ok") for t in "XYZ" for s in (0, 1)]
    rows += [("X", "qlearning", 0, .6, "ok"), ("X", "qlearning", 1, .8, "ok"),
             ("Y", "qlearning", 0, .6, "ok"), ("Y", "qlearning", 1, .7, "ok"),
             ("Z", "qlearning", 0, .52, "ok"), ("Z", "qlearning", 1, .60, "ok")]
    agg = aggregate(_long(rows))
    test = agg.tests["qlearning"]
    assert test["statistic"] == 0.0 and test["p"] == pytest.approx(2 / 64)
    assert test["verdict"] == "BEATS"
    assert agg.outcomes["qlearning"]["win"] == ["X", "Y", "Z"]


def test_the_strongest_baseline_is_scored_on_the_most_tasks_not_best_on_one_easy_task():
    rows = [(t, m, 0, score, "ok") for t, m, score in (
        ("X", "fixed", .50), ("X", "cosine", .60), ("X", "qlearning", .55),
        ("Y", "fixed", .70), ("Y", "qlearning", .60), ("Z", "fixed", .80), ("Z", "qlearning", .90))]
    rows += [(t, "cosine", 0, math.nan, "failed") for t in ("Y", "Z")]
    table = task_table(_long(rows))
    # cosine is best on the one task it was scored on (mean normalised 1.0 against fixed's 1/3), but it failed on
    # the other two: the strongest baseline is the one scored everywhere
    assert strongest_baseline(table) == "fixed"
    assert strongest_baseline(table[table["task"] == "X"]) == "cosine"


def test_missing_column_is_one_clear_error():
    with pytest.raises(ValueError, match="missing column"):
        task_table(pd.DataFrame({"task": [], "method": []}))


def test_the_suite_view_draws_the_profile_and_ranks_and_links_each_task():
    from medtune.dashboards.app import components
    from medtune.dashboards.html_report import render
    from medtune.dashboards.suite_report import SuiteReport, SuiteTask
    from medtune.dashboards.views import Image, Links

    report = SuiteReport("s", "1", "s-1", [SuiteTask(t, f"s-{t}", f"s-{t}-1", 0) for t in "ABC"],
                         aggregate(TABLE, MODES))
    view = report.view()
    assert {b.id for b in view.blocks if isinstance(b, Image)} == {"suite-profile", "suite-ranks"}
    assert all(b.png.startswith(b"\x89PNG") for b in view.blocks if isinstance(b, Image))
    links = next(b for b in view.blocks if isinstance(b, Links))
    assert [name for _, name in links.items] == ["s-A", "s-B", "s-C"]
    page = str(components(view))
    assert "?experiment=s-A" in page and "?experiment=s-C" in page
    assert "medtune report s-B" in render(view)
