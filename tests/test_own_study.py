"""Tests for medtune.cluster.studies.own_study: a spec naming the user's own trainable (``trainable: module:function``).

The checks run through the real CLI (`medtune run`, exit status 2 and one line, before Ray starts); one small
comparison runs end to end on a real local Ray and a real MLflow SQLite store, the trainable's code shipped to
the workers as ``py_modules`` (the workers never see the test's folder on their path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_training.py"
SPEC = """name: digits-spec
trainable: {trainable}
metric: {metric}
loss_metric: val_loss
methods: {methods}
seeds: [0]
epochs: 4
min_lr: 0.0001
max_lr: 0.5
qlearning: {{patience: 1, cooldown: 1, epsilon: 1.0}}
"""


def medtune(folder: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PYTHONPATH"):
        env.pop(key, None)
    return subprocess.run([MEDTUNE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=folder)


@pytest.fixture
def folder(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "digits_training.py")
    return tmp_path


def write_spec(folder: Path, trainable="digits_training:train", metric="accuracy", methods="[fixed, qlearning]"):
    (folder / "spec.yaml").write_text(SPEC.format(trainable=trainable, metric=metric, methods=methods))


@pytest.mark.parametrize("kw, line", [
    ({"methods": "[fixed, Cosine]"}, "method='Cosine' is not an LR method (did you mean 'cosine'? method names are "
                                     "lower case)"),
    ({"trainable": "digits_trainin:train"}, "trainable 'digits_trainin:train': module 'digits_trainin' does not "
                                            "import (ModuleNotFoundError"),
    ({"trainable": "digits_training:trian"}, "digits_training has no function 'trian'"),
    ({"trainable": "digits_training.train"}, "must read package.module:function"),
    ({"metric": "3"}, "metric=3 must be a string"),
])
def test_a_bad_own_training_spec_is_one_line_and_exit_2_before_ray(folder, kw, line):
    write_spec(folder, **kw)
    proc = medtune(folder, "run", "spec.yaml", "--output", "out")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.startswith("medtune: error: ") and line in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (folder / "out").exists()


@pytest.mark.integration
def test_medtune_run_compares_the_trainable_a_spec_names(folder):
    write_spec(folder)
    proc = medtune(folder, "run", "spec.yaml", "--output", "out")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "final accuracy" in proc.stdout and "Dice" not in proc.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'out' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits-spec")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert sorted(r.data.params["method"] for r in runs) == ["fixed", "qlearning"]
    assert all(r.data.params["study"] == "own" for r in runs)
    report = medtune(folder, "report", "digits-spec", "--output", "out")
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    assert "final accuracy" in report.stdout
    # The recovery path after an MLflow outage: the summary run logged again, in the spec's own metric.
    session = next((folder / "out").glob("digits-spec-*"))
    (first,) = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
    synced = medtune(folder, "report", "--sync", str(session))
    assert synced.returncode == 0, synced.stdout[-2000:] + synced.stderr[-2000:]
    assert f"logged the summary run of session {session.name}" in synced.stdout
    (summary,) = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
    assert summary.info.run_id != first.info.run_id and summary.data.metrics == first.data.metrics
