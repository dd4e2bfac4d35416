"""Studies as Ray jobs: ``medtune submit`` and ``medtune jobs list | logs | stop``.

Submission goes through the Ray Jobs API (``JobSubmissionClient``) with the
cluster's token (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` in this
process's environment, which the client reads). Without ``--address`` the
cluster recorded by ``medtune cluster up`` is used, and the job logs to that
cluster's MLflow server. A spec given as a file travels with the job (its
folder becomes the job's working directory); a built-in name needs nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medtune.cluster.ops.service import apply_auth_env, read_state
from medtune.cluster.runs.storage import storage_path
from medtune.config import to_dict
from medtune.errors import InputError

__all__ = ["TERMINAL", "follow", "job_logs", "list_jobs", "stop_job", "submit"]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _client(address: str | None, state_dir: Path):
    from ray.job_submission import JobSubmissionClient

    state = read_state(state_dir)
    env_address = os.environ.get("RAY_ADDRESS", "")
    address = address or (env_address if env_address.startswith(("http://", "https://")) else None)
    recorded = (state or {}).get("dashboard")
    address = address or recorded
    if not address:
        raise InputError(
            f"no cluster to talk to: give --address http://HOST:8265 or start one with `medtune cluster up` "
            f"(nothing recorded in {str(state_dir)!r})"
        )
    if not address.startswith(("http://", "https://")):
        raise InputError(f"--address {address!r} must be the jobs API URL, http://HOST:8265 (the dashboard port)")
    own = state is not None and address.rstrip("/") == recorded
    if own:  # the recorded cluster's token; another cluster's comes from the user's own RAY_AUTH_* settings
        apply_auth_env(state)
    try:
        return JobSubmissionClient(address), (state if own else None)
    except Exception as exc:  # connection refused, 401, ...
        raise InputError(f"cannot reach the Ray jobs API at {address} ({str(exc).splitlines()[0][:200]})") from None


def submit(
    spec: str,
    state_dir: Path,
    address: str | None = None,
    smoke: bool = False,
    overrides: tuple[str, ...] = (),
    tracking_uri: str | None = None,
    storage: str | None = None,
) -> tuple[Any, str]:
    """Submit ``medtune run SPEC`` as a Ray job; returns the client and the job id.

    The spec is loaded and checked here first, so a bad spec exits 2 before anything is submitted. ``storage``
    (overriding the spec's ``storage:``) is a folder on the cluster, so here only its form is checked: an
    absolute path or a ``file://`` URI; the job itself checks that it can write there before any trial.
    """
    import yaml

    # torch: `medtune jobs` needs none of the studies
    from medtune.cluster.studies.registry import load_spec

    parsed = load_spec(spec, smoke=smoke, overrides=overrides)  # bad input: one line, exit 2, nothing submitted
    if storage is not None:
        storage_path(storage)  # a bad scheme or an object store: one line, nothing submitted
        if "://" not in storage and not Path(storage).expanduser().is_absolute():
            raise InputError(f"--storage {storage!r} is relative; the job runs in a folder of its own on the "
                             "cluster, so give the absolute path every node mounts, e.g. --storage /mnt/shared/medtune")
    client, state = _client(address, state_dir)
    # The job gets the spec as resolved here (smoke and --set applied, paths absolute), not the raw file.
    resolved = {k: v for k, v in to_dict(parsed).items() if k != "smoke"}
    folder = tempfile.mkdtemp(prefix="medtune-job-")
    try:
        Path(folder, "spec.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        python = state["python"] if state else "python3"  # on another cluster: its own python3 with medtune
        uri = tracking_uri or (state or {}).get("mlflow")
        args = [python, "-m", "medtune.cluster.cli.main", "run", "spec.yaml"]
        if uri:
            args += ["--tracking-uri", uri]
        if state:
            args += ["--output", state["runs_dir"]]
        if storage is not None:
            args += ["--storage", str(Path(storage).expanduser()) if "://" not in storage else storage]
        entrypoint = " ".join(shlex.quote(a) for a in args)
        runtime_env: dict[str, Any] = {"working_dir": folder}
        if getattr(parsed, "trainable", None):  # a user's own trainable: its code travels with the job
            # torch: `medtune jobs` needs none of the studies
            from medtune.cluster.studies.own_study import resolve_trainable

            code = Path(resolve_trainable(parsed.trainable)[1])
            if code.is_file():  # a single module: it goes in the job's working directory, on every worker's path
                shutil.copy2(code, Path(folder, code.name))
            else:  # a package folder
                runtime_env["py_modules"] = [str(code)]
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, entrypoint_num_cpus=0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # uploaded by submit_job already
    return client, job_id


def follow(client, job_id: str, out=sys.stdout, poll_s: float = 1.0) -> str:
    """Print the job's log as it grows until it ends; return its final status."""
    shown = 0
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            out.write(logs[shown:])
            out.flush()
            shown = len(logs)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def list_jobs(state_dir: Path, address: str | None = None) -> list[dict[str, Any]]:
    client, _ = _client(address, state_dir)
    try:
        listed = client.list_jobs()
    except Exception as exc:
        raise InputError(f"the jobs API does not answer ({str(exc).splitlines()[0][:160]})") from None
    return [
        {"id": j.submission_id, "status": str(j.status).split(".")[-1], "entrypoint": j.entrypoint}
        for j in listed
        if j.submission_id  # submitted jobs, not drivers that merely connected
    ]


def job_logs(job_id: str, state_dir: Path, address: str | None = None, follow_logs: bool = False) -> str | None:
    client, _ = _client(address, state_dir)
    try:
        if follow_logs:
            return follow(client, job_id)
        print(client.get_job_logs(job_id), end="")
        return None
    except RuntimeError as exc:
        raise InputError(f"job {job_id!r}: {str(exc).splitlines()[0][:200]}; see `medtune jobs list`") from None


def stop_job(job_id: str, state_dir: Path, address: str | None = None) -> bool:
    client, _ = _client(address, state_dir)
    try:
        return client.stop_job(job_id)
    except RuntimeError as exc:
        raise InputError(f"job {job_id!r}: {str(exc).splitlines()[0][:200]}; see `medtune jobs list`") from None
