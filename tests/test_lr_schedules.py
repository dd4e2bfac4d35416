"""Tests for medtune.searchers.lr_schedules.EpochSchedule: the baseline LR sequences, restore, errors.

Every run starts at LR 0.1; ``seq[t-1]`` is the LR returned after epoch t (the LR of epoch t+1).
"""

from __future__ import annotations

import math

import pytest
import torch

from medtune.searchers.lr_schedules import (
    BASELINES,
    CosineConfig,
    EpochSchedule,
    ExponentialConfig,
    PlateauConfig,
    ScheduleConfig,
    StepConfig,
)

# torch warns that scheduler.step() runs before optimizer.step(); no training happens in these tests
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")

BASE = 0.1
EPOCHS = 6
CFG = ScheduleConfig(
    step=StepConfig(step_size=2, gamma=0.5),
    exponential=ExponentialConfig(gamma=0.9),
    cosine=CosineConfig(eta_min=1e-3),
    plateau=PlateauConfig(factor=0.5, patience=1, min_lr=1e-6),
)


def make(method: str, cfg: ScheduleConfig = CFG, epochs: int = EPOCHS) -> tuple[EpochSchedule, torch.optim.Optimizer]:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=BASE)
    return EpochSchedule(method, opt, cfg, epochs=epochs), opt


def run(policy: EpochSchedule, n: int, loss: float = 1.0) -> list[float]:
    return [policy.step(dice=0.5, val_loss=loss) for _ in range(n)]


def test_fixed_keeps_base_lr():
    policy, _ = make("fixed")
    assert run(policy, 8) == [BASE] * 8
    assert policy.state_dict() == {}


def test_step_halves_every_two_epochs():
    policy, opt = make("step")
    # 0.1 * 0.5 ** (t // 2) for t = 1..7
    assert run(policy, 7) == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)  # the optimizer itself follows


def test_exponential_multiplies_by_gamma_each_epoch():
    policy, _ = make("exponential")
    # 0.1 * 0.9 ** t: 0.09, 0.081, 0.0729, 0.06561, 0.059049
    assert run(policy, 5) == pytest.approx([0.09, 0.081, 0.0729, 0.06561, 0.059049])


def test_cosine_anneals_to_eta_min_over_the_run():
    policy, _ = make("cosine")
    # eta_min + (base - eta_min) * (1 + cos(pi * t / T)) / 2 with T = 6, eta_min 1e-3:
    # t=1: 0.001 + 0.099 * (1 + 0.866025) / 2 = 0.0933683; t=2: 0.001 + 0.099 * 0.75 = 0.07525;
    # t=3: 0.001 + 0.099 * 0.5 = 0.0505; t=4: 0.001 + 0.099 * 0.25 = 0.02575;
    # t=5: 0.001 + 0.099 * (1 - 0.866025) / 2 = 0.00763174; t=6: 0.001
    expected = [0.0933683, 0.07525, 0.0505, 0.02575, 0.00763174, 0.001]
    assert run(policy, 6) == pytest.approx(expected, rel=1e-5)
    closed_form = [1e-3 + (BASE - 1e-3) * (1 + math.cos(math.pi * t / EPOCHS)) / 2 for t in range(1, 7)]
    assert expected == pytest.approx(closed_form, rel=1e-5)


def test_cosine_t_max_follows_epochs():
    policy, _ = make("cosine", epochs=4)
    # T = 4: t=2 is the midpoint -> 0.001 + 0.099 * 0.5 = 0.0505; t=4 -> eta_min
    lrs = run(policy, 4)
    assert lrs[1] == pytest.approx(0.0505) and lrs[3] == pytest.approx(1e-3)


def test_plateau_halves_after_patience_on_flat_loss():
    policy, _ = make("plateau")
    # epoch 1: 1.0 < best inf -> best, 0 bad; epoch 2: 1 bad (not > patience 1); epoch 3: 2 bad -> x0.5,
    # counter reset; epochs 4, 5 the same again -> 0.025; epochs 6, 7 -> 0.0125
    assert run(policy, 7) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])


def test_plateau_does_not_reduce_while_loss_improves():
    policy, _ = make("plateau")
    assert [policy.step(0.5, 1.0 - 0.1 * t) for t in range(5)] == [BASE] * 5


def test_plateau_nan_loss_counts_as_no_improvement():
    policy, _ = make("plateau")
    # NaN is never better than best: epoch 1 already 1 bad, epoch 2: 2 bad -> 0.05; epoch 4 -> 0.025
    assert run(policy, 4, loss=float("nan")) == pytest.approx([0.1, 0.05, 0.05, 0.025])


def test_plateau_stops_at_min_lr():
    cfg = ScheduleConfig(plateau=PlateauConfig(factor=0.5, patience=0, min_lr=0.03))
    policy, _ = make("plateau", cfg)
    # patience 0: every non-improving epoch reduces; 0.1 -> 0.05 -> max(0.025, 0.03) = 0.03 -> 0.03
    assert run(policy, 4) == pytest.approx([0.1, 0.05, 0.03, 0.03])


@pytest.mark.parametrize("method", BASELINES)
def test_state_dict_round_trip_continues_identically(method):
    policy, opt = make(method)
    run(policy, 3)
    saved = {"optimizer": opt.state_dict(), "policy": policy.state_dict()}  # as SegmentationRun saves them
    policy2, opt2 = make(method)
    opt2.load_state_dict(saved["optimizer"])
    policy2.load_state_dict(saved["policy"])
    assert policy2.lr == policy.lr
    rest = run(policy, 5)
    assert run(policy2, 5) == rest
    if method != "fixed":
        assert rest != [BASE] * 5  # the continuation is not just the base LR


def test_unknown_method_raises_naming_it():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=BASE)
    with pytest.raises(ValueError, match=r"method='cosin' is not a baseline schedule; use one of fixed, step"):
        EpochSchedule("cosin", opt, CFG, epochs=5)
    with pytest.raises(ValueError, match="method='qlearning'"):
        EpochSchedule("qlearning", opt, CFG, epochs=5)


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: StepConfig(step_size=0), "step_size"),
        (lambda: StepConfig(gamma=0.0), "gamma"),
        (lambda: ExponentialConfig(gamma=1.5), "gamma"),
        (lambda: CosineConfig(eta_min=-1.0), "eta_min"),
        (lambda: PlateauConfig(factor=1.0), "factor"),
        (lambda: PlateauConfig(patience=-1), "patience"),
    ],
)
def test_schedule_configs_reject_bad_values_naming_the_field(build, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        build()
