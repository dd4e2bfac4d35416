"""A Ray cluster as a service: ``medtune cluster up | down | status | join``.

``up`` starts, on this machine:

* a Ray head (``ray start --head``) with token authentication on: the token is
  generated once (``secrets.token_hex``), kept in ``STATE_DIR/token`` with mode
  0600, and handed to Ray through ``RAY_AUTH_TOKEN_PATH`` (never through an
  argument or an environment value that would show up in ``ps`` or job logs);
  dashboard and jobs API on 127.0.0.1:8265 by default;
* an MLflow tracking server (``mlflow server``: SQLite backend, artifact
  serving) that trials on every node log to, with MLflow's own login on
  (:mod:`medtune.cluster.ops.mlflow_auth`): an admin user and a trials user, their
  generated passwords kept mode 0600 in ``STATE_DIR``. The Ray head gets the
  trials user's ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` in
  its environment, which every worker and job driver it starts inherits.

``--no-auth`` turns off both Ray's token and MLflow's login.

On loopback (the default) Ray is told to use 127.0.0.1 as the node's address
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's switch for single-machine
clusters), so that every listener of the cluster, GCS, raylet, agents and
metrics included, binds to loopback; clients of the cluster get the same
switch (:func:`use_loopback_ip`).

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
import logging
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

from medtune.cluster.ops import mlflow_auth
from medtune.errors import InputError
from medtune.util import secret_file

__all__ = [
    "DASHBOARD_WAIT_S", "DEFAULT_STATE_DIR", "LOOPBACK_ENV", "STATE_FILE", "TOKEN_FILE", "UpConfig",
    "apply_auth_env", "apply_mlflow_credentials", "auth_env", "auth_status", "cluster_down", "cluster_join",
    "cluster_status", "cluster_up", "ensure_token", "is_loopback", "log", "mlflow_login_hint", "print_up",
    "read_state", "state_path", "stop_processes", "use_loopback_ip", "warn", "write_state",
]

DEFAULT_STATE_DIR = Path(os.environ.get("MEDTUNE_CLUSTER_DIR", "~/.medtune/cluster")).expanduser()
STATE_FILE = "state.json"
TOKEN_FILE = "token"
# Ray's switch that makes a node (and a client) use 127.0.0.1 as its own address instead of the machine's IP.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DASHBOARD_WAIT_S = 120  # seconds `cluster up` waits for the Ray dashboard: a few when idle, far more on a busy head


_log = logging.getLogger(__name__)


def log(msg: str) -> None:
    _log.info("%s", msg)


def warn(msg: str) -> None:
    _log.warning("%s", msg)


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
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


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
        raise InputError(
            f"cluster state {str(path)!r} is damaged ({exc}); stop leftover processes by hand and delete it") from exc


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = state_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def ensure_token(state_dir: Path) -> Path:
    """The cluster's token file (0600), generated once."""
    return secret_file(Path(state_dir) / TOKEN_FILE, lambda: secrets.token_hex(32))


def auth_env(state: dict[str, Any] | None, token_file: str | None = None) -> dict[str, str]:
    """Environment that lets a Ray client (driver, JobSubmissionClient, ``ray start``) authenticate.

    Callers also drop ``RAY_AUTH_TOKEN``: Ray prefers it over the token file, so a stray value would
    silently replace the cluster's token (and travel to every worker and job).
    """
    path = token_file or (state or {}).get("token_path")
    loopback = {LOOPBACK_ENV: "0"} if (state or {}).get("loopback") else {}
    if state is not None and not state.get("auth", True):
        return {"RAY_AUTH_MODE": "disabled", **loopback}
    if not path:
        return loopback
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path), **loopback}


def apply_auth_env(state: dict[str, Any] | None, token_file: str | None = None) -> None:
    """Authenticate this process's Ray clients: set the variables and make Ray re-read them."""
    env = auth_env(state, token_file)
    if not env:
        return
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(env)
    if env.get(LOOPBACK_ENV) == "0":
        _loopback_ip()
    try:  # Ray caches its config and the token at first use; refresh both
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # compiled, no stub

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except ImportError:  # an older Ray without token authentication
        pass


