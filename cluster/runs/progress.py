"""What ``medtune run`` prints while a study trains: a line every few seconds, not Tune's tables.

:class:`ProgressLog` is a Tune callback. At the start it says how many trial-epochs the Tuner will run; then,
at most every ``every_s`` seconds, one line with the epochs done, the trials running, finished and failed, an
estimate of the time left, and each running trial's method, seed, epoch, metric and LR; and one line when a
trial finishes or fails. The estimate of the time left is the epochs left at the rate measured since the first
result (each trial's first epoch, which pays for starting workers and imports, is not counted), so it is
rough while trials of unequal cost run side by side; until :data:`ESTIMATE_AFTER` trial-epochs are measured
that way the line says "estimating" rather than a guess from the start-up alone.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback, TBXLoggerCallback

from medtune.cluster.runs.fail_fast import error_path, error_text, one_line

__all__ = ["ESTIMATE_AFTER", "ProgressLog", "trial_files"]

log = logging.getLogger(__name__)

ESTIMATE_AFTER = 3  # trial-epochs measured (past each trial's first) before the time left is estimated


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.1e}"
    return f"{value:.3f}"


class ProgressLog(Callback):
    """One progress line every ``every_s`` seconds, and one per finished or failed trial.

    Args:
        name: what this Tuner runs, e.g. ``"lr-schedulers"`` or ``"lr-schedulers (pbt)"``.
        trial_epochs: the number of trial-epochs the Tuner will run in all (trials x epochs), or None where a
            trial's length is not known ahead (no estimate of the time left then).
        metric: the result key shown for each trial (``dice``, ``macro_f1``, ...).
        epoch_key: the result key that counts a trial's epochs (rounds, for active learning).
        label_keys: config keys that name a trial (``method``, ``seed``; ``lam`` or ``regime`` where they apply).
        every_s: seconds between two progress lines (trial ends are said at once).
    """

    def __init__(self, name: str, trial_epochs: int | None, metric: str, epoch_key: str = "epoch",
                 label_keys: tuple[str, ...] = ("method", "seed"), every_s: float = 10.0):
        if trial_epochs is not None and trial_epochs < 1:
            raise ValueError(f"trial_epochs={trial_epochs!r} must be >= 1")
        self.name, self.total, self.metric, self.epoch_key = name, trial_epochs, metric, epoch_key
        self.label_keys, self.every_s = tuple(label_keys), float(every_s)
        self.latest: dict[str, dict[str, Any]] = {}  # trial id -> its latest result (the few keys shown)
        self.done: dict[str, int] = {}  # trial id -> epochs it has finished
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.first: dict[str, int] = {}  # trial id -> the epoch of its first result in this run
        self.started: float | None = None
        self.last_line: float | None = None
        self.first_result_at: float | None = None

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.started = time.monotonic()
        self.last_line = self.started
        if self.total:
            log.info("%s: %d trial-epochs to run", self.name, self.total)

    def label(self, trial: Any) -> str:
        config = getattr(trial, "config", {}) or {}
        parts = [str(config[k]) if k == "method" else f"{k} {config[k]}" for k in self.label_keys if k in config]
        return " ".join(parts) or str(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        epoch = result.get(self.epoch_key, result.get("training_iteration", 0))
        self.done[trial.trial_id] = max(self.done.get(trial.trial_id, 0), int(epoch or 0))
        self.first.setdefault(trial.trial_id, int(epoch or 0))
        self.latest[trial.trial_id] = {"epoch": epoch, "metric": result.get(self.metric), "lr": result.get("lr"),
                                       "label": self.label(trial)}
        now = time.monotonic()
        if self.first_result_at is None:
            self.first_result_at = now
        if self.last_line is None or now - self.last_line >= self.every_s:
            self.last_line = now
            log.info("%s", self.line(trials, now))

    def line(self, trials: list, now: float) -> str:
        done = sum(self.done.values())
        elapsed = now - (now if self.started is None else self.started)
        running = [t for t in trials if getattr(t, "status", "") == "RUNNING"]
        if self.total:
            done = min(done, self.total)
            left = self.left(done, now)
            head = f"{self.name}: {done}/{self.total} trial-epochs ({done / self.total:.0%}), "
            tail = f"{_duration(elapsed)} in, " + ("estimating the time left" if left is None else
                                                   f"about {_duration(left)} left")
        else:
            head, tail = f"{self.name}: {done} trial-epochs, ", f"{_duration(elapsed)} in"
        head += (f"{len(running)} running, {len(self.finished)} finished, {len(self.failed)} failed; " + tail)
        shown = []
        for t in running:
            r = self.latest.get(t.trial_id)
            if r:
                text = f"{r['label']} epoch {r['epoch']} {self.metric} {_number(r['metric'])}"
                shown.append(text + (f" lr {_number(r['lr'])}" if r["lr"] is not None else ""))
        return head + ("" if not shown else " | " + " | ".join(shown))

    def left(self, done: int, now: float) -> float | None:
        """Seconds left at the rate since the first result, or None while fewer than ``ESTIMATE_AFTER``
        trial-epochs (past each trial's first) have been measured."""
        measured = sum(self.done[t] - self.first.get(t, 0) for t in self.done)
        if self.total is None or self.first_result_at is None or measured < ESTIMATE_AFTER:
            return None
        return (now - self.first_result_at) / measured * max(0, self.total - done)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished.add(trial.trial_id)
        r = self.latest.get(trial.trial_id, {})
        log.info("%s: finished %s after %s epochs, %s %s (%d/%d trials done)", self.name, self.label(trial),
                 r.get("epoch", "?"), self.metric, _number(r.get("metric")), len(self.finished) + len(self.failed),
                 len(trials))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed.add(trial.trial_id)
        log.warning("%s: trial %s failed: %s; the full traceback is in %s", self.name, self.label(trial),
                    one_line(error_text(trial)), error_path(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("%s: trial %s failed and restarts from its last checkpoint: %s; the full traceback is in %s",
                    self.name, self.label(trial), one_line(error_text(trial)), error_path(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        now = time.monotonic()
        elapsed = now - (now if self.started is None else self.started)
        log.info("%s: %d trials finished, %d failed, in %s", self.name, len(self.finished), len(self.failed),
                 _duration(elapsed))


class _NoTensorBoardFiles(TBXLoggerCallback):
    """Stands in for Tune's TensorBoard logger, which Tune adds to every Tuner that lacks one: writes nothing."""

    def __init__(self) -> None:
        LoggerCallback.__init__(self)  # not TBXLoggerCallback's, which imports tensorboardX

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


def trial_files() -> list[Callback]:
    """The per-trial files a study's Tuner writes beside its checkpoints: Tune's ``result.json`` and
    ``progress.csv`` (what ``Tuner.restore`` and Tune's result grid read), not its TensorBoard event files.

    MLflow already holds every metric. Tune writes the event files in the driver for every result, and on a
    small machine the driver shares its cores with the trials: without them the 8-trial LR study's slot
    utilisation went from 0.937 to 0.951 and its span from 78.7 s to 72.2 s on 2 cores.
    """
    return [JsonLoggerCallback(), CSVLoggerCallback(), _NoTensorBoardFiles()]
