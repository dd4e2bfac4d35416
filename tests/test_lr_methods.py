"""Tests for medtune.searchers.lr_methods: every table of LR methods is read off the records, the built-in records
give today's tables, a method registered in a test is in every table and gone after, and a throw-away per-epoch
method runs through ``medtune.compare`` on a real local Ray (tracked in a real MLflow store) and acts as its core
says."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest
import torch

import medtune
from medtune.dashboards.comparison import (
    CLASSIC,
    CONSTANT_LR,
    LEARNED,
    ORDER_DEPENDENT,
    activity_warnings,
    compare_runs,
    moves_lr,
)
from medtune.dashboards.metric_report import verdicts_of
from medtune.errors import InputError
from medtune.searchers.lr_methods import (
    DEFAULT_SELECTION,
    METHODS,
    LRMethod,
    Param,
    check_method,
    markdown_table,
    register,
    registered,
    unregister,
)
from medtune.searchers.lr_optimizers import OWN_OPTIMIZERS
from medtune.searchers.lr_schedules import (
    BASELINES,
    PER_BATCH,
    SCHEDULES,
    STRONG_BASELINES,
    EpochSchedule,
    ScheduleConfig,
    StepConfig,
)
from medtune.searchers.search_spaces import NOT_SEARCHED, SPACES, check_overrides, resolve
from medtune.trainables.lr_control import METHOD_NAMES, NEEDS_EPOCHS, SCHEDULER_DRIVEN, LRControl, LRControlConfig

# torch warns that scheduler.step() runs before optimizer.step(); the unit tests step no optimizer
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")


def _halving(optimizer, settings, epochs, steps_per_epoch):
    """The throw-away method's core: the LR of epoch ``e`` (0-based) is ``lr * 0.5 ** e``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 ** e)


HALVING = LRMethod("halving_test", "classic", "epoch", "halves the LR after every epoch", "this test",
                   schedule=_halving, space=(Param("base_lr", "train.base_lr", log=True, scale="lr"),))
PATIENT = LRMethod("patient_test", "learned", "scheduler", "a learned method no trial runs", "this test",
                   not_searched="a test's method", order_dependent="shares a table, in this test",
                   constant_lr=True, watches=("metric", "loss"))


def _names(keep) -> tuple[str, ...]:
    return tuple(name for name, m in METHODS.items() if keep(m))


def test_every_table_is_read_off_the_records():
    assert tuple(METHOD_NAMES) == tuple(METHODS)
    assert tuple(SCHEDULES) == _names(lambda m: m.schedule is not None)
    assert tuple(PER_BATCH) == _names(lambda m: m.stepping == "batch")
    assert tuple(BASELINES) + tuple(STRONG_BASELINES) == tuple(CLASSIC) == _names(lambda m: m.kind == "classic")
    assert tuple(LEARNED) == _names(lambda m: m.kind == "learned")
    assert tuple(CONSTANT_LR) == _names(lambda m: m.constant_lr)
    assert tuple(NEEDS_EPOCHS) == _names(lambda m: m.needs_epochs)
    assert tuple(SCHEDULER_DRIVEN) == _names(lambda m: m.stepping == "scheduler")
    assert dict(OWN_OPTIMIZERS) == {n: m.optimizer.what for n, m in METHODS.items() if m.optimizer is not None}
    assert dict(SPACES) == {n: m.space for n, m in METHODS.items() if m.space}
    assert dict(NOT_SEARCHED) == {n: m.not_searched for n, m in METHODS.items() if m.not_searched}
    assert set(SPACES).isdisjoint(NOT_SEARCHED) and set(SPACES) | set(NOT_SEARCHED) == set(METHODS)
    assert dict(ORDER_DEPENDENT) == {n: m.order_dependent for n, m in METHODS.items() if m.order_dependent}
    sections = {m.section: m.config for m in METHODS.values() if m.section is not None}
    assert {f.name: f.type for f in dataclasses.fields(ScheduleConfig)} == sections
    assert all(isinstance(getattr(ScheduleConfig(), s), c) for s, c in sections.items())


