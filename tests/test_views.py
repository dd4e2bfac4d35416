"""The dashboard's figures, views and HTML report on hand-made frames (no Ray, no browser).

The browser tests (tests/test_app_browser.py) show the same views drawn from real smoke runs; these check
what each figure holds: a mean line per method with a band only where seeds disagree, one trace per trial of the
LR traces, the Q-table's cells, the Pareto front, and an HTML report that references no other host.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from medtune.dashboards import figures, html_report
from medtune.dashboards.views import Image, Plot, Table, Text, View, run_status


def _curves() -> pd.DataFrame:
    rows = []
    for method, base in (("fixed", 0.5), ("qlearning", 0.6)):
        for seed in (0, 1):
            for epoch in (1, 2, 3):
                rows.append({"run_id": f"{method}{seed}", "method": method, "seed": seed, "epoch": epoch,
                             "dice": base + 0.1 * epoch + 0.02 * seed, "lr": 1e-3 / epoch})
    return pd.DataFrame(rows)


def _named(fig, name):
    return [t for t in fig.data if t.name == name]


def test_dice_curves_draw_the_mean_per_method_and_a_band_of_one_std():
    fig = figures.dice_curves(_curves())
    (line,) = [t for t in _named(figures.dice_curves(_curves()), "fixed") if t.fill is None]
    np.testing.assert_allclose(line.y, [0.61, 0.71, 0.81])
    (band,) = _named(fig, "fixed ± std")
    std = np.std([0.0, 0.02], ddof=1)
    assert band.fill == "toself"
    assert max(band.y) == pytest.approx(0.81 + std) and min(band.y) == pytest.approx(0.61 - std)


def test_one_seed_draws_no_band_and_no_data_draws_a_note():
    one = _curves()[lambda d: d["seed"] == 0]
    assert not [t for t in figures.dice_curves(one).data if t.fill == "toself"]
    empty = figures.dice_curves(one.iloc[0:0])
    assert not empty.data and "no data yet" in empty.layout.annotations[0].text


def test_lr_traces_have_one_line_per_trial_on_a_log_axis_and_drop_non_positive_lrs():
    curves = _curves()
    curves.loc[0, "lr"] = 0.0
    fig = figures.lr_traces(curves)
    assert fig.layout.yaxis.type == "log" and len(fig.data) == 4
    assert min(min(t.y) for t in fig.data) > 0
    assert sum(t.showlegend for t in fig.data) == 2  # one legend entry per method


def test_qtable_heatmap_puts_states_on_rows_actions_on_columns_and_visits_in_the_text():
    state = {"q": {"improving": {"maintain": 0.5, "increase": 0.25}}, "visits": {"improving": {"maintain": 3}}}
    fig = figures.qtable_heatmap(state)
    (heat,) = fig.data
    assert list(heat.y[:2]) == ["improving", "worsening"] and list(heat.x) == ["maintain", "decrease", "increase"]
    assert heat.z[0][0] == 0.5 and heat.z[0][1] is None and heat.z[1][0] is None
    assert heat.text[0][0] == "0.500<br>n=3" and heat.text[0][1] == "—<br>n=0"


def test_pareto_marks_the_front_and_uses_a_log_axis():
    table = pd.DataFrame({"method": ["paser", "paser", "large"], "lam": [0.0, 0.5, math.nan],
                          "gflops_mean": [0.1, 0.01, 0.3], "gflops_std": [0.0] * 3, "iou_mean": [0.8, 0.7, 0.75],
                          "iou_std": [0.01] * 3})
    fig = figures.pareto(table, ["paser lam=0", "paser lam=0.5", "large"], [0, 1])
    (front,) = _named(fig, "Pareto front")
    assert list(front.x) == [0.01, 0.1] and fig.layout.xaxis.type == "log"
    assert list(_named(fig, "large")[0].text) == ["large"]


def test_f1_and_accuracy_curves_have_a_panel_per_metric_or_regime():
    al = pd.DataFrame({"method": ["lc", "lc", "all"], "seed": [0, 0, 0], "labeled_fraction": [0.2, 0.4, 1.0],
                       "macro_f1": [0.5, 0.6, 0.9], "micro_f1": [0.55, 0.65, 0.9]})
    fig = figures.f1_curves(al)
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    assert [t.mode for t in fig.data if t.name == "all"] == ["markers", "markers"]
    apga = pd.DataFrame({"method": ["none", "apga"] * 2, "regime": ["full", "full", "few_shot", "few_shot"],
                         "epoch": [1] * 4, "accuracy": [0.5, 0.6, 0.4, 0.45]})
    assert {t.xaxis for t in figures.accuracy_curves(apga).data} == {"x", "x2"}


def _view() -> View:
    fig = figures.dice_curves(_curves())
    png = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 8
    return View("lr", "A <title>", "exp", "exp-1", "2 runs: 2 finished", [
        Table("comparison", "Table", pd.DataFrame({"method": ["fixed", "<b>x</b>"], "Dice": ["0.5 ± 0.1", "—"]}),
              "cap"),
        Plot("dice-curves", "Curves", fig), Image("pic", "Picture", png), Text("notes", "Notes", "a < b", warning=True),
    ])


def test_html_report_is_self_contained_and_escapes_what_it_shows():
    from plotly.offline import get_plotlyjs

    text = html_report.render(_view())
    assert get_plotlyjs() in text  # plotly.js inline (the browser test checks it fetches nothing itself)
    ours = text.replace(get_plotlyjs(), "")
    assert "Plotly.newPlot" in ours and not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', ours)
    assert 'id="plot-dice-curves"' in text and 'id="table-comparison"' in text and 'id="image-pic"' in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "A &lt;title&gt;" in text and "a &lt; b" in text
    assert 'src="data:image/png;base64,' in text


def test_run_status_counts_each_state():
    class Run:
        def __init__(self, status):
            self.info = type("Info", (), {"status": status})()

    assert run_status([Run("FINISHED"), Run("RUNNING"), Run("FINISHED")]) == "3 runs: 2 finished, 1 running"
    assert run_status([Run("FAILED")]) == "1 run: 1 failed"


def test_view_cache_retries_a_failed_build_and_keeps_one_page_per_experiment():
    from medtune.dashboards import app

    calls = []

    def load_view(uri, name):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return View("lr", "T", name, "s", blocks=[Text("t", "T", f"build {len(calls)}")])

    cache = app._ViewCache("sqlite:///nowhere.db", load_view)
    with pytest.raises(RuntimeError):
        cache.get("exp", "d1")
    assert cache.failed("exp", "d1")  # the page's next tick asks again
    cache.get("exp", "d1")
    cache.get("exp", "d1")
    assert not cache.failed("exp", "d1") and len(calls) == 2  # built once, then served from the cache
    cache.get("exp", "d2")
    assert list(cache.pages) == [("exp", "d2")] and len(calls) == 3  # a new fingerprint replaces the old page


def test_view_cache_does_not_retry_bad_input():
    from medtune.dashboards import app
    from medtune.errors import InputError

    def load_view(uri, name):
        raise InputError(f"experiment {name!r} has no trial runs")

    cache = app._ViewCache("sqlite:///nowhere.db", load_view)
    with pytest.raises(InputError):
        cache.get("empty", "")
    assert not cache.failed("empty", "")
