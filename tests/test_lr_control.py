"""Tests for medtune.trainables.lr_control.LRControl outside Tune (a plain PyTorch scheduler) and its checks.

No Ray is started: the Tune side (reporting, the mailbox) is covered by tests/test_compare.py and
tests/test_compare_examples.py on a real local Ray.
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
from medtune.trainables.lr_control import (
    CHECKPOINT_FILE,
    METHOD_NAMES,
    LRControl,
    LRControlConfig,
    checkpoint_due,
    make_optimizer,
)
from medtune.trainables.lr_segmentation import TrainConfig


def sgd(lr: float = 0.05) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))], lr=lr)


def control(method: str, lr: float = 0.05, **settings) -> LRControl:
    return LRControl(sgd(lr), method=method, settings=LRControlConfig(**settings))


def test_lrcontrol_is_exported_lazily_from_medtune():
    assert medtune.LRControl is LRControl
    assert "LRControl" in dir(medtune) and "compare" in dir(medtune)


def test_every_method_starts_from_the_optimizers_own_lr():
    """The optimizer's LR is each schedule's base: the first epoch trains at it, but for a warm-up (a fraction
    of it: warmup_cosine 0.1 x, onecycle 1 / 25 x, its peak being the base); the methods with their own
    optimizer start from that optimizer's LR (their section's)."""
    first = {"warmup_cosine": 0.1, "onecycle": 1 / 25}
    for method in METHOD_NAMES:
        opt = make_optimizer(method, [torch.nn.Parameter(torch.zeros(2))], default=lambda p: sgd(0.05))
        own = opt.param_groups[0]["lr"]
        c = LRControl(opt, method=method, steps_per_epoch=3, settings=LRControlConfig(
            epochs=10, metric="accuracy", loss_metric="loss"))
        assert c.lr == pytest.approx(own * first.get(method, 1.0)), method
        assert all(g["lr"] == pytest.approx(c.lr) for g in c.optimizer.param_groups)
        assert own == 0.05 or method in ("poly", "schedulefree", "prodigy")


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


# -- the strong baselines: warmup_cosine, onecycle (per batch), poly, schedulefree, prodigy -----------------------

def toy_problem(seed: int = 0):
    """Least squares on 16 fixed rows: ``model`` (Linear 4 -> 1), a training step on ``opt``, the validation loss."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)

    def train_step(opt) -> None:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    def val_loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(x), y).item()

    return model, train_step, val_loss


def test_the_new_methods_are_lr_methods_exported_with_make_optimizer():
    for m in ("warmup_cosine", "onecycle", "poly", "schedulefree", "prodigy"):
        assert m in METHOD_NAMES
    assert medtune.make_optimizer is make_optimizer and "make_optimizer" in medtune.__all__


def test_make_optimizer_builds_each_methods_own_optimizer_from_its_section():
    from prodigyopt import Prodigy
    from schedulefree import AdamWScheduleFree

    from medtune.searchers.poly_lr import ClippedSGD

    model = torch.nn.Linear(2, 1)
    config = {"method": "poly", "lr_control": {"schedules": {"poly": {"base_lr": 0.02, "grad_clip": 5.0}}}}
    poly = make_optimizer("poly", model.parameters(), config)
    assert isinstance(poly, ClippedSGD) and poly.max_norm == 5.0
    assert poly.param_groups[0]["lr"] == 0.02 and poly.param_groups[0]["nesterov"]
    sf = make_optimizer("schedulefree", model.parameters())
    assert isinstance(sf, AdamWScheduleFree) and sf.param_groups[0]["train_mode"]  # ready to step
    assert isinstance(make_optimizer("prodigy", model.parameters()), Prodigy)
    mine = make_optimizer("cosine", model.parameters(), config, default=lambda p: torch.optim.Adam(p, lr=1e-3))
    assert isinstance(mine, torch.optim.Adam)
    with pytest.raises(InputError, match="'cosine' trains with your own optimizer; pass default="):
        make_optimizer("cosine", model.parameters())
    with pytest.raises(InputError, match=re.escape("did you mean 'schedulefree'? method names are lower case")):
        make_optimizer("ScheduleFree", model.parameters())


