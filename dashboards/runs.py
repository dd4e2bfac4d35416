"""Reading medtune's runs back from an MLflow store: the client, a session's trial runs, the study they belong to.

Every report and the dashboard read through these; nothing here writes.
"""

from __future__ import annotations

from typing import Any

from medtune.errors import InputError, did_you_mean
from medtune.tags import TAG_KIND, TAG_SESSION

__all__ = ["latest_session", "mlflow_client", "session_runs", "study_of", "trial_runs"]


def mlflow_client(tracking_uri: str):
    """An ``MlflowClient`` of the store at ``tracking_uri`` (MLflow is imported here, not at import time)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def trial_runs(client, experiment_id: str, session: str | None) -> list:
    flt = f"tags.`{TAG_KIND}` = 'trial'"
    if session:
        flt += f" and tags.`{TAG_SESSION}` = '{session}'"
    return list(client.search_runs([experiment_id], filter_string=flt, max_results=5000,
                                   order_by=["attributes.start_time DESC"]))


def latest_session(client, experiment_id: str) -> str | None:
    """The newest session of the experiment: session names end in their start time, so the largest name
    (a resumed old session's late trials do not make it the newest)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'trial'", max_results=5000)
    sessions = {r.data.tags.get(TAG_SESSION) for r in runs} - {None}
    return max(sessions) if sessions else None


def session_runs(client, tracking_uri: str, experiment: str, session: str | None) -> tuple[Any, str, list]:
    """The experiment, the session (the latest unless given) and its trial runs.

    Raises:
        InputError: unknown experiment, or no trial runs in it (one line, exit 2 in the CLI).
    """
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise InputError(
            f"experiment {experiment!r} is not in the MLflow store {tracking_uri}{did_you_mean(experiment, names)}; "
            f"known: {', '.join(names) or 'none'}"
        )
    session = session or latest_session(client, exp.experiment_id)
    runs = trial_runs(client, exp.experiment_id, session) if session else []
    if not runs or not session:
        others = [] if session else client.search_runs([exp.experiment_id], max_results=1)
        if others:  # runs that some other logger wrote (Ray's MLflowLoggerCallback, mlflow.autolog, ...)
            raise InputError(
                f"experiment {experiment!r} has runs, but none that medtune logged (no tag {TAG_KIND}=trial): "
                "medtune compares the runs of `medtune run SPEC` or `medtune.compare(...)`; run your trainable "
                "through one of them"
            )
        raise InputError(
            f"experiment {experiment!r} has no trial runs{f' in session {session!r}' if session else ''}; "
            "run `medtune run SPEC` first"
        )
    return exp, session, runs


def study_of(runs: list) -> str:
    """The study the runs belong to: their ``study`` param (LR runs may have none)."""
    return runs[0].data.params.get("study", "lr")


