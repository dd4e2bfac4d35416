"""`medtune cluster up` / `submit` / `down` with real processes, and the faults a cluster run must survive.

One cluster (a Ray head with token authentication and an MLflow server, on
ports of their own) serves the tests of this module; the teardown stops it and
checks that no process of ours is left.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from medtune.searchers.qlearning_agent import ACTIONS, STATES

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
def _free_port() -> int:
    import socket

    with socket.socket() as sock:  # an ephemeral port: outside Ray's worker range 10002-19999
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORTS = {"port": _free_port(), "dashboard": _free_port(), "mlflow": _free_port()}


def _env() -> dict[str, str]:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    return env


def medtune(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([MEDTUNE, *args], capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cluster")
    up = medtune(
        "cluster", "up", "--state-dir", str(state_dir), "--port", str(PORTS["port"]),
        "--dashboard-port", str(PORTS["dashboard"]), "--mlflow-port", str(PORTS["mlflow"]), "--num-cpus", "2",
    )
    state = json.loads((state_dir / "state.json").read_text()) if (state_dir / "state.json").exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"dir": state_dir, "state": state, "up": up}
    finally:
        if (state_dir / "state.json").exists():  # `join` adds its processes to the record
            state = json.loads((state_dir / "state.json").read_text())
        down = medtune("cluster", "down", "--state-dir", str(state_dir))
        import psutil

        leftovers = []
        records = (state or {}).get("processes", []) + [r for j in (state or {}).get("joined", []) for r in j["processes"]]
        for record in records:
            try:
                p = psutil.Process(record["pid"])
                if abs(p.create_time() - record["create_time"]) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                    leftovers.append(record["pid"])
            except psutil.NoSuchProcess:
                pass
        assert down.returncode == 0, down.stderr
        assert leftovers == [], f"processes of ours left behind: {leftovers}"
        temp_dirs = [state["temp_dir"]] + [j["temp_dir"] for j in state.get("joined", [])]
        assert not any(d in " ".join(p.info["cmdline"] or []) for d in temp_dirs
                       for p in psutil.process_iter(["cmdline"])), "a Ray process of this cluster is still running"


def test_up_prints_how_to_use_the_token_and_keeps_it_private(cluster):
    token = Path(cluster["state"]["token_path"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert f"RAY_AUTH_TOKEN_PATH={token}" in cluster["up"].stdout
    assert token.read_text() not in cluster["up"].stdout + cluster["up"].stderr
    assert cluster["state"]["dashboard"] == f"http://127.0.0.1:{PORTS['dashboard']}"
    assert cluster["state"]["mlflow"] == f"http://127.0.0.1:{PORTS['mlflow']}"


def test_jobs_api_refuses_a_request_without_the_token(cluster):
    url = f"{cluster['state']['dashboard']}/api/jobs/"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, timeout=10, headers={"Authorization": "Bearer not-the-token"}).status_code in (401, 403)
    token = Path(cluster["state"]["token_path"]).read_text()
    assert requests.get(url, timeout=10, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_status_shows_the_node_and_the_mlflow_server(cluster):
    proc = medtune("cluster", "status", "--state-dir", str(cluster["dir"]))
    assert proc.returncode == 0, proc.stderr
    assert f"MLflow {cluster['state']['mlflow']}" in proc.stdout
    assert "alive  CPUs 2" in proc.stdout


def test_submit_smoke_wait_runs_the_study_as_a_job_logging_to_the_cluster_mlflow(cluster):
    proc = medtune("submit", "lr-schedulers", "--smoke", "--set", "methods=[fixed,qlearning]", "--wait",
                   "--state-dir", str(cluster["dir"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    job_id = proc.stdout.split("submitted job ")[1].split()[0]
    assert f"job {job_id} SUCCEEDED" in proc.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster["state"]["mlflow"])
    exp = client.get_experiment_by_name("lr-schedulers")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert sorted(r.data.params["method"] for r in trials) == ["fixed", "qlearning"]
    for run in trials:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "dice")) == [1, 2, 3, 4]
    assert client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")

    # No secret in MLflow params, job logs or reports.
    token = Path(cluster["state"]["token_path"]).read_text()
    listed = medtune("jobs", "list", "--state-dir", str(cluster["dir"]))
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = medtune("jobs", "logs", job_id, "--state-dir", str(cluster["dir"]))
    assert "final Q-table" in logs.stdout
    everything = proc.stdout + logs.stdout + json.dumps([r.data.params for r in trials])
    report_dir = next(Path(cluster["state"]["runs_dir"]).glob("lr-schedulers-*/report"))
    everything += "".join(p.read_text() for p in report_dir.glob("*.txt"))
    assert token not in everything


def test_submit_of_a_bad_spec_exits_2_and_submits_nothing(cluster):
    proc = medtune("submit", "lr-schedulers", "--set", "train.epochs=0", "--state-dir", str(cluster["dir"]))
    assert proc.returncode == 2 and proc.stderr.strip() == "medtune: error: train.epochs=0 must be >= 1"


EPOCHS_KILL = 30


def _journal_updates(session: Path) -> int:
    path = session / "qlearning-journal.jsonl"
    if not path.exists():
        return 0
    best = 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        best = max(best, record.get("table", {}).get("updates", 0))
    return best


def test_driver_killed_mid_run_resumes_on_the_cluster_with_its_qtable(cluster, tmp_path):
    address, mlflow_uri = cluster["state"]["address"], cluster["state"]["mlflow"]
    out = tmp_path / "out"
    env = {**_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": cluster["state"]["token_path"]}
    args = [MEDTUNE, "run", "lr-schedulers", "--smoke", "--output", str(out), "--address", address,
            "--tracking-uri", mlflow_uri, "--set", "name=driver-kill", "--set", "methods=[qlearning]",
            "--set", "seeds=[0,1]", "--set", f"train.epochs={EPOCHS_KILL}"]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, session = time.time() + 240, None
        while time.time() < deadline and driver.poll() is None:
            sessions = list(out.glob("driver-kill-*")) if out.exists() else []
            session = sessions[0] if sessions else None
            if session and _journal_updates(session) >= 3:
                break
            time.sleep(0.5)
        assert session is not None and _journal_updates(session) >= 3, "no Q-updates before the deadline"
        assert driver.poll() is None, "the driver finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    saved = max(
        (json.loads(l)["table"] for l in (session / "qlearning-journal.jsonl").read_text().splitlines()
         if l.strip().endswith("}") and '"table"' in l),
        key=lambda t: t["updates"],
    )
    resumed = subprocess.run([MEDTUNE, "resume", str(session), "--address", address],
                             capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    final = json.loads((session / "qtable.json").read_text())["table"]
    assert final["updates"] > saved["updates"]
    for s in STATES:
        for a in ACTIONS:
            if final["visits"][s][a] == saved["visits"][s][a]:
                assert final["q"][s][a] == saved["q"][s][a]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("driver-kill")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert len(trials) == 2
    for run in trials:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "dice")) == list(range(1, EPOCHS_KILL + 1))


def test_join_adds_this_machine_as_a_worker_node_and_down_stops_it_too(cluster):
    # runs last: the cluster has a second node from here on
    proc = medtune("cluster", "join", cluster["state"]["address"], "--state-dir", str(cluster["dir"]), "--num-cpus", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = medtune("cluster", "status", "--state-dir", str(cluster["dir"]))
    assert status.stdout.count(" alive ") == 2 and "CPUs 1" in status.stdout
    state = json.loads((cluster["dir"] / "state.json").read_text())
    assert len(state["joined"]) == 1 and state["joined"][0]["processes"]  # recorded: the teardown checks `down`