@pytest.mark.parametrize("method, wrong, needle", [
    ("schedulefree", lambda p: torch.optim.Adam(p, lr=1e-3), "it is torch.optim.adam.Adam"),
    ("prodigy", lambda p: torch.optim.AdamW(p, lr=1.0), "it is torch.optim.adamw.AdamW"),
    ("poly", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=3e-5),
     "momentum=0.9 (the recipe: 0.99)"),
    ("poly", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5),
     "gradient clipping None (the recipe: 12.0)"),
])
def test_a_method_with_its_own_optimizer_refuses_any_other(method, wrong, needle):
    with pytest.raises(InputError, match=re.escape(needle)) as info:
        LRControl(wrong(torch.nn.Linear(2, 1).parameters()), method=method, settings=LRControlConfig(epochs=3))
    assert f"medtune.make_optimizer({method!r}, model.parameters(), config)" in str(info.value)


def test_own_optimizer_methods_start_from_their_own_lr_outside_the_bounds():
    opt = make_optimizer("prodigy", torch.nn.Linear(2, 1).parameters())
    c = LRControl(opt, {"method": "prodigy", "lr": 1e-3, "lr_control": {"epochs": 4, "max_lr": 0.01}})
    assert c.lr == 1.0  # Prodigy's factor, not config["lr"], and not clamped to max_lr
    with pytest.raises(InputError, match=r"starts from its optimizer's LR 1.0 .* lr=0.001 does not apply"):
        LRControl(make_optimizer("prodigy", torch.nn.Linear(2, 1).parameters()), method="prodigy", lr=1e-3,
                  settings=LRControlConfig(epochs=4))


def test_poly_through_lrcontrol_trains_at_nnunets_lrs():
    model, train_step, val_loss = toy_problem()
    opt = make_optimizer("poly", model.parameters())
    c = LRControl(opt, method="poly", settings=LRControlConfig(epochs=4))
    used = []
    for _ in range(4):
        used.append(c.lr)
        train_step(opt)
        c.batch_step()
        c.step({"dice": 0.5, "val_loss": val_loss()})
    # 0.01 * (1 - e / 4) ** 0.9 for e = 0..3: 0.01, 0.0077194, 0.0053589, 0.0028717
    assert used == pytest.approx([0.01, 0.0077194, 0.0053589, 0.0028717], rel=1e-4)


def test_warmup_cosine_through_lrcontrol_warms_up_then_ends_at_end_lr():
    c = LRControl(sgd(0.1), method="warmup_cosine", settings=LRControlConfig(
        epochs=6, schedules={"warmup_cosine": {"warmup_epochs": 2, "warmup_multiplier": 0.0, "end_lr": 0.01}}))
    used = []
    for _ in range(6):
        used.append(c.lr)
        c.step({"dice": 0.5, "val_loss": 1.0})
    # warm-up 0.1 * e / 2: 0, 0.05; then 0.1 * (1 + cos(pi * (e - 2) / 4)) / 2: 0.1, 0.085355, 0.05, 0.014645
    assert used == pytest.approx([0.0, 0.05, 0.1, 0.0853553, 0.05, 0.0146447], rel=1e-5)
    assert c.lr == pytest.approx(0.01)  # after the run: the cosine reaches 0, floored at end_lr


