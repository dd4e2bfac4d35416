"""``medtune tune`` end to end: a smoke search for two methods on the phantom, then the final runs.

2 search trials x 2 epochs per method (fixed, qlearning), one final seed, the LR spec's smoke data.
Checks the MLflow layout (search trials nested under a parent run per method, final runs as the session's
trial runs), that the final seed is absent from the search, and that only the final runs read the test split.
"""

from __future__ import annotations

import time

import pytest

from tests.test_lr_study import medtune

pytestmark = pytest.mark.integration

METHODS = ("fixed", "qlearning")  # one in-trial schedule, one with its private agent
FINAL_SEED = 7


def test_smoke_search_then_final_runs_land_in_mlflow_as_described(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    start = time.monotonic()
    proc = medtune("tune", "lr-schedulers", "--smoke", "--output", str(out), "--set", f"methods=[{','.join(METHODS)}]",
                   "--set", "train.epochs=2", "--set", "tuning.trials=2", "--set", "tuning.epochs=2",
                   "--set", f"tuning.final_seeds=[{FINAL_SEED}]", timeout=300)
    print(f"medtune tune smoke: {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lr-schedulers")

    def runs(kind):
        return client.search_runs([exp.experiment_id], filter_string=f"tags.`medtune.kind` = '{kind}'")

    parents = {r.data.tags["medtune.method"]: r for r in runs("search-parent")}
    assert set(parents) == set(METHODS)
    search = runs("search")
    assert len(search) == 2 * len(METHODS)
    for r in search:
        parent = parents[r.data.tags["medtune.method"]]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.params["method"] == r.data.tags["medtune.method"]
        assert r.info.status == "FINISHED"  # a search trial that touched the test split would have failed
        assert "test_dice" not in r.data.metrics and "dice" in r.data.metrics
        assert r.data.params["search"] == "True"
    search_seeds = {r.data.params["seed"] for r in search}
    final = runs("trial")
    assert sorted(r.data.params["method"] for r in final) == sorted(METHODS)
    assert {r.data.params["seed"] for r in final} == {str(FINAL_SEED)}
    assert str(FINAL_SEED) not in search_seeds
    assert all("test_dice" in r.data.metrics for r in final)  # only the final runs are scored on the test split
    assert {r.data.tags["medtune.session"] for r in final} == {r.data.tags["medtune.session"] for r in search}
    # the final runs train with the configuration the search chose
    for method, parent in parents.items():
        chosen = {k[len("chosen."):]: v for k, v in parent.data.params.items() if k.startswith("chosen.")}
        assert chosen and "best_val" in parent.data.metrics and parent.data.metrics["trials"] == 2
        (run,) = [r for r in final if r.data.params["method"] == method]
        for name, value in chosen.items():
            tuned = [v for k, v in run.data.params.items() if k.startswith(f"tuned.{method}.") and k.endswith(name)]
            assert tuned == [value], (method, name)
    (summary,) = runs("summary")
    names = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"search_curve.csv", "search_curve.png", "tuning.csv", "report.txt"} <= names
    assert "Equal tuning budget" in proc.stdout and "private agent" in proc.stdout