def test_the_built_in_records_give_the_tables_medtune_had_before_them():
    """The tables as they were written by hand before the records (a renamed or dropped flag shows here)."""
    assert tuple(BASELINES) == ("fixed", "step", "exponential", "cosine", "plateau")
    assert tuple(STRONG_BASELINES) == ("warmup_cosine", "onecycle", "poly", "schedulefree", "prodigy")
    assert tuple(LEARNED) == ("qlearning", "qlearning_warm", "effort", "greedy", "pbt")
    assert set(METHOD_NAMES) == set(CLASSIC) | set(LEARNED) and len(METHOD_NAMES) == 15
    assert tuple(PER_BATCH) == ("onecycle",) and tuple(CONSTANT_LR) == ("fixed", "schedulefree")
    assert set(NEEDS_EPOCHS) == {"cosine", "effort", "warmup_cosine", "onecycle", "poly", "prodigy"}
    assert tuple(SCHEDULER_DRIVEN) == ("qlearning", "qlearning_warm")
    assert set(OWN_OPTIMIZERS) == {"poly", "schedulefree", "prodigy"}
    assert set(NOT_SEARCHED) == {"pbt", "qlearning_warm"}
    assert set(ORDER_DEPENDENT) == {"qlearning", "qlearning_warm", "pbt", "effort"}
    assert set(DEFAULT_SELECTION) == {"fixed", "cosine", "greedy", "qlearning", "pbt"}
    assert [f.name for f in dataclasses.fields(ScheduleConfig)] == [
        "step", "exponential", "cosine", "plateau", "warmup_cosine", "onecycle", "poly", "schedulefree", "prodigy",
        "effort", "greedy"]
    assert {m for m in METHODS if moves_lr(m)} == set(METHODS) - {"fixed", "schedulefree"}
    assert not moves_lr("my_own_method")  # a name medtune does not know is judged on its numbers alone


def _curves(methods: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"run_id": f"{m}{seed}", "method": m, "seed": seed, "epoch": e, "acc": 0.5 + 0.1 * e + 0.01 * seed,
             "lr": lr, "diverged": 0}
            for m, lrs in methods.items() for seed in (0, 1) for e, lr in enumerate(lrs, start=1)]
    return pd.DataFrame(rows)


def _report_groups(name: str) -> tuple[str, list[str]]:
    """(the method's status in the comparison table, the verdict lines of a learned method beside it)."""
    lrs = {"fixed": [0.1, 0.1, 0.1], name: [0.1, 0.1, 0.1], "greedy": [0.1, 0.2, 0.2], "cosine": [0.1, 0.05, 0.01],
           "effort": [0.1, 0.2, 0.3]}
    table = compare_runs(_curves(lrs), 0.7, "acc")
    return str(table.loc[name, "status"]), verdicts_of(table, "acc", "max").get("greedy", [])


def test_a_registered_method_is_in_every_table_and_gone_after():
    with pytest.raises(InputError, match="'halving_test' is not an LR method"):
        check_method("halving_test")
    assert _report_groups("halving_test")[0] == ""  # unknown: judged on its numbers alone, never inactive
    with registered(HALVING, PATIENT):
        assert check_method("halving_test") == "halving_test"  # the spec check
        with pytest.raises(InputError, match=re.escape("(did you mean 'halving_test'? method names are lower case)")):
            check_method("Halving_Test")
        assert "halving_test" in METHOD_NAMES and "halving_test" in SCHEDULES and "halving_test" in CLASSIC
        assert "patient_test" in LEARNED and "patient_test" in SCHEDULER_DRIVEN and "patient_test" in CONSTANT_LR
        assert ORDER_DEPENDENT["patient_test"] == "shares a table, in this test"
        assert NOT_SEARCHED["patient_test"] == "a test's method" and "halving_test" in SPACES  # the search spaces
        check_overrides({"halving_test": {"base_lr": {"low": 1e-3, "high": 1e-1}}})
        assert [b.key for b in resolve("halving_test", 1e-4, 1.0, 10)] == ["train.base_lr"]
        with pytest.raises(InputError, match="patient_test has no search space"):
            check_overrides({"patient_test": {}})
        # the report's groups: a classic schedule that never changed the LR is inactive, so no verdict counts it
        status, lines = _report_groups("halving_test")
        assert status == "inactive"
        assert any(line.startswith("greedy against the best classic schedule (fixed, cosine)") for line in lines)
        assert "halving_test" in markdown_table() and "| `patient_test` | learned | scheduler |" in markdown_table()
        assert activity_warnings(compare_runs(_curves({"halving_test": [0.1] * 3}), 0.7, "acc"))[0].endswith(
            "make it decide earlier or train longer.")
    assert "halving_test" not in METHODS and "patient_test" not in METHODS
    for table in (METHOD_NAMES, SCHEDULES, CLASSIC, LEARNED, SCHEDULER_DRIVEN, CONSTANT_LR, SPACES, NOT_SEARCHED,
                  ORDER_DEPENDENT):
        assert "halving_test" not in table and "patient_test" not in table
    with pytest.raises(InputError, match="tuning.spaces.halving_test is not a method with a search space"):
        check_overrides({"halving_test": {}})
    assert "halving_test" not in markdown_table()


