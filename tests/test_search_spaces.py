"""The per-method search spaces of the tuning protocol: sampling, building, overrides, edges (no Ray)."""

from __future__ import annotations

import random

import pytest
import torch

from medtune.cluster.cli.main import main
from medtune.config import from_dict, to_dict
from medtune.errors import InputError
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.qlearning_agent import QLearningConfig
from medtune.searchers.search_spaces import (
    NOT_SEARCHED,
    SPACES,
    Bound,
    TuningConfig,
    apply_values,
    check_overrides,
    on_edge,
    resolve,
    sample,
)
from medtune.trainables.lr_control import METHOD_NAMES, OWN_OPTIMIZERS, LRControl, LRControlConfig, make_optimizer
from medtune.trainables.lr_segmentation import TrainConfig, apply_tuned

MIN_LR, MAX_LR, EPOCHS = 1e-6, 1e-2, 20


def test_every_lr_method_has_a_space_or_says_why_not():
    assert set(SPACES) | set(NOT_SEARCHED) == set(METHOD_NAMES)
    assert not set(SPACES) & set(NOT_SEARCHED)


@pytest.mark.parametrize("method", sorted(SPACES))
def test_each_space_samples_inside_its_bounds_and_every_sample_builds_the_policy(method):
    bounds = resolve(method, MIN_LR, MAX_LR, EPOCHS)
    assert bounds and all(b.low <= b.high for b in bounds)
    rng = random.Random(method)
    for _ in range(8):
        values = sample(bounds, rng)
        for b in bounds:
            assert b.low <= values[b.key] <= b.high, (b, values[b.key])
            assert isinstance(values[b.key], int) == b.integer
        sections = apply_values({"train": to_dict(TrainConfig(min_lr=MIN_LR, max_lr=MAX_LR)),
                                 "schedules": to_dict(ScheduleConfig()), "qlearning": {}}, values)
        train = from_dict(TrainConfig, sections["train"], "train")
        schedules = from_dict(ScheduleConfig, sections["schedules"], "schedules")
        QLearningConfig(min_lr=MIN_LR, max_lr=MAX_LR, **sections["qlearning"])  # the agent's own checks
        params = torch.nn.Linear(2, 1).parameters()
        opt = (make_optimizer(method, params, schedules) if method in OWN_OPTIMIZERS
               else torch.optim.Adam(params, lr=train.base_lr))
        settings = LRControlConfig(epochs=EPOCHS, steps_per_epoch=2, min_lr=MIN_LR, max_lr=MAX_LR,
                                   schedules=schedules, qlearning=sections["qlearning"])
        control = LRControl(opt, method=method, settings=settings, report=False, driven=False,
                            lr=None if method in OWN_OPTIMIZERS else train.base_lr)
        assert control.policy is not None
        control.batch_step(), control.batch_step(), control.eval()  # schedulefree: score the averaged weights
        assert control.step({"dice": 0.5, "val_loss": 0.4}) > 0


def test_lr_parameters_follow_the_study_bounds_and_epoch_fractions_the_run():
    (base,) = resolve("fixed", 1e-5, 1e-1, 10)
    assert (base.low, base.high, base.log) == (1e-5, 1e-1, True)
    start, step_size = resolve("step", MIN_LR, MAX_LR, 50)[:2]  # every LR-scheduled method searches its start
    assert (start.key, start.low, start.high) == ("train.base_lr", MIN_LR, MAX_LR)
    assert (step_size.low, step_size.high) == (5, 30)
    tiny = resolve("effort", MIN_LR, MAX_LR, 2)[1]  # a 2-epoch smoke run: the warm-up collapses to 1 epoch
    assert tiny.fixed and tiny.low == 1 and sample((tiny,), random.Random(0))[tiny.key] == 1


def test_an_override_replaces_the_bounds_and_is_checked():
    (b,) = resolve("poly", MIN_LR, MAX_LR, EPOCHS, {"base_lr": {"low": 0.005, "high": 0.02, "log": False}})
    assert (b.low, b.high, b.log) == (0.005, 0.02, False)
    with pytest.raises(InputError, match="above high"):
        resolve("poly", MIN_LR, MAX_LR, EPOCHS, {"base_lr": {"low": 0.5, "high": 0.02}})
    with pytest.raises(InputError, match="log scale needs low > 0"):
        resolve("cosine", MIN_LR, MAX_LR, EPOCHS, {"eta_min": {"low": 0.0}})


def test_unknown_hyperparameter_or_method_names_the_nearest_valid_one():
    with pytest.raises(InputError, match=r"tuning.spaces.cosine.etamin .*did you mean 'eta_min'"):
        check_overrides({"cosine": {"etamin": {"low": 1e-8}}})
    with pytest.raises(InputError, match=r"did you mean 'qlearning'"):
        check_overrides({"qlearnin": {"alpha": {"low": 0.1}}})
    with pytest.raises(InputError, match=r"tuning.spaces.plateau.factor.hgh .*did you mean 'high'"):
        check_overrides({"plateau": {"factor": {"hgh": 0.5}}})
    with pytest.raises(InputError, match="pbt has no search space"):
        check_overrides({"pbt": {"lr": {}}})


