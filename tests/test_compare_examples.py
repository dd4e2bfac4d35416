"""examples/own_training.py end to end, as a user runs it: a real local Ray and a real MLflow SQLite store.

Five methods (fixed, cosine, greedy, qlearning, pbt) x two seeds x six epochs of a tiny CNN on scikit-learn's
digits, compared by ``medtune.compare`` (about 100 s on 2 cores). ``--epsilon 1`` makes the Q-learning agent
explore at every decision (epochs 3 and 5, patience and cooldown 2), so its LR changes mid-run whatever the
Q-table's initial values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_training.py"
METHODS = ["fixed", "cosine", "greedy", "qlearning", "pbt"]
SEEDS, EPOCHS, OWN_LR = (0, 1), 6, 0.05


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("own")
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", str(EPOCHS), "--seeds", *map(str, SEEDS), "--epsilon", "1",
         "--methods", *METHODS, "--output", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=out,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits-own-training")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    series = {}
    for r in runs:
        key = (r.data.params["method"], int(r.data.params["seed"]))
        series[key] = {name: [m.value for m in sorted(client.get_metric_history(r.info.run_id, name),
                                                      key=lambda m: m.step)]
                       for name in ("accuracy", "lr", "test_accuracy", "epoch")}
    return {"proc": proc, "client": client, "exp": exp, "runs": runs, "series": series, "out": out}


def test_mlflow_holds_one_run_per_trial_with_the_users_metric_and_lr_per_epoch(run):
    assert sorted(run["series"]) == sorted((m, s) for m in METHODS for s in SEEDS)
    for key, s in run["series"].items():
        assert s["epoch"] == [float(e) for e in range(1, EPOCHS + 1)], key
        assert len(s["accuracy"]) == EPOCHS and all(0 <= a <= 1 for a in s["accuracy"]), key
        assert len(s["lr"]) == EPOCHS and len(s["test_accuracy"]) == 1, key
    assert all(r.info.status == "FINISHED" for r in run["runs"])


def test_every_method_starts_from_the_optimizers_own_lr(run):
    assert {key: s["lr"][0] for key, s in run["series"].items()} == {key: OWN_LR for key in run["series"]}
    assert all(s["lr"] == [OWN_LR] * EPOCHS for (m, _), s in run["series"].items() if m == "fixed")


def test_a_qlearning_trials_lr_changes_mid_run(run):
    changed = [seed for (m, seed), s in run["series"].items()
               if m == "qlearning" and len(set(s["lr"][:-1])) > 1]  # changed before the last epoch
    assert changed, {k: v["lr"] for k, v in run["series"].items() if k[0] == "qlearning"}


def test_cosine_anneals_and_the_table_names_the_users_metric(run):
    for seed in SEEDS:
        lrs = run["series"][("cosine", seed)]["lr"]
        assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]
    out = run["proc"].stdout
    assert "final accuracy" in out and "held-out test accuracy" in out and "epochs to accuracy≥" in out
    assert "Dice" not in out
    for method in METHODS:
        assert f"\n{method} " in out


def test_a_summary_run_holds_the_comparison(run):
    client, exp = run["client"], run["exp"]
    summary = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
    assert len(summary) == 1
    files = {a.path for a in client.list_artifacts(summary[0].info.run_id)}
    assert {"comparison.csv", "trials.csv", "curves.csv", "report.txt", "qtable.json"} <= files
    assert "final_accuracy_mean.qlearning" in summary[0].data.metrics


def test_report_sync_of_the_compare_session_delivers_its_backlog_and_logs_the_same_summary(run, tmp_path, capsys):
    """``medtune report --sync`` on a ``medtune.compare`` session (a copy: the store above keeps its summary),
    written as an earlier version wrote it (``study: compare`` in its ``medtune.json``; a spec with ``trainable:``
    is synced in tests/test_own_study.py)."""
    import json

    from tests.test_session import check_sync, copy_session, summaries

    original = next(p for p in run["out"].iterdir() if p.is_dir() and p.name.startswith("digits-own-training-"))
    session = copy_session(original, tmp_path / "copy")
    info = json.loads((session / "medtune.json").read_text())
    info["spec"]["study"] = "compare"
    (session / "medtune.json").write_text(json.dumps(info))
    before = summaries(session)[0].data.metrics
    check_sync(session, capsys)
    (summary,) = summaries(session)
    assert summary.data.metrics == before  # rebuilt in the user's metric, with the same numbers