def test_the_lr_studys_spec_check_knows_a_registered_method_while_it_is_registered():
    from medtune.cluster.studies.lr_study import LRStudySpec  # the cluster layer: only this test needs it

    with pytest.raises(ValueError, match="'halving_test' is not an LR method"):
        LRStudySpec(methods=("halving_test",))
    with registered(HALVING):
        assert LRStudySpec(methods=("fixed", "halving_test")).methods == ("fixed", "halving_test")
        with pytest.raises(ValueError, match=re.escape("(did you mean 'halving_test'?)")):
            LRStudySpec(methods=("Halving_test",))
    with pytest.raises(ValueError, match="'halving_test' is not an LR method"):
        LRStudySpec(methods=("halving_test",))


def test_classic_verdicts_count_a_registered_classic_schedule():
    """With the registered schedule acting (its LR moved), the classic verdict's list names it."""
    lrs = {"fixed": [0.1] * 3, "halving_test": [0.1, 0.05, 0.025], "greedy": [0.1, 0.2, 0.2],
           "cosine": [0.1, 0.05, 0.01], "effort": [0.1, 0.2, 0.3]}
    with registered(HALVING):
        table = compare_runs(_curves(lrs), 0.7, "acc")
        lines = verdicts_of(table, "acc", "max")["greedy"]
    assert table.loc["halving_test", "status"] == ""
    assert any(line.startswith("greedy against the best classic schedule (fixed, cosine, halving_test)")
               for line in lines)


def test_registration_is_checked_and_undone_on_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register(METHODS["cosine"])
    with pytest.raises(ValueError, match="section 'step' is 'step''s"):
        register(dataclasses.replace(HALVING, section="step", config=StepConfig))
    with pytest.raises(ValueError, match="built-in"):
        unregister("fixed")
    with pytest.raises(RuntimeError, match="inside"), registered(HALVING):
        assert "halving_test" in METHODS
        raise RuntimeError("inside")
    assert "halving_test" not in METHODS
    with registered(HALVING), registered(HALVING):  # nested: the inner block leaves it to the outer one
        pass
    assert "halving_test" not in METHODS
    register(HALVING)
    assert unregister("halving_test") is HALVING and "halving_test" not in METHODS


@pytest.mark.parametrize("change, message", [
    ({"name": "Halving"}, "must be lower case"),
    ({"kind": "adaptive"}, "kind='adaptive' must be one of classic, learned"),
    ({"stepping": "step"}, "stepping='step' must be one of epoch, batch, scheduler"),
    ({"section": "halving"}, "go together"),
    ({"not_searched": "why"}, "a search space or, in not_searched, why it has none"),
    ({"space": ()}, "a search space or, in not_searched, why it has none"),
    ({"schedule": None, "stepping": "batch"}, "stepping='batch' needs a schedule"),
    ({"make_policy": lambda ctx: None}, "a schedule or a policy factory, not both"),
    ({"watches": ("dice",)}, "'dice' is not one of metric, loss"),
    ({"source": " "}, "its source"),
])
def test_a_bad_record_is_refused_when_made(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(HALVING, **change)


def test_lrcontrol_and_epoch_schedule_run_a_registered_method_from_its_record():
    with registered(HALVING):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        control = LRControl(opt, {"method": "halving_test"}, settings=LRControlConfig(metric="acc"))
        assert isinstance(control.policy, EpochSchedule)
        lrs = [control.step({"acc": 0.5, "val_loss": 1.0}) for _ in range(3)]
        opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        schedule = EpochSchedule("halving_test", opt2, ScheduleConfig(), epochs=3)
    assert lrs == pytest.approx([0.05, 0.025, 0.0125])
    assert schedule.step(dice=0.5, val_loss=1.0) == pytest.approx(0.05)
    with pytest.raises(InputError, match="not an LR method"):
        LRControl(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), {"method": "halving_test"})


