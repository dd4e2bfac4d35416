"""The APGA study end to end on a real local Ray and a real MLflow SQLite store.

One smoke run (four methods x two regimes, one seed) through the ``medtune``
console script; the tests read what it left in MLflow and in the session folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_lr_study import _client, medtune

pytestmark = pytest.mark.integration

METHODS = {"none", "cutout", "gradcam", "apga", "trivialaugment", "randaugment"}


@pytest.fixture(scope="module")
def smoke(apga_smoke):
    """The shared smoke run (tests/conftest.py)."""
    return apga_smoke


def _runs(smoke, kind: str = "trial"):
    client = _client(smoke["out"])
    exp = client.get_experiment_by_name("apga")
    return client, client.search_runs([exp.experiment_id], f"tags.`medtune.kind` = '{kind}'")


def test_every_method_and_regime_has_its_accuracy_in_mlflow(smoke):
    client, runs = _runs(smoke)
    assert {(r.data.params["method"], r.data.params["regime"]) for r in runs} == {
        (m, g) for m in METHODS for g in ("full", "few_shot")}
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.params["study"] == "apga"
        history = client.get_metric_history(r.info.run_id, "accuracy")
        assert [m.step for m in history] == [1, 2]  # smoke: 2 epochs, one point each
        assert 0.0 <= r.data.metrics["final_accuracy"] <= 1.0
        assert r.data.metrics["final_accuracy"] == history[-1].value
        keep = r.data.metrics["keep_fraction"]
        masks_nothing = r.data.params["method"] in ("none", "trivialaugment", "randaugment")
        assert keep == 1.0 if masks_nothing else 0.0 < keep < 1.0


def test_each_trial_logged_its_masks_and_the_summary_holds_the_report(smoke, tmp_path):
    from medtune.dashboards.apga_report import decode_masks

    client, runs = _runs(smoke)
    apga = next(r for r in runs if r.data.params["method"] == "apga" and r.data.params["regime"] == "full")
    masks_json = Path(client.download_artifacts(apga.info.run_id, "masks.json", str(tmp_path)))
    images, masks = decode_masks(json.loads(masks_json.read_text()))
    assert images.shape == masks.shape == (8, 32, 32) and set(masks.ravel()) <= {0, 1}
    _, summaries = _runs(smoke, "summary")
    assert len(summaries) == 1
    names = {a.path for a in client.list_artifacts(summaries[0].info.run_id)}
    assert {"comparison.csv", "accuracy_curves.png", "masks-full.png", "masks-few_shot.png", "report.txt",
            "report.html"} <= names
    assert "accuracy_mean.full.apga" in summaries[0].data.metrics


def test_the_table_is_printed_and_rebuilt_by_medtune_report(smoke):
    assert "regime full" in smoke["proc"].stdout and "regime few_shot" in smoke["proc"].stdout
    pretrained = sorted(p.name for p in (smoke["session"] / "pretrained").iterdir())
    assert pretrained == ["few_shot-seed0.pt", "full-seed0.pt"]  # once per regime x seed, shared by the methods
    proc = medtune("report", "apga", "--output", str(smoke["out"]))
    assert proc.returncode == 0, proc.stderr
    for method in METHODS:
        assert f"  {method} " in proc.stdout
    assert "APGA against each baseline (full)" in proc.stdout


def test_resume_of_a_finished_session_reuses_its_classifiers_and_keeps_one_run_per_trial(smoke):
    proc = medtune("resume", str(smoke["session"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "reusing 2 pre-trained classifier(s)" in proc.stdout and "pre-training" not in proc.stdout
    client, runs = _runs(smoke)
    assert len(runs) == 2 * len(METHODS)  # the restored trials continue their own runs: none is logged twice
    _, summaries = _runs(smoke, "summary")
    assert len(summaries) == 1  # the session's summary is replaced, not duplicated
