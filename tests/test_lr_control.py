"""Tests for medtune.trainables.lr_control.LRControl outside Tune (a plain PyTorch scheduler) and its checks.

No Ray is started: the Tune side (reporting, the mailbox) is covered by tests/test_compare.py and
tests/test_examples.py on a real local Ray.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import medtune
from medtune.errors import InputError
from medtune.searchers.episodic_memory import EpisodicMemory
from medtune.searchers.qlearning_agent import QLearningConfig, QLearningLRAgent
from medtune.trainables.lr_control import METHODS, LRControl, LRControlConfig


def sgd(lr: float = 0.05) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))], lr=lr)


def control(method: str, lr: float = 0.05, **settings) -> LRControl:
    return LRControl(sgd(lr), method=method, settings=LRControlConfig(**settings))


def test_lrcontrol_is_exported_lazily_from_medtune():
    assert medtune.LRControl is LRControl
    assert "LRControl" in dir(medtune) and "compare" in dir(medtune)


def test_every_method_starts_from_the_optimizers_own_lr():
    for method in METHODS:
        c = control(method, lr=0.05, epochs=10, metric="accuracy", loss_metric="loss")
        assert c.lr == pytest.approx(0.05), method
        assert all(g["lr"] == pytest.approx(0.05) for g in c.optimizer.param_groups)


def test_config_lr_is_the_start_when_given():
    c = LRControl(sgd(0.05), {"method": "fixed", "lr": 0.01})
    assert c.lr == pytest.approx(0.01)


def test_cosine_outside_tune_anneals_like_torchs_cosine_scheduler():
    c = control("cosine", epochs=4, schedules={"cosine": {"eta_min": 0.0}})
    ref_opt = sgd()
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=4, eta_min=0.0)
    for _ in range(4):
        got = c.step({})
        ref.step()
        assert got == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert c.epoch == 4


def test_plateau_watches_the_named_loss_key():
    c = control("plateau", loss_metric="loss", schedules={"plateau": {"patience": 0, "factor": 0.5}})
    c.step({"loss": 1.0})
    assert c.step({"loss": 2.0}) == pytest.approx(0.025)  # no improvement: halved


def test_greedy_grows_the_lr_after_improving_epochs():
    c = control("greedy", loss_metric="loss", schedules={"greedy": {"warmup": 0, "patience": 2, "cooldown": 0}})
    lrs = [c.step({"loss": v}) for v in (1.0, 0.8, 0.6)]
    assert lrs[-1] > 0.05


def test_qlearning_outside_tune_runs_a_private_agent_that_moves_the_lr():
    c = control("qlearning", metric="accuracy", loss_metric="loss")
    c.policy.table.epsilon = 0.0
    for s in c.policy.table.q:  # make "decrease" the greedy action in every state
        c.policy.table.q[s]["decrease"] = 1.0
    lrs = [c.step({"accuracy": 0.5 + 0.01 * e, "loss": 1.0 - 0.01 * e}) for e in range(4)]
    assert lrs[:2] == [pytest.approx(0.05)] * 2
    assert lrs[2] == pytest.approx(0.025)  # the first decision, at min_history = 3 epochs


def test_the_private_agent_takes_its_settings_and_refuses_unknown_ones():
    c = control("qlearning", metric="accuracy", loss_metric="loss", qlearning={"patience": 1, "epsilon": 0.0,
                                                                               "epsilon_min": 0.0})
    assert c.policy.config.patience == 1 and c.policy.config.base_lr == pytest.approx(0.05)
    with pytest.raises(InputError, match=re.escape("qlearning.epsilonn is not a Q-learning setting (did you mean")):
        LRControlConfig(qlearning={"epsilonn": 0.1})
    with pytest.raises(InputError, match="qlearning.min_lr is not a Q-learning setting"):
        LRControlConfig(qlearning={"min_lr": 0.1})


def test_a_min_mode_metric_is_negated_for_the_agent():
    c = control("qlearning", metric="error", mode="min", loss_metric="loss")
    for e in range(3):
        c.step({"error": 0.5 - 0.1 * e, "loss": 1.0 - 0.1 * e})
    assert c.policy.state() == "improving"  # the error went down: improving, not worsening


def test_effort_reads_its_memory_source_each_step():
    calls = []

    def memory():
        calls.append(1)
        m = EpisodicMemory()
        m.add([0.1, 0.3, 0.5, 0.7, 0.8, 0.85])
        return m

    c = LRControl(sgd(), method="effort", memory_source=memory,
                  settings=LRControlConfig(epochs=6, metric="acc", schedules={"effort": {"warmup": 2}}))
    for v in (0.1, 0.3, 0.5):
        c.step({"acc": v})
    assert len(calls) == 3
    assert c.policy.s_ref is not None


def test_a_nan_metric_marks_the_epoch_diverged_and_leaves_the_lr():
    c = control("plateau", loss_metric="loss", schedules={"plateau": {"patience": 0}})
    c.step({"loss": 1.0})
    assert c.step({"loss": math.nan}) == pytest.approx(0.05)
    assert c.diverged


def test_state_dict_round_trip_reapplies_the_lr_after_the_optimizer_state_is_loaded():
    c = control("exponential", schedules={"exponential": {"gamma": 0.5}})
    c.step({})
    c.step({})
    saved_opt, saved = c.optimizer.state_dict(), c.state_dict()
    fresh = control("exponential", schedules={"exponential": {"gamma": 0.5}})
    fresh.optimizer.load_state_dict(saved_opt)
    fresh.load_state_dict(saved)
    assert fresh.lr == pytest.approx(0.0125) and fresh.epoch == 2
    assert fresh.step({}) == pytest.approx(c.step({}))


def test_pbt_takes_the_mutated_config_lr_when_restored():
    c = LRControl(sgd(0.05), {"method": "pbt", "lr": 0.02, "lr_control": {"min_lr": 1e-3, "max_lr": 0.1}})
    saved = {"method": "pbt", "epoch": 3, "lr": 0.05, "policy": {}}
    c.load_state_dict(saved)
    assert c.lr == pytest.approx(0.02) and c.epoch == 3
    c.load_state_dict(saved, config_lr=5.0)
    assert c.lr == pytest.approx(0.1)  # clamped to max_lr


def test_a_checkpoint_of_another_method_is_refused():
    c = control("fixed")
    with pytest.raises(InputError, match="of method 'cosine'"):
        c.load_state_dict({"method": "cosine", "epoch": 1, "lr": 0.1, "policy": {}})


@pytest.mark.parametrize("bad, hint", [("Cosine", "did you mean 'cosine'? method names are lower case"),
                                       ("qlerning", "did you mean 'qlearning'"), (3, "must be a string")])
def test_an_unknown_method_is_one_line_with_the_nearest_name(bad, hint):
    with pytest.raises(InputError, match=re.escape(hint)) as info:
        LRControl(sgd(), {"method": bad})
    assert "\n" not in str(info.value)


def test_a_metric_that_is_not_a_string_is_an_input_error():
    with pytest.raises(InputError, match="lr_control.metric=3 must be a string"):
        LRControl(sgd(), {"method": "fixed", "lr_control": {"metric": 3}})
    with pytest.raises(InputError, match="metric=3 must be the name"):
        LRControlConfig(metric=3)


def test_a_missing_watched_key_names_it_and_the_keys_given():
    c = control("plateau", loss_metric="val_loss")
    with pytest.raises(InputError, match=r"lack 'val_loss' \(loss_metric\); they hold 'loss', 'acc'"):
        c.step({"loss": 1.0, "acc": 0.5})


def test_cosine_without_epochs_and_a_start_outside_the_bounds_are_loud():
    with pytest.raises(InputError, match="needs the run's length"):
        control("cosine")
    with pytest.raises(InputError, match="must lie in"):
        control("fixed", lr=0.5, max_lr=0.1)


def test_effort_refuses_a_min_mode_metric():
    with pytest.raises(InputError, match="effort"):
        control("effort", epochs=5, metric="error", mode="min")


def test_qlearning_agent_starts_from_the_optimizers_lr_unless_told_otherwise():
    opt = sgd(1e-2)
    agent = QLearningLRAgent(QLearningConfig(), optimizer=opt)
    assert agent.lr == pytest.approx(1e-2) and opt.param_groups[0]["lr"] == pytest.approx(1e-2)
    told = QLearningLRAgent(QLearningConfig(base_lr=1e-3), optimizer=sgd(1e-2))
    assert told.lr == pytest.approx(1e-3)
    assert QLearningLRAgent(QLearningConfig()).lr == pytest.approx(1e-4)  # no optimizer: the paper's base_lr
    with pytest.raises(ValueError, match="outside"):
        QLearningLRAgent(QLearningConfig(), optimizer=sgd(0.5))