def test_unknown_hyperparameter_in_a_spec_exits_2_before_any_trial(capsys):
    assert main(["tune", "lr-schedulers", "--set", "tuning.spaces.greedy.patiense={low: 1, high: 4}"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'patience'" in err and len(err.strip().splitlines()) == 1
    assert main(["tune", "lr-schedulers", "--set", "methods=[fixed]",
                 "--set", "tuning.spaces.cosine.eta_min={low: 1.0e-8}"]) == 2
    assert "not in the spec's methods" in capsys.readouterr().err


def test_final_seeds_must_be_absent_from_the_search():
    with pytest.raises(InputError, match="seeds the search never used"):
        TuningConfig(search_seed=3, final_seeds=(1, 3))
    with pytest.raises(InputError, match="did you mean 'tpe'"):
        TuningConfig(searcher="TPE")


def test_edge_detection_in_each_parameters_own_scale():
    lr = Bound("base_lr", "train.base_lr", 1e-6, 1e-2, log=True)
    factor = Bound("factor", "schedules.plateau.factor", 0.1, 0.9)
    patience = Bound("patience", "schedules.plateau.patience", 1, 10, integer=True)
    # 1.4e-6 is 0.04 of the way in log10 (5% of 4 decades = 0.2 decades), but 0.00004 of the way linearly
    assert on_edge((lr,), {"train.base_lr": 1.4e-6})[0].startswith("base_lr=1.4e-06 is at the low edge")
    assert on_edge((lr,), {"train.base_lr": 2e-6}) == []  # 0.075 decades in: inside
    assert on_edge((lr,), {"train.base_lr": 9e-3}) and "high edge" in on_edge((lr,), {"train.base_lr": 9e-3})[0]
    assert on_edge((factor,), {"schedules.plateau.factor": 0.5}) == []
    assert "high edge" in on_edge((factor,), {"schedules.plateau.factor": 0.89})[0]
    assert "low edge" in on_edge((patience,), {"schedules.plateau.patience": 1})[0]
    assert on_edge((patience,), {"schedules.plateau.patience": 5}) == []
    assert on_edge((Bound("w", "k", 1, 1, integer=True),), {"k": 1}) == []  # a collapsed space has no edge


def test_tuned_settings_reach_the_trials_config_sections_and_its_lr():
    config = {"method": "cosine", "lr": 1e-3, "train": {"base_lr": 1e-3}, "schedules": {"cosine": {"eta_min": 0.0}},
              "tuned": {"cosine": {"train.base_lr": 3e-4, "schedules.cosine.eta_min": 1e-5}, "fixed": {"x.y": 1}}}
    out = apply_tuned(config)
    assert out["lr"] == 3e-4 and out["train"]["base_lr"] == 3e-4 and out["schedules"]["cosine"]["eta_min"] == 1e-5
    assert config["schedules"]["cosine"]["eta_min"] == 0.0  # the trial's own config is left alone
    assert apply_tuned({**config, "method": "step"}) == {**config, "method": "step"}


def test_lr_spec_checks_tuned_settings_against_the_sections_they_set():
    from medtune.cluster.studies.lr_study import LRStudySpec

    spec = from_dict(LRStudySpec, {"methods": ["fixed", "step"], "tuned": {"step": {"schedules.step.gamma": 0.3}}})
    assert spec.tuned["step"]["schedules.step.gamma"] == 0.3
    with pytest.raises(InputError, match="gamma"):
        from_dict(LRStudySpec, {"methods": ["step"], "tuned": {"step": {"schedules.step.gamma": 3.0}}})
    with pytest.raises(InputError, match="not one of the methods"):
        from_dict(LRStudySpec, {"methods": ["step"], "tuned": {"cosine": {"train.base_lr": 1e-3}}})


def test_a_spec_with_tuning_round_trips_as_a_submitted_job_gets_it():
    from medtune.cluster.studies.lr_study import LRStudySpec
    from medtune.cluster.studies.registry import load_spec

    spec = load_spec("lr-schedulers", overrides=["tuning.trials=3", "tuning.spaces.step.gamma={low: 0.2, high: 0.8}"])
    assert spec.tuning.trials == 3 and spec.tuning.searcher == "tpe"
    again = from_dict(LRStudySpec, to_dict(spec))  # what `medtune submit` writes for the job and it reads back
    assert again.tuning == spec.tuning
    assert load_spec("lr-schedulers").tuning is None  # no tuning: section, the hand-set study
