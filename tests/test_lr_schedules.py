"""Tests for medtune.searchers.lr_schedules.EpochSchedule: the baseline LR sequences, restore, errors.

Every run starts at LR 0.1; ``seq[t-1]`` is the LR returned after epoch t (the LR of epoch t+1). The strong
baselines (poly, warmup_cosine, onecycle) are also run on a toy least-squares problem, so the scheduler steps
after real optimizer steps, and checked against LRs computed by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from medtune.searchers.lr_schedules import (
    SCHEDULES,
    CosineConfig,
    EpochSchedule,
    ExponentialConfig,
    OneCycleConfig,
    PlateauConfig,
    ScheduleConfig,
    StepConfig,
    WarmupCosineConfig,
)
from medtune.searchers.poly_lr import ClippedSGD, PolyConfig, make_poly_sgd, poly_factor

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


def make(method: str, cfg: ScheduleConfig = CFG, epochs: int = EPOCHS,
         steps_per_epoch: int | None = None) -> tuple[EpochSchedule, torch.optim.Optimizer]:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=BASE)
    return EpochSchedule(method, opt, cfg, epochs=epochs, steps_per_epoch=steps_per_epoch), opt


def run(policy: EpochSchedule, n: int, loss: float = 1.0, batches: int = 0) -> list[float]:
    out = []
    for _ in range(n):
        for _ in range(batches):
            policy.batch_step()
        out.append(policy.step(dice=0.5, val_loss=loss))
    return out


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


def toy(opt_factory=lambda params: torch.optim.SGD(params, lr=BASE)):
    """A least-squares toy problem: ``w`` (3,) fitted to ``x @ w = y`` on 8 fixed rows."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, generator=g)
    w = torch.nn.Parameter(torch.zeros(3))
    opt = opt_factory([w])

    def train_step() -> None:
        opt.zero_grad()
        ((x @ w - y) ** 2).mean().backward()
        opt.step()

    return w, opt, train_step


def lrs_per_epoch(policy: EpochSchedule, opt, train_step, epochs: int, batches: int = 1) -> list[float]:
    """The LR each epoch's first batch trains at, stepping the policy as a training loop does."""
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        for _ in range(batches):
            train_step()
            policy.batch_step()
        policy.step(dice=0.5, val_loss=1.0)
    return out


def test_poly_follows_nnunets_formula_at_the_first_middle_and_last_epoch():
    _, opt, train_step = toy(lambda params: make_poly_sgd(params, PolyConfig()))
    policy = EpochSchedule("poly", opt, ScheduleConfig(), epochs=10)
    lrs = lrs_per_epoch(policy, opt, train_step, 10)
    # 0.01 * (1 - e / 10) ** 0.9: e = 0 -> 0.01; e = 5 -> 0.01 * 0.5 ** 0.9 = 0.0053589; e = 9 -> 0.01 * 0.1 ** 0.9
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[5] == pytest.approx(0.0053589, rel=1e-4)
    assert lrs[9] == pytest.approx(0.0012589, rel=1e-4) and lrs[9] > 0
    assert opt.param_groups[0]["lr"] == 0.0  # after the last epoch, and never negative beyond it
    assert poly_factor(12, 10) == 0.0


def test_poly_optimizer_is_nesterov_sgd_that_clips_the_global_gradient_norm():
    opt = make_poly_sgd([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))],
                        PolyConfig(momentum=0.0 + 0.99, grad_clip=1.0))
    group = opt.param_groups[0]
    assert isinstance(opt, ClippedSGD) and group["nesterov"] and group["momentum"] == 0.99
    assert group["weight_decay"] == 3e-5 and group["lr"] == 0.01
    a, b = group["params"]
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global norm 5, clipped to 1
    opt.step()
    assert torch.linalg.vector_norm(torch.cat([a.grad, b.grad])).item() == pytest.approx(1.0, rel=1e-5)


