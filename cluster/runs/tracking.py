"""MLflow tracking for Tune experiments: one MLflow run per trial, logged from the driver.

Layout: one MLflow experiment per spec ``name``; one run
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
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from medtune.errors import error_line
from medtune.searchers.qlearning_scheduler import reported_keys
from medtune.tags import EXPLOITS_KEY, TAG_ERROR, TAG_KIND, TAG_SESSION, TAG_TRIAL

__all__ = [
    "GATHER_S", "MAX_METRICS_PER_BATCH", "METRICS", "MLflowTracker", "PRIVATE_KEYS", "flatten", "own_keys",
    "trial_error", "trial_params",
]

log = logging.getLogger(__name__)

METRICS = ("epoch", "dice", "val_loss", "train_loss", "lr", "diverged", "test_dice")
PRIVATE_KEYS = ("mailbox", "threads", "task", EXPLOITS_KEY)  # the exploits are a metric, not a param
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit on the metrics of one log_batch request
GATHER_S = 0.5  # while results keep coming, the sender sends at most this often (fewer, larger requests)


def own_keys(result: dict[str, Any]) -> list[str]:
    """The keys of a result the trial itself reported (see ``metrics=None`` of :class:`MLflowTracker`)."""
    return [k for k in reported_keys(result) if k != "node_id" and not isinstance(result[k], bool)]


def trial_params(config: dict[str, Any]) -> dict[str, str]:
    """A trial's MLflow params: its flattened config, with only its own method's ``tuned.*`` settings (a tuned
    session's config holds every method's)."""
    own = f"tuned.{config.get('method')}."
    return {k: str(v) for k, v in flatten(config).items() if not k.startswith("tuned.") or k.startswith(own)}


def trial_error(trial: Any) -> str:
    """The one line of a failed Tune trial's latest error (read from its ``error.txt``), or ``""``."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        return ""
    last = text.rsplit("Failure # ", 1)[-1]  # the file appends one section per failure
    return error_line(last.split("\n", 1)[1] if "\n" in last else last)[:500] if last.strip() else ""


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
    when the server answers again; whatever is still pending at the end is delivered by
    ``medtune report --sync SESSION_DIR``.

    While a Tuner runs (from ``setup`` to ``on_experiment_end``), a thread of the driver sends the
    queue, so no trial waits for MLflow: a function trainable's ``tune.report`` blocks until the
    driver has handled its result, and a SQLite store's commit took about 13 ms of the 18 ms that
    round trip cost per epoch. Each operation is appended to ``backlog`` before the hook returns
    (written ahead), so a driver killed with records in flight loses none; the thread rewrites the
    file as they are delivered and removes it when nothing is pending. After a quiet spell it sends a
    record at once; while results keep coming it sends at most once per ``GATHER_S`` (0.5 s), the
    queued epochs of one trial as one ``log_batch`` (one request, one commit), so MLflow lags
    training by at most about half a second.
    ``on_experiment_end`` stops the thread and sends what is left. Used outside a Tuner (hooks called
    directly, ``log_run``, ``flush``), every operation is sent before the call returns; a backlog
    delivered by ``medtune report --sync`` is batched the same way.

    Args:
        tracking_uri: the MLflow store.
        experiment_id: the MLflow experiment (created beforehand by :func:`ensure_experiment`).
        session: the medtune session name (the Tune experiment directory's name).
        backlog: where pending operations are kept; None keeps them in memory only.
        metrics: result keys logged each epoch (missing ones are skipped); None: every number the trial itself
            reported (Tune's own keys, ``config/...`` and the ``lr_control`` marker left out).
        artifacts: result keys whose (string) value is logged as a text artifact of the trial's run,
            ``{result_key: file_name}``; e.g. the APGA study's mask examples at the last epoch.
        stop_note: ``() -> str | None``: once it says something (the run was stopped,
            :mod:`medtune.cluster.runs.fail_fast`), every trial that ends after is logged ``KILLED`` with that text as
            its ``medtune.error``, never as finished.
        tags: more tags of every run it creates (they may replace ``medtune.kind``: the search trials of
            ``medtune tune`` are ``medtune.kind = search``, nested by ``mlflow.parentRunId``).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        session: str,
        backlog: str | None = None,
        metrics: tuple[str, ...] | None = METRICS,
        artifacts: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        stop_note: Callable[[], str | None] | None = None,
    ):
        self.stop_note = stop_note
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.session = session
        self.backlog = backlog
        self.metrics = metrics
        self.artifacts = dict(artifacts or {})
        self.tags = dict(tags or {})
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._runs: dict[str, str] = {}
        self._last_epoch: dict[str, int] = {}
        self._open: set[str] = set()  # trials started in this process whose run has not been ended
        self._queue: list[dict[str, Any]] = []
        self._stored: dict[str, int] = {}
        self._outage = False
        self._loaded = False
        self._backoff = 0.0
        self._retry_at = 0.0
        # The queue and the backlog file change together under _lock; one sender at a time holds _send_lock.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._closing = False
        self._stopping = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k in ("tracking_uri", "experiment_id", "session", "backlog", "metrics", "artifacts", "tags",
                         "stop_note")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("artifacts", {})
        self.__dict__.setdefault("tags", {})
        self.__dict__.setdefault("stop_note", None)  # a session saved before the run could be stopped
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
        """Pending operations a previous driver (or this one) left in the backlog file."""
        if self._loaded:
            return
        self._loaded = True
        if not (self.backlog and Path(self.backlog).is_file()):
            return
        dropped = 0
        for line in Path(self.backlog).read_text().splitlines():
            try:
                op = json.loads(line)
                kind, trial = op["op"], op["trial"]
            except (json.JSONDecodeError, TypeError, KeyError):
                dropped += 1
                continue
            self._queue.append(op)
            if kind == "metrics":
                self._last_epoch[trial] = max(self._last_epoch.get(trial, 0), int(op["step"]))
        if dropped:
            log.warning(f"{dropped} unreadable line(s) in {self.backlog} were skipped")

    def _rewrite_backlog(self) -> None:
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
        with self._lock:
            self._load_backlog()
            self._queue.append(op)
            background = self._sender is not None
            # Written ahead: always while the sender thread runs, else when something is pending already.
            if self.backlog and (background or len(self._queue) > 1):
                with open(self.backlog, "a") as f:
                    f.write(json.dumps(op) + "\n")
            if background:
                self._wake.notify()
        if not background:
            self.flush()

    def flush(self, force: bool = False) -> int:
        """Send the pending operations in order; returns how many are still pending.

        During an outage a retry is attempted only when it is due (2 s, doubling up to 60 s), so a
        dead or hanging server costs the training loop almost nothing; ``force`` retries at once.
        An operation the server refuses for good (a 4xx answer, a malformed record) is moved to the
        dead-letter file beside the backlog, with a loud warning, instead of blocking the others.
        """
        with self._send_lock:
            return self._send(force)

    def _send(self, force: bool) -> int:
        with self._lock:
            self._load_backlog()
            if self._queue and not force and time.time() < self._retry_at:
                return len(self._queue)
        done = 0  # operations delivered or set aside: the backlog file must drop them
        single = False  # after a refused batch: its operations one at a time, to set aside only the bad one
        while True:
            with self._lock:
                if not self._queue:
                    break
                batch = [self._queue[0]] if single else self._batch()
            op = batch[0]
            try:
                self._apply(op) if len(batch) == 1 else self._apply_metrics(batch)
            except Exception as exc:
                if len(batch) > 1 and _permanent(exc):
                    single = True
                    continue
                if not _permanent(exc):
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                    if not self._outage:
                        log.warning(f"MLflow at {self.tracking_uri} failed ({first}); training goes on "
                                    f"and every record waits in {self.backlog or 'memory'} until it answers")
                    self._outage = True
                    self._backoff = min(60.0, self._backoff * 2) if self._backoff else 2.0
                    self._retry_at = time.time() + self._backoff
                    break
                self._dead_letter(op, exc)
            sent = {id(o) for o in batch}
            with self._lock:
                self._queue = [o for o in self._queue if id(o) not in sent]
            done, single = done + len(batch), False
        with self._lock:
            if self._outage and not self._queue:
                log.info(f"MLflow at {self.tracking_uri} answers again: the buffered records are delivered")
                self._outage, self._backoff, self._retry_at = False, 0.0, 0.0
            if done or (self._queue and self.backlog and not Path(self.backlog).exists()):
                self._rewrite_backlog()
            return len(self._queue)

    # -- the sender thread (while a Tuner runs) --------------------------------
    def _start_sender(self) -> None:
        with self._lock:
            if self._sender is not None:
                return
            self._load_backlog()
            if self.backlog and self._queue and not Path(self.backlog).exists():
                self._rewrite_backlog()
            self._closing = False
            self._stopping.clear()
            self._sender = threading.Thread(target=self._send_forever, name="medtune-mlflow", daemon=True)
            self._sender.start()

    def _send_forever(self) -> None:
        sent_at = float("-inf")  # time.monotonic() of the last send
        while True:
            with self._lock:
                while not self._closing and not (self._queue and time.time() >= self._retry_at):
                    self._wake.wait(timeout=max(0.05, self._retry_at - time.time()) if self._queue else None)
                if self._closing:
                    return
            # After a quiet spell the records go at once (a trial's first epoch shows without delay); while results
            # keep coming, at most one send per GATHER_S, so the epochs that arrive meanwhile go as one batch.
            if self._stopping.wait(timeout=max(0.0, sent_at + GATHER_S - time.monotonic())):
                return  # a close sends what is left itself
            sent_at = time.monotonic()
            try:
                self.flush()
            except Exception:  # e.g. the backlog's disk is full: the records stay queued, the next try is later
                log.exception("sending MLflow records failed; they stay queued")
                with self._lock:
                    self._retry_at = time.time() + 2.0

    def _stop_sender(self) -> None:
        with self._lock:
            sender, self._closing = self._sender, True
            self._stopping.set()
            self._wake.notify()
        if sender is not None:
            sender.join()
        with self._lock:
            self._sender = None

    def _dead_letter(self, op: dict[str, Any], exc: Exception) -> None:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        where = Path(self.backlog).with_name("mlflow-deadletter.jsonl") if self.backlog else None
        if where is not None:
            with open(where, "a") as f:
                f.write(json.dumps({**op, "error": first}) + "\n")
        log.warning(f"MLflow refused a {op.get('op')} record of trial {op.get('trial')} ({first}); "
              f"it is kept in {where or 'no file'} and the others go on")

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

    def _stored_epoch(self, run_id: str) -> int:
        """The last epoch MLflow already holds for ``run_id`` (asked once per run per driver)."""
        if run_id not in self._stored:
            history = self.client.get_metric_history(run_id, "epoch")
            self._stored[run_id] = int(max((m.value for m in history), default=0))
        return self._stored[run_id]

    def _batch(self) -> list[dict[str, Any]]:
        """The queue's first operation and, if it is an epoch's metrics, the later epochs of the same trial
        queued after it (up to ``MAX_METRICS_PER_BATCH`` values), to be sent as one ``log_batch``.

        The other trials' operations in between are independent runs; an operation of the same trial that is
        not metrics (a tag, its end) stops the batch, so each run's records keep their order.
        """
        head = self._queue[0]
        if head["op"] != "metrics":
            return [head]
        batch, values = [head], len(head.get("values") or ())
        for op in self._queue[1:]:
            if op.get("trial") != head["trial"]:
                continue
            if op["op"] != "metrics" or values + len(op.get("values") or ()) > MAX_METRICS_PER_BATCH:
                break
            batch.append(op)
            values += len(op.get("values") or ())
        return batch

    def _apply_metrics(self, ops: list[dict[str, Any]]) -> None:
        """Several epochs of one trial in one ``log_batch`` (one request, one commit of the store)."""
        from mlflow.entities import Metric

        trial_id = ops[0]["trial"]
        run_id = self._run_of(trial_id)
        if run_id is None:
            raise _NoRun(f"no MLflow run for trial {trial_id}")
        stored = self._stored_epoch(run_id)
        new = [op for op in ops if int(op["step"]) > stored]  # the others are in MLflow already (a resume)
        batch = [Metric(k, float(v), op["ts"], op["step"]) for op in new for k, v in op["values"].items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)
            self._stored[run_id] = max(int(op["step"]) for op in new)

    def _apply(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        kind, trial_id = op["op"], op["trial"]
        if kind == "start":
            run_id = self._run_of(trial_id)
            if run_id is None:
                run_id = self.client.create_run(
                    self.experiment_id,
                    run_name=op["name"],
                    tags={TAG_SESSION: self.session, TAG_TRIAL: trial_id, TAG_KIND: "trial", **self.tags},
                ).info.run_id
                self._runs[trial_id] = run_id
                have: dict[str, str] = {}
            else:  # a restarted or resumed trial (or a retried start) continues its own run
                self.client.update_run(run_id, status="RUNNING")
                have = self.client.get_run(run_id).data.params
            # only the params the run lacks: a retried start after a partial failure completes them,
            # and a param whose value changed since (the LR, under PBT or the Q-learning agent) is kept as first logged
            params = [Param(k, str(v)[:6000]) for k, v in op["params"].items() if k not in have]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i : i + 100])
            return
        run_id = self._run_of(trial_id)
        if run_id is None:
            raise _NoRun(f"no MLflow run for trial {trial_id}")
        if kind == "metrics":
            if int(op["step"]) <= self._stored_epoch(run_id):
                return  # already in MLflow (a resumed trial re-reporting epochs a previous driver logged)
            batch = [Metric(k, float(v), op["ts"], op["step"]) for k, v in op["values"].items()]
            self.client.log_batch(run_id, metrics=batch)
            self._stored[run_id] = int(op["step"])
        elif kind == "text":
            self.client.log_text(run_id, op["text"], op["file"])
        elif kind == "tag":
            self.client.set_tag(run_id, op["key"], op["value"])
        elif kind == "end":
            self.client.set_terminated(run_id, status=op["status"])
        else:
            raise _BadOp(f"unknown operation {kind!r}")

    def log_run(self, trial_id: str, name: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """A run that is not a Tune trial (a baseline computed inside another trial), through the same queue:
        idempotent (the run is found by its trial id), buffered and retried like every other record."""
        self._push({"op": "start", "trial": trial_id, "name": name,
                    "params": {k: str(v) for k, v in flatten(params).items()}})
        self._push({"op": "metrics", "trial": trial_id, "step": 1, "ts": int(time.time() * 1000),
                    "values": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})
        self._push({"op": "end", "trial": trial_id, "status": "FINISHED"})

    # -- Tune hooks -----------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self._start_sender()

    def on_trial_start(self, iteration, trials, trial, **info):
        with self._lock:
            self._load_backlog()
        config = trial.config
        self._open.add(trial.trial_id)
        self._push({
            "op": "start", "trial": trial.trial_id,
            "name": f"{config.get('method', 'trial')}-seed{config.get('seed', '?')}",
            "params": trial_params(config),
        })

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._last_epoch.get(trial.trial_id, 0):
            return  # already stored or queued (a restarted trial re-reporting)
        keys = self.metrics if self.metrics is not None else own_keys(result)
        values = {k: result[k] for k in keys if isinstance(result.get(k), (int, float))}
        if EXPLOITS_KEY in (trial.config or {}):  # a PBT member that has exploited (MemberPBT counts them)
            values[EXPLOITS_KEY] = float(trial.config[EXPLOITS_KEY])
        self._last_epoch[trial.trial_id] = epoch
        self._push({"op": "metrics", "trial": trial.trial_id, "step": epoch, "ts": int(time.time() * 1000),
                    "values": values})
        for key, file_name in self.artifacts.items():
            if isinstance(result.get(key), str):
                self._push({"op": "text", "trial": trial.trial_id, "file": file_name, "text": result[key]})
        if result.get("diverged"):
            self._push({"op": "tag", "trial": trial.trial_id, "key": "medtune.diverged", "value": "true"})

    def _stopped(self) -> str | None:
        return self.stop_note() if self.stop_note is not None else None

    def _kill(self, trial_id: str, note: str) -> None:
        """End a trial the stopped run left unfinished: ``KILLED``, with why, so it is never shown as measured."""
        self._open.discard(trial_id)
        self._push({"op": "tag", "trial": trial_id, "key": TAG_ERROR, "value": note})
        self._push({"op": "end", "trial": trial_id, "status": "KILLED"})

    def on_trial_complete(self, iteration, trials, trial, **info):
        note = self._stopped()
        if note:  # the whole run was stopped (fail-fast): this trial did not finish
            self._kill(trial.trial_id, note)
            return
        self._open.discard(trial.trial_id)
        self._push({"op": "end", "trial": trial.trial_id, "status": "FINISHED"})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._open.discard(trial.trial_id)
        error = trial_error(trial)
        if error:  # what `medtune report` says of the failure, from MLflow alone
            self._push({"op": "tag", "trial": trial.trial_id, "key": TAG_ERROR, "value": error})
        self._push({"op": "end", "trial": trial.trial_id, "status": "FAILED"})

    def on_experiment_end(self, trials, **info):
        note = self._stopped()
        if note:  # trials the stop ended without a callback of their own (Tune's stop-all)
            for trial_id in sorted(self._open):
                self._kill(trial_id, note)
        self._stop_sender()
        if self.flush(force=True):
            log.warning(f"{self.pending} MLflow records could not be delivered; they are kept in "
                  f"{self.backlog}. Deliver them with: medtune report --sync {Path(self.backlog or '.').parent}")


class _NoRun(RuntimeError):
    """A record for a trial whose run does not exist (its start record was lost): it can never be delivered."""


class _BadOp(ValueError):
    """A malformed record."""


def _permanent(exc: Exception) -> bool:
    """Whether retrying can never deliver the record: a 4xx answer (but 429), or a malformed or orphaned record.

    Transport failures (``OSError`` and its ``requests`` subclasses) and 5xx answers are worth retrying.
    """
    if isinstance(exc, OSError):
        return False
    if isinstance(exc, (_NoRun, _BadOp, KeyError, TypeError, ValueError)):
        return True
    status = getattr(exc, "get_http_status_code", None)  # MlflowException and its REST subclass
    try:
        code = int(status()) if callable(status) else None
    except Exception:
        code = None
    return code is not None and 400 <= code < 500 and code != 429
