"""The effort/performance controller and its episodic memory on crafted curves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medtune.searchers.effort_controller import EffortConfig, EffortController
from medtune.searchers.episodic_memory import EpisodicMemory

SLOW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # still climbing at the end
FAST = [0.5, 0.7, 0.8, 0.8, 0.8, 0.8]  # saturated early


def test_memory_recalls_the_nearest_prefix_and_anchors_at_the_current_level():
    memory = EpisodicMemory(k=1)
    memory.add(SLOW, task="t")
    memory.add(FAST, task="t")
    # prefix [0.12, 0.21] is nearest SLOW (rms 0.016 vs 0.43); SLOW continues +0.1 per epoch from its 0.2,
    # shifted to start from our 0.21: 0.31, 0.41, 0.51
    pred = memory.predict([0.12, 0.21], horizon=5, task="t")
    np.testing.assert_allclose(pred, [0.31, 0.41, 0.51])


def test_memory_weights_neighbours_by_inverse_distance_and_holds_short_curves():
    memory = EpisodicMemory(k=2)
    memory.add([0.0, 0.2, 0.4])  # distance to prefix [0.0] is 0 -> weight 1/0.001
    memory.add([0.1, 0.1])  # distance 0.1 -> weight 1/0.101; held at 0.1 beyond its length
    pred = memory.predict([0.0], horizon=3)
    w1, w2 = 1 / 0.001, 1 / 0.101
    # neighbour 2 shifted by 0.0 - 0.1 = -0.1 -> [0.0, 0.0]; neighbour 1 -> [0.2, 0.4]
    expected = (w1 * np.array([0.2, 0.4]) + w2 * np.array([0.0, 0.0])) / (w1 + w2)
    np.testing.assert_allclose(pred, expected)


def test_memory_without_a_comparable_curve_predicts_nothing():
    memory = EpisodicMemory()
    assert memory.predict([0.1, 0.2], horizon=5) is None
    memory.add([0.1], task="t")
    assert memory.predict([0.1, 0.2], horizon=5, task="t") is None  # stored curve shorter than the prefix
    memory.add([0.1, 0.2, 0.3], task="other")
    assert memory.predict([0.1, 0.2], horizon=5, task="t") is None  # other task


def test_memory_file_round_trip_skips_a_torn_line(tmp_path):
    path = tmp_path / "memory.jsonl"
    EpisodicMemory.append(path, SLOW, "t", "a")
    EpisodicMemory.append(path, FAST, "t", "b")
    with open(path, "a") as f:
        f.write('{"curve": [0.1, 0.')
    memory = EpisodicMemory.load(path)
    assert [e.curve for e in memory.episodes] == [tuple(SLOW), tuple(FAST)]
    assert EpisodicMemory.load(tmp_path / "missing.jsonl").episodes == []


def test_shortfall_is_the_cumulative_gap_to_the_attainable_level():
    # P_bar = max(expected 0.7, seen 0.5) = 0.7; S = (0.7-0.6) + (0.7-0.7) = 0.1
    assert EffortController.shortfall([0.4, 0.5], [0.6, 0.7]) == pytest.approx(0.1)
    # a future below the best already seen: P_bar = 0.9 (seen); S = 0.3 + 0.2
    assert EffortController.shortfall([0.9, 0.5], [0.6, 0.7]) == pytest.approx(0.5)


def make(memory, horizon=6, warmup=2, base_lr=1e-3):
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.5)
    ctl = EffortController(EffortConfig(warmup=warmup, neighbours=1), base_lr=base_lr, min_lr=1e-5, max_lr=1e-2,
                           horizon=horizon, memory=memory, optimizer=opt)
    return ctl, opt


def test_lr_follows_the_expected_shortfall_on_a_remembered_curve():
    memory = EpisodicMemory(k=1)
    memory.add(SLOW)
    ctl, opt = make(memory)
    assert opt.param_groups[0]["lr"] == 1e-3  # the controller owns the optimizer's LR from the start
    assert ctl.step(0.1) == 1e-3  # warm-up
    # t=2, prefix [0.1, 0.2] = SLOW: expected 0.3, 0.4, 0.5, 0.6; P_bar 0.6; S_ref = 0.3+0.2+0.1+0 = 0.6
    assert ctl.step(0.2) == pytest.approx(1e-3)
    assert ctl.s_ref == pytest.approx(0.6)
    # t=3 on track: expected 0.4, 0.5, 0.6 -> S = 0.2+0.1+0 = 0.3 -> lr = 1e-3 * 0.3 / 0.6
    assert ctl.step(0.3) == pytest.approx(5e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    # t=4: expected 0.5, 0.6 -> S = 0.1 -> 1e-3 / 6
    assert ctl.step(0.4) == pytest.approx(1e-3 / 6)


def test_a_saturated_memory_means_little_effort_is_worth_paying():
    # the run tracks SLOW at first (reference set), then its expectation flattens: the LR falls to min_lr
    memory = EpisodicMemory(k=1)
    memory.add(SLOW)
    ctl, _ = make(memory)
    ctl.step(0.1)
    ctl.step(0.2)  # S_ref = 0.6 (see above)
    flat = EpisodicMemory(k=1)
    flat.add([0.1, 0.2, 0.6, 0.6, 0.6, 0.6])
    ctl.memory = flat
    # t=3, expected 0.6, 0.6, 0.6 with P_bar 0.6: S = 0 -> 0 * base, clamped to min_lr
    assert ctl.step(0.6) == pytest.approx(1e-5)


def test_a_flat_expectation_sets_no_reference_and_holds_the_lr():
    # FAST is already saturated at the decision epoch: S = 0 < min_shortfall, no scale to measure against
    memory = EpisodicMemory(k=1)
    memory.add(FAST)
    ctl, _ = make(memory)
    assert [ctl.step(d) for d in (0.5, 0.7, 0.8, 0.8)] == [1e-3] * 4
    assert ctl.s_ref is None


def test_no_memory_holds_the_lr():
    ctl, _ = make(EpisodicMemory())
    assert [ctl.step(d) for d in (0.1, 0.2, 0.3, 0.4)] == [1e-3] * 4
    assert ctl.s_ref is None


def test_memory_that_grows_mid_run_is_used_from_then_on():
    ctl, _ = make(EpisodicMemory(k=1))
    ctl.step(0.1)
    ctl.step(0.2)
    assert ctl.s_ref is None  # nothing to recall yet
    grown = EpisodicMemory(k=1)
    grown.add(SLOW)
    ctl.memory = grown
    # t=3, prefix [0.1,0.2,0.3]: expected 0.4, 0.5, 0.6 -> S_ref = 0.3 -> lr = base
    assert ctl.step(0.3) == pytest.approx(1e-3)
    assert ctl.s_ref == pytest.approx(0.3)


def test_state_round_trip(tmp_path):
    memory = EpisodicMemory(k=1)
    memory.add(SLOW)
    a, _ = make(memory)
    for d in (0.1, 0.2, 0.3):
        a.step(d)
    b, opt_b = make(memory)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert opt_b.param_groups[0]["lr"] == a.lr
    assert a.step(0.4) == b.step(0.4)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="warmup"):
        EffortConfig(warmup=0)
    with pytest.raises(ValueError, match="base_lr"):
        EffortController(base_lr=1.0, min_lr=1e-5, max_lr=1e-2)
