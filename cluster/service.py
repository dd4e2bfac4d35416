"""A Ray cluster as a service: ``medtune cluster up | down | status | join``.

``up`` starts, on this machine:

* a Ray head (``ray start --head``) with token authentication on: the token is
  generated once (``secrets.token_hex``), kept in ``STATE_DIR/token`` with mode
  0600, and handed to Ray through ``RAY_AUTH_TOKEN_PATH`` (never through an
  argument or an environment value that would show up in ``ps`` or job logs);
  dashboard and jobs API on 127.0.0.1:8265 by default;
* an MLflow tracking server (``mlflow server``: SQLite backend, artifact
  serving) that trials on every node log to.

Every process ``up`` starts is recorded in ``STATE_DIR/state.json`` (pid and
creation time, so a recycled pid is never mistaken for ours); ``down`` stops
exactly those and their children, nothing else. ``join`` adds this machine to
a cluster as a worker node and records its processes the same way.

Everything binds to loopback unless ``--host`` names another address, which
also needs ``--allow-remote``; binding beyond loopback without authentication
is refused unless explicitly forced, and warned about loudly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.errors import InputError

DEFAULT_STATE_DIR = Path(os.environ.get("MEDTUNE_CLUSTER_DIR", "~/.medtune/cluster")).expanduser()
STATE_FILE = "state.json"
TOKEN_FILE = "token"


def log(msg: str) -> None:
    print(f"[medtune] {msg}", flush=True)


def warn(msg: str) -> None:
    print(f"[medtune] WARNING: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class UpConfig:
    """What ``medtune cluster up`` starts and where."""

    state_dir: Path = DEFAULT_STATE_DIR
    host: str = "127.0.0.1"
    port: int = 6379
    dashboard_port: int = 8265
    mlflow_port: int = 5000
    num_cpus: int | None = None
    num_gpus: int | None = None
    auth: bool = True
    allow_remote: bool = False

    def __post_init__(self) -> None:
        for name in ("port", "dashboard_port", "mlflow_port"):
            value = getattr(self, name)
            if not 1 <= value <= 65535:
                raise InputError(f"--{name.replace('_', '-')}={value} is not a TCP port; use 1..65535")
        if len({self.port, self.dashboard_port, self.mlflow_port}) < 3:
            raise InputError(
                f"--port={self.port}, --dashboard-port={self.dashboard_port} and --mlflow-port={self.mlflow_port} "
                "must differ"
            )
        if not is_loopback(self.host) and not self.allow_remote:
            raise InputError(
                f"--host={self.host!r} would expose the dashboard, the jobs API and MLflow beyond this machine; "
                "add --allow-remote if that is what you want"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------- state


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_path(state_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cluster state {str(path)!r} is damaged ({exc}); stop leftover processes by hand and delete it")


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def ensure_token(state_dir: Path) -> Path:
    """The cluster's token file (0600), generated once."""
    path = Path(state_dir) / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.chmod(path, 0o600)
    return path


def auth_env(state: dict[str, Any] | None, token_file: str | None = None) -> dict[str, str]:
    """Environment that lets a Ray client (driver, JobSubmissionClient, ``ray start``) authenticate.

    Callers also drop ``RAY_AUTH_TOKEN``: Ray prefers it over the token file, so a stray value would
    silently replace the cluster's token (and travel to every worker and job).
    """
    path = token_file or (state or {}).get("token_path")
    if state is not None and not state.get("auth", True):
        return {"RAY_AUTH_MODE": "disabled"}
    if not path:
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def apply_auth_env(state: dict[str, Any] | None, token_file: str | None = None) -> None:
    """Authenticate this process's Ray clients: set the variables and make Ray re-read them."""
    env = auth_env(state, token_file)
    if not env:
        return
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(env)
    try:  # Ray caches its config and the token at first use; refresh both
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except ImportError:  # an older Ray without token authentication
        pass


# ---------------------------------------------------------------------------- processes