class _Doubler:
    """A throw-away learned core with a step signature of its own: doubles the LR while the loss falls."""

    def __init__(self, optimizer, max_lr):
        self.optimizer, self.max_lr, self.best, self.seen = optimizer, max_lr, float("inf"), []

    def observe(self, loss, higher_is_better):
        self.seen.append((loss, higher_is_better))
        if loss < self.best:
            for group in self.optimizer.param_groups:
                group["lr"] = min(group["lr"] * 2, self.max_lr)
        self.best = min(self.best, loss)

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]


DOUBLER = LRMethod("doubler_test", "learned", "epoch", "doubles the LR while the loss falls", "this test",
                   not_searched="a test's method", watches=("loss",),
                   make_policy=lambda ctx: _Doubler(ctx.optimizer, ctx.max_lr),
                   epoch_end=lambda policy, value, loss, mode: policy.observe(loss, mode == "max"))


def test_a_learned_method_with_a_step_of_its_own_needs_only_its_record():
    """LRControl feeds a policy through its record's ``epoch_end``: no branch in LRControl for a new core."""
    with registered(DOUBLER):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        control = LRControl(opt, {"method": "doubler_test"},
                            settings=LRControlConfig(metric="acc", loss_metric="val_loss", max_lr=0.5))
        assert isinstance(control.policy, _Doubler)
        lrs = [control.step({"acc": 0.5, "val_loss": loss}) for loss in (1.0, 0.8, 0.9, 0.7)]
    assert control.policy.seen == [(1.0, True), (0.8, True), (0.9, True), (0.7, True)]
    assert lrs == pytest.approx([0.2, 0.4, 0.4, 0.5])  # doubled on each new best loss, clamped at max_lr
    with pytest.raises(ValueError, match="epoch_end feeds the policy make_policy builds"):
        LRMethod("bad_test", "learned", "epoch", "d", "s", not_searched="x", epoch_end=lambda *a: None)


# -- the smoke path: medtune.compare on a real local Ray and a real MLflow store -----------------------------------

def halving_trainable(config):
    """A tiny regression; the worker registers the throw-away method itself (a Ray worker is another process)."""
    from medtune.searchers.lr_methods import registered as registered_in_worker

    with registered_in_worker(HALVING):
        torch.manual_seed(config["seed"])
        x = torch.linspace(-1, 1, 32).unsqueeze(1)
        y = 2 * x
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        control = medtune.LRControl(opt, config)
        for _ in range(control.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            control.step({"accuracy": float(1 / (1 + loss.item())), "val_loss": loss.item()})


@pytest.mark.integration
def test_a_throwaway_method_runs_through_medtune_compare_and_moves_the_lr_as_its_core_says(local_ray, tmp_path):
    from mlflow.tracking import MlflowClient

    with registered(HALVING):
        result = medtune.compare(halving_trainable, ["halving_test"], [0], 3, metric="accuracy", min_lr=1e-4,
                                 max_lr=0.5, output=tmp_path, name="throwaway")
        assert "halving_test" in CLASSIC
    assert "halving_test" not in METHODS
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("throwaway")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.params.get("method") == "halving_test"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = sorted(client.get_metric_history(runs[0].info.run_id, "lr"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([0.1, 0.05, 0.025])  # the LR each epoch trained with
    row = result.table.loc["halving_test"]
    assert row["lr_changes_mean"] == 2 and row["status"] == ""  # a classic schedule that acted
