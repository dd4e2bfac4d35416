"""The MLflow store: where it is, the experiment, and the tags medtune puts on runs. No Ray import.

Used by the CLI before Ray starts (``medtune report``, ``medtune ui``), by the
Tune callback that logs trials (:mod:`medtune.cluster.runs.tracking`) and by the reports
(:mod:`medtune.dashboards.lr_report`).
"""

from __future__ import annotations

import os
from pathlib import Path

from medtune.errors import InputError

__all__ = ["artifact_root", "check_reachable", "default_tracking_uri", "ensure_experiment"]


def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store under ``output_dir``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    path = Path(output_dir).expanduser().resolve() / "mlflow.db"
    return f"sqlite:///{path}"


def artifact_root(tracking_uri: str, output_dir: str | os.PathLike) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store; the server's choice otherwise."""
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:") or "://" not in tracking_uri:
        return (Path(output_dir).expanduser().resolve() / "mlartifacts").as_uri()
    return None


def check_reachable(tracking_uri: str, connect_s: float = 5.0, answer_s: float = 60.0) -> None:
    """For an HTTP tracking server: one request, so an unreachable server is one line, not minutes of retries.

    A server that takes no connection within ``connect_s`` is unreachable; one that took the connection gets
    ``answer_s`` to answer (a busy machine's server is slow, not gone: 5 s was seen to be too little).

    Raises:
        InputError: the server does not answer.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        timeout = (connect_s, answer_s)
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        answer = requests.get(tracking_uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
                              params={"max_results": 1}, timeout=timeout,
                              auth=(user, password or "") if user else None)
    except requests.RequestException as exc:
        raise InputError(
            f"MLflow tracking server {tracking_uri} is unreachable ({type(exc).__name__}); start it "
            "(`medtune cluster up` starts one) or fix --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None
    if answer.status_code == 401:
        who = f"as {user!r} (wrong password?)" if user else "without a login"
        raise InputError(
            f"MLflow tracking server {tracking_uri} refuses requests {who}; set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (`medtune cluster up` keeps its trials user's in STATE_DIR/mlflow-credentials)"
        )
    if answer.status_code == 403:
        raise InputError(f"MLflow tracking server {tracking_uri} does not let {user!r} read experiments; "
                         "ask its admin for a grant or log in as another user")


def ensure_experiment(tracking_uri: str, name: str, output_dir: str | os.PathLike) -> str:
    """Create (or find) the MLflow experiment ``name``; return its id.

    Raises:
        InputError: the tracking store cannot be reached or opened (one line, before any trial).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=artifact_root(tracking_uri, output_dir))
    except mlflow.exceptions.MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"MLflow tracking store {tracking_uri!r} cannot be used ({first}); "
            "check --tracking-uri / MLFLOW_TRACKING_URI or start the server"
        ) from None
    except Exception as exc:  # connection errors surface as various requests/sqlalchemy types
        raise InputError(
            f"MLflow tracking store {tracking_uri!r} is unreachable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "check --tracking-uri / MLFLOW_TRACKING_URI or start the server"
        ) from None
