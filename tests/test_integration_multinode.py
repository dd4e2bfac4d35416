"""A three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): trials spread over the
nodes, and a study that loses a trial's worker process and then a whole node still finishes every
trial, with every epoch in MLflow exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
METHODS = ["fixed", "step", "cosine"]
EPOCHS = 25


def _results(session: Path) -> dict[str, list[dict]]:
    """Per trial folder, the results Tune has written so far."""
    out = {}
    for trial_dir in session.glob("train_segmentation_*"):
        path = trial_dir / "result.json"
        if path.exists():
            rows = []
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
            out[trial_dir.name] = rows
    return out


def test_trials_spread_over_nodes_and_survive_a_killed_worker_and_a_removed_node(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    cluster.wait_for_nodes()
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [MEDTUNE, "run", "lr-schedulers", "--smoke", "--output", str(out), "--address", cluster.address,
         "--set", f"methods=[{','.join(METHODS)}]", "--set", f"train.epochs={EPOCHS}",
         "--set", "data.num_volumes=16", "--set", "data.spatial_size=[32,32,32]"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    killed_pid = removed_node = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and (killed_pid is None or removed_node is None):
            sessions = list(out.glob("lr-schedulers-*")) if out.exists() else []
            running = {name: rows[-1] for name, rows in (_results(sessions[0]) if sessions else {}).items() if rows}
            started = {n: r for n, r in running.items() if 3 <= r["epoch"] < EPOCHS - 5}
            if killed_pid is None and started:
                name, row = sorted(started.items())[0]
                killed_pid = row["pid"]
                os.kill(killed_pid, signal.SIGKILL)  # the trial's worker process dies mid-run
            worker_ids = {w.node_id: w for w in workers}
            if killed_pid is not None and removed_node is None:
                on_worker = [r for r in started.values() if r["node_id"] in worker_ids and r["pid"] != killed_pid]
                if on_worker:
                    removed_node = on_worker[0]["node_id"]
                    cluster.remove_node(worker_ids[removed_node])  # a whole node is lost mid-run
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.shutdown()
    assert killed_pid is not None and removed_node is not None, "the faults were not injected"
    assert proc.returncode == 0, output[-4000:]

    session = next(out.glob("lr-schedulers-*"))
    results = _results(session)
    nodes_used = {row["node_id"] for rows in results.values() for row in rows}
    assert len(nodes_used) >= 2, "trials were not spread over the nodes"
    pids = {name: {row["pid"] for row in rows} for name, rows in results.items()}
    assert any(killed_pid in p and len(p) > 1 for p in pids.values()), "the killed trial did not restart"
    # ... from its last checkpoint, not from scratch: the new process's first epoch follows on
    killed_rows = next(rows for rows in results.values() if killed_pid in {r["pid"] for r in rows})
    after = [r for r in killed_rows if r["pid"] != killed_pid]
    last_before = max(r["epoch"] for r in killed_rows if r["pid"] == killed_pid)
    assert 1 < after[0]["epoch"] <= last_before + 1, (after[0]["epoch"], last_before)
    moved = [rows for rows in results.values() if rows[0]["node_id"] == removed_node]
    assert moved and all(rows[-1]["node_id"] != removed_node for rows in moved), "no trial left the removed node"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lr-schedulers")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert sorted(r.data.params["method"] for r in trials) == sorted(METHODS)
    for run in trials:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dice")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.data.params["method"], steps)
