"""Tests for medtune.dashboards.metric_report on a real MLflow SQLite store filled by hand (no Ray)."""

from __future__ import annotations

import pytest

from medtune.dashboards.metric_report import build_metric_report
from medtune.dashboards.summary import log_summary
from medtune.errors import InputError
from medtune.tags import TAG_KIND, TAG_SESSION, TAG_TRIAL


@pytest.fixture
def store(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("own", artifact_location=(tmp_path / "art").as_uri())
    curves = {("fixed", 0): [0.5, 0.4, 0.35], ("fixed", 1): [0.5, 0.42, 0.33], ("qlearning", 0): [0.5, 0.3, 0.2],
              ("qlearning", 1): [0.5, 0.32, 0.22]}
    for (method, seed), values in curves.items():
        run = client.create_run(exp, run_name=f"{method}-seed{seed}", tags={
            TAG_SESSION: "s1", TAG_TRIAL: f"{method}{seed}", TAG_KIND: "trial"})
        rid = run.info.run_id
        client.log_batch(rid, params=[Param("method", method), Param("seed", str(seed))])
        client.log_batch(rid, metrics=[Metric(k, v, 0, e + 1) for e, x in enumerate(values)
                                       for k, v in (("error", x), ("lr", 0.1 if method == "fixed" else 0.1 / (e + 1)),
                                                    ("diverged", 0), ("epoch", e + 1))])  # qlearning acts
        client.set_terminated(rid)
    return uri, client, exp


def test_a_min_metric_without_a_held_out_score_is_ranked_by_its_final_value_and_says_so(store, tmp_path):
    uri, client, exp = store
    report = build_metric_report(uri, "own", "s1", "error", mode="min", loss_metric="error")
    assert list(report.table.index) == ["qlearning", "fixed"]  # lower error first
    assert report.table.loc["qlearning", "final_error_mean"] == pytest.approx(0.21)
    text = report.text()
    assert "No held-out score: no trial reported test_error after its last epoch" in text
    assert "error: lower is better" in text and "Dice" not in text
    assert report.target == pytest.approx(0.275)  # the median of the trials' best values, stated in the text
    assert "the median of the trials' best values" in text
    paired, header, first = report.verdicts["qlearning"][:3]
    # no test score: the paired verdict falls back to the final validation error, lower is better, and says so
    assert paired.startswith("Paired: qlearning against the strongest other method on final validation error, fixed")
    assert "lower on" in paired
    assert first.startswith("held-out test error: no method has a value")
    rid = log_summary(uri, report, tmp_path / "report")
    files = {a.path for a in client.list_artifacts(rid)}
    assert {"comparison.csv", "trials.csv", "curves.csv", "report.txt", "report.html"} <= files
    assert client.get_run(rid).data.tags[TAG_KIND] == "summary"


def test_an_unknown_experiment_or_an_empty_session_is_one_line(store):
    uri, _, _ = store
    with pytest.raises(InputError, match="experiment 'nope' is not in the MLflow store"):
        build_metric_report(uri, "nope", "s1", "error")
    with pytest.raises(InputError, match="no trial runs in session 's2'"):
        build_metric_report(uri, "own", "s2", "error")
