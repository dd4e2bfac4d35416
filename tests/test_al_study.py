"""The active-learning study end to end on a real local Ray and a real MLflow SQLite store.

One smoke run of every strategy (one seed) through the ``medtune`` console script: each trial owned an
Annotator and a Learner actor, MLflow holds every strategy's F1 curve, and the summary run the table.
"""

from __future__ import annotations

import json

import pytest

from tests.test_lr_study import _client

pytestmark = pytest.mark.integration

METHODS = {"random", "lc", "ms", "en", "fusion", "drla", "all", "bald", "coreset", "badge", "typiclust",
           "stratified_random"}


@pytest.fixture(scope="module")
def smoke(al_smoke):
    """The shared smoke run (tests/conftest.py)."""
    return al_smoke


def test_every_strategy_has_its_f1_curve_in_mlflow(smoke):
    client = _client(smoke["out"])
    exp = client.get_experiment_by_name("active-learning")
    runs = client.search_runs([exp.experiment_id], "tags.`medtune.kind` = 'trial'")
    assert {r.data.params["method"] for r in runs} == METHODS
    for r in runs:
        assert r.info.status == "FINISHED"
        labeled = [m.value for m in client.get_metric_history(r.info.run_id, "labeled_fraction")]
        macro = client.get_metric_history(r.info.run_id, "macro_f1")
        assert len(macro) == len(labeled) >= 1
        assert labeled == sorted(labeled) and labeled[-1] == pytest.approx(1.0, abs=1e-3)
        assert all(0.0 <= m.value <= 1.0 for m in macro)
        if r.data.params["method"] != "all":  # smoke fractions 0.26, 0.54, 1.0 from 10%: several rounds
            assert len(labeled) >= 4


def test_annotation_logs_hold_each_label_once(smoke):
    for method in METHODS:
        log = smoke["session"] / "al" / f"{method}-seed0" / "annotations.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()]
        idx = [i for rec in records if rec.get("kind") == "annotation" for i in rec["indices"]]
        assert len(idx) == len(set(idx)) == records[0]["pool_size"], method  # the whole pool, once each


def test_the_table_is_printed_and_logged(smoke):
    out = smoke["proc"].stdout
    assert "macro-F1:" in out and "micro-F1:" in out and "labels to reach macro-F1" in out
    assert "DRLA against each strategy" in out
    client = _client(smoke["out"])
    exp = client.get_experiment_by_name("active-learning")
    summary = client.search_runs([exp.experiment_id], "tags.`medtune.kind` = 'summary'")
    assert len(summary) == 1
    names = {a.path for a in client.list_artifacts(summary[0].info.run_id)}
    assert {"comparison.csv", "at_fractions.csv", "f1_curves.png", "report.txt", "report.html"} <= names