def test_onecycle_through_lrcontrol_peaks_per_batch_and_needs_the_batch_hook():
    model, train_step, val_loss = toy_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9)
    c = LRControl(opt, method="onecycle", steps_per_epoch=5,
                  settings=LRControlConfig(epochs=2, min_lr=1e-6, max_lr=1.0))
    seen = []
    for _ in range(2):
        for _ in range(5):
            seen.append(c.lr)
            train_step(opt)
            c.batch_step()
        c.step({"dice": 0.5, "val_loss": val_loss()})
    # peak = the optimizer's 0.4, start 0.4 / 25 = 0.016, the peak at step 0.3 * 10 - 1 = 2 (cosine rise)
    assert seen[0] == pytest.approx(0.016) and seen[2] == pytest.approx(0.4) and max(seen) == seen[2]
    assert seen[1] == pytest.approx(0.016 + (0.4 - 0.016) * (1 - math.cos(math.pi / 2)) / 2)
    assert seen[-1] == pytest.approx(0.4 / 25 / 1e4)  # the last step: start / final_div_factor
    with pytest.raises(InputError, match="batch_step\\(\\) was called more often than epochs x steps_per_epoch"):
        c.batch_step()
    forgot = LRControl(torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9), method="onecycle",
                       steps_per_epoch=5, settings=LRControlConfig(epochs=2, max_lr=1.0))
    with pytest.raises(InputError, match="batch_step\\(\\) was not called this epoch"):
        forgot.step({"dice": 0.5, "val_loss": 1.0})
    with pytest.raises(InputError, match="steps_per_epoch=len\\(loader\\)"):
        LRControl(sgd(), method="onecycle", settings=LRControlConfig(epochs=2))


def test_schedulefree_scores_its_averaged_weights_and_refuses_an_epoch_ended_in_train_mode():
    model, train_step, val_loss = toy_problem()
    opt = make_optimizer("schedulefree", model.parameters(), {"method": "schedulefree", "lr_control": {
        "schedules": {"schedulefree": {"lr": 0.05}}}})
    c = LRControl(opt, method="schedulefree", settings=LRControlConfig(epochs=3))
    c.train()
    for _ in range(5):
        train_step(opt)
    y = model.weight.detach().clone()  # train mode: the interpolation y
    c.eval()
    x = model.weight.detach().clone()  # eval mode: the average x
    assert not torch.allclose(x, y)
    c.step({"dice": 0.5, "val_loss": val_loss()})
    assert c.lr == 0.05  # no schedule
    c.train()
    assert torch.allclose(model.weight, y)  # and back to y for training
    train_step(opt)
    with pytest.raises(InputError, match="in train mode at the epoch's end.*optimizer.eval\\(\\)"):
        c.step({"dice": 0.5, "val_loss": val_loss()})


def test_prodigy_grows_its_step_size_d_from_d0_and_reports_d_times_lr():
    model, train_step, val_loss = toy_problem()
    opt = make_optimizer("prodigy", model.parameters())
    c = LRControl(opt, method="prodigy", settings=LRControlConfig(epochs=4))
    assert opt.param_groups[0]["d"] == 1e-6 and c.effective_lr == pytest.approx(1e-6)
    ds = []
    for _ in range(4):
        for _ in range(5):
            train_step(opt)
        ds.append(opt.param_groups[0]["d"])
        c.step({"dice": 0.5, "val_loss": val_loss()})
    assert ds[0] > 1e-6 and ds == sorted(ds)  # it grows from d0 and never shrinks
    # cosine over 4 epochs on the factor 1.0: after epoch 1 it is (1 + cos(pi / 4)) / 2
    assert c.lr == pytest.approx(0.0) and c.epoch == 4
    c2 = LRControl(make_optimizer("prodigy", toy_problem()[0].parameters()), method="prodigy",
                   settings=LRControlConfig(epochs=4))
    c2.step({"dice": 0.5, "val_loss": 1.0})
    assert c2.lr == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert c2.effective_lr == pytest.approx(1e-6 * c2.lr)  # d untouched without a step


