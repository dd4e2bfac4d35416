"""`medtune cluster up` / `submit` / `down` with real processes, and the faults a cluster run must survive.

One cluster (a Ray head with token authentication and an MLflow server with
MLflow's login, on ports of their own) serves the tests of this module; the
teardown stops it and checks that no process of ours is left, neither one it
recorded nor one the listener audit saw, and that none of its ports listens.
"""

from __future__ import annotations

import configparser
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

from medtune.cluster.ops.service import is_loopback
from medtune.searchers.qlearning_agent import ACTIONS, STATES
from tests.helpers_net import listen_port

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
SEEN_PIDS: list[dict] = []  # every process of the cluster the listener audit saw; the teardown checks them too


PORTS = {"port": listen_port(), "dashboard": listen_port(), "mlflow": listen_port()}


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                "MEDTUNE_CLUSTER_DIR"):
        env.pop(key, None)
    env.update(extra)
    return env


def medtune(*args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([MEDTUNE, *args], capture_output=True, text=True, timeout=timeout, env=_env(**env))


def _secrets(state: dict) -> dict[str, str]:
    """The cluster's Ray token, MLflow admin password and trials password."""
    config = configparser.ConfigParser()
    config.read(state["mlflow_auth"])
    trials = dict(line.split("=", 1) for line in Path(state["mlflow_credentials"]).read_text().splitlines())
    return {"ray token": Path(state["token_path"]).read_text().strip(),
            "mlflow admin password": config["mlflow"]["admin_password"],
            "mlflow trials password": trials["MLFLOW_TRACKING_PASSWORD"]}


def _login(state: dict, who: str = "trials") -> tuple[str, str]:
    if who == "admin":
        config = configparser.ConfigParser()
        config.read(state["mlflow_auth"])
        return config["mlflow"]["admin_username"], config["mlflow"]["admin_password"]
    trials = dict(line.split("=", 1) for line in Path(state["mlflow_credentials"]).read_text().splitlines())
    return trials["MLFLOW_TRACKING_USERNAME"], trials["MLFLOW_TRACKING_PASSWORD"]


def _leaks(secrets: dict[str, str], text: str) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("cluster")
    up = medtune(
        "cluster", "up", "--state-dir", str(state_dir), "--port", str(PORTS["port"]),
        "--dashboard-port", str(PORTS["dashboard"]), "--mlflow-port", str(PORTS["mlflow"]), "--num-cpus", "2",
    )
    state = json.loads((state_dir / "state.json").read_text()) if (state_dir / "state.json").exists() else None
    refused: list[subprocess.Popen] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        refused = _refused_clients(state, state_dir.parent)
        yield {"dir": state_dir, "state": state, "up": up, "refused": refused}
    finally:
        for proc in refused:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if (state_dir / "state.json").exists():  # `join` adds its processes to the record
            state = json.loads((state_dir / "state.json").read_text())
        down = medtune("cluster", "down", "--state-dir", str(state_dir))
        import psutil

        leftovers = []
        state = state or {}
        records = state.get("processes", []) + [r for j in state.get("joined", []) for r in j["processes"]]
        records += SEEN_PIDS  # trials, job drivers, MLflow's workers: children of the recorded ones
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
        ports = {PORTS["port"], PORTS["dashboard"], PORTS["mlflow"]}
        still = [c.laddr for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
        assert still == [], f"ports of the cluster still listening after down: {still}"


def test_up_prints_how_to_use_the_token_and_keeps_it_private(cluster):
    state = cluster["state"]
    token = Path(state["token_path"])
    assert f"RAY_AUTH_TOKEN_PATH={token}" in cluster["up"].stdout
    assert f". {state['mlflow_credentials']}" in cluster["up"].stdout  # how other clients get the MLflow login
    assert state["dashboard"] == f"http://127.0.0.1:{PORTS['dashboard']}"
    assert state["mlflow"] == f"http://127.0.0.1:{PORTS['mlflow']}"
    for path in (token, Path(state["mlflow_auth"]), Path(state["mlflow_credentials"]),
                 cluster["dir"] / "mlflow-auth.db"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(cluster["dir"].stat().st_mode) == 0o700

    # No secret on a command line, in the output of `up`, in the recorded state or in MLflow's log.
    import psutil

    secrets = _secrets(state)
    assert len(set(secrets.values())) == 3 and all(len(v) >= 24 for v in secrets.values())
    command_lines = " ".join(" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))
    assert _leaks(secrets, command_lines) == []
    shown = cluster["up"].stdout + cluster["up"].stderr + (cluster["dir"] / "state.json").read_text()
    assert _leaks(secrets, shown + (cluster["dir"] / "mlflow.log").read_text()) == []


def test_mlflow_rest_api_needs_the_login(cluster):
    state = cluster["state"]
    url = f"{state['mlflow']}/api/2.0/mlflow/experiments/search"
    user, password = _login(state)
    assert requests.get(url, params={"max_results": 1}, timeout=30).status_code == 401
    assert requests.get(url, params={"max_results": 1}, timeout=30, auth=(user, "not-the-password")).status_code == 401
    assert requests.get(url, params={"max_results": 1}, timeout=30, auth=(user, password)).status_code == 200
    assert requests.get(url, params={"max_results": 1}, timeout=30, auth=_login(state, "admin")).status_code == 200
    assert requests.get(state["mlflow"] + "/health", timeout=30).status_code == 200  # health stays open
    # The trials user is no admin: it cannot create users.
    create = requests.post(f"{state['mlflow']}/api/2.0/mlflow/users/create", timeout=30, auth=(user, password),
                           json={"username": "intruder", "password": "a-long-enough-password"})
    assert create.status_code == 403


def _refused_clients(state: dict, folder: Path) -> list[subprocess.Popen]:
    """Two Ray clients of the cluster, one sending no token and one a wrong one, started at once.

    Each spends about 20 s in Ray's connection retries, waiting: the cluster fixture starts them as soon as the
    cluster is up, so they wait while the next tests run, and the test below collects them.
    """
    script = (
        "import ray\n"
        "try:\n"
        f"    ray.init(address={state['address']!r}, logging_level='ERROR')\n"
        "    print('CONNECTED', len(ray.nodes()))\n"
        "except Exception as exc:\n"
        "    print('REFUSED', type(exc).__name__)\n"
    )
    wrong = folder / "wrong-token"
    wrong.write_text("0" * 64)
    return [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(RAY_AUTH_MODE=mode, RAY_AUTH_TOKEN_PATH=str(wrong),
                                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
            for mode in ("disabled", "token")]


def test_trials_get_the_mlflow_login_from_the_environment_of_the_head(cluster):
    # A task on the cluster (where trials run) logs in with what its environment holds; it returns the status only.
    state = cluster["state"]
    script = (
        "import os, ray, requests\n"
        f"ray.init(address={state['address']!r}, logging_level='ERROR')\n"
        "@ray.remote\n"
        "def probe(url):\n"
        "    user, password = os.environ.get('MLFLOW_TRACKING_USERNAME'), os.environ.get('MLFLOW_TRACKING_PASSWORD')\n"
        "    code = requests.get(url, params={'max_results': 1}, auth=(user, password) if user else None).status_code\n"
        "    return user, code\n"
        f"print('PROBE', *ray.get(probe.remote({state['mlflow'] + '/api/2.0/mlflow/experiments/search'!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=state["token_path"],
                                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
    assert "PROBE medtune-trials 200" in proc.stdout, proc.stdout + proc.stderr[-2000:]


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
    assert "auth: Ray token on, MLflow login on" in proc.stdout
    assert "alive  CPUs 2" in proc.stdout


def _command_lines(processes: list) -> list[str]:
    """The command lines of the processes still alive (a job's worker may exit while they are read)."""
    import psutil

    lines = []
    for p in processes:
        try:
            lines.append(" ".join(p.cmdline()))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return lines


def _cluster_processes(state: dict) -> list:
    """Every live process medtune started for this cluster: the recorded ones and all their descendants."""
    import psutil

    records = state.get("processes", []) + [r for j in state.get("joined", []) for r in j["processes"]]
    found = {}
    for record in records:
        try:
            p = psutil.Process(record["pid"])
            if abs(p.create_time() - record["create_time"]) >= 1e-3:
                continue
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = q
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _refuses_without_credentials(ip: str, port: int) -> bool:
    """An HTTP request without credentials gets 401/403 (MLflow's login, Ray's token on the dashboard and agents)."""
    try:
        return requests.get(f"http://{ip}:{port}/", timeout=10).status_code in (401, 403)
    except requests.RequestException:
        return False


def listener_audit(state: dict) -> tuple[list[str], list[str]]:
    """``(every listening TCP socket of the cluster's processes, the ones neither on loopback nor behind a login)``."""
    import psutil

    seen, bad = [], []
    for p in _cluster_processes(state):
        try:
            sockets = [c for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
            name = " ".join(p.cmdline()[:3])[:100] or p.name()
            SEEN_PIDS.append({"pid": p.pid, "create_time": p.create_time()})
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for c in sockets:
            where = f"{c.laddr.ip}:{c.laddr.port} ({name}, pid {p.pid})"
            seen.append(where)
            if not is_loopback(c.laddr.ip) and not _refuses_without_credentials(c.laddr.ip, c.laddr.port):
                bad.append(where)
    return seen, bad


def _running_trial(state: dict, experiment: str) -> bool:
    auth, base = _login(state, "admin"), f"{state['mlflow']}/api/2.0/mlflow"
    exp = requests.get(f"{base}/experiments/get-by-name", params={"experiment_name": experiment}, auth=auth, timeout=30)
    if exp.status_code != 200:
        return False
    found = requests.post(f"{base}/runs/search", auth=auth, timeout=30, json={
        "experiment_ids": [exp.json()["experiment"]["experiment_id"]], "max_results": 5,
        "filter": "attributes.status = 'RUNNING' and tags.`medtune.kind` = 'trial'"})
    return found.status_code == 200 and bool(found.json().get("runs"))


def test_submit_smoke_wait_runs_the_study_as_a_job_logging_to_the_cluster_mlflow(cluster):
    state = cluster["state"]
    submit = subprocess.Popen(
        [MEDTUNE, "submit", "lr-schedulers", "--smoke", "--set", "methods=[fixed,qlearning]", "--wait",
         "--state-dir", str(cluster["dir"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        # The listener audit, while the job's trials run: every listening socket of every process medtune
        # started (head, agents, MLflow and its workers, the job's driver, the trials) is on loopback or
        # refuses a request without credentials.
        deadline = time.time() + 300
        while time.time() < deadline and submit.poll() is None and not _running_trial(state, "lr-schedulers"):
            time.sleep(0.25)
        assert submit.poll() is None, "the job ended before its trials were seen running"
        assert _running_trial(state, "lr-schedulers"), "no trial running within 300 s"
        listeners, exposed = listener_audit(state)
        print("\nlisteners of the cluster while a job runs:", *listeners, sep="\n  ")  # shown with -s
        assert exposed == [], f"listening neither on loopback nor behind authentication: {exposed}"
        commands = _command_lines(_cluster_processes(state))
        assert any("medtune.cluster.cli.main run" in c for c in commands), "the job's driver is not among our processes"
        assert _leaks(_secrets(state), " ".join(commands)) == []  # no secret on a command line of the running job
        assert any(f":{PORTS['mlflow']} " in f"{w} " for w in listeners) and len(listeners) >= 8, listeners
        stdout, stderr = submit.communicate(timeout=600)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 0, stdout[-3000:] + stderr[-2000:]
    job_id = stdout.split("submitted job ")[1].split()[0]
    assert f"job {job_id} SUCCEEDED" in stdout

    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = _login(state, "admin")
    try:
        client = MlflowClient(state["mlflow"])
        exp = client.get_experiment_by_name("lr-schedulers")
        trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
        assert sorted(r.data.params["method"] for r in trials) == ["fixed", "qlearning"]
        for run in trials:
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "dice")) == [1, 2, 3, 4]
        summaries = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
        assert summaries
        # Every artifact of every run (the summary's comparison, plots and HTML report included), as text.
        artifacts = ""
        for run in trials + summaries:
            folder = Path(client.download_artifacts(run.info.run_id, "", str(cluster["dir"].parent / run.info.run_id)))
            artifacts += "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())
        assert "report.html" in " ".join(a.path for a in client.list_artifacts(summaries[0].info.run_id))
        records = json.dumps([[r.data.params, r.data.tags, r.data.metrics] for r in trials + summaries])
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)

    # No secret in MLflow params, tags, artifacts, job logs, reports, Ray's own logs or the session folders.
    listed = medtune("jobs", "list", "--state-dir", str(cluster["dir"]))
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = medtune("jobs", "logs", job_id, "--state-dir", str(cluster["dir"]))
    assert "final Q-table" in logs.stdout
    everything = stdout + stderr + logs.stdout + records + artifacts + (cluster["dir"] / "mlflow.log").read_text()
    for root in (Path(state["temp_dir"]), Path(state["runs_dir"])):
        everything += "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*")
                              if p.is_file() and not p.is_symlink() and p.stat().st_size < 50_000_000)
    assert _leaks(_secrets(state), everything) == []


def test_ui_report_and_dashboard_use_the_login_of_the_recorded_cluster(cluster):
    state, here = cluster["state"], {"MEDTUNE_CLUSTER_DIR": str(cluster["dir"])}
    ui = medtune("ui", "--tracking-uri", state["mlflow"], **here)
    assert ui.returncode == 0, ui.stderr
    assert "serves its own UI" in ui.stdout and state["mlflow_auth"] in ui.stdout
    assert _leaks(_secrets(state), ui.stdout + ui.stderr) == []
    refused = medtune("ui", "--tracking-uri", state["mlflow"])  # another state folder: no login
    assert refused.returncode == 2 and "refuses requests without a login" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    report = medtune("report", "lr-schedulers", "--tracking-uri", state["mlflow"], **here)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "qlearning" in report.stdout

    port = listen_port()
    dash = subprocess.Popen([MEDTUNE, "dashboard", "--tracking-uri", state["mlflow"], "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(**here))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and dash.poll() is None:
            try:
                if requests.get(url + "/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        listing = requests.post(url + "/_dash-update-component", timeout=60, json={
            "output": "..experiment.options...experiment.value..",
            "outputs": [{"id": "experiment", "property": "options"}, {"id": "experiment", "property": "value"}],
            "inputs": [{"id": "url", "property": "search", "value": ""},
                       {"id": "tick", "property": "n_intervals", "value": None}],
            "state": [{"id": "experiment", "property": "value", "value": None}],
            "changedPropIds": ["url.search"]})
        assert listing.status_code == 200, listing.text[:500]
        assert "lr-schedulers" in listing.text  # read from the server, with the trials login
    finally:
        dash.terminate()
        dash.wait(timeout=30)


def test_ray_client_without_the_token_cannot_connect_to_the_gcs(cluster):
    for proc in cluster["refused"]:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "CONNECTED" not in stdout and "REFUSED" in stdout, stdout + stderr[-2000:]
        assert "Unauthenticated" in stderr or "AuthenticationError" in stdout, stderr[-2000:]


def test_submit_of_a_bad_spec_exits_2_and_submits_nothing(cluster):
    proc = medtune("submit", "lr-schedulers", "--set", "train.epochs=0", "--state-dir", str(cluster["dir"]))
    assert proc.returncode == 2 and proc.stderr.strip() == "medtune: error: train.epochs=0 must be >= 1"


EPOCHS_KILL = 12


def _journal_table(session: Path) -> dict | None:
    """The qlearning table the journal holds (replayed, read-only), or None before the journal exists."""
    from medtune.searchers.qlearning_scheduler import replay_journal

    path = session / "qlearning-journal.jsonl"
    return replay_journal(path)["table"] if path.exists() else None


def _journal_updates(session: Path) -> int:
    table = _journal_table(session)
    return table["updates"] if table else 0


def test_driver_killed_mid_run_resumes_on_the_cluster_with_its_qtable(cluster, tmp_path, monkeypatch):
    address, mlflow_uri = cluster["state"]["address"], cluster["state"]["mlflow"]
    out = tmp_path / "out"
    # The token as docs/tutorials/cluster.md says; the MLflow login comes from the recorded cluster
    # (MEDTUNE_CLUSTER_DIR).
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=cluster["state"]["token_path"],
               MEDTUNE_CLUSTER_DIR=str(cluster["dir"]))
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
    saved = _journal_table(session)
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

    user, password = _login(cluster["state"])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("driver-kill")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert len(trials) == 2
    for run in trials:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "dice"))
        assert steps == list(range(1, EPOCHS_KILL + 1))


OWN_SPEC = """name: own-on-cluster
trainable: user_training_{tag}:train
metric: accuracy
loss_metric: val_loss
methods: [fixed, qlearning]
seeds: [0]
epochs: 3
min_lr: 0.0001
max_lr: 0.5
qlearning: {{patience: 1, cooldown: 1}}
"""


def test_submit_ships_a_users_own_trainable_to_a_cluster_that_never_saw_it(cluster, tmp_path, monkeypatch):
    """``medtune submit my.yaml --wait`` from a folder the cluster's working directory does not contain: the
    job's code travels with it (Ray's runtime environment), and MLflow on the cluster holds every trial in the
    user's own metric."""
    folder = tmp_path / "user-project"
    folder.mkdir()
    tag = tmp_path.name.replace("-", "_")[-20:]  # a module name no process on the cluster has imported
    example = Path(__file__).resolve().parents[1] / "examples" / "own_training.py"
    (folder / f"user_training_{tag}.py").write_text(example.read_text())
    (folder / "my.yaml").write_text(OWN_SPEC.format(tag=tag))
    proc = subprocess.run([MEDTUNE, "submit", "my.yaml", "--wait", "--state-dir", str(cluster["dir"])],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "SUCCEEDED" in proc.stdout

    from mlflow.tracking import MlflowClient

    user, password = _login(cluster["state"], "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(cluster["state"]["mlflow"])
    exp = client.get_experiment_by_name("own-on-cluster")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert sorted(r.data.params["method"] for r in trials) == ["fixed", "qlearning"]
    for run in trials:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "accuracy")) == [1, 2, 3]


def test_join_adds_this_machine_as_a_worker_node_and_down_stops_it_too(cluster):
    # the cluster has a second node from here on (only the up/down cycles below run after it)
    proc = medtune("cluster", "join", cluster["state"]["address"], "--state-dir", str(cluster["dir"]), "--num-cpus",
                   "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = medtune("cluster", "status", "--state-dir", str(cluster["dir"]))
    assert status.stdout.count(" alive ") == 2 and "CPUs 1" in status.stdout
    state = json.loads((cluster["dir"] / "state.json").read_text())
    assert len(state["joined"]) == 1 and state["joined"][0]["processes"]  # recorded: the teardown checks `down`
    assert status.stdout.count(" 127.0.0.1 ") == 2  # the worker node is on loopback too
    _, exposed = listener_audit(state)
    assert exposed == [], f"listening neither on loopback nor behind authentication: {exposed}"


def _still_running(records: list[dict]) -> list[int]:
    """The pids of ``records`` still running (the same process, not a recycled pid)."""
    import psutil

    alive = []
    for record in records:
        try:
            p = psutil.Process(record["pid"])
            if abs(p.create_time() - record["create_time"]) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(record["pid"])
        except psutil.NoSuchProcess:
            pass
    return alive


def test_down_and_up_again_on_the_same_state_folder_work_every_time(cluster):
    """Runs last. `down`, `up`, `down`, `up` on the fixture's state folder (three `up`s in all, the teardown's
    `down` ends the third): the token, the credentials and MLflow's user store are kept, each `up` succeeds
    without a warning, the trials login of the first `up` still works and what it stored is still there."""
    import psutil

    state_dir = cluster["dir"]
    assert "Warning" not in cluster["up"].stderr, cluster["up"].stderr
    kept = {name: (state_dir / name).read_text() for name in ("token", "mlflow-auth.ini", "mlflow-credentials")}
    login = _login(cluster["state"])
    made = requests.post(f"{cluster['state']['mlflow']}/api/2.0/mlflow/experiments/create", auth=login, timeout=60,
                         json={"name": "kept-across-up"})
    assert made.status_code == 200, made.text[:300]
    for _ in range(2):
        state = json.loads((state_dir / "state.json").read_text())
        records = state["processes"] + [r for j in state.get("joined", []) for r in j["processes"]]
        down = medtune("cluster", "down", "--state-dir", str(state_dir))
        assert down.returncode == 0, down.stdout + down.stderr
        assert _still_running(records) == [], "processes of ours left behind by down"
        ports = set(PORTS.values())
        assert [c.laddr for c in psutil.net_connections("inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port in ports] == []
        up = medtune("cluster", "up", "--state-dir", str(state_dir), "--port", str(PORTS["port"]),
                     "--dashboard-port", str(PORTS["dashboard"]), "--mlflow-port", str(PORTS["mlflow"]),
                     "--num-cpus", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Warning" not in up.stderr, up.stderr
        assert {name: (state_dir / name).read_text() for name in kept} == kept
        state = json.loads((state_dir / "state.json").read_text())
        found = requests.get(f"{state['mlflow']}/api/2.0/mlflow/experiments/get-by-name", auth=login, timeout=60,
                             params={"experiment_name": "kept-across-up"})
        assert found.status_code == 200, found.text[:300]  # the trials user, its grant and the store all kept
        token = Path(state["token_path"]).read_text()
        assert requests.get(f"{state['dashboard']}/api/jobs/", timeout=30).status_code == 401
        assert requests.get(f"{state['dashboard']}/api/jobs/", timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).status_code == 200  # the same token