def use_loopback_ip(address: str | None) -> None:
    """When the cluster at ``address`` (``HOST:PORT``) listens on loopback only, make this process's Ray use 127.0.0.1
    as its own address, as that cluster's nodes do.

    Ray replaces a loopback address by the machine's IP before it connects, where nothing of such a cluster
    listens. A head that does answer on the machine's IP (an ordinary ``ray start``, ``ray.cluster_utils``) is
    left to Ray's default, so the driver's address matches its nodes'.
    """
    if not address or "://" in address or address.count(":") != 1:
        return
    host, _, port = address.partition(":")
    if not is_loopback(host) or not port.isdigit():
        return
    if os.environ.get(LOOPBACK_ENV) != "0":
        import socket

        try:
            from ray._private.services import get_node_ip_address

            machine_ip = get_node_ip_address()
        except Exception:
            return
        if not is_loopback(machine_ip):
            try:
                socket.create_connection((machine_ip, int(port)), timeout=2).close()
                return  # the head answers on the machine's IP: Ray's default works
            except OSError:
                pass
    _loopback_ip()


def _loopback_ip() -> None:
    os.environ[LOOPBACK_ENV] = "0"
    try:  # Ray reads the switch once, at import; the node address is computed from it at each call
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    except ImportError:
        pass


def apply_mlflow_credentials(tracking_uri: str | None, state_dir: Path | None = None) -> bool:
    """Log this process's MLflow clients in as the trials user when ``tracking_uri`` is the MLflow server of the
    cluster recorded in ``state_dir`` and ``MLFLOW_TRACKING_USERNAME`` is not set already; returns whether it did."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return False
    if os.environ.get(mlflow_auth.USER_ENV):
        return False
    try:
        state = read_state(Path(state_dir or DEFAULT_STATE_DIR)) or {}
    except InputError:
        return False
    path = state.get("mlflow_credentials")
    if not path or tracking_uri.rstrip("/") != state.get("mlflow"):
        return False
    os.environ.update(mlflow_auth.read_credentials(path))
    return True


def mlflow_login_hint(tracking_uri: str, state_dir: Path | None = None) -> str | None:
    """Where a person finds the UI login of the recorded cluster's MLflow server (never the password itself)."""
    try:
        state = read_state(Path(state_dir or DEFAULT_STATE_DIR)) or {}
    except InputError:
        return None
    if not state.get("mlflow_auth") or tracking_uri.rstrip("/") != state.get("mlflow"):
        return None
    return (f"log in as {mlflow_auth.ADMIN_USER} (password: admin_password in {state['mlflow_auth']}) "
            f"or {mlflow_auth.TRIALS_USER} (password in {state['mlflow_credentials']})")


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


