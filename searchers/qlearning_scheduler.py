"""Ray Tune adapter for the Q-learning LR agent: a ``TrialScheduler`` plus an LR mailbox.

The algorithm lives in :mod:`medtune.searchers.qlearning_agent`; this file only wires it
to Tune (behaviour verified on Ray 2.60):

* :class:`QLearningLRScheduler` sees every reported result of the trials whose
  ``config["method"]`` is ``qlearning`` (other trials get plain FIFO
  treatment). One :class:`~medtune.searchers.qlearning_agent.QTable` is shared by all
  the trials of a method, so parallel trials pool their experience; each trial has its own
  :class:`~medtune.searchers.qlearning_agent.QLearningLRAgent` (history, counters, LR).
  ``qlearning_warm`` trials, when present, share a second table that starts
  from an earlier experiment's Q-table, so one report compares cold and warm.
* A new LR reaches the *running* trial through :class:`LRMailbox`, a named Ray
  actor the trainable reads once per epoch: no pause, no restart, the process,
  optimizer state and data loaders carry on. Function trainables report
  synchronously, so an LR written while handling epoch ``t``'s result is read
  before epoch ``t + 1`` starts. ``trial.set_config`` records it as well, so the
  experiment state that ``Tuner.restore`` reads holds the current LR.
* Tune never calls ``TrialScheduler.save/restore`` and unpickles a restored
  scheduler in its initial state, so the scheduler keeps its own journal
  (``state_path``, JSON lines, each written to the file at once, so a killed
  driver loses nothing). A record is the epoch's input to the agent,
  ``[trial number, epoch, dice, loss]`` (about 40 bytes); a trial's first record
  is preceded by one naming it and its starting LR, a method's first by its
  table's initial state. The agents are deterministic given their inputs and
  their table's RNG, so a restarted driver replays the records through them and
  rebuilds exactly the tables (Q-values, counters, RNG state) and agents of the
  driver that never stopped. Once at least ``journal_snapshot_every`` records
  follow the last snapshot and weigh ``SNAPSHOT_RATIO`` (4) times as much as
  it, the journal is replaced atomically (temporary file + ``os.replace``) by
  one line holding the whole state: the file stays below five snapshots plus
  that many records whatever the number of results, snapshots add at most a
  quarter to what the records write, and a resume reads the snapshot and the
  tail.
  A journal written before this format (a full state on every decision) is
  still replayed as it was, then rewritten as a snapshot on the next write.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import ray
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from medtune.searchers.episodic_memory import EpisodicMemory
from medtune.searchers.qlearning_agent import (
    METHOD,
    WARM_METHOD,
    Decision,
    QLearningConfig,
    QLearningLRAgent,
    QTable,
    load_qtable_file,
)

__all__ = [
    "CONTROL_KEY", "EpisodeRecorder", "JOURNAL_SNAPSHOT_EVERY", "LRMailbox", "METHODS", "QLearningLRScheduler",
    "SNAPSHOT_RATIO", "TUNE_KEYS", "missing_keys", "open_mailbox", "read_episodes", "read_mailbox",
    "replay_journal", "reported_keys",
]

log = logging.getLogger(__name__)

METHODS = (METHOD, WARM_METHOD)
CONTROL_KEY = "lr_control"  # set to 1 in every result reported through medtune.LRControl.step
# What Tune adds to every result by itself: not the trial's own keys.
TUNE_KEYS = frozenset({
    "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore", "iterations_since_restore",
    "training_iteration", "pid", "done", "date", "hostname", "node_ip", "trial_id", "experiment_tag",
    "should_checkpoint", "checkpoint_dir_name", "experiment_id", "config",
})

logger = logging.getLogger(__name__)

JOURNAL_SNAPSHOT_EVERY = 1000  # records at least between two snapshots (see QLearningLRScheduler)
# ... and the records since the last snapshot weigh this many times as much as it: snapshots then add at most a
# quarter to the bytes the records write, and the file stays below (1 + SNAPSHOT_RATIO) snapshots + those records.
SNAPSHOT_RATIO = 4
_DECISION_FIELDS = tuple(f.name for f in fields(Decision))  # a decision in a snapshot: its values in this order


def reported_keys(result: dict) -> list[str]:
    """The keys a trial itself reported (Tune's own and ``config/...`` left out), in order."""
    return [k for k in result if k not in TUNE_KEYS and not k.startswith("config/") and k != CONTROL_KEY]


def missing_keys(result: dict, metric: str, loss_metric: str, require_control: bool) -> str | None:
    """One line saying what a driven trial's first result lacks, or None when it has all it needs."""
    missing = [f"{k!r} ({role})" for k, role in ((metric, "metric"), (loss_metric, "loss_metric")) if k not in result]
    if missing:
        return (f"its first result lacks {', '.join(dict.fromkeys(missing))}; it reported: "
                f"{', '.join(reported_keys(result)) or 'nothing'}")
    if require_control and CONTROL_KEY not in result:
        return ("it never called medtune.LRControl.step (its first result lacks the key 'lr_control'), so no LR "
                f"decision could reach it; it reported: {', '.join(reported_keys(result)) or 'nothing'}")
    return None


@ray.remote(num_cpus=0)
class LRMailbox:
    """The study's message board: the latest LR per trial id (written by the scheduler, read by
    trainables) and the episodic memory of finished Dice curves (written by the driver, read by
    ``effort`` trials), so both work on any node of a cluster."""

    def __init__(self) -> None:
        self._lr: dict[str, float] = {}
        self._episodes: list[dict[str, Any]] = []
        self._seeded_from: set[str] = set()

    def put(self, trial_id: str, lr: float) -> None:
        self._lr[trial_id] = lr

    def get(self, trial_id: str) -> float | None:
        return self._lr.get(trial_id)

    def add_episodes(self, episodes: list[dict[str, Any]]) -> int:
        self._episodes.extend(episodes)
        return len(self._episodes)

    def seed_episodes(self, path: str) -> int:
        """Load the memory file once per board (whoever creates the board first)."""
        if path not in self._seeded_from:
            self._seeded_from.add(path)
            stored = EpisodicMemory.load(path)
            self._episodes.extend({"curve": list(e.curve), "task": e.task, "source": e.source} for e in stored.episodes)
        return len(self._episodes)

    def episodes(self, task: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._episodes if task is None or e.get("task") == task]


def open_mailbox(name: str) -> Any:
    """Get the named :class:`LRMailbox`, creating it if it does not exist yet.

    A new board is pinned to the node of the process that creates it (the driver), so losing a
    worker node never loses the board.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return LRMailbox.options(  # type: ignore[attr-defined]  # @ray.remote made it an ActorClass; the stubs miss that
        name=name, get_if_exists=True, scheduling_strategy=here).remote()


def read_mailbox(name: str, trial_id: str) -> float | None:
    """The trainable's side: the LR the scheduler set for ``trial_id``, or None.

    Returns None as well when the mailbox does not exist (e.g. the trainable
    runs outside the Q-learning experiment).
    """
    try:
        box: Any = ray.get_actor(name)
    except ValueError:
        return None
    return ray.get(box.get.remote(trial_id))


def read_episodes(name: str, task: str | None = None) -> EpisodicMemory:
    """The trainable's side: the episodic memory held by the board (empty if there is none)."""
    try:
        box: Any = ray.get_actor(name)
    except ValueError:
        return EpisodicMemory()
    memory = EpisodicMemory()
    for e in ray.get(box.episodes.remote(task)):
        memory.add(e["curve"], e.get("task", ""), e.get("source", ""))
    return memory


class EpisodeRecorder(Callback):
    """Stores the validation Dice curve of every finished trial in the episodic memory.

    The memory file (JSON lines, in the output folder) outlives the experiment; the board actor
    serves this experiment's trials. Diverged trials are not stored, and neither is a curve this
    driver did not see from epoch 1 on (a trial resumed mid-run), so no partial curve is stored as
    if it were whole.

    Args:
        mailbox: the board's name (created if missing, seeded with the file's episodes).
        path: the memory file.
        task: the task key of this experiment's curves (same data, model and batch size).
        session: prefix of each episode's ``source``.
    """

    def __init__(self, mailbox: str, path: str | os.PathLike, task: str, session: str, metric: str = "dice") -> None:
        self.mailbox, self.path, self.task, self.session = mailbox, str(path), task, session
        self.metric = metric
        self._curves: dict[str, dict[int, float]] = {}
        self._box: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_box": None, "_curves": {}}

    def board(self) -> Any:
        if self._box is None:
            self._box = open_mailbox(self.mailbox)
            ray.get(self._box.seed_episodes.remote(self.path))
        return self._box

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.board()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metric = getattr(self, "metric", "dice")  # a recorder pickled before the metric was configurable
        if metric in result and "epoch" in result:
            self._curves.setdefault(trial.trial_id, {})[int(result["epoch"])] = float(result[metric])

    def on_trial_complete(self, iteration, trials, trial, **info):
        points = self._curves.pop(trial.trial_id, {})
        last = trial.last_result or {}
        if not points or last.get("diverged") or sorted(points) != list(range(1, len(points) + 1)):
            return
        curve = [points[e] for e in sorted(points)]
        source = f"{self.session}/{trial.config.get('method')}-seed{trial.config.get('seed')}"
        EpisodicMemory.append(self.path, curve, self.task, source)
        ray.get(self.board().add_episodes.remote([{"curve": curve, "task": self.task, "source": source}]))


class QLearningLRScheduler(FIFOScheduler):
    """Drives the LR of every ``qlearning`` (and ``qlearning_warm``) trial; one shared Q-table per method.

    Args:
        config: the agent's hyper-parameters (paper 000 section 4.1 defaults).
        state_path: the journal file (JSON lines); replayed if it exists.
        mailbox: name of the :class:`LRMailbox` actor trainables read.
        seed: seeds the shared table's initialisation and exploration.
        metric: result key of the validation Dice (or any metric; ``mode`` ``max`` or ``min``, a ``min`` metric
            is negated for the agent); ``loss_metric``: the result key of the validation loss.
        warm_start: a Q-table JSON from an earlier experiment to start from
            (ignored when the journal already exists: a resumed run keeps its own table).
        warm_method: the method whose table starts from ``warm_start``: ``qlearning`` (default), or
            ``qlearning_warm`` to compare a warm agent with a cold ``qlearning`` one in the same experiment.
        deliver: ``deliver(trial_id, lr)`` replaces the mailbox (tests, benchmarks, other transports).
        require_control: a driven trial must report through :class:`medtune.LRControl` (its results carry
            ``lr_control``); one that does not is stopped (see below).
        journal_snapshot_every: the journal is rewritten as one snapshot line once at least this many records
            follow the last snapshot and they weigh ``SNAPSHOT_RATIO`` times as much as it (module docstring).

    The starting LR of a trial's agent is ``config["lr"]``, else the ``lr`` of its first result (the
    optimizer's own LR), clamped to ``[min_lr, max_lr]``.

    Decisions: ``CONTINUE``, except for a driven trial whose first result lacks ``metric`` or ``loss_metric``
    (or, with ``require_control``, the ``lr_control`` key): no decision could ever reach it, so it is
    stopped, the reason (one line naming the missing key and the keys the trial did report) is logged at
    ERROR and kept in :attr:`problems`. The scheduler never pauses a trial.
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
        warm_method: str = METHOD,
        mode: str = "max",
        require_control: bool = False,
        journal_snapshot_every: int = JOURNAL_SNAPSHOT_EVERY,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r} must be 'max' or 'min'")
        if not (isinstance(journal_snapshot_every, int) and journal_snapshot_every >= 1):
            raise ValueError(f"journal_snapshot_every={journal_snapshot_every!r} must be an integer >= 1 (records)")
        self.journal_snapshot_every = journal_snapshot_every
        self.mode = mode
        self.require_control = require_control
        self.deliver = deliver
        self.config = config
        self.state_path = str(state_path)
        self.mailbox_name = mailbox
        self.seed = seed
        self.dice_metric = metric
        self.loss_metric = loss_metric
        self.warm_start = warm_start
        if warm_method not in METHODS:
            raise ValueError(f"warm_method={warm_method!r} must be one of {', '.join(METHODS)}")
        self.warm_method = warm_method
        self._reset()

    def _reset(self) -> None:
        self.tables: dict[str, QTable] = {}
        self._loaded = False
        self.agents: dict[str, QLearningLRAgent] = {}
        self.last_epoch: dict[str, int] = {}
        self.warm_started_from: str | None = None
        self.restored_updates = 0
        self._box: Any = None
        self._journal_checked = False
        self.problems: dict[str, str] = {}  # trial id -> why it was stopped
        self._checked: set[str] = set()
        # The journal: trial id -> its number in the records, number -> trial id, each journaled trial's method;
        # the methods whose table is in the journal; the open file (and its path); records and bytes since the
        # last snapshot, the snapshot's size; a journal of the old format to rewrite at the next write.
        self._index: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._methods: dict[str, str] = {}
        self._journaled_tables: set[str] = set()
        self._fh: Any = None
        self._fh_path: str | None = None
        self._tail_records = 0
        self._tail_bytes = 0
        self._snapshot_bytes = 0
        self._convert = False

    _RUNTIME = ("tables", "_loaded", "agents", "last_epoch", "_box", "warm_started_from", "restored_updates",
                "_journal_checked", "problems", "_checked", "_index", "_ids", "_methods", "_journaled_tables", "_fh",
                "_fh_path", "_tail_records", "_tail_bytes", "_snapshot_bytes", "_convert")

    # Tune pickles the scheduler into tuner.pkl; keep only the configuration.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in self._RUNTIME:
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- state ------------------------------------------------------------
    @property
    def table(self) -> QTable | None:
        """The ``qlearning`` method's shared table (None before first use)."""
        return self.tables.get(METHOD)

    def _ensure_loaded(self) -> None:
        """Replay the journal once (a restarted driver), so nothing learned is lost."""
        if self._loaded:
            return
        self._loaded = True
        path = Path(self.state_path)
        if not (path.exists() and path.stat().st_size > 0):
            return
        legacy = False
        for record, size in _journal_lines(path):
            # What the file holds since its last snapshot counts towards the next one, as if written by this process
            if isinstance(record, dict) and "snapshot" in record:
                self._tail_records, self._tail_bytes, self._snapshot_bytes = 0, 0, size
            else:
                self._tail_records += 1
                self._tail_bytes += size
            if isinstance(record, dict) and "epoch" in record and "trial" in record:  # the old format
                self._apply_legacy(record)
                legacy = self._convert = True  # the next write rewrites the journal as a snapshot
                continue
            if legacy:
                self._reseed()
                legacy = False
            self._apply(record)
        if legacy:
            self._reseed()
        self.restored_updates = sum(t.updates for t in self.tables.values())
        # Said only by a driving scheduler that restarted (a resume); the final-table rebuild (no mailbox) is quiet.
        (log.info if (self.mailbox_name or self.deliver) and self.agents else log.debug)(
            f"Q-learning: replayed {path.name}: {len(self.agents)} trials, "
            f"{self.restored_updates} Q-updates carried over")

    def _apply(self, record: Any) -> None:
        """Replay one record of the journal (see the module docstring for the kinds)."""
        if isinstance(record, list):  # an epoch: [trial number, epoch, dice, loss]
            n, epoch, dice, loss = record
            trial_id = self._ids[n]
            _observe(self.agents[trial_id], float(dice), float(loss))
            self.last_epoch[trial_id] = int(epoch)
        elif "snapshot" in record:
            self._load_snapshot(record["snapshot"])
        elif "new_table" in record:
            self.tables[record["new_table"]] = _table_from(record["config"], record["state"])
            self._journaled_tables.add(record["new_table"])
        else:  # a trial's first record: its number, method and starting LR
            method = record["method"]
            table = self.tables.get(method) or self._table(method, fresh=True)
            agent = self.agents[record["trial"]] = QLearningLRAgent(table.config, table=table)
            agent.run.lr = float(record["lr"])
            self._name(record["trial"], method, int(record["n"]))

    def _apply_legacy(self, record: dict[str, Any]) -> None:
        """Replay one record of the old format (a decision's whole state, or an epoch's observation)."""
        trial_id, table = record["trial"], self._table(record.get("method", METHOD), fresh=True)
        if "agent" in record:  # a decision: the whole state
            table.load_state_dict(record["table"], keep_rng=True)
            agent = QLearningLRAgent(self.config, table=table)
            agent.load_state_dict(record["agent"])
            self.agents[trial_id] = agent
        else:  # an epoch without a decision
            known = self.agents.get(trial_id)
            agent = known if known is not None else QLearningLRAgent(self.config, table=table)
            if known is None:
                self.agents[trial_id] = agent
                if record.get("lr") is not None:  # the LR the trial started from (its first result's)
                    agent.run.lr = float(record["lr"])
            agent.record(record["dice"], record["loss"])
        self.last_epoch[trial_id] = record.get("epoch", 0)
        self._methods[trial_id] = record.get("method", METHOD)

    def _reseed(self) -> None:
        # The old format kept no RNG state: exploration is re-seeded deterministically from how far learning got.
        for table in self.tables.values():
            table.rng.seed(self.seed * 1_000_003 + table.updates)

    def _name(self, trial_id: str, method: str, n: int) -> None:
        self._index[trial_id], self._ids[n], self._methods[trial_id] = n, trial_id, method

    def _load_snapshot(self, snap: dict[str, Any]) -> None:
        self.tables, self.agents, self.last_epoch, self._convert = {}, {}, {}, False
        self._index, self._ids, self._methods = {}, {}, {}
        for method, t in snap["tables"].items():
            self.tables[method] = _table_from(t["config"], t["state"])
        self._journaled_tables = set(self.tables)
        for trial_id, n, method, epoch, state in snap["trials"]:
            table = self.tables[method]
            agent = self.agents[trial_id] = QLearningLRAgent(table.config, table=table)
            state = dict(state, decisions=[dict(zip(_DECISION_FIELDS, d)) for d in state["decisions"]])
            agent.load_state_dict(state)
            self.last_epoch[trial_id] = epoch
            self._name(trial_id, method, n)

    def _table(self, method: str, fresh: bool = False) -> QTable:
        """The shared table of ``method``; a new one starts from ``warm_start`` if it is the warm method."""
        if not fresh:
            self._ensure_loaded()
        if method not in self.tables:
            if self.warm_start and method == self.warm_method and not fresh:
                self.tables[method] = load_qtable_file(self.warm_start, self.config, seed=self.seed)
                self.warm_started_from = self.warm_start
            else:
                self.tables[method] = QTable(self.config, seed=self.seed)
        return self.tables[method]

    def _write(self, line: str) -> None:
        """Append one line to the journal; the file stays open (unbuffered: each line reaches it at once)."""
        if self._fh is None or self._fh_path != self.state_path:
            self._close()
            path = Path(self.state_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh, self._fh_path = open(path, "a+b", buffering=0), self.state_path
            if not self._journal_checked:
                # A driver killed mid-write leaves a torn last line: start a fresh line after it.
                size = self._fh.seek(0, os.SEEK_END)
                if size > 0 and self._fh.seek(size - 1) >= 0 and self._fh.read(1) != b"\n":
                    self._fh.write(b"\n")
                self._journal_checked = True
        data = line.encode()
        self._fh.write(data)
        self._tail_records += 1
        self._tail_bytes += len(data)

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = self._fh_path = None

    def __del__(self) -> None:
        fh = self.__dict__.get("_fh")
        if fh is not None:
            fh.close()

    def _journal_trial(self, trial_id: str, method: str, lr: float) -> int:
        """Journal a trial's first record (and its method's table when that is new): its number in the records."""
        if method not in self._journaled_tables:
            table = self.tables[method]
            self._write(json.dumps({"new_table": method, "config": asdict(table.config),
                                    "state": table.state_dict()}) + "\n")
            self._journaled_tables.add(method)
        n = len(self._ids)
        while n in self._ids:
            n += 1
        self._name(trial_id, method, n)
        self._write(json.dumps({"n": n, "trial": trial_id, "method": method, "lr": lr}) + "\n")
        return n

    def _write_snapshot(self) -> None:
        """Replace the journal by one line holding every table and every journaled agent (atomic)."""
        for trial_id in self.last_epoch:  # trials of an old-format journal get their numbers now
            if trial_id not in self._index:
                n = max(self._ids, default=-1) + 1
                self._name(trial_id, self._methods.get(trial_id, METHOD), n)
        trials = []
        for trial_id, epoch in self.last_epoch.items():
            state = self.agents[trial_id].state_dict()
            state["decisions"] = [[d[k] for k in _DECISION_FIELDS] for d in state["decisions"]]
            trials.append([trial_id, self._index[trial_id], self._methods[trial_id], epoch, state])
        tables = {m: {"config": asdict(t.config), "state": t.state_dict()} for m, t in self.tables.items()}
        data = (json.dumps({"snapshot": {"tables": tables, "trials": trials}}, separators=(",", ":")) + "\n").encode()
        path = Path(self.state_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:  # (no fsync: like every record, it outlives a killed driver, not a power cut)
            f.write(data)
        self._close()
        os.replace(tmp, path)
        self._journaled_tables = set(self.tables)
        self._journal_checked = True  # the new file ends with a newline
        self._tail_records = self._tail_bytes = 0
        self._snapshot_bytes = len(data)
        self._convert = False

    def snapshot(self) -> dict[str, Any]:
        """Every method's table and every trial's agent, JSON-serialisable (for reports).

        ``table`` is the ``qlearning`` table (or the only one); ``tables`` holds each method's.
        """
        self._ensure_loaded()
        if not self.tables:
            self._table(METHOD)
        tables = {m: t.state_dict() for m, t in self.tables.items()}
        return {
            "table": tables.get(METHOD, next(iter(tables.values()))),
            "tables": tables,
            "warm_start": self.warm_start,
            "warm_method": self.warm_method if self.warm_start else None,
            "agents": {tid: a.state_dict() for tid, a in self.agents.items()},
            "config": self.config.__dict__,
        }

    def _agent(self, trial: Trial, result: dict | None = None) -> QLearningLRAgent:
        table = self._table(trial.config["method"])
        agent = self.agents.get(trial.trial_id)
        if agent is None:
            agent = QLearningLRAgent(self.config, table=table)
            lr = trial.config.get("lr")
            if lr is None and result is not None:
                lr = result.get("lr")  # no configured LR: the trial's own (its optimizer's), as it reported it
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
        if trial.config.get("method") in METHODS:
            if trial.config.get("lr") is None and trial.trial_id not in self.agents:
                self._ensure_loaded()
                if trial.trial_id not in self.agents:
                    return  # its LR is known at its first result
            agent = self._agent(trial)
            # A resumed trial gets the LR its agent had when the driver stopped; a new one whose
            # configured LR lay outside the bounds gets the clamped LR.
            if trial.trial_id in self.last_epoch or agent.lr != trial.config.get("lr", agent.lr):
                self._deliver(trial, agent.lr)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        method = trial.config.get("method")
        if method not in METHODS:
            return TrialScheduler.CONTINUE
        if trial.trial_id not in self._checked:
            self._checked.add(trial.trial_id)
            problem = missing_keys(result, self.dice_metric, self.loss_metric, self.require_control)
            if problem:
                self.problems[trial.trial_id] = f"trial {trial} ({method}) was stopped: {problem}"
                logger.error("%s", self.problems[trial.trial_id])
                return TrialScheduler.STOP
        dice, loss = result.get(self.dice_metric), result.get(self.loss_metric)
        if dice is None or loss is None:
            return TrialScheduler.CONTINUE
        dice, loss = float(dice), float(loss)
        if self.mode == "min":
            dice = -dice  # the agent's rewards assume higher is better
        if not self._loaded:
            self._ensure_loaded()  # replays the journal first, so a re-reported epoch is recognised
        epoch = result.get("epoch")
        epoch = int(result.get("training_iteration", 0) if epoch is None else epoch)
        trial_id = trial.trial_id
        if epoch <= self.last_epoch.get(trial_id, 0):
            return TrialScheduler.CONTINUE  # a restarted trial re-reporting an epoch we already used
        if self._convert:
            self._write_snapshot()  # an old-format journal: rewritten in the new format before it grows
        self.last_epoch[trial_id] = epoch
        agent = self.agents.get(trial_id)
        if agent is None:
            agent = self._agent(trial, result)
            if result.get("lr") is not None and agent.lr != float(result["lr"]):
                self._deliver(trial, agent.lr)  # the trial's own LR lay outside the bounds: it gets the clamped one
        before = agent.run.lr
        n = self._index.get(trial_id)
        if n is None:
            n = self._journal_trial(trial_id, method, before)
        after = _observe(agent, dice, loss)
        if after != before:
            self._deliver(trial, after)
        if dice - dice == 0 and loss - loss == 0:  # both finite (the usual case): repr reads back exactly
            self._write(f"[{n},{epoch},{dice!r},{loss!r}]\n")
        else:
            self._write(f"[{n},{epoch},{_num(dice)},{_num(loss)}]\n")
        if (self._tail_records >= self.journal_snapshot_every
                and self._tail_bytes >= SNAPSHOT_RATIO * self._snapshot_bytes):
            self._write_snapshot()
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        if not self.tables:
            return "QLearningLRScheduler: no qlearning result yet"
        parts = [f"{m}: {t.updates} Q-updates, epsilon {t.epsilon:.3f}" for m, t in self.tables.items()]
        return f"QLearningLRScheduler: {len(self.agents)} trials; " + "; ".join(parts)


def _read_journal(path: Path) -> list[Any]:
    """Records of a journal; a torn line (driver killed mid-write) is dropped."""
    return [record for record, _ in _journal_lines(path)]


def _journal_lines(path: Path) -> list[tuple[Any, int]]:
    """``(record, bytes of its line)`` for every whole line of a journal; a torn line is dropped."""
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append((json.loads(line), len(line) + 1))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return records


def replay_journal(path: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """The tables and agents a journal holds (:meth:`QLearningLRScheduler.snapshot`), read without writing to it.

    A journal of this format carries its agents' configuration; ``seed`` only matters for one of the old format.
    """
    return QLearningLRScheduler(QLearningConfig(), state_path=path, mailbox="", seed=seed).snapshot()


def _observe(agent: QLearningLRAgent, dice: float, loss: float) -> float:
    """``agent.step``, for less when no decision can fall on this epoch; returns the LR for the next epoch.

    Within the patience (or cooldown) no decision is possible, and ``step`` would only record the epoch (the
    history, the counters and the best Dice); :meth:`QLearningLRAgent.record` does exactly that without
    reading the trend.
    """
    run = agent.run
    if run.since_decision + 1 < run.wait:
        agent.record(dice, loss)
        return run.lr
    return agent.step(dice=dice, val_loss=loss)


def _num(x: float) -> str:
    """A float as JSON reads it back exactly (``repr``; NaN and infinities as Python's json writes them)."""
    if x - x == 0:
        return repr(x)
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


_CONFIGS: dict[str, QLearningConfig] = {}


def _table_from(config: dict[str, Any], state: dict[str, Any]) -> QTable:
    """A table (its RNG included) from a journal's ``config`` and ``state``."""
    key = json.dumps(config, sort_keys=True)
    if key not in _CONFIGS:
        _CONFIGS[key] = QLearningConfig(**config)
    table = QTable(_CONFIGS[key])
    table.load_state_dict(state)
    return table