@pytest.mark.parametrize("schedules, needle", [
    ({"poly": {"exponent": -1}}, "lr_control.schedules.poly.exponent=-1.0 must be > 0"),
    ({"onecycle": {"pct_start": 1.5}}, "lr_control.schedules.onecycle.pct_start=1.5 must lie in (0, 1)"),
    ({"onecycle": {"anneal_strategy": "Cos"}}, "anneal_strategy='Cos' is not one of cos, linear (did you mean 'cos'?)"),
    ({"warmup_cosine": {"warmup_multiplier": 2}}, "warmup_cosine.warmup_multiplier=2.0 must lie in [0, 1]"),
    ({"schedulefree": {"lr": 0}}, "lr_control.schedules.schedulefree.lr=0.0 must be a positive finite number"),
    ({"schedulefree": {"betas": [0.9, 1.0]}}, "schedulefree.betas=[0.9, 1.0] must be two numbers in [0, 1)"),
    ({"prodigy": {"d_coef": 0}}, "lr_control.schedules.prodigy.d_coef=0.0 must be a positive finite number"),
    ({"prodigy": {"eta_min": 2}}, "prodigy.eta_min=2.0 must lie in [0, lr=1.0)"),
    ({"Poly": {}}, "schedules.Poly is not a known setting (did you mean 'poly'?)"),
])
def test_bad_schedule_values_are_one_line_naming_the_value(schedules, needle):
    with pytest.raises(InputError, match=re.escape(needle)) as info:
        LRControl(sgd(), {"method": "fixed", "lr_control": {"schedules": schedules}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad, good", [("OneCycle", "onecycle"), ("POLY", "poly"), ("Warmup_Cosine", "warmup_cosine"),
                                       ("prodigi", "prodigy"), ("schedule_free", "schedulefree")])
def test_a_new_method_misspelt_or_in_the_wrong_case_suggests_the_right_one(bad, good):
    with pytest.raises(InputError, match=re.escape(f"did you mean {good!r}")):
        LRControl(sgd(), {"method": bad})


def test_schedulefree_runs_without_the_run_s_length_since_it_has_no_schedule():
    import torch

    from medtune.trainables.lr_control import LRControl, LRControlConfig, make_optimizer

    model = torch.nn.Linear(3, 1)
    control = LRControl(make_optimizer("schedulefree", model.parameters()), method="schedulefree",
                        settings=LRControlConfig())
    assert control.epochs is None and control.lr > 0


# --------------------------------------------------------------------------- which epochs carry a checkpoint

def test_checkpoint_due_every_n_epochs_at_the_last_at_pbts_epochs_and_after_the_time_bound():
    def due(**kw):
        return [e for e in range(1, 13) if checkpoint_due(e, **kw)]

    assert due(every=5) == [5, 10]
    assert due(every=5, last=12) == [5, 10, 12]
    assert due(every=5, last=12, pbt_interval=4) == [4, 5, 8, 10, 12]
    assert due(every=1) == list(range(1, 13))
    assert checkpoint_due(3, 5, waited_s=300.0, every_s=300.0) and not checkpoint_due(3, 5, waited_s=299.9,
                                                                                       every_s=300.0)
    assert due(every=5, last=12, driven=True) == list(range(1, 13))  # a mailbox-driven trial: every epoch