def _ours(marker: str) -> list[dict[str, Any]]:
    """Processes whose command line mentions ``marker`` (the cluster's private temp dir)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                found.append({"pid": p.info["pid"], "create_time": p.info["create_time"]})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _alive(record: dict[str, Any]):
    """The psutil process of ``record`` if it is still the same process, else None."""
    import psutil

    try:
        p = psutil.Process(record["pid"])
        if abs(p.create_time() - record["create_time"]) < 1e-3:
            return p
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def stop_processes(records: list[dict[str, Any]], timeout: float = 8.0) -> int:
    """Terminate the recorded processes and their children (SIGTERM, then SIGKILL); returns how many."""
    import psutil

    procs = []
    for record in records:
        p = _alive(record)
        if p is None:
            continue
        try:
            procs.extend(p.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        procs.append(p)
    unique = {p.pid: p for p in procs}
    for p in unique.values():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(unique.values()), timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(unique)


def _ray_bin() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _run_ray_start(args: list[str], env: dict[str, str], log_file: Path, temp_dir: str) -> None:
    with open(log_file, "ab") as out:
        proc = subprocess.run([_ray_bin(), "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=180)
    if proc.returncode != 0:
        stop_processes(_ours(temp_dir))  # whatever it did start is ours: leave nothing behind
        shutil.rmtree(temp_dir, ignore_errors=True)
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"`ray start` failed ({tail[0][:200]}); see {log_file}")


def _wait_http(url: str, timeout: float, alive: subprocess.Popen | None = None, ok: tuple[int, ...] = (200,)) -> bool:
    """Whether ``url`` answers with a status in ``ok`` within ``timeout``; gives up early when ``alive`` exits."""
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if alive is not None and alive.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=2).status_code in ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


# ---------------------------------------------------------------------------- commands


def cluster_up(cfg: UpConfig) -> dict[str, Any]:
    """Start the head and the MLflow server; returns the recorded state."""
    state_dir = _state_dir(cfg.state_dir)
    old = read_state(state_dir)
    if old and any(_alive(r) for r in old.get("processes", [])):
        raise InputError(f"a medtune cluster is already up ({old['address']}); run `medtune cluster down` first")
    if not is_loopback(cfg.host):
        warn(f"binding the dashboard, the jobs API and MLflow to {cfg.host}: anyone who can reach it can reach them")
        if not cfg.auth:
            warn("AUTHENTICATION IS OFF on a non-loopback address: anyone on the network can run code on this cluster")
    token_path = ensure_token(state_dir) if cfg.auth else None
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env.update(auth_env({"auth": cfg.auth, "token_path": str(token_path) if token_path else None}))
    # A short private temp dir: Ray's socket paths must stay under ~100 characters, and every process
    # of this cluster names it on its command line, which is how `down` finds exactly ours.
    temp_dir = tempfile.mkdtemp(prefix="mtray-", dir="/tmp")
    args = [
        "--head", f"--port={cfg.port}", f"--dashboard-host={cfg.host}", f"--dashboard-port={cfg.dashboard_port}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--node-ip-address={_node_ip(cfg.host)}",
        # free ports for the node's agents and the client server: another Ray on this machine may hold the defaults
        f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
        f"--ray-client-server-port={_free_port()}",
    ]
    if cfg.num_cpus is not None:
        args.append(f"--num-cpus={cfg.num_cpus}")
    if cfg.num_gpus is not None:
        args.append(f"--num-gpus={cfg.num_gpus}")
    log(f"starting the Ray head (dashboard and jobs API on {cfg.host}:{cfg.dashboard_port}) ...")
    _run_ray_start(args, env, state_dir / "ray-start.log", temp_dir)
    processes = _ours(temp_dir)
    state: dict[str, Any] = {
        "role": "head",
        "address": f"{_node_ip(cfg.host)}:{cfg.port}",
        "dashboard": f"http://{_url_host(cfg.host)}:{cfg.dashboard_port}",
        "mlflow": f"http://{_url_host(cfg.host)}:{cfg.mlflow_port}",
        "auth": cfg.auth,
        "token_path": str(token_path) if token_path else None,
        "temp_dir": temp_dir,
        "python": sys.executable,
        "runs_dir": str(state_dir / "runs"),
        "processes": processes,
    }
    write_state(state_dir, state)  # recorded before anything else can fail, so `down` can clean up

    log(f"starting the MLflow server on {cfg.host}:{cfg.mlflow_port} ...")
    mlflow_log = open(state_dir / "mlflow.log", "ab")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}",
            "--artifacts-destination", str(state_dir / "mlartifacts"),
            "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "1",
        ],
        stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy(),
    )
    import psutil

    state["processes"].append({"pid": server.pid, "create_time": psutil.Process(server.pid).create_time()})
    write_state(state_dir, state)
    if not _wait_http(f"{state['mlflow']}/health", timeout=90, alive=server) or server.poll() is not None:
        raise InputError(
            f"the MLflow server did not start on {state['mlflow']} (port taken?); see {state_dir / 'mlflow.log'} "
            "and run `medtune cluster down` to stop the Ray head"
        )
    if not _wait_http(f"{state['dashboard']}/api/version", timeout=60, ok=(200, 401)):
        raise InputError(f"the Ray dashboard did not answer on {state['dashboard']} within 60 s; see {temp_dir}")
    return state


def _state_dir(path: str | Path) -> Path:
    """The state folder, created private (0700); one line and exit 2 when it cannot be."""
    state_dir = Path(path).expanduser()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise InputError(f"--state-dir {str(state_dir)!r} cannot be used ({exc.strerror}); give a writable folder") from None
    return state_dir


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_ip(host: str) -> str:
    return "127.0.0.1" if is_loopback(host) else host


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "localhost") else host


def print_up(state: dict[str, Any], state_dir: Path) -> None:
    log(f"Ray head:      {state['address']}   (dashboard and jobs API: {state['dashboard']})")
    log(f"MLflow server: {state['mlflow']}")
    if state["auth"]:
        log(f"token:         {state['token_path']} (mode 0600); clients need it, e.g.")
        log(f"  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={state['token_path']}")
    else:
        warn("token authentication is OFF")
    log("submit a study:  medtune submit lr-schedulers --smoke --wait")
    token_arg = f" --token-file {state['token_path']}" if state.get("token_path") else ""
    log(f"add a worker:    medtune cluster join {state['address']}{token_arg}   (other machines: up with --host)")
    log(f"stop everything: medtune cluster down" + ("" if state_dir == DEFAULT_STATE_DIR else f" --state-dir {state_dir}"))


def cluster_down(state_dir: Path) -> int:
    """Stop exactly the processes ``up`` / ``join`` recorded; returns how many were stopped."""
    state = read_state(state_dir)
    if state is None:
        raise InputError(f"no medtune cluster recorded in {str(state_dir)!r}; nothing to stop")
    stopped = stop_processes(state.get("processes", []))
    for extra in state.get("joined", []):
        stopped += stop_processes(extra.get("processes", []))
    state_path(state_dir).unlink()
    for temp_dir in [state.get("temp_dir")] + [j.get("temp_dir") for j in state.get("joined", [])]:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return stopped


def cluster_join(address: str, state_dir: Path, token_file: str | None, num_cpus: int | None = None) -> dict[str, Any]:
    """Add this machine to the cluster at ``address`` as a worker node."""
    state_dir = _state_dir(state_dir)
    head_state = read_state(state_dir)
    own_head = head_state is not None and head_state.get("address") == address
    if head_state is not None and not own_head:
        raise InputError(
            f"--state-dir {str(state_dir)!r} already records the cluster at {head_state.get('address')}; "
            f"give another --state-dir to join {address}"
        )
    token = token_file or (head_state.get("token_path") if own_head else None)
    if token and not Path(token).is_file():
        raise InputError(f"--token-file {token!r} does not exist; copy the head's token file here (mode 0600)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env.update(auth_env(None, token))
    temp_dir = tempfile.mkdtemp(prefix="mtray-", dir="/tmp")
    # Free ports for the node's agents, so a worker can also join from the head's own machine.
    args = [f"--address={address}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    _run_ray_start(args, env, state_dir / "ray-join.log", temp_dir)
    record = {"address": address, "temp_dir": temp_dir, "processes": _ours(temp_dir)}
    if own_head:  # a worker on the head's own machine: `down` stops it too
        head_state.setdefault("joined", []).append(record)
        write_state(state_dir, head_state)
        return head_state
    state = {"role": "worker", "address": address, "auth": bool(token), "token_path": token, **record}
    write_state(state_dir, state)
    return state


def cluster_status(state_dir: Path, address: str | None = None) -> dict[str, Any]:
    """Nodes, CPUs/GPUs, jobs and the MLflow URL of the recorded (or given) cluster."""
    import ray

    state = read_state(state_dir) or {}
    if address and address != state.get("address"):
        state = {}  # another cluster: none of the recorded token, jobs API or MLflow URL applies
    address = address or state.get("address")
    if not address:
        raise InputError(f"no medtune cluster recorded in {str(state_dir)!r}; run `medtune cluster up` or give --address")
    apply_auth_env(state)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # ConnectionError, auth errors, ...
        raise InputError(f"cannot reach the Ray cluster at {address} ({str(exc).splitlines()[0][:160]})") from None
    try:
        nodes = [
            {"node_id": n["NodeID"][:12], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
             "cpus": n["Resources"].get("CPU", 0), "gpus": n["Resources"].get("GPU", 0)}
            for n in ray.nodes()
        ]
    finally:
        ray.shutdown()
    jobs = []
    if state.get("dashboard"):
        from ray.job_submission import JobSubmissionClient

        try:
            client = JobSubmissionClient(state["dashboard"])
            listed = client.list_jobs()
        except Exception as exc:
            raise InputError(f"the jobs API at {state['dashboard']} does not answer ({str(exc).splitlines()[0][:160]})") from None
        jobs = [
            {"id": j.submission_id, "status": str(j.status).split(".")[-1], "entrypoint": j.entrypoint[:100]}
            for j in listed
            if j.submission_id  # submitted jobs, not drivers that merely connected (like this one)
        ]
    return {"address": address, "nodes": nodes, "jobs": jobs, "mlflow": state.get("mlflow"), "dashboard": state.get("dashboard")}
