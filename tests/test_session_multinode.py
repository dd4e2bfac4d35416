"""A three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), each node with a Ray temp
folder of its own (its private disk): a session on shared storage, interrupted (Ctrl-C) during its first
Tuner, keeps nothing it needs on any node's private disk and resumes from the storage alone with its Q-table
and its MLflow runs, then runs the PBT Tuner it never reached; trials spread over the nodes, and a study that loses a
trial's worker process and then a whole node still finishes every trial, with every epoch in MLflow
exactly once. Both tests share the cluster (a start-up costs 10 to 20 s); the one that removes a node runs last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from medtune.trainables.lr_control import CHECKPOINT_EVERY  # train.checkpoint_every's default, kept here

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
METHODS = ["fixed", "step", "cosine"]
EPOCHS = 25
# What a restarted session needs (beside Tune's trial folders): none of it may live on a private disk only.
SESSION_STATE = ("medtune.json", "qlearning-journal.jsonl", "qtable.json", "tuner.pkl", "episodic-memory.jsonl")


@pytest.fixture(scope="module")
def three_nodes():
    """A head and two workers of 1 CPU each; each node's Ray temp folder is its own (short paths: Ray's
    sockets live there). Yields ``(cluster, workers, temp_dirs)``."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temps = [Path(tempfile.mkdtemp(prefix="mtnode")) for _ in range(3)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": str(temps[0])})
    workers = [cluster.add_node(num_cpus=1, temp_dir=str(t)) for t in temps[1:]]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers, temps
    finally:
        cluster.shutdown()
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _env() -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _needed(folder: Path) -> dict[str, Path]:
    """The session's state files under ``folder``, keyed by their path from the session's trial folder (or
    their name): checkpoints, Tune's experiment and trial state, the journal, the Q-table, medtune's files."""
    out = {}
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        parts = f.parts
        trial = next((i for i, p in enumerate(parts) if p.startswith("train_segmentation_")), None)
        if trial is not None and any(p.startswith("checkpoint_") for p in parts[trial:]):
            out["/".join(parts[trial:])] = f
        elif f.name in SESSION_STATE or f.name.startswith("experiment_state"):
            out[f.name] = f
    return out


def _journal_tail(session: Path) -> dict | None:
    """What the journal holds (replayed, read-only: ``{"table": ...}``), or None before it has a record."""
    from medtune.searchers.qlearning_scheduler import replay_journal

    path = session / "qlearning-journal.jsonl"
    return replay_journal(path) if path.exists() and path.stat().st_size else None