def test_warmup_cosine_warms_up_linearly_then_anneals_to_end_lr():
    cfg = ScheduleConfig(warmup_cosine=WarmupCosineConfig(warmup_epochs=4, warmup_multiplier=0.2, end_lr=1e-3))
    _, opt, train_step = toy()
    lrs = lrs_per_epoch(EpochSchedule("warmup_cosine", opt, cfg, epochs=10), opt, train_step, 10)
    # warm-up: 0.1 * (0.2 + 0.8 * e / 4) for e = 0..3 -> 0.02, 0.04, 0.06, 0.08
    assert lrs[:4] == pytest.approx([0.02, 0.04, 0.06, 0.08])
    # then 0.1 * (1 + cos(pi * (e - 4) / 6)) / 2: e = 4 -> 0.1, e = 7 -> 0.05, e = 9 -> 0.1 * (1 + cos(5 pi / 6)) / 2
    assert lrs[4] == pytest.approx(0.1) and lrs[7] == pytest.approx(0.05)
    assert lrs[9] == pytest.approx(0.1 * (1 - math.sqrt(3) / 2) / 2)  # 0.0066987
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the end: cosine 0, floored at end_lr


def test_onecycle_moves_per_batch_and_peaks_after_pct_start_of_the_steps():
    cfg = ScheduleConfig(onecycle=OneCycleConfig(peak_lr=0.5, pct_start=0.3, div_factor=10,
                                                 final_div_factor=100, anneal_strategy="linear"))
    _, opt, train_step = toy()
    policy = EpochSchedule("onecycle", opt, cfg, epochs=2, steps_per_epoch=5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # peak / div_factor
    seen = []
    for _ in range(2):
        for _ in range(5):
            seen.append(opt.param_groups[0]["lr"])
            train_step()
            policy.batch_step()
        policy.step(dice=0.5, val_loss=1.0)  # an epoch's end does not move it
    # 10 steps: the rise ends at step 0.3 * 10 - 1 = 2 (linear 0.05 -> 0.275 -> the peak 0.5), then a linear
    # fall to 0.05 / 100 = 0.0005 at step 9: step 3 -> 0.5 - 0.4995 / 7
    assert seen[:3] == pytest.approx([0.05, 0.275, 0.5])
    assert max(seen) == seen[2] and seen[3] == pytest.approx(0.5 - 0.4995 / 7)
    assert seen[9] == pytest.approx(0.0005)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        EpochSchedule("onecycle", opt, cfg, epochs=2)


def test_onecycle_default_peak_is_the_optimizers_lr():
    _, opt, _ = toy()
    EpochSchedule("onecycle", opt, ScheduleConfig(), epochs=3, steps_per_epoch=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE / 25)


@pytest.mark.parametrize("method", SCHEDULES)
def test_state_dict_round_trip_continues_identically(method):
    policy, opt = make(method, epochs=10, steps_per_epoch=2)
    run(policy, 3, batches=2)
    saved = {"optimizer": opt.state_dict(), "policy": policy.state_dict()}  # as SegmentationRun saves them
    policy2, opt2 = make(method, epochs=10, steps_per_epoch=2)
    opt2.load_state_dict(saved["optimizer"])
    policy2.load_state_dict(saved["policy"])
    assert policy2.lr == policy.lr
    rest = run(policy, 5, batches=2)
    assert run(policy2, 5, batches=2) == rest
    if method not in ("fixed", "schedulefree"):  # schedulefree: no schedule, by design
        assert rest != [BASE] * 5  # the continuation is not just the base LR


def test_unknown_method_raises_naming_it():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=BASE)
    with pytest.raises(ValueError,
                       match=r"method='cosin' is not a schedule \(did you mean 'cosine'\?\); use one of fixed"):
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
        (lambda: WarmupCosineConfig(warmup_epochs=-2), "warmup_epochs"),
        (lambda: WarmupCosineConfig(warmup_multiplier=1.5), "warmup_multiplier"),
        (lambda: OneCycleConfig(pct_start=1.0), "pct_start"),
        (lambda: OneCycleConfig(div_factor=0.5), "div_factor"),
        (lambda: OneCycleConfig(anneal_strategy="cosine"), "anneal_strategy"),
        (lambda: PolyConfig(exponent=0.0), "exponent"),
        (lambda: PolyConfig(momentum=1.0), "momentum"),
        (lambda: PolyConfig(grad_clip=-12.0), "grad_clip"),
    ],
)
def test_schedule_configs_reject_bad_values_naming_the_field(build, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        build()