def _run_ray_start(args: list[str], env: dict[str, str], log_file: Path, temp_dir: str,
                   loopback_join: bool = False) -> None:
    ray = [sys.executable, "-m", "medtune.cluster.ops.raystart"] if loopback_join else [_ray_bin()]
    with open(log_file, "ab") as out:
        proc = subprocess.run([*ray, "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=180)
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
    if cfg.auth:
        _check_mlflow_auth_installed()  # before anything starts
    if not is_loopback(cfg.host):
        warn(f"binding the dashboard, the jobs API and MLflow to {cfg.host}: anyone who can reach it can reach them")
        if not cfg.auth:
            warn("AUTHENTICATION IS OFF on a non-loopback address: anyone on the network can run code on this cluster "
                 "and read or change every MLflow run")
        else:
            warn("the MLflow login and the Ray token travel unencrypted over plain HTTP and gRPC: use a private "
                 "network, a VPN or an SSH tunnel")
    token_path = ensure_token(state_dir) if cfg.auth else None
    auth_config = mlflow_auth.ensure_files(state_dir) if cfg.auth else None
    credentials = state_dir / mlflow_auth.CREDENTIALS if cfg.auth else None
    loopback = is_loopback(cfg.host)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", LOOPBACK_ENV)}
    env.update(auth_env({"auth": cfg.auth, "token_path": str(token_path) if token_path else None,
                         "loopback": loopback}))
    if credentials:  # every worker and job driver of the head inherits the raylet's environment
        env.update(mlflow_auth.read_credentials(credentials))
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
        "mlflow_auth": str(auth_config) if auth_config else None,
        "mlflow_credentials": str(credentials) if credentials else None,
        "loopback": loopback,
        "temp_dir": temp_dir,
        "python": sys.executable,
        "runs_dir": str(state_dir / "runs"),
        "processes": processes,
    }
    write_state(state_dir, state)  # recorded before anything else can fail, so `down` can clean up

    log(f"starting the MLflow server on {cfg.host}:{cfg.mlflow_port} ...")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}",
        "--artifacts-destination", str(state_dir / "mlartifacts"),
        "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "1",
    ]
    if auth_config:
        command += ["--app-name", "basic-auth"]
    with open(state_dir / "mlflow.log", "ab") as mlflow_log:  # the server writes to its own copy of the file
        server = subprocess.Popen(
            command, stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True,
            env=mlflow_auth.server_env(auth_config) if auth_config else os.environ.copy(),
            preexec_fn=lambda: os.umask(0o077),  # its stores (the user store with password hashes) private too
        )
    import psutil

    state["processes"].append({"pid": server.pid, "create_time": psutil.Process(server.pid).create_time()})
    write_state(state_dir, state)
    if not _wait_http(f"{state['mlflow']}/health", timeout=180, alive=server) or server.poll() is not None:
        raise InputError(
            f"the MLflow server did not start on {state['mlflow']} (port taken?); see {state_dir / 'mlflow.log'} "
            "and run `medtune cluster down` to stop the Ray head"
        )
    if auth_config and credentials:
        try:
            mlflow_auth.setup_trials_user(state["mlflow"], auth_config, credentials)
        except Exception as exc:  # a store whose admin password was changed by hand, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise InputError(
                f"cannot set up the MLflow trials user on {state['mlflow']} as {mlflow_auth.ADMIN_USER} ({first}); "
                f"see {state_dir / 'mlflow.log'} and run `medtune cluster down`"
            ) from None
    if not _wait_http(f"{state['dashboard']}/api/version", timeout=DASHBOARD_WAIT_S, ok=(200, 401)):
        raise InputError(f"the Ray dashboard did not answer on {state['dashboard']} within {DASHBOARD_WAIT_S} s; "
                         f"see {temp_dir}")
    return state


def _check_mlflow_auth_installed() -> None:
    try:
        import flask_wtf  # noqa: F401  (MLflow's basic-auth app needs it: the mlflow[auth] extra)
    except ImportError:
        raise InputError("MLflow's login needs the mlflow[auth] extra (Flask-WTF); install it with "
                         "pip install 'mlflow[auth]', or start without authentication with --no-auth") from None


def _state_dir(path: str | Path) -> Path:
    """The state folder, created private (0700); one line and exit 2 when it cannot be."""
    state_dir = Path(path).expanduser()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise InputError(
            f"--state-dir {str(state_dir)!r} cannot be used ({exc.strerror}); give a writable folder") from None
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
    exports = " ".join(f"{k}={v}" for k, v in auth_env(state).items())
    if state["auth"]:
        log(f"Ray token:     {state['token_path']} (mode 0600); clients need it, e.g.")
        log(f"  export {exports}")
        log(f"MLflow login:  on; drivers and trials log as {mlflow_auth.TRIALS_USER} "
            f"({state['mlflow_credentials']}, mode 0600); other clients:")
        log(f"  set -a; . {state['mlflow_credentials']}; set +a")
        log(f"  the UI's admin is {mlflow_auth.ADMIN_USER}; its password is admin_password in {state['mlflow_auth']}")
    else:
        warn("AUTHENTICATION IS OFF: no Ray token, no MLflow login; anyone who can reach a port can use it")
        if exports:
            log(f"clients: export {exports}")
    log("submit a study:  medtune submit lr-schedulers --smoke --wait")
    token_arg = f" --token-file {state['token_path']}" if state.get("token_path") else ""
    log(f"add a worker:    medtune cluster join {state['address']}{token_arg}   (other machines: up with --host)")
    state_arg = "" if state_dir == DEFAULT_STATE_DIR else f" --state-dir {state_dir}"
    log(f"stop everything: medtune cluster down{state_arg}")