def _interrupt_once_checkpointed(proc: subprocess.Popen, storage: Path, trials: int, updates: int,
                                 timeout_s: float = 240) -> None:
    """SIGINT the driver once ``trials`` trials have a checkpoint on the storage and the journal holds
    ``updates`` Q-updates."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        sessions = [p for p in storage.glob("lr-schedulers-*") if p.is_dir()]
        if sessions:
            done = [t for t in sessions[0].glob("train_segmentation_*") if any(t.glob("checkpoint_*"))]
            tail = _journal_tail(sessions[0])
            if len(done) >= trials and tail and tail["table"]["updates"] >= updates:
                proc.send_signal(signal.SIGINT)
                return
        time.sleep(0.2)
    raise AssertionError("no checkpoint or Q-update reached the storage before the run ended")


def test_session_on_shared_storage_keeps_nothing_on_private_disks_and_resumes_from_storage_alone(
        tmp_path, three_nodes):
    cluster, _, temps = three_nodes
    driver, storage, epochs = tmp_path / "driver", tmp_path / "shared", 6
    # fixed, qlearning and the PBT population of two (the bottom half exploits every 2 epochs) share one Tuner
    # on the three slots; the interrupt comes once two trials have a checkpoint.
    proc = subprocess.Popen(
        [MEDTUNE, "run", "lr-schedulers", "--smoke", "--output", str(driver), "--storage", str(storage),
         "--address", cluster.address, "--set", "methods=[fixed,qlearning,pbt]", "--set", "seeds=[0,1]",
         "--set", "pbt.quantile_fraction=0.5", "--set", f"train.epochs={epochs}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )
    try:
        _interrupt_once_checkpointed(proc, storage, trials=2, updates=2)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "Continue with: medtune resume" in output
    session = next(storage.glob("lr-schedulers-*"))
    # Whatever the journal held when the driver stopped is what resume must start from.
    saved = _journal_tail(session)["table"]
    shared = _needed(session)
    assert {"medtune.json", "qlearning-journal.jsonl", "tuner.pkl"} <= set(shared), sorted(shared)
    assert any("/checkpoint_" in k for k in shared)
    # The driver's disk holds the MLflow store and no session; the nodes' private folders hold at most
    # Tune's staged copies of what the storage has.
    assert (driver / "mlflow.db").is_file() and not _needed(driver), list(driver.iterdir())
    assert not list(driver.glob("lr-schedulers-*"))  # no session folder of the driver's own to delete
    for private in temps:
        only_there = {k: str(f) for k, f in _needed(private).items() if k not in shared}
        assert not only_there, f"session state only on a node's private disk: {only_there}"

    # Resume from the storage alone: Tune's staging folders on the nodes are gone too.
    for private in temps:
        for staged in private.glob("session_*/artifacts"):
            shutil.rmtree(staged)
    resumed = subprocess.run([MEDTUNE, "resume", "--storage", str(storage), "--address", cluster.address],
                             capture_output=True, text=True, timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming session {session.name} from the storage" in resumed.stdout + resumed.stderr
    assert "resuming with the Q-learning journal" in resumed.stdout
    assert (session / "qtable.json").is_file() and (session / "report").is_dir()

    from medtune.searchers.qlearning_agent import ACTIONS, STATES

    final = json.loads((session / "qtable.json").read_text())["table"]
    # Learning carried over: the update count continues from the saved one, and a pair not updated since the
    # interrupt still holds exactly its saved value (a table re-initialised at resume holds fresh draws).
    assert final["updates"] > saved["updates"]
    for s in STATES:
        for a in ACTIONS:
            assert final["visits"][s][a] >= saved["visits"][s][a]
            if final["visits"][s][a] == saved["visits"][s][a]:
                assert final["q"][s][a] == saved["q"][s][a]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{driver / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lr-schedulers")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    # one run per trial (a PBT member that exploited stays one run), 2 seeds each
    assert sorted(r.data.params["method"] for r in trials) == sorted(["fixed", "qlearning", "pbt"] * 2)
    for run in trials:  # continued from the checkpoints: every epoch exactly once across the interruption
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dice")]
        assert sorted(steps) == list(range(1, epochs + 1)), (run.data.params["method"], steps)
        assert run.info.status == "FINISHED"
    # PBT really exploited and explored: the copier's LR moved away from the base, its epochs contiguous.
    pbt_lrs = [[m.value for m in client.get_metric_history(r.info.run_id, "lr")]
               for r in trials if r.data.params["method"] == "pbt"]
    assert any(len(set(lrs)) > 1 for lrs in pbt_lrs), pbt_lrs
    summaries = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
    assert len(summaries) == 1  # only the finished session logs a summary


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


def test_trials_spread_over_nodes_and_survive_a_killed_worker_and_a_removed_node(tmp_path, three_nodes):
    cluster, workers, _ = three_nodes
    out = tmp_path / "out"
    env = _env()
    proc = subprocess.Popen(
        [MEDTUNE, "run", "lr-schedulers", "--smoke", "--output", str(out), "--address", cluster.address,
         "--set", f"methods=[{','.join(METHODS)}]", "--set", f"train.epochs={EPOCHS}",
         "--set", "data.num_volumes=40", "--set", "data.spatial_size=[32,32,32]"],
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
    assert after[0]["epoch"] <= last_before + 1, (after[0]["epoch"], last_before)
    assert (after[0]["epoch"] - 1) % CHECKPOINT_EVERY == 0, (after[0]["epoch"], "not the epoch after a checkpoint")
    if last_before > CHECKPOINT_EVERY:  # a kill before the first checkpoint restarts from scratch, as documented
        assert after[0]["epoch"] > 1, (after[0]["epoch"], last_before, "restarted from scratch past a checkpoint")
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
