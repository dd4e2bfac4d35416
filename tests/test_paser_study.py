"""The PaSeR study end to end on a real local Ray and a real MLflow SQLite store.

One smoke grid (two lambdas, every baseline, one seed) through the ``medtune`` console script: the models
are pre-trained once, every method lands in MLflow with ``iou``, ``gflops`` and ``iou_per_gflop``, and
the summary run holds the table, the Pareto plot and the routing pictures.
"""

from __future__ import annotations

import pytest

from tests.test_lr_study import _client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke(paser_smoke):
    """The shared smoke run (tests/conftest.py)."""
    return paser_smoke


def test_every_method_and_lambda_lands_in_mlflow_with_the_three_metrics(smoke):
    client = _client(smoke["out"])
    exp = client.get_experiment_by_name("paser")
    runs = client.search_runs([exp.experiment_id], "tags.`medtune.kind` = 'trial'")
    got = sorted((r.data.params["method"], r.data.params.get("lam")) for r in runs)
    assert got == sorted([("paser", "0.1"), ("paser", "0.9"), ("random", "0.1"), ("random", "0.9"),
                          ("small", "None"), ("medium", "None"), ("large", "None"), ("cascade", "None")])
    by = {(r.data.params["method"], r.data.params.get("lam")): r.data.metrics for r in runs}
    for key, m in by.items():
        assert 0.0 <= m["iou"] <= 1.0, key
        assert m["gflops"] > 0, key
        assert m["iou_per_gflop"] == pytest.approx(m["iou"] / m["gflops"]), key
    # executed FLOPs: the large model everywhere costs more than the small one; a router pays for f0's passes
    assert by[("large", "None")]["gflops"] > by[("medium", "None")]["gflops"] > by[("small", "None")]["gflops"]
    assert by[("paser", "0.9")]["gflops"] > by[("small", "None")]["gflops"]
    for lam in ("0.1", "0.9"):  # random routes the same shares of patches as the router it rides with
        for k in ("share_f0", "share_f1", "share_f2"):
            assert by[("random", lam)][k] == pytest.approx(by[("paser", lam)][k], abs=0.05)


def test_models_are_pretrained_once_and_the_report_is_logged(smoke):
    assert (smoke["session"] / "pretrained" / "models.pt").is_file()
    assert smoke["proc"].stdout.count("pre-training f2, f1, then f0") == 1
    out = smoke["proc"].stdout
    assert "PaSeR at lam=0.1:" in out and "paser vs random at its shares" in out
    client = _client(smoke["out"])
    exp = client.get_experiment_by_name("paser")
    summary = client.search_runs([exp.experiment_id], "tags.`medtune.kind` = 'summary'")
    assert len(summary) == 1
    names = {a.path for a in client.list_artifacts(summary[0].info.run_id)}
    assert {"comparison.csv", "pareto.png", "routing-lam0.1.png", "routing-lam0.9.png", "report.txt",
            "report.html"} <= names
