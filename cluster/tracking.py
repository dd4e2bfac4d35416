"""MLflow tracking for Tune experiments: one MLflow run per trial, logged from the driver.

Layout (DESIGN.md section 2): one MLflow experiment per spec ``name``; one run
per trial, tagged with the medtune session (one ``medtune run``) and the Tune
trial id, holding params (``method``, ``seed`` and every hyperparameter,
flattened as ``train.epochs``) and per-epoch metrics with ``step = epoch``; one
summary run per session with the comparison artifacts.

:class:`MLflowTracker` is a ``tune.Callback`` rather than Ray's
``MLflowLoggerCallback`` because the Q-learning scheduler changes a running
trial's config (which that callback refuses to re-log) and because a restarted
or resumed trial must continue its own run without logging an epoch twice: the
tracker finds the run by its tags and skips every epoch already stored.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from cluster.store import TAG_KIND, TAG_SESSION, TAG_TRIAL

METRICS = ("epoch", "dice", "val_loss", "train_loss", "lr", "diverged", "test_dice")
PRIVATE_KEYS = ("mailbox", "threads", "task")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``; private keys dropped."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not prefix and key in PRIVATE_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class MLflowTracker(Callback):
    """Logs every trial of one medtune session to MLflow from the Tune driver.

    Args:
        tracking_uri: the MLflow store.
        experiment_id: the MLflow experiment (created beforehand by :func:`ensure_experiment`).
        session: the medtune session name (the Tune experiment directory's name).
        metrics: result keys logged each epoch (missing ones are skipped).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, session: str, metrics: tuple[str, ...] = METRICS):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.session = session
        self.metrics = metrics
        self._client = None
        self._runs: dict[str, str] = {}
        self._last_epoch: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_runs"] = {}
        state["_last_epoch"] = {}
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def run_id(self, trial) -> str:
        """The MLflow run of ``trial``: found by tags (restart, resume) or created with its params."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_SESSION}` = '{self.session}' and tags.`{TAG_TRIAL}` = '{trial.trial_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "epoch")
            self._last_epoch[trial.trial_id] = int(max((m.value for m in history), default=0))
            self.client.update_run(run_id, status="RUNNING")
        else:
            config = trial.config
            name = f"{config.get('method', 'trial')}-seed{config.get('seed', '?')}"
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={TAG_SESSION: self.session, TAG_TRIAL: trial.trial_id, TAG_KIND: "trial"},
            )
            run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i : i + 100])
            self._last_epoch[trial.trial_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self.run_id(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._last_epoch.get(trial.trial_id, 0):
            return  # already stored (a restarted trial re-reporting)
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(result[key]), now, epoch)
            for key in self.metrics
            if key in result and isinstance(result[key], (int, float))
        ]
        self.client.log_batch(run_id, metrics=batch)
        self._last_epoch[trial.trial_id] = epoch
        if result.get("diverged"):
            self.client.set_tag(run_id, "medtune.diverged", "true")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.run_id(trial), status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.run_id(trial), status="FAILED")
