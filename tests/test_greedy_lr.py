"""GreedyLR: counters, clamps, warm-up and cool-down, as a plain PyTorch scheduler."""

from __future__ import annotations

import json

import pytest
import torch

from medtune.searchers.greedy_lr import GreedyConfig, GreedyLR


def make(lr=1e-3, min_lr=1e-4, max_lr=1e-2, **kw) -> tuple[GreedyLR, torch.optim.Optimizer]:
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)
    return GreedyLR(opt, GreedyConfig(**kw), min_lr=min_lr, max_lr=max_lr), opt


def test_grows_by_one_over_f_after_patience_improving_epochs():
    sched, opt = make(factor=0.5, patience=2, warmup=0, cooldown=0)
    # losses 1.0 -> 0.9 -> 0.8: two improving epochs (the first epoch has nothing to compare with)
    assert sched.step(1.0) == 1e-3
    assert sched.step(0.9) == 1e-3 and sched.good == 1
    assert sched.step(0.8) == pytest.approx(2e-3)  # 1e-3 / 0.5
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert (sched.good, sched.bad) == (0, 0)  # counters reset after a change


def test_shrinks_by_f_after_patience_worsening_epochs():
    sched, opt = make(factor=0.5, patience=2, warmup=0, cooldown=0)
    for loss in (1.0, 1.1, 1.2):
        lr = sched.step(loss)
    assert lr == pytest.approx(5e-4)  # 1e-3 * 0.5


def test_opposite_event_resets_the_counter():
    sched, _ = make(factor=0.5, patience=2, warmup=0, cooldown=0)
    for loss in (1.0, 0.9, 1.0, 0.9):  # improve, worsen, improve: never 2 in a row
        lr = sched.step(loss)
    assert lr == 1e-3 and sched.good == 1 and sched.bad == 0


def test_moves_within_the_threshold_count_as_neither():
    sched, _ = make(factor=0.5, patience=1, warmup=0, cooldown=0, threshold=0.01)
    sched.step(1.0)
    assert sched.step(0.995) == 1e-3  # 0.5 % < 1 %: no event
    assert (sched.good, sched.bad) == (0, 0)


def test_clamped_to_max_and_min():
    sched, _ = make(lr=8e-3, factor=0.5, patience=1, warmup=0, cooldown=0)
    sched.step(1.0)
    assert sched.step(0.5) == 1e-2  # 8e-3 / 0.5 = 1.6e-2, clamped to max_lr
    low, _ = make(lr=1.5e-4, factor=0.5, patience=1, warmup=0, cooldown=0)
    low.step(1.0)
    assert low.step(2.0) == 1e-4  # 7.5e-5 clamped to min_lr


def test_no_change_during_warmup():
    sched, _ = make(factor=0.5, patience=1, warmup=3, cooldown=0)
    lrs = [sched.step(loss) for loss in (1.0, 0.9, 0.8, 0.7)]
    # epochs 1-3 are warm-up; epoch 4 sees good=3 >= patience 1 and grows
    assert lrs[:3] == [1e-3] * 3 and lrs[3] == pytest.approx(2e-3)


def test_no_change_during_cooldown_after_a_change():
    sched, _ = make(factor=0.5, patience=1, warmup=0, cooldown=2)
    lrs = [sched.step(loss) for loss in (1.0, 0.9, 0.8, 0.7, 0.6)]
    # change at epoch 2 (x2), cool-down epochs 3 and 4, change again at epoch 5
    assert lrs == pytest.approx([1e-3, 2e-3, 2e-3, 2e-3, 4e-3])


def test_nan_loss_counts_as_worsening():
    sched, _ = make(factor=0.5, patience=1, warmup=0, cooldown=0)
    sched.step(1.0)
    assert sched.step(float("nan")) == pytest.approx(5e-4)


def test_state_round_trip_continues_identically():
    a, _ = make(factor=0.8, patience=2, warmup=1, cooldown=1)
    for loss in (1.0, 0.9, 0.8, 0.85):
        a.step(loss)
    b, opt_b = make(factor=0.8, patience=2, warmup=1, cooldown=1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert opt_b.param_groups[0]["lr"] == a.lr
    for loss in (0.7, 0.6, 0.5, 0.9, 1.0, 1.1):
        assert a.step(loss) == b.step(loss)


@pytest.mark.parametrize("kw, field", [({"factor": 1.0}, "factor"), ({"patience": 0}, "patience"),
                                       ({"warmup": -1}, "warmup"), ({"threshold": -0.1}, "threshold")])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        GreedyConfig(**kw)