class Clock:
    """Stands for ``time.monotonic`` in lr_control: ``now`` moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reports(monkeypatch):
    """What ``LRControl.step`` hands to ``tune.report``: one ``(epoch, checkpointed epoch or None)`` per call (the
    checkpoint's own ``lr_control`` state, read back from the folder while it exists); and the clock."""
    from ray import tune

    import medtune.trainables.lr_control as lr_control

    got: list[tuple[int, int | None]] = []

    def report(result, checkpoint=None):
        saved = None
        if checkpoint is not None:
            state = torch.load(f"{checkpoint.path}/{CHECKPOINT_FILE}", weights_only=False)
            assert set(state) == {"model", "optimizer", "lr_control"}
            saved = state["lr_control"]["epoch"]
        got.append((result["epoch"], saved))

    clock = Clock()
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(lr_control, "monotonic", clock)
    return got, clock


def run_epochs(method: str, n: int, clock: Clock | None = None, seconds: float = 0.0, **settings) -> LRControl:
    model = torch.nn.Linear(2, 1)
    c = LRControl(torch.optim.SGD(model.parameters(), lr=0.05), method=method, report=True,
                  settings=LRControlConfig(metric="accuracy", loss_metric="loss", **settings))
    for _ in range(n):
        if clock is not None:
            clock.now += seconds
        c.step({"accuracy": 0.5, "loss": 1.0}, model=model)
    return c


def checkpointed(got) -> list[int]:
    assert all(saved in (None, epoch) for epoch, saved in got)  # a checkpoint holds the epoch it came with
    return [epoch for epoch, saved in got if saved is not None]


def test_step_with_a_model_checkpoints_every_checkpoint_every_epochs_and_at_the_last(reports):
    got, _ = reports
    run_epochs("fixed", 12, epochs=12)
    assert [e for e, _ in got] == list(range(1, 13))  # every epoch is reported
    assert checkpointed(got) == [5, 10, 12]  # the default 5 (TrainConfig's), and the last epoch
    assert LRControlConfig().checkpoint_every == TrainConfig().checkpoint_every == 5
    assert LRControlConfig().checkpoint_every_s == TrainConfig().checkpoint_every_s


def test_without_the_run_length_there_is_no_last_epoch_checkpoint(reports):
    got, _ = reports
    run_epochs("fixed", 7, checkpoint_every=3)
    assert checkpointed(got) == [3, 6]


def test_a_checkpoint_is_written_after_checkpoint_every_s_without_one(reports):
    got, clock = reports
    run_epochs("fixed", 7, clock, seconds=200.0, checkpoint_every=100, checkpoint_every_s=300.0)
    assert checkpointed(got) == [2, 4, 6]  # 400 s since the start / the last one at each, 200 s in between


def test_pbt_checkpoints_at_its_perturbation_epochs_too(reports):
    got, _ = reports
    run_epochs("pbt", 12, epochs=12, perturbation_interval=4)
    assert checkpointed(got) == [4, 5, 8, 10, 12]


def test_pbt_without_its_interval_checkpoints_every_epoch_and_other_methods_ignore_the_interval(reports):
    got, _ = reports
    run_epochs("pbt", 4)
    assert checkpointed(got) == [1, 2, 3, 4]  # PBT may clone any epoch: each must carry its state
    got.clear()
    run_epochs("cosine", 8, epochs=8, perturbation_interval=2, checkpoint_every=3)
    assert checkpointed(got) == [3, 6, 8]


def test_a_diverged_epoch_writes_no_checkpoint_even_when_one_is_due(reports):
    got, _ = reports
    model = torch.nn.Linear(2, 1)
    c = LRControl(torch.optim.SGD(model.parameters(), lr=0.05), method="plateau", report=True,  # watches the loss
                  settings=LRControlConfig(metric="accuracy", loss_metric="loss", checkpoint_every=2))
    c.step({"accuracy": 0.5, "loss": 1.0}, model=model)
    c.step({"accuracy": 0.5, "loss": float("nan")}, model=model)  # epoch 2, due, but diverged
    assert c.diverged
    c.step({"accuracy": 0.5, "loss": 1.0}, model=model)
    c.step({"accuracy": 0.5, "loss": 1.0}, model=model)
    assert not c.diverged and checkpointed(got) == [4]


@pytest.mark.parametrize("kw, message", [
    ({"checkpoint_every": 0}, "lr_control.checkpoint_every=0 must be a whole number of epochs >= 1"),
    ({"checkpoint_every": 2.5}, "lr_control.checkpoint_every=2.5 must be an integer"),
    ({"checkpoint_every": True}, "lr_control.checkpoint_every=True must be"),
    ({"checkpoint_every_s": 0}, "lr_control.checkpoint_every_s=0.0 must be a number of seconds > 0"),
    ({"checkpoint_every_s": "5m"}, "lr_control.checkpoint_every_s='5m' must be a number"),
    ({"perturbation_interval": 0}, "lr_control.perturbation_interval=0 must be a whole number of epochs >= 1"),
])
def test_bad_checkpoint_settings_are_one_input_error_line_naming_the_field(kw, message):
    with pytest.raises(InputError, match=re.escape(message)) as info:
        LRControl(sgd(), {"method": "fixed", "lr_control": kw})
    assert "\n" not in str(info.value)
