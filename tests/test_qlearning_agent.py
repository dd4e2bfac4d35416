"""Tests for medtune.searchers.qlearning_agent: trend states, reward, Q-update, exploration,
patience/cooldown, serialisation, PyTorch use, config validation, Q-table files.

Pure Python + torch; no Ray. Expected numbers are worked out by hand in comments.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from medtune.searchers.qlearning_agent import (
    ACTIONS,
    STATES,
    QLearningConfig,
    QLearningLRAgent,
    QTable,
    analyze_trend,
    load_qtable_file,
)

CFG = QLearningConfig()  # paper defaults: window 5, min_history 3, tolerances 1e-3, consistency 0.75


def force(table: QTable, action: str, high: float = 10.0) -> None:
    """Make ``action`` dominate every state by a wide margin (Q-updates cannot overturn it in a short test)."""
    for s in STATES:
        for a in ACTIONS:
            table.q[s][a] = high if a == action else 0.0


def greedy_cfg(**kw) -> QLearningConfig:
    """No exploration at all: epsilon 0 and epsilon_min 0 (epsilon_min > 0 would raise epsilon after one select)."""
    return QLearningConfig(epsilon=0.0, epsilon_min=0.0, **kw)


def linear_improving(n: int) -> list[tuple[float, float]]:
    # epoch i (1-based): dice = 0.02*i, loss = 1 - 0.02*i; every step moves 0.02 >> tolerance 1e-3
    return [(0.02 * i, 1.0 - 0.02 * i) for i in range(1, n + 1)]


# --------------------------------------------------------------------------- states


def test_state_improving_when_dice_rises_and_loss_falls_every_epoch():
    assert analyze_trend([0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 0.9, 0.8, 0.7, 0.6]) == "improving"


def test_state_worsening_when_dice_falls_and_loss_rises_every_epoch():
    assert analyze_trend([0.5, 0.4, 0.3, 0.2, 0.1], [0.6, 0.7, 0.8, 0.9, 1.0]) == "worsening"


def test_state_plateau_when_all_moves_are_within_tolerance():
    # dice steps 0.0005 <= dice_tol 1e-3; loss steps 0.0005 <= 1e-3 * mean|loss| (~1.0) = 1e-3
    assert analyze_trend([0.5, 0.5005, 0.5, 0.5005, 0.5], [1.0, 1.0005, 1.0, 1.0005, 1.0]) == "plateau"


def test_state_oscillating_when_dice_moves_flip_sign_every_step():
    # dice moves +,-,+,-: 50 % agree either way (< 75 %) and they alternate, 4 >= 3 moves
    assert analyze_trend([0.5, 0.6, 0.5, 0.6, 0.5], [1.0, 0.9, 1.0, 0.9, 1.0]) == "oscillating"


def test_state_mixed_when_dice_improves_but_loss_worsens():
    # dice consistently up, loss consistently up (worse): neither improving nor worsening, no alternation
    assert analyze_trend([0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.0]) == "mixed"


def test_state_insufficient_data_below_min_history():
    assert analyze_trend([], []) == "insufficient_data"
    assert analyze_trend([0.1, 0.2], [1.0, 0.9]) == "insufficient_data"  # 2 < min_history 3
    assert analyze_trend([0.1, 0.2, 0.3], [1.0, 0.9, 0.8]) == "improving"  # 3 epochs suffice


def test_state_improving_at_exactly_75_percent_consistency():
    # dice moves +,+,-,+ -> 3/4 = 0.75 >= consistency, net +0.3; loss moves all better
    assert analyze_trend([0.1, 0.2, 0.3, 0.25, 0.4], [1.0, 0.9, 0.8, 0.7, 0.6]) == "improving"
    # with consistency 0.8 the same history is no longer improving (and does not alternate) -> mixed
    strict = QLearningConfig(consistency=0.8)
    assert analyze_trend([0.1, 0.2, 0.3, 0.25, 0.4], [1.0, 0.9, 0.8, 0.7, 0.6], strict) == "mixed"


def test_state_improving_when_loss_is_flat_and_dice_rises():
    # a metric without any move counts as "not against" the trend
    assert analyze_trend([0.1, 0.2, 0.3, 0.4, 0.5], [1.0] * 5) == "improving"


def test_state_loss_tolerance_is_relative_to_loss_size():
    # loss ~1000, steps of 0.5: 0.5 <= 1e-3 * 1000 = 1 -> no move; dice flat too -> plateau
    assert analyze_trend([0.5] * 5, [1000.0, 1000.5, 1000.0, 1000.5, 1000.0]) == "plateau"
    # the same 0.5 steps on a loss ~1 are moves (0.5 > 1e-3 * ~1.2) and they alternate in the loss only -> mixed
    assert analyze_trend([0.5] * 5, [1.0, 1.5, 1.0, 1.5, 1.0]) == "mixed"


def test_state_two_alternating_moves_are_too_few_for_oscillating():
    # 3 epochs -> 2 dice moves (+,-); oscillating needs >= 3 moves -> mixed
    assert analyze_trend([0.5, 0.6, 0.5], [1.0, 1.0, 1.0]) == "mixed"


def test_state_nan_or_inf_in_window_is_mixed():
    assert analyze_trend([0.1, 0.2, float("nan"), 0.4, 0.5], [1.0, 0.9, 0.8, 0.7, 0.6]) == "mixed"
    assert analyze_trend([0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 0.9, float("inf"), 0.7, 0.6]) == "mixed"


def test_state_only_last_window_epochs_count():
    # full history: dice 0.9 -> 0.5 is a net loss; the last 5 epochs are a clean rise -> improving
    assert analyze_trend([0.9, 0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 1.0, 0.9, 0.8, 0.7, 0.6]) == "improving"
    # a NaN that has left the window no longer matters
    dice, loss = [float("nan"), 0.1, 0.2, 0.3, 0.4, 0.5], [float("nan"), 1.0, 0.9, 0.8, 0.7, 0.6]
    assert analyze_trend(dice, loss) == "improving"
    # window 3 sees only [0.3, 0.2, 0.1] of an otherwise rising history -> worsening
    w3 = QLearningConfig(window=3)
    assert analyze_trend([0.0, 0.2, 0.4, 0.3, 0.2, 0.1], [1.0, 0.8, 0.6, 0.7, 0.8, 0.9], w3) == "worsening"


def test_state_length_mismatch_raises():
    with pytest.raises(ValueError, match="dice has 2 epochs but val_loss has 3"):
        analyze_trend([0.1, 0.2], [1.0, 0.9, 0.8])


def test_agent_keeps_only_window_epochs_of_history():
    agent = QLearningLRAgent(CFG, seed=0)
    for dice, loss in linear_improving(8):
        agent.step(dice, loss)
    assert agent.run.epochs == 8
    assert agent.run.dice == pytest.approx([0.02 * i for i in range(4, 9)])  # epochs 4..8
    assert len(agent.run.val_loss) == 5


# --------------------------------------------------------------------------- reward


def make_reward_agent(best: float = 0.9) -> QLearningLRAgent:
    agent = QLearningLRAgent(CFG, seed=0)
    agent.run.last_dice, agent.run.last_loss, agent.run.best_dice = 0.5, 0.8, best
    return agent


def test_reward_plain_change():
    # 10 * (0.6 - 0.5) + 5 * (0.8 - 0.7) = 1.0 + 0.5 = 1.5; 0.6 < best 0.9 -> no bonus;
    # lr 1e-4 is in (2e-6, 5e-3) -> no penalty
    assert make_reward_agent().reward(0.6, 0.7, 1e-4) == pytest.approx(1.5)


def test_reward_negative_when_metrics_worsen():
    # 10 * (0.4 - 0.5) + 5 * (0.8 - 0.9) = -1.0 - 0.5 = -1.5
    assert make_reward_agent().reward(0.4, 0.9, 1e-4) == pytest.approx(-1.5)


def test_reward_new_best_dice_bonus():
    # 1.5 + best_dice_bonus 0.5 = 2.0 (0.6 > best 0.55)
    assert make_reward_agent(best=0.55).reward(0.6, 0.7, 1e-4) == pytest.approx(2.0)
    # equal to the best is not a new best: 1.5
    assert make_reward_agent(best=0.6).reward(0.6, 0.7, 1e-4) == pytest.approx(1.5)


def test_reward_bound_penalty_near_min_lr():
    agent = make_reward_agent()
    # min_lr * bound_margin = 1e-6 * 2 = 2e-6: lr <= 2e-6 -> 1.5 - 0.5 = 1.0
    assert agent.reward(0.6, 0.7, 1e-6) == pytest.approx(1.0)
    assert agent.reward(0.6, 0.7, 2e-6) == pytest.approx(1.0)
    assert agent.reward(0.6, 0.7, 2.1e-6) == pytest.approx(1.5)


def test_reward_bound_penalty_near_max_lr():
    agent = make_reward_agent()
    # max_lr / bound_margin = 1e-2 / 2 = 5e-3: lr >= 5e-3 -> 1.5 - 0.5 = 1.0
    assert agent.reward(0.6, 0.7, 1e-2) == pytest.approx(1.0)
    assert agent.reward(0.6, 0.7, 5e-3) == pytest.approx(1.0)
    assert agent.reward(0.6, 0.7, 4.9e-3) == pytest.approx(1.5)


def test_reward_bonus_and_penalty_combine():
    # 1.5 + 0.5 (new best over 0.55) - 0.5 (lr at max) = 1.5
    assert make_reward_agent(best=0.55).reward(0.6, 0.7, 1e-2) == pytest.approx(1.5)


def test_reward_without_previous_decision_has_no_change_term():
    agent = QLearningLRAgent(CFG, seed=0)  # last_dice/last_loss None, best -inf
    # change terms 0; any finite dice beats -inf -> +0.5
    assert agent.reward(0.3, 0.9, 1e-4) == pytest.approx(0.5)


def test_reward_paid_at_next_decision_for_interval_and_q_updated():
    # maintain-only table, patience 3: decisions at epochs 3 and 6 (see patience tests)
    table = QTable(greedy_cfg(), seed=0)
    force(table, "maintain")
    agent = QLearningLRAgent(greedy_cfg(), table=table)
    for dice, loss in linear_improving(6):
        agent.step(dice, loss)
    d = agent.decisions
    assert [x.epoch for x in d] == [3, 6]
    assert d[0].reward is None
    # interval epoch 3 -> 6: dice 0.06 -> 0.12, loss 0.94 -> 0.88
    # 10 * 0.06 + 5 * 0.06 = 0.9; new best (0.12 > 0.10) +0.5; lr 1e-4 no penalty -> 1.4
    assert d[1].reward == pytest.approx(1.4)
    # Q(improving, maintain) = 10 + 0.1 * (1.4 + 0.9 * 10 - 10) = 10 + 0.1 * 0.4 = 10.04
    assert table.q["improving"]["maintain"] == pytest.approx(10.04)
    assert table.visits["improving"]["maintain"] == 1 and table.updates == 1


# --------------------------------------------------------------------------- Q-table


def test_qtable_init_uniform_in_0_q_init_high():
    table = QTable(CFG, seed=1)
    values = [table.q[s][a] for s in STATES for a in ACTIONS]
    assert len(values) == 18 and all(0.0 <= v <= 0.1 for v in values)
    assert len(set(values)) == 18  # random, not constant
    assert table.updates == 0 and all(table.visits[s][a] == 0 for s in STATES for a in ACTIONS)


def test_qtable_update_matches_hand_computed_q_and_td():
    table = QTable(CFG, seed=0)
    table.q["plateau"]["decrease"] = 0.2
    table.q["improving"].update(maintain=0.5, decrease=0.1, increase=0.3)
    td = table.update("plateau", "decrease", 1.0, "improving")
    # td = r + gamma * max Q(s') - Q(s,a) = 1.0 + 0.9 * 0.5 - 0.2 = 1.25
    assert td == pytest.approx(1.25)
    # Q = 0.2 + alpha * td = 0.2 + 0.1 * 1.25 = 0.325
    assert table.q["plateau"]["decrease"] == pytest.approx(0.325)
    assert table.visits["plateau"]["decrease"] == 1
    assert table.updates == 1
    # a second update: td = -0.5 + 0.9 * 0.5 - 0.325 = -0.375; Q = 0.325 - 0.0375 = 0.2875
    assert table.update("plateau", "decrease", -0.5, "improving") == pytest.approx(-0.375)
    assert table.q["plateau"]["decrease"] == pytest.approx(0.2875)
    assert table.visits["plateau"]["decrease"] == 2 and table.updates == 2
    assert table.visits["plateau"]["maintain"] == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_qtable_update_skips_non_finite_reward(bad):
    table = QTable(CFG, seed=0)
    before = json.dumps(table.state_dict())
    td = table.update("plateau", "decrease", bad, "improving")
    assert math.isnan(td)
    assert json.dumps(table.state_dict()) == before  # q, visits, updates untouched


def test_epsilon_decays_geometrically_to_floor():
    table = QTable(CFG, seed=0)  # eps0 0.2, decay 0.95, min 0.01
    for k in range(1, 101):
        table.select("plateau")
        assert table.epsilon == pytest.approx(max(0.01, 0.2 * 0.95**k), rel=1e-12)
    # 0.2 * 0.95**58 = 0.0102 > 0.01; 0.2 * 0.95**59 = 0.0097 < 0.01 -> floored from k = 59 on
    assert table.epsilon == 0.01


def test_epsilon_zero_always_picks_greedy_action():
    table = QTable(greedy_cfg(), seed=0)
    table.q["mixed"].update(maintain=0.01, decrease=0.02, increase=0.05)
    assert {table.select("mixed") for _ in range(200)} == {"increase"}
    assert table.epsilon == 0.0


def test_greedy_breaks_ties_among_maxima_only():
    table = QTable(greedy_cfg(), seed=0)
    table.q["worsening"].update(maintain=0.5, decrease=0.5, increase=0.1)
    picks = [table.greedy("worsening") for _ in range(200)]
    # both maxima occur (P(only one) = 2 * 0.5**200), the lower action never
    assert set(picks) == {"maintain", "decrease"}


def test_exploration_picks_every_action_with_epsilon_one():
    table = QTable(QLearningConfig(epsilon=1.0, epsilon_decay=1.0), seed=0)
    table.q["mixed"].update(maintain=1.0, decrease=0.0, increase=0.0)
    assert {table.select("mixed") for _ in range(200)} == set(ACTIONS)


# --------------------------------------------------------------------------- clamping


def run_flat(agent: QLearningLRAgent, epochs: int) -> list[float]:
    return [agent.step(0.5, 1.0) for _ in range(epochs)]


def test_increase_is_clamped_at_max_lr():
    cfg = greedy_cfg(base_lr=8e-3, patience=0, cooldown=0)
    table = QTable(cfg, seed=0)
    force(table, "increase", high=100.0)
    lrs = run_flat(QLearningLRAgent(cfg, table=table), 6)
    # epochs 1-2 insufficient data; 8e-3 * 1.2 = 9.6e-3; 9.6e-3 * 1.2 = 1.152e-2 -> 1e-2; stays 1e-2
    assert lrs == pytest.approx([8e-3, 8e-3, 9.6e-3, 1e-2, 1e-2, 1e-2])
    assert max(lrs) == 1e-2


def test_decrease_is_clamped_at_min_lr():
    cfg = greedy_cfg(base_lr=3e-6, patience=0, cooldown=0)
    table = QTable(cfg, seed=0)
    force(table, "decrease", high=100.0)
    lrs = run_flat(QLearningLRAgent(cfg, table=table), 6)
    # 3e-6 * 0.5 = 1.5e-6; 1.5e-6 * 0.5 = 7.5e-7 -> 1e-6; stays 1e-6
    assert lrs == pytest.approx([3e-6, 3e-6, 1.5e-6, 1e-6, 1e-6, 1e-6])
    assert min(lrs) == 1e-6


# --------------------------------------------------------------------------- patience / cooldown


def decision_epochs(action: str, epochs: int = 20, **kw) -> list[int]:
    cfg = greedy_cfg(**kw)
    table = QTable(cfg, seed=0)
    force(table, action)
    agent = QLearningLRAgent(cfg, table=table)
    for dice, loss in linear_improving(epochs):
        agent.step(dice, loss)
    return [d.epoch for d in agent.decisions]


def test_maintain_only_decides_every_patience_epochs():
    # patience 3: first at epoch 3 (3 epochs seen, 3 >= patience), then every 3 epochs
    assert decision_epochs("maintain", patience=3, cooldown=5) == [3, 6, 9, 12, 15, 18]


def test_change_only_waits_cooldown_after_each_change():
    # base 1e-2, decrease: LR changes every decision -> first at 3, then every cooldown 5 epochs
    epochs = decision_epochs("decrease", base_lr=1e-2, patience=3, cooldown=5)
    assert epochs == [3, 8, 13, 18]


def test_change_only_lrs_follow_decisions():
    cfg = greedy_cfg(base_lr=1e-2, patience=3, cooldown=5)
    table = QTable(cfg, seed=0)
    force(table, "decrease")
    agent = QLearningLRAgent(cfg, table=table)
    lrs = [agent.step(d, l) for d, l in linear_improving(13)]
    # LR for the next epoch after epochs 1..13: 1e-2 until epoch 3 -> 5e-3, epoch 8 -> 2.5e-3, epoch 13 -> 1.25e-3
    expected = [1e-2] * 2 + [5e-3] * 5 + [2.5e-3] * 5 + [1.25e-3]
    assert lrs == pytest.approx(expected)
    # halving is exact in binary floating point, so compare exactly
    assert [(d.lr_before, d.lr_after) for d in agent.decisions] == [(1e-2, 5e-3), (5e-3, 2.5e-3), (2.5e-3, 1.25e-3)]


def test_clamped_action_that_leaves_lr_unchanged_waits_patience_not_cooldown():
    # base_lr == max_lr and "increase" always: min(1e-2, 1.2e-2) = 1e-2, LR unchanged -> patience 3
    assert decision_epochs("increase", base_lr=1e-2, patience=3, cooldown=5) == [3, 6, 9, 12, 15, 18]


def test_first_decision_not_before_min_history():
    # patience 0 would decide at once, but the state is insufficient_data before min_history epochs
    assert decision_epochs("maintain", epochs=6, patience=0, cooldown=0)[0] == 3
    assert decision_epochs("maintain", epochs=8, patience=0, cooldown=0, min_history=5) == [5, 6, 7, 8]
    # patience 3 with min_history 5: first at 5, then every 3
    assert decision_epochs("maintain", epochs=12, patience=3, min_history=5) == [5, 8, 11]


def test_non_finite_epoch_gives_no_decision_and_no_lr_change():
    cfg = greedy_cfg(base_lr=1e-3, patience=0, cooldown=0)
    table = QTable(cfg, seed=0)
    force(table, "decrease")
    agent = QLearningLRAgent(cfg, table=table)
    agent.step(0.1, 1.0)
    agent.step(0.2, 0.9)
    assert agent.step(float("nan"), 0.8) == 1e-3  # epoch 3 would decide, but NaN -> nothing
    assert agent.decisions == [] and table.updates == 0
    assert agent.run.best_dice == pytest.approx(0.2)  # NaN never becomes the best
    # epoch 4 is finite; the NaN is still in the window -> state mixed, a decision is taken
    assert agent.step(0.4, 0.7) == pytest.approx(5e-4)
    assert [(d.epoch, d.state) for d in agent.decisions] == [(4, "mixed")]


# --------------------------------------------------------------------------- serialisation


def wave(n: int, start: int = 0) -> list[tuple[float, float]]:
    # a deterministic noisy curve so states (and hence actions) vary
    return [(0.5 + 0.3 * math.sin(0.9 * i), 1.0 - 0.2 * math.cos(1.3 * i)) for i in range(start, start + n)]


def test_json_round_trip_continues_identically():
    cfg = QLearningConfig(epsilon=0.5, epsilon_decay=0.99, patience=1, cooldown=2, base_lr=1e-3)
    table = QTable(cfg, seed=7)
    agent = QLearningLRAgent(cfg, table=table)
    for d, l in wave(8):
        agent.step(d, l)
    agent_json = json.dumps(agent.state_dict())
    table_json = json.dumps(table.state_dict())

    table2 = QTable(cfg, seed=999)  # different seed: everything must come from the snapshot
    table2.load_state_dict(json.loads(table_json))
    agent2 = QLearningLRAgent(cfg, table=table2)
    agent2.load_state_dict(json.loads(agent_json))
    assert agent2.lr == agent.lr and agent2.decisions == agent.decisions

    # control: same q but a different RNG -> the continuation is expected to differ
    table3 = QTable(cfg, seed=999)
    table3.load_state_dict(json.loads(table_json), keep_rng=True)
    agent3 = QLearningLRAgent(cfg, table=table3)
    agent3.load_state_dict(json.loads(agent_json))

    later = wave(30, start=8)
    lrs1 = [agent.step(d, l) for d, l in later]
    lrs2 = [agent2.step(d, l) for d, l in later]
    for d, l in later:
        agent3.step(d, l)
    assert lrs1 == lrs2
    assert agent.decisions == agent2.decisions
    assert table.state_dict() == table2.state_dict()
    assert len(set(lrs1)) > 1  # the continuation actually changed the LR
    assert agent3.decisions != agent.decisions  # the RNG in the snapshot matters


def test_agent_state_dict_is_json_serialisable_after_decisions():
    agent = QLearningLRAgent(CFG, seed=0)
    for d, l in wave(10):
        agent.step(d, l)
    again = json.loads(json.dumps(agent.state_dict()))
    assert again == agent.state_dict()


# --------------------------------------------------------------------------- PyTorch use


def test_plain_pytorch_optimizer_lr_follows_agent_step():
    w = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1)
    cfg = QLearningConfig(epsilon=0.6, epsilon_decay=1.0, patience=1, cooldown=1, base_lr=1e-3)
    agent = QLearningLRAgent(cfg, optimizer=opt, seed=3)
    # construction already writes base_lr into every param group
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3]
    seen = []
    for d, l in wave(25):
        lr = agent.step(d, l)
        seen.append(lr)
        assert [g["lr"] for g in opt.param_groups] == [lr, lr]
    assert len(set(seen)) > 1  # the LR did change along the way
    # loading a state writes its LR into the optimizer as well
    state = agent.state_dict()
    state["lr"] = 2e-4
    agent.load_state_dict(state)
    assert [g["lr"] for g in opt.param_groups] == [2e-4, 2e-4]


# --------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"min_lr": 1e-2, "max_lr": 1e-2}, "min_lr"),
        ({"min_lr": 1e-1, "max_lr": 1e-2}, "min_lr"),
        ({"base_lr": 1e-7}, "base_lr"),
        ({"base_lr": 0.5}, "base_lr"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"alpha": 2.0}, "alpha"),
        ({"gamma": 1.1}, "gamma"),
        ({"decrease_factor": 1.5}, "decrease_factor"),
        ({"increase_factor": 0.9}, "increase_factor"),
        ({"patience": -1}, "patience"),
        ({"min_history": 1}, "min_history"),
        ({"window": 2}, "window"),
        ({"base_lr": float("nan")}, "base_lr"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        QLearningConfig(**kwargs)


def test_config_error_message_names_value_and_bounds():
    with pytest.raises(ValueError) as info:
        QLearningConfig(base_lr=0.5)
    assert "0.5" in str(info.value) and "1e-06" in str(info.value) and "0.01" in str(info.value)


# --------------------------------------------------------------------------- Q-table files


def known_table() -> QTable:
    table = QTable(CFG, seed=0)
    for i, s in enumerate(STATES):
        for j, a in enumerate(ACTIONS):
            table.q[s][a] = 0.01 * (3 * i + j)  # 0.00 ... 0.17
    table.visits["plateau"]["decrease"] = 4
    table.updates = 4
    return table


def test_load_qtable_file_reads_values(tmp_path):
    path = tmp_path / "qtable.json"
    path.write_text(json.dumps(known_table().state_dict()))
    loaded = load_qtable_file(path, CFG, seed=5)
    assert loaded.q == known_table().q
    # A warm start transfers the values, not the earlier experiment's counters.
    assert loaded.visits["plateau"]["decrease"] == 0 and loaded.updates == 0


def test_load_qtable_file_reads_scheduler_snapshot_layout(tmp_path):
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps({"table": known_table().state_dict(), "agents": {}}))
    assert load_qtable_file(path, CFG).q == known_table().q


def test_load_qtable_file_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*does not exist"):
        load_qtable_file(path, CFG)


def test_load_qtable_file_bad_json_names_it(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not readable JSON"):
        load_qtable_file(path, CFG)


@pytest.mark.parametrize("damage", ["drop_action", "drop_state", "not_number", "not_a_dict"])
def test_load_qtable_file_missing_entries_names_it(tmp_path, damage):
    state = known_table().state_dict()
    if damage == "drop_action":
        del state["q"]["oscillating"]["increase"]
    elif damage == "drop_state":
        del state["q"]["insufficient_data"]
    elif damage == "not_number":
        state["q"]["mixed"]["maintain"] = "high"
    else:
        state = [1, 2, 3]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*lacks a numeric"):
        load_qtable_file(path, CFG)


# --------------------------------------------------------------------------- shared table


def test_two_agents_share_one_table_and_pool_updates():
    cfg = QLearningConfig(patience=0, cooldown=0)
    table = QTable(cfg, seed=0)
    a = QLearningLRAgent(cfg, table=table)
    b = QLearningLRAgent(cfg, table=table)
    for (da, la), (db, lb) in zip(linear_improving(5), wave(5)):
        a.step(da, la)
        b.step(db, lb)
    # each agent decides at epochs 3, 4, 5; the 2nd and 3rd decisions update Q -> 2 + 2 = 4
    assert len(a.decisions) == 3 and len(b.decisions) == 3
    assert table.updates == 4
    assert sum(table.visits[s][x] for s in STATES for x in ACTIONS) == 4
    # 6 selects on the shared table: epsilon 0.2 * 0.95**6
    assert table.epsilon == pytest.approx(0.2 * 0.95**6)
    assert a.table is b.table
