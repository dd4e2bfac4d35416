"""Tests for medtune.searchers.qlearning_scheduler.QLearningLRScheduler, fed fake results.

Ray is imported (for the Tune classes) but never started: trials are :class:`FakeTrial`
objects and ``deliver=`` records LR changes instead of writing to the mailbox actor.
"""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
from ray.tune.schedulers import TrialScheduler

from medtune.searchers.qlearning_agent import ACTIONS, STATES, QLearningConfig, QTable
from medtune.searchers.qlearning_scheduler import QLearningLRScheduler

CONTINUE = TrialScheduler.CONTINUE


class FakeTrial:
    """What the scheduler touches of a Tune Trial: trial_id, config, set_config."""

    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id = trial_id
        self.config = dict(config)
        self.set_config_calls: list[dict] = []

    def set_config(self, cfg: dict) -> None:
        self.set_config_calls.append(cfg)
        self.config = cfg


class Recorder:
    """A picklable ``deliver`` (the scheduler itself gets pickled in one test)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, trial_id: str, lr: float) -> None:
        self.calls.append((trial_id, lr))


def ql_trial(tid: str, lr: float = 1e-3) -> FakeTrial:
    return FakeTrial(tid, {"method": "qlearning", "seed": 0, "lr": lr})


def result(epoch: int, dice: float, loss: float) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "dice": dice, "val_loss": loss}


def write_qtable(path, q_of) -> None:
    """A Q-table file whose q[s][a] = q_of(s, a), no visits, epsilon 0.05."""
    table = QTable(QLearningConfig(), seed=0)
    for s in STATES:
        for a in ACTIONS:
            table.q[s][a] = q_of(s, a)
    state = table.state_dict()
    state["epsilon"] = 0.05
    path.write_text(json.dumps(state))


GREEDY_FAST = QLearningConfig(epsilon=0.0, epsilon_min=0.0, patience=0, cooldown=0)
EXPLORING_FAST = QLearningConfig(epsilon=0.5, epsilon_decay=1.0, patience=0, cooldown=0)

# improving for 5 epochs, then falling (see the state worked out in the delivery test)
CURVE = [
    (0.1, 1.0), (0.2, 0.9), (0.3, 0.8), (0.4, 0.7), (0.5, 0.6),
    (0.4, 0.7), (0.3, 0.8), (0.2, 0.9), (0.1, 1.0),
]  # fmt: skip

WAVE = [(0.5, 1.0), (0.6, 0.9), (0.55, 0.95), (0.7, 0.8), (0.65, 0.85), (0.8, 0.7), (0.6, 0.9), (0.75, 0.75)]


def make(tmp_path, config=EXPLORING_FAST, **kw) -> tuple[QLearningLRScheduler, Recorder]:
    rec = kw.pop("deliver", None) or Recorder()
    sched = QLearningLRScheduler(config, state_path=tmp_path / "journal.jsonl", mailbox="unused", deliver=rec, **kw)
    return sched, rec


def feed(sched, trial, curve, first_epoch: int = 1) -> list[str]:
    return [sched.on_trial_result(None, trial, result(first_epoch + i, d, l)) for i, (d, l) in enumerate(curve)]


def journal_lines(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- routing


def test_non_qlearning_trial_continues_without_delivery_or_agent(tmp_path):
    sched, rec = make(tmp_path)
    trial = FakeTrial("base", {"method": "cosine", "lr": 1e-3})
    sched.on_trial_add(None, trial)
    assert feed(sched, trial, CURVE) == [CONTINUE] * len(CURVE)
    assert rec.calls == [] and trial.set_config_calls == []
    assert sched.agents == {} and sched.table is None
    assert not (tmp_path / "journal.jsonl").exists()


def test_qlearning_trial_always_continues_and_delivers_exactly_on_lr_change(tmp_path):
    # maintain dominates every state but worsening, where decrease dominates; no exploration
    qfile = tmp_path / "policy.json"
    write_qtable(qfile, lambda s, a: 10.0 if a == ("decrease" if s == "worsening" else "maintain") else 0.0)
    sched, rec = make(tmp_path, GREEDY_FAST, warm_start=str(qfile))
    trial = ql_trial("t1", lr=1e-3)
    assert feed(sched, trial, CURVE) == [CONTINUE] * 9
    agent = sched.agents["t1"]
    # States (window 5): epochs 3-5 improving; epoch 6 dice [.2 .3 .4 .5 .4] 3/4 up, net +.2 -> improving;
    # epoch 7 dice [.3 .4 .5 .4 .3] 2/4, net 0 -> mixed; epochs 8, 9 3/4 and 4/4 down, loss alike -> worsening.
    assert [(d.epoch, d.state, d.action) for d in agent.decisions] == [
        (3, "improving", "maintain"), (4, "improving", "maintain"), (5, "improving", "maintain"),
        (6, "improving", "maintain"), (7, "mixed", "maintain"),
        (8, "worsening", "decrease"), (9, "worsening", "decrease"),
    ]  # fmt: skip
    # the trial's own lr (1e-3) is the agent's start: 1e-3 * 0.5 = 5e-4, * 0.5 = 2.5e-4
    assert rec.calls == [("t1", 5e-4), ("t1", 2.5e-4)]
    changes = [("t1", d.lr_after) for d in agent.decisions if d.lr_after != d.lr_before]
    assert rec.calls == changes
    assert trial.config["lr"] == 2.5e-4 and len(trial.set_config_calls) == 2
    assert trial.config["method"] == "qlearning" and trial.config["seed"] == 0  # rest of the config kept


def test_two_qlearning_trials_share_one_table(tmp_path):
    sched, _ = make(tmp_path)
    a, b = ql_trial("a"), ql_trial("b")
    for i in range(5):  # interleaved like parallel trials
        sched.on_trial_result(None, a, result(i + 1, *CURVE[i]))
        sched.on_trial_result(None, b, result(i + 1, *WAVE[i]))
    assert sched.agents["a"].table is sched.table is sched.agents["b"].table
    # each trial decides at epochs 3, 4, 5 (patience 0) and updates Q at its 2nd and 3rd decision: 2 + 2
    assert len(sched.agents["a"].decisions) == 3 and len(sched.agents["b"].decisions) == 3
    assert sched.table.updates == 4


def test_repeated_or_old_epoch_is_ignored(tmp_path):
    sched, rec = make(tmp_path)
    trial = ql_trial("t")
    feed(sched, trial, CURVE[:3])
    agent = sched.agents["t"]
    before = json.dumps(agent.state_dict()), json.dumps(sched.table.state_dict())
    assert sched.on_trial_result(None, trial, result(3, 0.9, 0.1)) == CONTINUE  # repeated epoch 3
    assert sched.on_trial_result(None, trial, result(2, 0.9, 0.1)) == CONTINUE  # older epoch
    assert (json.dumps(agent.state_dict()), json.dumps(sched.table.state_dict())) == before
    assert agent.run.epochs == 3
    sched.on_trial_result(None, trial, result(4, *CURVE[3]))
    assert agent.run.epochs == 4


def test_epoch_falls_back_to_training_iteration(tmp_path):
    sched, _ = make(tmp_path)
    trial = ql_trial("t")
    for i, (d, l) in enumerate(CURVE[:3]):
        sched.on_trial_result(None, trial, {"training_iteration": i + 1, "dice": d, "val_loss": l})
    assert sched.agents["t"].run.epochs == 3 and sched.last_epoch["t"] == 3


def test_later_results_missing_metric_keys_continue_without_crash(tmp_path):
    sched, rec = make(tmp_path)
    trial = ql_trial("t")
    sched.on_trial_result(None, trial, result(1, 0.5, 1.0))
    assert sched.on_trial_result(None, trial, {"epoch": 2, "dice": 0.5}) == CONTINUE
    assert sched.on_trial_result(None, trial, {"epoch": 2, "val_loss": 0.5}) == CONTINUE
    assert sched.on_trial_result(None, trial, {"epoch": 2, "training_iteration": 2}) == CONTINUE
    assert sched.agents["t"].run.epochs == 1 and rec.calls == [] and not sched.problems
    # the skipped results did not consume epoch 2
    sched.on_trial_result(None, trial, result(2, 0.5, 1.0))
    assert sched.agents["t"].run.epochs == 2


def test_a_first_result_missing_a_metric_key_stops_the_trial(tmp_path):
    sched, rec = make(tmp_path)
    trial = ql_trial("t")
    assert sched.on_trial_result(None, trial, {"epoch": 1, "dice": 0.5}) == TrialScheduler.STOP
    assert "lacks 'val_loss' (loss_metric); it reported: epoch, dice" in sched.problems["t"]
    assert rec.calls == []


def test_custom_flattened_metric_names(tmp_path):
    sched, _ = make(tmp_path, metric="val/dice", loss_metric="val/loss")
    trial = ql_trial("t")
    sched.on_trial_result(None, trial, {"epoch": 1, "val/dice": 0.4, "val/loss": 0.9, "dice": 0.0})
    assert sched.agents["t"].run.dice == [0.4] and sched.agents["t"].run.val_loss == [0.9]


# --------------------------------------------------------------------------- journal


def test_every_epoch_appends_one_compact_record_of_the_agents_input(tmp_path):
    sched, _ = make(tmp_path)
    a, b = ql_trial("a"), ql_trial("b")
    feed(sched, a, CURVE[:5])
    lines = journal_lines(tmp_path)
    # the method's table (its initial state, RNG included), trial a's number and starting LR, then one
    # [number, epoch, dice, loss] per epoch, decisions (patience 0: epochs 3-5) included
    assert lines[0]["new_table"] == "qlearning" and lines[0]["state"]["rng"] and lines[0]["state"]["updates"] == 0
    assert lines[1] == {"n": 0, "trial": "a", "method": "qlearning", "lr": 1e-3}
    assert lines[2:] == [[0, e + 1, d, l] for e, (d, l) in enumerate(CURVE[:5])]
    assert len(sched.agents["a"].run.decisions) == 3
    feed(sched, b, WAVE[:2])
    lines = journal_lines(tmp_path)
    assert lines[7:] == [{"n": 1, "trial": "b", "method": "qlearning", "lr": 1e-3}, [1, 1, *WAVE[0]], [1, 2, *WAVE[1]]]
    # an epoch costs one short line, decided or not (the old journal wrote ~700 bytes per record)
    epochs = [x for x in (tmp_path / "journal.jsonl").read_text().splitlines() if x.startswith("[")]
    assert len(epochs) == 7 and max(len(x) for x in epochs) < 40


def test_replay_between_decisions_rebuilds_the_agent_exactly(tmp_path):
    # The paper's patience 3 / cooldown 5: most epochs make no decision. A driver that dies
    # between two decisions must still come back with the same history and counters.
    config = QLearningConfig(epsilon=0.0, epsilon_min=0.0)
    s1, _ = make(tmp_path, config)
    trial = ql_trial("t")
    feed(s1, trial, CURVE[:7])
    agent = s1.agents["t"]
    assert 0 < len(agent.run.decisions) and agent.run.since_decision > 0  # mid-interval
    s2, _ = make(tmp_path, config)
    s2.snapshot()
    assert s2.agents["t"].state_dict() == agent.state_dict()
    assert s2.last_epoch == {"t": 7}
    # and both continue identically
    feed(s1, trial, CURVE[7:], first_epoch=8)
    feed(s2, trial, CURVE[7:], first_epoch=8)
    assert s2.agents["t"].state_dict() == s1.agents["t"].state_dict()


def run_two_trials(sched) -> None:
    a, b = ql_trial("a", lr=1e-3), ql_trial("b", lr=2e-3)
    for i in range(8):
        sched.on_trial_result(None, a, result(i + 1, *WAVE[i]))
        sched.on_trial_result(None, b, result(i + 1, *CURVE[i]))


def test_new_scheduler_replays_journal(tmp_path):
    s1, _ = make(tmp_path)
    run_two_trials(s1)
    s2, _ = make(tmp_path)
    snap = s2.snapshot()
    t1, t2 = s1.table.state_dict(), snap["table"]
    for key in ("q", "visits", "updates", "epsilon"):
        assert t2[key] == t1[key], key
    assert t1["updates"] == 2 * 5  # 6 decisions per trial (epochs 3-8), 5 updates each
    assert set(s2.agents) == {"a", "b"}
    for tid in ("a", "b"):
        assert s2.agents[tid].lr == s1.agents[tid].lr
        assert s2.agents[tid].state_dict() == s1.agents[tid].state_dict()
        assert s2.agents[tid].table is s2.table
    assert s2.last_epoch == {"a": 8, "b": 8}
    assert s2.restored_updates == 10
    # the LRs actually moved during the run, so equality above is not trivial
    assert {s1.agents["a"].lr, s1.agents["b"].lr} != {1e-3, 2e-3}


def test_pickled_scheduler_comes_back_empty_and_reloads_journal(tmp_path):
    s1, _ = make(tmp_path)
    trial = ql_trial("t")
    feed(s1, trial, WAVE[:5])
    s2 = pickle.loads(pickle.dumps(s1))  # what tuner.pkl holds
    assert s2.table is None and s2.agents == {} and s2.last_epoch == {}
    assert s2.state_path == s1.state_path and s2.config == s1.config
    # Tuner.restore calls on_trial_add for every restored trial first: that is the first use
    s2.on_trial_add(None, trial)
    assert s2.agents["t"].state_dict() == s1.agents["t"].state_dict()
    assert s2.table.q == s1.table.q and s2.table.updates == s1.table.updates == 2
    assert s2.deliver.calls[-1] == ("t", s1.agents["t"].lr)  # the resumed trial gets its LR back
    # epoch 5 was already used before the driver died: ignored after the reload
    assert s2.on_trial_result(None, trial, result(5, 0.0, 9.0)) == CONTINUE
    assert s2.agents["t"].run.epochs == 5
    s2.on_trial_result(None, trial, result(6, *WAVE[5]))
    assert s2.agents["t"].run.epochs == 6
    assert s2.table.updates == 3  # the continued trial keeps learning into the restored table


def test_pickled_scheduler_reloads_journal_when_first_use_is_a_result(tmp_path):
    s1, _ = make(tmp_path)
    trial = ql_trial("t")
    feed(s1, trial, WAVE[:5])
    s2 = pickle.loads(pickle.dumps(s1))
    assert s2.on_trial_result(None, trial, result(6, *WAVE[5])) == CONTINUE
    assert s2.agents["t"].run.epochs == 6  # continued from the journal's 5 epochs, not from scratch
    assert s2.table.updates == 3


def test_pickled_scheduler_ignores_replayed_epoch_when_first_use_is_a_result(tmp_path):
    s1, _ = make(tmp_path)
    trial = ql_trial("t")
    feed(s1, trial, WAVE[:5])
    s2 = pickle.loads(pickle.dumps(s1))
    s2.on_trial_result(None, trial, result(5, 0.0, 9.0))  # epoch 5 again (trial restarted from a checkpoint)
    assert s2.agents["t"].state_dict() == s1.agents["t"].state_dict()


def test_torn_last_journal_line_is_ignored(tmp_path):
    s1, _ = make(tmp_path)
    feed(s1, ql_trial("t"), WAVE[:5])
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"trial": "t", "epoch": 6, "table": {"q": {"impro')  # driver killed mid-write
    s2, _ = make(tmp_path)
    snap = s2.snapshot()
    assert snap["table"]["q"] == s1.table.q and snap["table"]["updates"] == s1.table.updates
    assert s2.agents["t"].state_dict() == s1.agents["t"].state_dict()
    assert s2.last_epoch == {"t": 5}


def test_first_record_after_a_torn_line_survives_the_next_replay(tmp_path):
    s1, _ = make(tmp_path)
    trial = ql_trial("t")
    feed(s1, trial, WAVE[:5])
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"trial": "t", "epoch": 6, "tab')
    s2, _ = make(tmp_path)
    s2.on_trial_result(None, trial, result(6, *WAVE[5]))  # one more decision, then the driver dies again
    assert s2.agents["t"].run.epochs == 6
    s3, _ = make(tmp_path)
    s3.snapshot()
    assert s3.agents["t"].run.epochs == 6
    assert s3.table.updates == s2.table.updates


# --------------------------------------------------------------------------- warm start


def test_warm_start_file_used_when_no_journal(tmp_path):
    qfile = tmp_path / "prior.json"
    write_qtable(qfile, lambda s, a: 0.01 * (STATES.index(s) * 3 + ACTIONS.index(a)))
    sched, _ = make(tmp_path, warm_start=str(qfile))
    table = sched.snapshot()["table"]
    assert table["q"] == {s: {a: 0.01 * (STATES.index(s) * 3 + ACTIONS.index(a)) for a in ACTIONS} for s in STATES}
    assert sched.warm_started_from == str(qfile)
    assert table["epsilon"] == EXPLORING_FAST.epsilon  # exploration restarts from the config, not the file's 0.05


def test_warm_start_ignored_when_journal_exists(tmp_path):
    s1, _ = make(tmp_path)
    feed(s1, ql_trial("t"), WAVE[:5])
    qfile = tmp_path / "prior.json"
    write_qtable(qfile, lambda s, a: 42.0)
    s2, _ = make(tmp_path, warm_start=str(qfile))
    table = s2.snapshot()["table"]
    assert table["q"] == s1.table.q
    assert all(v != 42.0 for row in table["q"].values() for v in row.values())
    assert s2.warm_started_from is None


def test_bad_warm_start_file_raises_naming_it(tmp_path):
    sched, _ = make(tmp_path, warm_start=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="missing.json"):
        sched.on_trial_result(None, ql_trial("t"), result(1, 0.5, 1.0))


# --------------------------------------------------------------------------- resumed trials


def test_on_trial_add_redelivers_lr_of_resumed_trial(tmp_path):
    qfile = tmp_path / "policy.json"
    write_qtable(qfile, lambda s, a: 10.0 if a == "decrease" else 0.0)
    s1, _ = make(tmp_path, GREEDY_FAST, warm_start=str(qfile))
    feed(s1, ql_trial("a", lr=1e-3), CURVE[:4])
    # decisions at epochs 3 and 4, both decrease: 1e-3 -> 5e-4 -> 2.5e-4
    assert s1.agents["a"].lr == 2.5e-4

    s2, rec = make(tmp_path, GREEDY_FAST, warm_start=str(qfile))
    resumed = ql_trial("a", lr=1e-3)  # config as first sampled
    s2.on_trial_add(None, resumed)
    assert rec.calls == [("a", 2.5e-4)]
    assert resumed.config["lr"] == 2.5e-4
    fresh = ql_trial("c", lr=1e-3)
    s2.on_trial_add(None, fresh)
    other = FakeTrial("d", {"method": "fixed", "lr": 1e-3})
    s2.on_trial_add(None, other)
    assert rec.calls == [("a", 2.5e-4)]  # neither a new trial nor a baseline gets a delivery
    assert fresh.set_config_calls == [] and other.set_config_calls == []
    assert s2.agents["c"].lr == 1e-3 and "d" not in s2.agents


def test_new_trial_agent_starts_from_trial_lr(tmp_path):
    sched, _ = make(tmp_path)
    sched.on_trial_add(None, ql_trial("x", lr=3e-4))
    assert sched.agents["x"].lr == 3e-4


def test_trial_lr_outside_the_bounds_is_clamped_and_delivered_on_add(tmp_path):
    qfile = tmp_path / "policy.json"
    write_qtable(qfile, lambda s, a: 10.0 if a == "increase" else 0.0)
    sched, rec = make(tmp_path, GREEDY_FAST, warm_start=str(qfile))
    trial = ql_trial("t", lr=0.1)  # max_lr is 1e-2
    sched.on_trial_add(None, trial)
    assert rec.calls == [("t", 0.01)] and trial.config["lr"] == 0.01  # clamped before the first epoch
    feed(sched, trial, CURVE[:3])  # decision at epoch 3 is "increase": it stays at max_lr, never lower
    assert [d.action for d in sched.agents["t"].decisions] == ["increase"]
    assert all(lr == 0.01 for _, lr in rec.calls)


# -- a researcher's own trainable (medtune.compare): no configured LR, own metric names, loud misses ----------


def own_result(epoch: int, acc: float, loss: float, lr: float = 0.05) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "accuracy": acc, "val_loss": loss, "lr": lr,
            "lr_control": 1, "time_this_iter_s": 0.1, "config/method": "qlearning"}


def own_scheduler(**kw) -> tuple[QLearningLRScheduler, Recorder]:
    rec = Recorder()
    cfg = QLearningConfig(min_lr=1e-4, max_lr=0.5, patience=0, cooldown=0, epsilon=0.0, epsilon_min=0.0)
    sched = QLearningLRScheduler(cfg, state_path="/dev/null", mailbox="unused", metric="accuracy", deliver=rec,
                                 require_control=True, **kw)
    return sched, rec


def test_an_unconfigured_lr_is_taken_from_the_first_result(tmp_path):
    sched, rec = own_scheduler()
    sched.state_path = str(tmp_path / "journal.jsonl")
    trial = FakeTrial("t1", {"method": "qlearning", "seed": 0})
    sched.on_trial_add(None, trial)
    assert rec.calls == [] and "t1" not in sched.agents  # nothing known yet, nothing delivered
    assert sched.on_trial_result(None, trial, own_result(1, 0.5, 1.0, lr=0.05)) == CONTINUE
    assert sched.agents["t1"].lr == pytest.approx(0.05)
    assert rec.calls == []  # inside the bounds: the trial keeps its own LR


def test_a_first_result_without_the_loss_stops_the_driven_trial_naming_the_keys(tmp_path, caplog):
    sched, _ = own_scheduler()
    sched.state_path = str(tmp_path / "journal.jsonl")
    trial = FakeTrial("t1", {"method": "qlearning", "seed": 0})
    bad = own_result(1, 0.5, 1.0)
    bad["loss"] = bad.pop("val_loss")
    assert sched.on_trial_result(None, trial, bad) == TrialScheduler.STOP
    line = sched.problems["t1"]
    assert "lacks 'val_loss' (loss_metric)" in line and "it reported: epoch, accuracy, lr, loss" in line
    assert "time_this_iter_s" not in line and "\n" not in line
    assert line in caplog.text


def test_a_trial_that_never_called_lrcontrol_is_stopped(tmp_path):
    sched, _ = own_scheduler()
    sched.state_path = str(tmp_path / "journal.jsonl")
    trial = FakeTrial("t1", {"method": "qlearning", "seed": 0})
    plain = own_result(1, 0.5, 1.0)
    del plain["lr_control"]
    assert sched.on_trial_result(None, trial, plain) == TrialScheduler.STOP
    assert "never called medtune.LRControl.step" in sched.problems["t1"]


def test_other_methods_are_not_checked(tmp_path):
    sched, _ = own_scheduler()
    sched.state_path = str(tmp_path / "journal.jsonl")
    trial = FakeTrial("t1", {"method": "fixed", "seed": 0})
    assert sched.on_trial_result(None, trial, {"epoch": 1}) == CONTINUE and not sched.problems


def test_a_min_mode_metric_reaches_the_agent_negated(tmp_path):
    sched, _ = own_scheduler(mode="min")
    sched.dice_metric = "error"
    sched.state_path = str(tmp_path / "journal.jsonl")
    trial = FakeTrial("t1", {"method": "qlearning", "seed": 0})
    for e in range(1, 4):
        r = own_result(e, 0.0, 1.0 - 0.1 * e)
        r["error"] = 0.5 - 0.1 * e
        sched.on_trial_result(None, trial, r)
    assert sched.agents["t1"].run.decisions[0]["state"] == "improving"


# --------------------------------------------------------------------------- journal snapshots


def noisy_results(n_trials: int, epochs: int, seed: int = 0) -> list[tuple[FakeTrial, dict]]:
    """Round-robin results of ``n_trials`` qlearning trials with noisy curves (so the agents decide and explore)."""
    import random

    rng = random.Random(seed)
    trials = [ql_trial(f"t{i}", lr=1e-3) for i in range(n_trials)]
    out = []
    for e in range(1, epochs + 1):
        for t in trials:
            dice = min(1.0, 0.8 * (1 - 0.9 ** e) + rng.gauss(0, 0.02))
            out.append((t, result(e, dice, 1.2 * (1 - dice) + 0.1 + rng.gauss(0, 0.02))))
    return out


def same_state(s1, s2) -> None:
    """Tables (Q-values, visits, epsilon, updates and the RNG state) and agents equal, and one RNG draw agrees."""
    assert s2.table.state_dict() == s1.table.state_dict()
    assert set(s2.agents) == set(s1.agents)
    for tid, agent in s1.agents.items():
        assert s2.agents[tid].state_dict() == agent.state_dict(), tid
        assert s2.agents[tid].table is s2.table
    assert s2.last_epoch == s1.last_epoch


def test_the_journal_stays_bounded_by_the_snapshot_over_many_results(tmp_path):
    sched, _ = make(tmp_path, QLearningConfig(), journal_snapshot_every=50)
    path = tmp_path / "journal.jsonl"
    sizes, snapshots = [], 0
    for trial, res in noisy_results(4, 500):
        sched.on_trial_result(None, trial, res)
        first = path.read_bytes()[:12]
        snapshots += first.startswith(b'{"snapshot"') and sched._tail_records == 0
        sizes.append(path.stat().st_size)
    assert snapshots >= 2 and sched.table.updates > 50  # it learned, and was snapshotted more than once
    bound = 5 * sched._snapshot_bytes + 50 * 40
    assert max(sizes[len(sizes) // 2:]) <= bound  # 2,000 results: never more than five snapshots and K records
    assert path.read_bytes().startswith(b'{"snapshot"')


def test_a_resume_from_snapshot_and_tail_equals_the_scheduler_that_never_stopped(tmp_path):
    calls = noisy_results(3, 60)
    s1, _ = make(tmp_path, journal_snapshot_every=20)
    for trial, res in calls[:150]:
        s1.on_trial_result(None, trial, res)
    text = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert text[0].startswith('{"snapshot"') and len(text) > 1  # a snapshot and a tail
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "journal.jsonl", tmp_path / "resumed" / "journal.jsonl")
    s2, _ = make(tmp_path / "resumed", journal_snapshot_every=20)
    s2.snapshot()
    same_state(s1, s2)
    assert s2.restored_updates == s1.table.updates > 0
    # the tail already in the file counts towards the next snapshot, as it did for the scheduler that wrote it
    counters = ("_tail_records", "_tail_bytes", "_snapshot_bytes")
    assert [getattr(s2, c) for c in counters] == [getattr(s1, c) for c in counters] and s1._tail_records > 0
    # both go on identically: the same explorations (RNG draws), decisions and Q-values
    for trial, res in calls[150:]:
        s1.on_trial_result(None, trial, res)
        s2.on_trial_result(None, trial, res)
    same_state(s1, s2)
    s3, _ = make(tmp_path / "resumed")  # and the journal the resumed one wrote rebuilds it once more
    s3.snapshot()
    same_state(s2, s3)
    assert s1.table.rng.random() == s2.table.rng.random() == s3.table.rng.random()


def test_a_torn_line_after_a_snapshot_is_dropped_and_the_next_record_survives(tmp_path):
    calls = noisy_results(2, 40)
    s1, _ = make(tmp_path, journal_snapshot_every=10)
    for trial, res in calls[:61]:
        s1.on_trial_result(None, trial, res)
    (tmp_path / "killed").mkdir()
    journal = tmp_path / "killed" / "journal.jsonl"
    shutil.copy(tmp_path / "journal.jsonl", journal)
    with open(journal, "a") as f:
        f.write("[0,31,0.7")  # driver killed mid-write
    assert journal.read_text().startswith('{"snapshot"')
    s2, _ = make(tmp_path / "killed", journal_snapshot_every=10_000)
    s2.snapshot()
    same_state(s1, s2)
    for trial, res in calls[61:64]:
        s1.on_trial_result(None, trial, res)
        s2.on_trial_result(None, trial, res)  # its first record goes on a fresh line after the torn one
    s3, _ = make(tmp_path / "killed")
    s3.snapshot()
    same_state(s2, s3)
    same_state(s1, s3)


def test_an_old_format_journal_is_replayed_then_rewritten_as_a_snapshot(tmp_path):
    # The old format: an observation per quiet epoch, the method's table (no RNG) and the agent on a decision.
    s1, _ = make(tmp_path / "new")
    old = []
    trial = ql_trial("t")
    for i, (d, l) in enumerate(WAVE):
        decided, updates = len(s1.agents["t"].run.decisions) if "t" in s1.agents else 0, s1.table and s1.table.updates
        s1.on_trial_result(None, trial, result(i + 1, d, l))
        agent = s1.agents["t"]
        record = {"trial": "t", "method": "qlearning", "epoch": i + 1}
        if len(agent.run.decisions) != decided or s1.table.updates != updates:
            record.update(table=s1.table.state_dict(include_rng=False), agent=agent.state_dict())
        else:
            record.update(dice=d, loss=l, lr=agent.lr)
        old.append(json.dumps(record))
    assert any('"agent"' in r for r in old) and any('"dice"' in r for r in old)
    (tmp_path / "journal.jsonl").write_text("\n".join(old) + "\n")
    s2, _ = make(tmp_path)
    s2.snapshot()
    assert s2.agents["t"].state_dict() == s1.agents["t"].state_dict()
    assert s2.table.q == s1.table.q and s2.table.updates == s1.table.updates
    assert (tmp_path / "journal.jsonl").read_text().count("\n") == len(WAVE)  # reading writes nothing
    s2.on_trial_result(None, trial, result(9, 0.7, 0.8))
    assert (tmp_path / "journal.jsonl").read_text().startswith('{"snapshot"')
    s3, _ = make(tmp_path)
    s3.snapshot()
    same_state(s2, s3)


def test_bad_journal_snapshot_every_is_refused(tmp_path):
    with pytest.raises(ValueError, match="journal_snapshot_every=0"):
        make(tmp_path, journal_snapshot_every=0)
