"""What is in an MLflow store, for the dashboard's experiment list and its refresh.

:func:`experiments` lists the store's experiments with their study and trial count, most recently active first;
:func:`fingerprint` changes whenever a run of an experiment starts, ends or logs a new metric value, so the live
page redraws only when there is something new (and a user's zoom survives the refreshes in between).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from medtune.tags import KIND_SUITE_TASK, TAG_KIND

__all__ = ["Entry", "experiments", "fingerprint"]


@dataclass(frozen=True)
class Entry:
    name: str
    study: str  # "" when the experiment has no medtune trial runs
    trials: int
    last_activity: int  # ms since the epoch; 0 for an empty experiment

    @property
    def label(self) -> str:
        if not self.trials:
            return f"{self.name} (no medtune trials)"
        return f"{self.name} ({self.study}, {self.trials} {'tasks' if self.study == 'suite' else 'trials'})"


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def experiments(tracking_uri: str) -> list[Entry]:
    """Every active experiment of the store; those with medtune trials first, the most recently active first."""
    client = _client(tracking_uri)
    out = []
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'trial'", max_results=5000)
        study = runs[0].data.params.get("study", "lr") if runs else ""
        if not runs:  # a suite's experiment: its task runs stand for its trials
            runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_KIND}` = '{KIND_SUITE_TASK}'",
                                      max_results=5000)
            study = "suite" if runs else ""
        last = max((r.info.end_time or r.info.start_time or 0 for r in runs), default=0)
        out.append(Entry(exp.name, study, len(runs), int(last)))
    return sorted(out, key=lambda e: (e.trials == 0, -e.last_activity, e.name))


def fingerprint(tracking_uri: str, experiment: str) -> str:
    """A digest of every run of ``experiment`` (status, end time, latest metric values); "" if it does not exist."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return ""
    h = hashlib.sha1()
    for run in sorted(client.search_runs([exp.experiment_id], max_results=5000), key=lambda r: r.info.run_id):
        h.update(f"{run.info.run_id}|{run.info.status}|{run.info.end_time}|".encode())
        h.update(repr(sorted(run.data.metrics.items())).encode())
    return h.hexdigest()
