"""Ray Tune adapter for the Q-learning LR agent: a ``TrialScheduler`` plus an LR mailbox.

The algorithm lives in :mod:`searchers.qlearning_agent`; this file only wires it
to Tune (DESIGN.md section 4):

* :class:`QLearningLRScheduler` sees every reported result of the trials whose
  ``config["method"]`` is ``qlearning`` (other trials get plain FIFO
  treatment). One :class:`~searchers.qlearning_agent.QTable` is shared by all
  its trials, so parallel trials pool their experience; each trial has its own
  :class:`~searchers.qlearning_agent.QLearningLRAgent` (history, counters, LR).
* A new LR reaches the *running* trial through :class:`LRMailbox`, a named Ray
  actor the trainable reads once per epoch: no pause, no restart, the process,
  optimizer state and data loaders carry on. Function trainables report
  synchronously, so an LR written while handling epoch ``t``'s result is read
  before epoch ``t + 1`` starts. ``trial.set_config`` records it as well, so the
  experiment state that ``Tuner.restore`` reads holds the current LR.
* Tune never calls ``TrialScheduler.save/restore`` and unpickles a restored
  scheduler in its initial state, so the scheduler keeps its own journal
  (``state_path``, JSON lines): every decision appends the table and the
  trial's agent state, flushed at once. A restarted driver replays the journal
  on first use, so nothing learned is lost when the driver dies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import ray
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from searchers.qlearning_agent import QLearningConfig, QLearningLRAgent, QTable, load_qtable_file

METHOD = "qlearning"


@ray.remote(num_cpus=0)
class LRMailbox:
    """Latest LR per trial id, written by the scheduler, read by trainables."""

    def __init__(self) -> None:
        self._lr: dict[str, float] = {}

    def put(self, trial_id: str, lr: float) -> None:
        self._lr[trial_id] = lr

    def get(self, trial_id: str) -> float | None:
        return self._lr.get(trial_id)


def open_mailbox(name: str) -> Any:
    """Get the named :class:`LRMailbox`, creating it if it does not exist yet."""
    return LRMailbox.options(name=name, get_if_exists=True).remote()


def read_mailbox(name: str, trial_id: str) -> float | None:
    """The trainable's side: the LR the scheduler set for ``trial_id``, or None.

    Returns None as well when the mailbox does not exist (e.g. the trainable
    runs outside the Q-learning experiment).
    """
    try:
        box = ray.get_actor(name)
    except ValueError:
        return None
    return ray.get(box.get.remote(trial_id))


class QLearningLRScheduler(FIFOScheduler):
    """Drives the LR of every ``qlearning`` trial with one shared Q-table.

    Args:
        config: the agent's hyper-parameters (paper 000 section 4.1 defaults).
        state_path: the journal file (JSON lines); replayed if it exists.
        mailbox: name of the :class:`LRMailbox` actor trainables read.
        seed: seeds the shared table's initialisation and exploration.
        metric: result key of the validation Dice; ``loss_metric`` of the validation loss.
        warm_start: a Q-table JSON from an earlier experiment to start from
            (ignored when the journal already exists: a resumed run keeps its own table).
        deliver: ``deliver(trial_id, lr)`` replaces the mailbox (tests, benchmarks, other transports).

    Decisions: always ``CONTINUE``; the scheduler never stops or pauses a trial.
    """

    _supports_buffered_results = False

    def __init__(
        self,
        config: QLearningConfig,
        state_path: str | os.PathLike,
        mailbox: str,
        seed: int = 0,
        metric: str = "dice",
        loss_metric: str = "val_loss",
        warm_start: str | None = None,
        deliver: Callable[[str, float], None] | None = None,
    ) -> None:
        super().__init__()
        self.deliver = deliver
        self.config = config
        self.state_path = str(state_path)
        self.mailbox_name = mailbox
        self.seed = seed
        self.dice_metric = metric
        self.loss_metric = loss_metric
        self.warm_start = warm_start
        self._reset()

    def _reset(self) -> None:
        self.table: QTable | None = None
        self.agents: dict[str, QLearningLRAgent] = {}
        self.last_epoch: dict[str, int] = {}
        self.warm_started_from: str | None = None
        self.restored_updates = 0
        self._box = None
        self._journal_dir_ready = False

    # Tune pickles the scheduler into tuner.pkl; keep only the configuration.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("table", "agents", "last_epoch", "_box", "warm_started_from", "restored_updates", "_journal_dir_ready"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- state ------------------------------------------------------------
    def _ensure_table(self) -> QTable:
        if self.table is not None:
            return self.table
        path = Path(self.state_path)
        if path.exists() and path.stat().st_size > 0:
            self.table = QTable(self.config, seed=self.seed)
            for record in _read_journal(path):
                self.table.load_state_dict(record["table"], keep_rng=True)
                agent = QLearningLRAgent(self.config, table=self.table)
                agent.load_state_dict(record["agent"])
                self.agents[record["trial"]] = agent
                self.last_epoch[record["trial"]] = record.get("epoch", 0)
            self.restored_updates = self.table.updates
            # Re-seed exploration deterministically from how far learning got.
            self.table.rng.seed(self.seed * 1_000_003 + self.table.updates)
        elif self.warm_start:
            self.table = load_qtable_file(self.warm_start, self.config, seed=self.seed)
            self.warm_started_from = self.warm_start
        else:
            self.table = QTable(self.config, seed=self.seed)
        return self.table

    def _journal(self, trial_id: str, epoch: int) -> None:
        assert self.table is not None
        table = self.table.state_dict(include_rng=False)
        record = {"trial": trial_id, "epoch": epoch, "table": table, "agent": self.agents[trial_id].state_dict()}
        path = Path(self.state_path)
        if not self._journal_dir_ready:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._journal_dir_ready = True
        with open(path, "a+b") as f:
            # A driver killed mid-write leaves a torn last line: start a fresh line after it.
            size = f.seek(0, os.SEEK_END)
            torn = size > 0 and f.seek(size - 1) >= 0 and f.read(1) != b"\n"
            f.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())
            f.flush()

    def snapshot(self) -> dict[str, Any]:
        """The shared table and every trial's agent, JSON-serialisable (for reports)."""
        table = self._ensure_table()
        return {
            "table": table.state_dict(),
            "agents": {tid: a.state_dict() for tid, a in self.agents.items()},
            "config": self.config.__dict__,
        }

    def _agent(self, trial: Trial) -> QLearningLRAgent:
        table = self._ensure_table()
        agent = self.agents.get(trial.trial_id)
        if agent is None:
            agent = QLearningLRAgent(self.config, table=table)
            lr = trial.config.get("lr")
            if lr is not None:  # kept inside [min_lr, max_lr]: the agent's actions assume it
                agent.run.lr = min(max(float(lr), self.config.min_lr), self.config.max_lr)
            self.agents[trial.trial_id] = agent
        return agent

    def _deliver(self, trial: Trial, lr: float) -> None:
        if self.deliver is not None:
            self.deliver(trial.trial_id, lr)
        else:
            if self._box is None:
                self._box = open_mailbox(self.mailbox_name)
            ray.get(self._box.put.remote(trial.trial_id, lr))
        trial.set_config({**trial.config, "lr": lr})

    # -- Tune hooks -------------------------------------------------------
    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if trial.config.get("method") == METHOD:
            agent = self._agent(trial)
            # A resumed trial gets the LR its agent had when the driver stopped; a new one whose
            # configured LR lay outside the bounds gets the clamped LR.
            if trial.trial_id in self.last_epoch or agent.lr != trial.config.get("lr", agent.lr):
                self._deliver(trial, agent.lr)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if trial.config.get("method") != METHOD:
            return TrialScheduler.CONTINUE
        dice, loss = result.get(self.dice_metric), result.get(self.loss_metric)
        if dice is None or loss is None:
            return TrialScheduler.CONTINUE
        self._ensure_table()  # replays the journal first, so a re-reported epoch is recognised
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self.last_epoch.get(trial.trial_id, 0):
            return TrialScheduler.CONTINUE  # a restarted trial re-reporting an epoch we already used
        self.last_epoch[trial.trial_id] = epoch
        agent = self._agent(trial)
        before, updates = agent.lr, agent.table.updates
        decided = len(agent.run.decisions)
        after = agent.step(dice=float(dice), val_loss=float(loss))
        if after != before:
            self._deliver(trial, after)
        if len(agent.run.decisions) != decided or agent.table.updates != updates:
            self._journal(trial.trial_id, epoch)
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        table = self.table
        if table is None:
            return "QLearningLRScheduler: no qlearning result yet"
        return (
            f"QLearningLRScheduler: {len(self.agents)} qlearning trials, {table.updates} Q-updates, "
            f"epsilon {table.epsilon:.3f}"
        )


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """Records of a journal; a torn last line (driver killed mid-write) is dropped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records

