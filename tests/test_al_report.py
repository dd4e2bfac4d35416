"""The active-learning report's arithmetic on crafted curves (no MLflow, no Ray): ``dashboards/al_report.py``.

Shows that:

* :func:`~medtune.dashboards.al_report.at_fractions` reads each strategy at the round that labeled exactly
  ``round(f * N)`` samples (halves up, like the loop's milestones), leaves out fractions a run never
  reached, and gives ``all``'s single round to every fraction (the paper's ALL row);
* :func:`~medtune.dashboards.al_report.labels_to_target` is the fewest labels with macro-F1 >= target (NaN when
  never reached);
* :func:`~medtune.dashboards.al_report.table` has per-fraction means and sample stds over seeds, the labels to
  target and the seeds that reached it, sorted best first;
* :meth:`~medtune.dashboards.al_report.ActiveLearningReport.text` prints every method, the "labels to reach"
  section without ``all`` and one DRLA verdict line per hand-designed strategy;
* :meth:`~medtune.dashboards.al_report.ActiveLearningReport.write` writes the three CSVs, the text and a
  non-blank ``f1_curves.png`` with the coloured curves on it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medtune.dashboards.al_report import ActiveLearningReport, at_fractions, labels_to_target, table

N = 50
FRACTIONS = (0.25, 0.5, 1.0)          # round(f * 50), halves up: 13, 25, 50


def curves_of(runs: dict[tuple[str, int], list[tuple[int, float, float]]], pool: int = N,
              recoveries: dict[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """The long layout of ``load_curves``: one row per (run, round) from
    ``{(method, seed): [(labeled, macro, micro)]}``."""
    rows = []
    for (method, seed), points in runs.items():
        for r, (labeled, macro, micro) in enumerate(points):
            rows.append({"run_id": f"{method}-{seed}", "method": method, "seed": seed, "round": r,
                         "labeled": float(labeled), "labeled_fraction": labeled / pool, "macro_f1": macro,
                         "micro_f1": micro, "recoveries": float((recoveries or {}).get((method, seed), 0))})
    return pd.DataFrame(rows, columns=["run_id", "method", "seed", "round", "labeled", "labeled_fraction",
                                       "macro_f1", "micro_f1", "recoveries"])


def lc_curve(shift: float = 0.0) -> list[tuple[int, float, float]]:
    # 12 and 13 labels both present: round(0.25 * 50) = 12.5 must pick 13 (halves up), not Python's round() = 12
    return [(5, 0.10 + shift, 0.11 + shift), (12, 0.20 + shift, 0.21 + shift), (13, 0.30 + shift, 0.31 + shift),
            (20, 0.40 + shift, 0.41 + shift), (25, 0.50 + shift, 0.51 + shift), (30, 0.60 + shift, 0.61 + shift),
            (50, 0.80 + shift, 0.81 + shift)]


# =========================================================================== at_fractions


def test_at_fractions_reads_the_round_with_round_f_n_labels_and_all_everywhere():
    curves = curves_of({
        ("lc", 0): lc_curve(),
        ("ms", 0): [(5, 0.1, 0.1), (13, 0.35, 0.36), (25, 0.55, 0.56)],   # stopped by the budget at 50%
        ("all", 0): [(50, 0.9, 0.91)],
    })
    pts = at_fractions(curves, FRACTIONS).set_index(["method", "fraction"])
    assert pts.loc[("lc", 0.25), "macro_f1"] == pytest.approx(0.30)       # the 13-label round, not 12
    assert pts.loc[("lc", 0.25), "micro_f1"] == pytest.approx(0.31)
    assert pts.loc[("lc", 0.5), "macro_f1"] == pytest.approx(0.50)
    assert pts.loc[("lc", 1.0), "macro_f1"] == pytest.approx(0.80)
    assert ("ms", 1.0) not in pts.index and pts.loc[("ms", 0.5), "macro_f1"] == pytest.approx(0.55)
    for f in FRACTIONS:                                                     # ALL's single round stands for every f
        assert pts.loc[("all", f), "macro_f1"] == pytest.approx(0.9)
        assert pts.loc[("all", f), "micro_f1"] == pytest.approx(0.91)
    assert len(pts) == 3 + 2 + 3


def test_at_fractions_keeps_seeds_apart():
    curves = curves_of({("lc", 0): lc_curve(), ("lc", 1): lc_curve(0.05)})
    pts = at_fractions(curves, FRACTIONS)
    got = pts[pts["fraction"] == 0.5].set_index("seed")["macro_f1"]
    assert got.to_dict() == pytest.approx({0: 0.50, 1: 0.55})


# =========================================================================== labels_to_target


def test_labels_to_target_is_the_fewest_labels_reaching_it_and_nan_when_never():
    curves = curves_of({
        ("lc", 0): [(5, 0.3, 0.3), (20, 0.6, 0.6), (30, 0.85, 0.85), (50, 0.80, 0.80)],  # exactly at target counts
        ("lc", 1): [(5, 0.3, 0.3), (20, 0.9, 0.9), (50, 0.95, 0.95)],
        ("random", 0): [(5, 0.3, 0.3), (50, 0.84, 0.84)],                                   # never reaches
    })
    reach = labels_to_target(curves, 0.85).set_index(["method", "seed"])["labels"]
    assert reach[("lc", 0)] == 30 and reach[("lc", 1)] == 20
    assert math.isnan(reach[("random", 0)])


# =========================================================================== table


def _three_seed_study():
    lc = {0: 0.50, 1: 0.60, 2: 0.70}
    rnd = {0: 0.40, 1: 0.42, 2: 0.47}
    runs = {}
    for s in range(3):
        runs[("lc", s)] = [(5, 0.1, 0.1), (13, lc[s] - 0.1, lc[s] - 0.05), (25, lc[s], lc[s] + 0.05), (50, 0.9, 0.92)]
        runs[("random", s)] = [(5, 0.1, 0.1), (13, rnd[s] - 0.1, rnd[s]), (25, rnd[s], rnd[s] + 0.01), (50, 0.9, 0.9)]
    return curves_of(runs), lc, rnd


def test_table_has_means_stds_labels_to_target_and_best_first():
    curves, lc, rnd = _three_seed_study()
    pts = at_fractions(curves, FRACTIONS)
    reach = labels_to_target(curves, 0.6)
    t = table(pts, reach, FRACTIONS).set_index("method")
    assert list(t.index) == ["lc", "random"]                                           # best mean below 100% first
    assert t.loc["lc", "seeds"] == 3
    assert t.loc["lc", "macro@0.5_mean"] == pytest.approx(np.mean(list(lc.values())))
    assert t.loc["lc", "macro@0.5_std"] == pytest.approx(np.std(list(lc.values()), ddof=1))
    assert t.loc["random", "micro@0.25_mean"] == pytest.approx(np.mean(list(rnd.values())))
    assert t.loc["random", "micro@0.25_std"] == pytest.approx(np.std(list(rnd.values()), ddof=1))
    assert t.loc["lc", "macro@1_mean"] == pytest.approx(0.9) and t.loc["lc", "macro@1_std"] == pytest.approx(0.0)
    # lc reaches 0.6 at 50 labels on seed 0 (0.4, 0.5, 0.9), at 25 on seed 1 (0.5, 0.6), at 13 on seed 2 (0.6)
    assert t.loc["lc", "labels_to_target_mean"] == pytest.approx((50 + 25 + 13) / 3)
    assert t.loc["lc", "labels_to_target_reached"] == "3/3"
    reach_none = labels_to_target(curves, 0.95)
    t2 = table(pts, reach_none, FRACTIONS).set_index("method")
    assert math.isnan(t2.loc["lc", "labels_to_target_mean"]) and t2.loc["lc", "labels_to_target_reached"] == "0/3"
    expected_below = np.mean([v - 0.1 for v in lc.values()] + list(lc.values()))
    assert t.loc["lc", "mean_macro_below_100"] == pytest.approx(expected_below)


def test_table_one_seed_has_zero_std_and_a_missing_fraction_is_nan():
    curves = curves_of({("ms", 0): [(5, 0.1, 0.1), (13, 0.35, 0.36), (25, 0.55, 0.56)]})
    t = table(at_fractions(curves, FRACTIONS), labels_to_target(curves, 0.5), FRACTIONS).set_index("method")
    assert t.loc["ms", "macro@0.25_std"] == 0.0
    assert math.isnan(t.loc["ms", "macro@1_mean"]) and math.isnan(t.loc["ms", "macro@1_std"])
    assert t.loc["ms", "labels_to_target_mean"] == 25


# =========================================================================== the report


def _report(with_drla: bool = True, recoveries: dict | None = None) -> ActiveLearningReport:
    runs = {}
    base = {"lc": 0.50, "random": 0.40, "drla": 0.60}
    for method, level in base.items():
        if method == "drla" and not with_drla:
            continue
        for s in range(3):
            jitter = 0.01 * s
            runs[(method, s)] = [(5, 0.1, 0.1), (13, level - 0.1 + jitter, level - 0.08 + jitter),
                                 (25, level + jitter, level + 0.02 + jitter), (50, 0.9, 0.91)]
    for s in range(3):
        runs[("ms", s)] = [(5, 0.1, 0.1), (13, 0.30, 0.31), (25, 0.45, 0.46), (50, 0.85, 0.86)]  # never 0.874
        runs[("all", s)] = [(50, 0.92, 0.93)]
    curves = curves_of(runs, recoveries=recoveries)
    pts = at_fractions(curves, FRACTIONS)
    target = 0.95 * 0.92
    reach = labels_to_target(curves[curves["method"] != "all"], target)
    return ActiveLearningReport("al-test", "1", "sess-1", FRACTIONS, target, "95% of ALL's macro-F1", curves, pts,
                                table(pts, reach, FRACTIONS))


def test_text_has_every_method_the_labels_section_without_all_and_drla_verdicts():
    rep = _report()
    text = rep.text()
    lines = text.splitlines()
    assert "(15 trials)" in lines[0]
    macro = lines[lines.index("macro-F1:") + 2: lines.index("micro-F1:") - 1]
    # best mean macro-F1 below 100% first: ALL (every label, the reference) on top, then drla, lc, ms, random
    assert [line.split()[0] for line in macro] == ["all", "drla", "lc", "ms", "random"]
    assert "0.610 +/- 0.010" in macro[1]                                              # 50%: 0.60, 0.61, 0.62
    start = next(i for i, line in enumerate(lines) if line.startswith("labels to reach macro-F1 0.874"))
    assert "95% of ALL's macro-F1" in lines[start]
    section = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        section.append(line.split()[0])
    assert sorted(section) == ["drla", "lc", "ms", "random"]                         # 'all' is the reference
    for line in lines[start + 1: start + 4]:
        assert line.split()[1] == "50" and "(reached by 3/3 seeds)" in line
    assert lines[start + 4].split()[:2] == ["ms", "never"] and "(reached by 0/3 seeds)" in lines[start + 4]
    verdicts = lines[lines.index("DRLA against each strategy (mean macro-F1 over the fractions below 100%, "
                                 "paired by seed):") + 1:]
    # first against the strongest strategy (lc: the best mean below 100% after drla; never all), then one each
    assert verdicts[0].startswith("  drla against the strongest other method on mean macro-F1, lc ")
    assert [v.split()[:3] for v in verdicts[1:]] == [["drla", "BEATS", "lc:"], ["drla", "BEATS", "ms:"],
                                                     ["drla", "BEATS", "random:"]]     # one per strategy, none vs all
    assert "mean paired difference +0.100" in verdicts[1] and "mean paired difference +0.200" in verdicts[3]
    assert "actor restart" not in text


def test_text_without_drla_has_no_verdicts_and_notes_recoveries():
    text = _report(with_drla=False, recoveries={("lc", 1): 2, ("random", 0): 1}).text()
    assert "DRLA against" not in text and "drla" not in text and "lc " in text and "random " in text
    assert "Note: 3 actor restart(s) were recovered from during this session." in text


def test_write_produces_the_csvs_the_text_and_a_non_blank_plot(tmp_path):
    import matplotlib.image as mpimg

    rep = _report()
    paths = rep.write(tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["at_fractions.csv", "comparison.csv", "curves.csv", "f1_curves.png", "report.txt"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    comparison = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(comparison["method"]) == list(rep.table["method"])
    assert comparison.loc[comparison["method"] == "drla", "macro@0.5_mean"].iloc[0] == pytest.approx(0.61)
    assert len(pd.read_csv(tmp_path / "out" / "at_fractions.csv")) == len(rep.points) == 5 * 3 * 3
    assert len(pd.read_csv(tmp_path / "out" / "curves.csv")) == len(rep.curves) == 4 * 3 * 4 + 3
    assert (tmp_path / "out" / "report.txt").read_text() == rep.text() + "\n"
    img = mpimg.imread(tmp_path / "out" / "f1_curves.png")[..., :3]
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 0.05                                                           # not a blank canvas
    saturation = img.max(axis=2) - img.min(axis=2)
    assert (saturation > 0.3).sum() > 500                                             # coloured curves were drawn
