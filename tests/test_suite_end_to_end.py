"""A two-task suite end to end through the CLI (real Ray, real MLflow sqlite, real MONAI), with a broken second
task that the resumed suite runs alone; then ``medtune report`` and the dashboard view rebuilt from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_lr_study import medtune

pytestmark = pytest.mark.integration

SUITE = """
name: tiny-suite
methods: [fixed, greedy]
seeds: [0]
epochs: 2
tasks:
  a:
    set: {data: {num_volumes: 5, spatial_size: [16, 16, 16], seed: 0}}
  b:
    set: {data: {num_volumes: 5, spatial_size: [16, 16, 16], seed: 1}}
"""


def _client(out: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{out / 'mlflow.db'}")


def _trials(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")


def test_a_suite_nests_its_task_sessions_resumes_only_the_broken_task_and_reports_from_mlflow(tmp_path):
    spec, out = tmp_path / "tiny-suite.yaml", tmp_path / "out"
    spec.write_text(SUITE)
    # task b cannot place a trial (64 CPUs on this machine): it stops at its start, after a finished
    broken = medtune("suite", str(spec), "--output", str(out), "--set", "tasks.b.set.resources.cpus_per_trial=64")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-3000:]
    suite_dir = next(p for p in out.iterdir() if p.name.startswith("tiny-suite-2"))
    state = json.loads((suite_dir / "suite.json").read_text())
    assert state["tasks"]["a"]["exit"] == 0 and state["tasks"]["b"]["exit"] == 2
    assert "cpus_per_trial" in state["tasks"]["b"]["message"]
    first_a = state["tasks"]["a"]["session"]
    client = _client(out)
    assert len(_trials(client, "tiny-suite-a")) == 2

    resumed = medtune("suite", str(spec), "--output", str(out), "--resume", str(suite_dir))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    said = [line for line in (resumed.stdout + resumed.stderr).splitlines() if "task" in line]
    assert any("task 1/2 a: finished earlier" in line for line in said), said
    state = json.loads((suite_dir / "suite.json").read_text())
    assert state["tasks"]["a"]["session"] == first_a  # kept, not run again
    assert len(_trials(client, "tiny-suite-a")) == 2
    assert len(_trials(client, "tiny-suite-b")) == 2 and state["tasks"]["b"]["exit"] == 0

    # MLflow: one parent run of the suite, each task's session nested under it
    exp = client.get_experiment_by_name("tiny-suite")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'suite'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert {c.data.tags["medtune.suite.task"]: (c.data.tags["medtune.suite.session"], c.info.status)
            for c in children} == {"a": (first_a, "FINISHED"), "b": (state["tasks"]["b"]["session"], "FINISHED")}
    assert {"suite-profile.png", "suite-ranks.png", "report.txt"} <= {
        a.path for a in client.list_artifacts(parents[0].info.run_id)}

    # the aggregate, printed at the end and rebuilt by `medtune report` from MLflow alone
    for text in (resumed.stdout, medtune("report", "tiny-suite", "--output", str(out)).stdout):
        assert "=== task a: experiment 'tiny-suite-a'" in text and "=== task b" in text
        assert "=== across the tasks" in text and "Strongest baseline across the suite: fixed" in text
        assert "rho(0.1)" in text

    from medtune.cluster.studies.suite import load_view
    from medtune.dashboards.views import Links

    view = load_view(f"sqlite:///{out / 'mlflow.db'}", "tiny-suite")
    assert view.study == "suite" and view.status.startswith("2 tasks")
    links = next(b for b in view.blocks if isinstance(b, Links))
    assert [name for _, name in links.items] == ["tiny-suite-a", "tiny-suite-b"]
