"""The MLflow server stops mid-run: training goes on and no metric is lost.

A real ``mlflow server`` (SQLite backend) is killed after the first epochs are trained and started
again on the same store while the study keeps training; whatever the tracker buffered meanwhile
reaches the server, at the latest through ``medtune report --sync``.
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
import requests

from tests.helpers_net import listen_port

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
PORT = listen_port()
URI = f"http://127.0.0.1:{PORT}"
EPOCHS = 30  # enough that training goes on through the outage; a run that ends first is synced from its backlog


def start_server(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(PORT),
         "--workers", "1"],
        stdout=open(root / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.time() + 300  # on a loaded machine a restart took more than 90 s to answer
    while time.time() < deadline:
        try:
            if requests.get(f"{URI}/health", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    raise AssertionError("the MLflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _epoch_trained(out: Path) -> int:
    rows = []
    for path in out.glob("mlflow-outage-*/train_segmentation_*/result.json"):
        rows += [json.loads(l)["epoch"] for l in path.read_text().splitlines() if l.strip().endswith("}")]
    return max(rows, default=0)


def test_server_stopped_mid_run_loses_no_metric(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "store"
    store.mkdir()
    server = start_server(store)
    out = tmp_path / "out"
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    run = subprocess.Popen(
        [MEDTUNE, "run", "lr-schedulers", "--smoke", "--output", str(out), "--tracking-uri", URI,
         "--set", "name=mlflow-outage", "--set", "methods=[fixed]", "--set", f"train.epochs={EPOCHS}",
         "--set", "data.num_volumes=16", "--set", "data.spatial_size=[32,32,32]"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    client = MlflowClient(URI)
    try:
        deadline = time.time() + 300
        # Mid-run, as early as the run allows: once MLflow holds the trial's run, the server goes away. The driver
        # hands results to the tracker in bursts on a busy machine (its epoch count once jumped from 2 to 30 between
        # two polls), so waiting for a given epoch could see the run end first; the trial's run exists before it.
        exp_id = None
        while time.time() < deadline and run.poll() is None:
            try:
                exp = client.get_experiment_by_name("mlflow-outage")
                exp_id = exp.experiment_id if exp else None
                if exp_id and client.search_runs([exp_id], filter_string="tags.`medtune.kind` = 'trial'"):
                    break
            except Exception:  # noqa: BLE001 - the server is still starting its stores
                pass
            time.sleep(0.2)
        assert run.poll() is None, "the run ended before MLflow held its trial"
        stop_server(server)  # the tracking server goes away mid-run
        at_stop = _epoch_trained(out)
        assert at_stop < EPOCHS, "the driver had every epoch before the server stopped: nothing trained without it"
        while _epoch_trained(out) < min(at_stop + 8, EPOCHS) and time.time() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert _epoch_trained(out) > at_stop, "training did not go on without the server"
        server = start_server(store)  # and comes back on the same store
        output, _ = run.communicate(timeout=600)
        session = next(out.glob("mlflow-outage-*"))
        assert "WARNING: MLflow at" in output  # the outage was noticed, not silently dropped
        if run.returncode == 1:  # the run ended before the server was back: the backlog delivers it
            assert f"medtune report --sync {session}" in output
            synced = subprocess.run([MEDTUNE, "report", "--sync", str(session)], capture_output=True, text=True,
                                    timeout=300, env=env)
            assert synced.returncode == 0, synced.stdout + synced.stderr
        else:
            assert run.returncode == 0, output[-3000:]
        assert not (session / "mlflow-backlog.jsonl").exists()

        exp = client.get_experiment_by_name("mlflow-outage")
        (trial,) = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "dice")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))
        assert trial.info.status == "FINISHED"
    finally:
        if run.poll() is None:
            run.kill()
        stop_server(server)