def cluster_down(state_dir: Path) -> int:
    """Stop exactly the processes ``up`` / ``join`` recorded; returns how many were stopped."""
    state = read_state(state_dir)
    if state is None:
        raise InputError(f"no medtune cluster recorded in {str(state_dir)!r}; nothing to stop")
    # Every node at once (one grace period for all, not one per node).
    joined = [record for node in state.get("joined", []) for record in node.get("processes", [])]
    stopped = stop_processes(state.get("processes", []) + joined)
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
    head = head_state or {}  # the record of this machine's own head, when that is the one joined
    token = token_file or (head.get("token_path") if own_head else None)
    if token and not Path(token).is_file():
        raise InputError(f"--token-file {token!r} does not exist; copy the head's token file here (mode 0600)")
    # A worker node takes its own address from the route to the head (127.0.0.1 for a loopback head);
    # Ray refuses to join with the loopback switch set.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", LOOPBACK_ENV)}
    env.update(auth_env(None, token))
    if own_head and head.get("mlflow_credentials"):  # its trials log to the head's MLflow too
        env.update(mlflow_auth.read_credentials(head["mlflow_credentials"]))
    temp_dir = tempfile.mkdtemp(prefix="mtray-", dir="/tmp")
    # Free ports for the node's agents, so a worker can also join from the head's own machine.
    args = [f"--address={address}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    loopback_join = is_loopback(address.rsplit(":", 1)[0])
    _run_ray_start(args, env, state_dir / "ray-join.log", temp_dir, loopback_join=loopback_join)
    record = {"address": address, "temp_dir": temp_dir, "processes": _ours(temp_dir)}
    if own_head:  # a worker on the head's own machine: `down` stops it too
        head.setdefault("joined", []).append(record)
        write_state(state_dir, head)
        return head
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
        raise InputError(f"no medtune cluster recorded in {str(state_dir)!r}; "
                         "run `medtune cluster up` or give --address")
    apply_auth_env(state)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
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
            raise InputError(
                f"the jobs API at {state['dashboard']} does not answer ({str(exc).splitlines()[0][:160]})") from None
        jobs = [
            {"id": j.submission_id, "status": str(j.status).split(".")[-1], "entrypoint": j.entrypoint[:100]}
            for j in listed
            if j.submission_id  # submitted jobs, not drivers that merely connected (like this one)
        ]
    return {"address": address, "nodes": nodes, "jobs": jobs, "mlflow": state.get("mlflow"),
            "dashboard": state.get("dashboard"),
            "auth": auth_status(state)}


def auth_status(state: dict[str, Any]) -> dict[str, str]:
    """Whether the jobs API and the MLflow server refuse a request without credentials, asked of the servers
    themselves: ``on`` (401), ``OFF`` (answered), ``unknown`` (no answer, or not recorded)."""
    import requests

    def probe(url: str | None) -> str:
        if not url:
            return "unknown"
        try:
            code = requests.get(url, timeout=10).status_code
        except requests.RequestException:
            return "unknown"
        return "on" if code in (401, 403) else "OFF" if code < 400 else "unknown"

    dashboard, mlflow = state.get("dashboard"), state.get("mlflow")
    return {
        "ray": probe(dashboard and f"{dashboard}/api/jobs/"),
        "mlflow": probe(mlflow and f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"),
    }
