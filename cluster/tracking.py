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
tracker finds the run by its tags and skips every epoch already stored. It also
survives a tracking server that stops mid-run (see :class:`MLflowTracker`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
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
    """Logs every trial of one medtune session to MLflow from the Tune driver, losing nothing.

    Every write (a run's start with its params, an epoch's metrics, a tag, a run's end) is an
    operation in a queue, sent in order. When the tracking server cannot be reached, training goes
    on: the operations wait in the queue, which is also written to ``backlog`` (JSON lines, in the
    session folder) so a driver that dies during the outage loses nothing either. They are sent
    when the server answers again, at the next result; whatever is still pending at the end is
    delivered by ``medtune report --sync SESSION_DIR``.

    Args:
        tracking_uri: the MLflow store.
        experiment_id: the MLflow experiment (created beforehand by :func:`ensure_experiment`).
        session: the medtune session name (the Tune experiment directory's name).
        backlog: where pending operations are kept; None keeps them in memory only.
        metrics: result keys logged each epoch (missing ones are skipped).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        session: str,
        backlog: str | None = None,
        metrics: tuple[str, ...] = METRICS,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.session = session
        self.backlog = backlog
        self.metrics = metrics
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._runs: dict[str, str] = {}
        self._last_epoch: dict[str, int] = {}
        self._queue: list[dict[str, Any]] = []
        self._outage = False
        self._loaded = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k in ("tracking_uri", "experiment_id", "session", "backlog", "metrics")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- the queue ----------------------------------------------------------
    def _load_backlog(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.backlog and Path(self.backlog).is_file():
            for line in Path(self.backlog).read_text().splitlines():
                try:
                    op = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self._queue.append(op)
                if op["op"] == "metrics":
                    self._last_epoch[op["trial"]] = max(self._last_epoch.get(op["trial"], 0), op["step"])

    def _save_backlog(self) -> None:
        if not self.backlog:
            return
        path = Path(self.backlog)
        if not self._queue:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(op) + "\n" for op in self._queue))
        tmp.replace(path)

    def _push(self, op: dict[str, Any]) -> None:
        self._load_backlog()
        self._queue.append(op)
        self.flush()

    def flush(self) -> int:
        """Send the pending operations in order; returns how many are still pending."""
        self._load_backlog()
        sent = 0
        while self._queue:
            try:
                self._apply(self._queue[0])
            except Exception as exc:  # connection refused, timeouts, 5xx: keep it for later
                if not self._outage:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                    print(f"[medtune] WARNING: MLflow at {self.tracking_uri} failed ({first}); training goes on "
                          f"and every record waits in {self.backlog or 'memory'} until it answers", flush=True)
                self._outage = True
                break
            self._queue.pop(0)
            sent += 1
        if self._outage and not self._queue:
            print(f"[medtune] MLflow at {self.tracking_uri} answers again: the buffered records are delivered",
                  flush=True)
            self._outage = False
        if sent or self._queue:
            self._save_backlog()
        return len(self._queue)

    def _run_of(self, trial_id: str) -> str | None:
        if trial_id not in self._runs:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_SESSION}` = '{self.session}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
                max_results=1,
            )
            if not found:
                return None
            self._runs[trial_id] = found[0].info.run_id
        return self._runs[trial_id]

    def _apply(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        kind, trial_id = op["op"], op["trial"]
        if kind == "start":
            run_id = self._run_of(trial_id)
            if run_id is not None:  # a restarted or resumed trial continues its own run
                self.client.update_run(run_id, status="RUNNING")
                return
            run = self.client.create_run(
                self.experiment_id,
                run_name=op["name"],
                tags={TAG_SESSION: self.session, TAG_TRIAL: trial_id, TAG_KIND: "trial"},
            )
            self._runs[trial_id] = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in op["params"].items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(run.info.run_id, params=params[i : i + 100])
            return
        run_id = self._run_of(trial_id)
        if run_id is None:
            raise RuntimeError(f"no MLflow run for trial {trial_id} yet")
        if kind == "metrics":
            batch = [Metric(k, float(v), op["ts"], op["step"]) for k, v in op["values"].items()]
            self.client.log_batch(run_id, metrics=batch)
        elif kind == "tag":
            self.client.set_tag(run_id, op["key"], op["value"])
        elif kind == "end":
            self.client.set_terminated(run_id, status=op["status"])

    # -- Tune hooks -----------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._load_backlog()
        if trial.trial_id not in self._last_epoch:
            try:  # epochs a previous driver already stored (resume): never log them twice
                run_id = self._run_of(trial.trial_id)
                if run_id is not None:
                    history = self.client.get_metric_history(run_id, "epoch")
                    self._last_epoch[trial.trial_id] = int(max((m.value for m in history), default=0))
            except Exception:
                pass  # unreachable: the backlog still knows what was queued
        config = trial.config
        self._push({
            "op": "start", "trial": trial.trial_id,
            "name": f"{config.get('method', 'trial')}-seed{config.get('seed', '?')}",
            "params": {k: str(v) for k, v in flatten(config).items()},
        })

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._last_epoch.get(trial.trial_id, 0):
            return  # already stored or queued (a restarted trial re-reporting)
        values = {k: result[k] for k in self.metrics if isinstance(result.get(k), (int, float))}
        self._last_epoch[trial.trial_id] = epoch
        self._push({"op": "metrics", "trial": trial.trial_id, "step": epoch, "ts": int(time.time() * 1000),
                    "values": values})
        if result.get("diverged"):
            self._push({"op": "tag", "trial": trial.trial_id, "key": "medtune.diverged", "value": "true"})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._push({"op": "end", "trial": trial.trial_id, "status": "FINISHED"})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._push({"op": "end", "trial": trial.trial_id, "status": "FAILED"})

    def on_experiment_end(self, trials, **info):
        if self.flush():
            print(f"[medtune] WARNING: {self.pending} MLflow records could not be delivered; they are kept in "
                  f"{self.backlog}. Deliver them with: medtune report --sync {Path(self.backlog or '.').parent}",
                  flush=True)
