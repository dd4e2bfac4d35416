"""Tests for medtune.cluster.studies.compare: argument checks before any trial (no Ray), the reading of broken trials'
results (fake results), and the loud end of a run whose trainable misses a key or never calls LRControl (a real
local Ray and a real MLflow SQLite store)."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest

import medtune
from medtune.cluster.runs.fail_fast import RunStoppedError
from medtune.cluster.studies.compare import FirstResultCheck, compare, make_spec, problems
from medtune.errors import InputError


def ok_trainable(config):  # never run by the argument tests
    raise AssertionError("no trial may start")


ARGS = dict(methods=["fixed", "qlearning"], seeds=[0], epochs=2, metric="accuracy", mode="max", loss_metric="val_loss",
            min_lr=1e-4, max_lr=0.5, lr=None, name="t", target=None, params=None, schedules=None, qlearning=None,
            warm_start=None, pbt=None, cpus_per_trial=1.0, gpus_per_trial=0.0, max_concurrent=0, max_failures=0)


def spec(**kw):
    return make_spec(ok_trainable, **{**ARGS, **kw})


def test_compare_is_exported_lazily_from_medtune():
    assert medtune.compare is compare


def test_a_good_call_builds_a_spec_with_the_lr_control_section():
    s = spec(params={"width": 8})
    assert s.trainable.endswith(":ok_trainable") and s.methods == ("fixed", "qlearning")
    section = s.control_config("box", "task")
    assert section["metric"] == "accuracy" and section["epochs"] == 2 and section["mailbox"] == "box"


@pytest.mark.parametrize("kw, message", [
    ({"methods": ["fixed", "Cosine"]},
     "method='Cosine' is not an LR method (did you mean 'cosine'? method names are lower case)"),
    ({"methods": ["qlerning"]}, "(did you mean 'qlearning'?)"),
    ({"methods": "cosine"}, "must be a non-empty list of LR methods"),
    ({"metric": 3}, "metric=3 must be the name"),
    ({"loss_metric": None}, "loss_metric=None must be the name"),
    ({"mode": "maximum"}, "mode='maximum' must be 'max'"),
    ({"seeds": [0, 0]}, "has duplicates"),
    ({"epochs": 0}, "epochs=0 must be"),
    ({"min_lr": 1.0}, "min_lr=1.0 must be below max_lr=0.5"),
    ({"lr": 0.9}, "lr=0.9 must lie in"),
    ({"methods": ["qlearning_warm"]}, "needs warm_start="),
    ({"qlearning": {"epsilonn": 0.1}}, "qlearning.epsilonn is not a Q-learning setting (did you mean 'epsilon'?)"),
    ({"params": {"lr": 0.1}}, "params may not set lr"),
    ({"schedules": {"cosin": {}}}, "schedules.cosin is not a known setting (did you mean 'cosine'?)"),
    ({"methods": ["effort"], "mode": "min"}, "'effort' maximises"),
])
def test_bad_arguments_are_one_input_error_line(kw, message):
    with pytest.raises(InputError, match=re.escape(message)) as info:
        spec(**kw)
    assert "\n" not in str(info.value)


def test_checkpoint_every_and_pbts_interval_reach_the_trials_lr_control_section():
    """What LRControl.step(model=) checkpoints by: compare's checkpoint_every (default 5, TrainConfig's), and
    PBT's perturbation interval (scaled to the budget when unset) for its pbt members; an own-training spec's
    checkpoint_every goes the same way."""
    from medtune.cluster.studies.own_study import OwnTrainingSpec
    from medtune.trainables.lr_control import LRControlConfig

    section = spec(methods=["fixed", "pbt"], epochs=8, checkpoint_every=3).control_config("box", "task")
    assert section["checkpoint_every"] == 3 and section["perturbation_interval"] == 2  # 8 // 4
    assert LRControlConfig(**{k: v for k, v in section.items() if k != "schedules"}).checkpoint_every == 3
    assert spec().control_config("box", "task")["checkpoint_every"] == 5
    own = OwnTrainingSpec(trainable="tests.test_compare:ok_trainable", metric="accuracy", methods=("fixed",),
                          seeds=(0,), checkpoint_every=2)
    assert make_spec(ok_trainable, **own.compare_kwargs()).control_config("", "")["checkpoint_every"] == 2
    with pytest.raises(InputError, match=re.escape("checkpoint_every=0 must be a whole number of epochs >= 1")):
        spec(checkpoint_every=0)


def test_a_bad_method_fails_before_ray_starts_or_any_folder_is_made(tmp_path):
    with pytest.raises(InputError, match="did you mean 'cosine'"):
        compare(ok_trainable, ["Cosine"], [0], 2, metric="accuracy", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def fake(method, metrics=None, error=None):
    return SimpleNamespace(config={"method": method, "seed": 0}, metrics=metrics, error=error)


def test_problems_name_the_missing_key_and_what_the_trial_reported():
    results = [
        fake("qlearning", {"training_iteration": 1, "accuracy": 0.5, "loss": 1.0, "lr_control": 1, "pid": 1}),
        fake("fixed", {"training_iteration": 1, "accuracy": 0.5, "val_loss": 1.0}),
        fake("cosine", {}),
        fake("greedy", error=RuntimeError("Traceback\n  ...\nmedtune.errors.InputError: LRControl.step: lacks 'x'")),
        fake("step", error=RuntimeError("Traceback\nZeroDivisionError: division by zero")),
        fake("plateau", {"training_iteration": 1, "accuracy": 0.5, "val_loss": 1.0, "lr_control": 1}),
    ]
    keys, other = problems(results, "accuracy", "val_loss")
    assert keys == [
        "trial qlearning-seed0 was stopped: its first result lacks 'val_loss' (loss_metric); it reported: "
        "accuracy, loss",
        "trial fixed-seed0 was stopped: it never called medtune.LRControl.step (its first result lacks the key "
        "'lr_control'), so no LR decision could reach it; it reported: accuracy, val_loss",
        "trial cosine-seed0 reported nothing; call control.step(metrics) once per epoch "
        "(control = medtune.LRControl(optimizer, config))",
        "trial greedy-seed0 failed: LRControl.step: lacks 'x'",
    ]
    assert other == ["trial step-seed0 failed: ZeroDivisionError: division by zero"]


def test_the_first_result_check_stops_everything_after_one_bad_first_result():
    check = FirstResultCheck("accuracy", "val_loss")
    good = {"accuracy": 0.5, "val_loss": 1.0, "lr_control": 1}
    assert check("a", good) is False and not check.stop_all()
    assert check("b", {"accuracy": 0.5}) is True and check.stop_all()
    assert check("b", {"accuracy": 0.5}) is False  # only first results are judged


# -- on a real local Ray and a real MLflow store ------------------------------------------------------


def never_calls_lrcontrol(config):
    from ray import tune

    for epoch in range(1, 4):
        tune.report({"epoch": epoch, "accuracy": 0.5, "val_loss": 1.0})


def reports_loss_not_val_loss(config):
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    control = medtune.LRControl(opt, config)
    for _ in range(control.epochs):
        control.step({"accuracy": 0.5, "loss": 1.0})


@pytest.mark.integration
@pytest.mark.parametrize("trainable, message", [
    (never_calls_lrcontrol, "trial qlearning-seed0 was stopped: it never called medtune.LRControl.step"),
    # reports_loss_not_val_loss: in test_an_error_every_trial_would_repeat_stops_the_run_at_the_first_trial...
])
def test_a_broken_trainable_ends_the_run_with_one_line(local_ray, tmp_path, trainable, message):
    with pytest.raises(InputError) as info:
        compare(trainable, ["qlearning"], [0], 3, metric="accuracy", output=tmp_path, name="broken")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def crashes_once_at_epoch_3(config):
    """A tiny regression trained by SGD; its worker process dies at epoch 3 of the first attempt (a marker file
    says whether it already did), and the restarted trial continues from the user's checkpoint."""
    import os
    from pathlib import Path

    import torch

    torch.manual_seed(config["seed"])
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x + 0.5
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    control = medtune.LRControl(opt, config)
    marker = Path(config["marker_dir"]) / f"{config['method']}-crashed"
    start = control.resume(model)
    if start:  # a restarted trial: the epoch of the checkpoint it continues from
        (Path(config["marker_dir"]) / f"{config['method']}-resumed-after").write_text(str(start))
    for epoch in range(start, control.epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if epoch == 3 and config["crash"] and not marker.exists():
            marker.write_text("1")
            os._exit(1)  # the worker dies mid-run, as a killed process would
        if "record" in config:  # the reference run, outside Tune: the LR this epoch trained with, its loss
            config["record"].append((opt.param_groups[0]["lr"], loss.item()))
        control.step({"accuracy": float(1 / (1 + loss.item())), "val_loss": loss.item()}, model=model)


def _lr_and_loss(result) -> dict[str, tuple[list[int], list[float], list[float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.tracking_uri)
    exp = client.get_experiment_by_name(result.experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'"):
        lr = sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
        loss = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
        out[run.data.params["method"]] = ([m.step for m in lr], [m.value for m in lr], [m.value for m in loss])
    return out


@pytest.mark.integration
def test_a_trial_killed_mid_run_restarts_from_the_users_checkpoint_with_the_lr_it_had(local_ray, tmp_path):
    """Cosine and step: the restarted trials log every epoch once, with the LRs and losses of the same loop run
    uninterrupted outside Tune (the LR and the weights both came back from the checkpoint ``LRControl.step``
    saved: with ``checkpoint_every=2``, the one of epoch 2, the trial having died in its fourth)."""
    common = dict(methods=["cosine", "step"], seeds=[0], epochs=6, metric="accuracy", mode="max",
                  loss_metric="val_loss", min_lr=1e-3, max_lr=0.5, schedules={"step": {"step_size": 2, "gamma": 0.5}},
                  checkpoint_every=2)
    crashed = compare(crashes_once_at_epoch_3, **common, name="crashed", output=tmp_path / "a", max_failures=1,
                      params={"marker_dir": str(tmp_path), "crash": True})
    assert (tmp_path / "cosine-crashed").exists() and (tmp_path / "step-crashed").exists()  # both did crash
    for method in ("cosine", "step"):
        assert (tmp_path / f"{method}-resumed-after").read_text() == "2"  # epoch 2's checkpoint, not epoch 3's
    assert not crashed.failed
    got = _lr_and_loss(crashed)
    spec = make_spec(crashes_once_at_epoch_3, **{**ARGS, **common, "params": None})
    for method in ("cosine", "step"):
        record: list[tuple[float, float]] = []
        crashes_once_at_epoch_3({"method": method, "seed": 0, "marker_dir": str(tmp_path), "crash": False,
                                 "lr_control": spec.control_config("", ""), "record": record})
        steps, lrs, losses = got[method]
        assert steps == [1, 2, 3, 4, 5, 6], f"{method} logged epochs {steps}"
        assert lrs == pytest.approx([lr for lr, _ in record], rel=1e-9) and len(set(lrs)) > 1
        assert losses == pytest.approx([loss for _, loss in record], rel=1e-6)


def imports_a_missing_module(config):
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    control = medtune.LRControl(opt, config)
    for _ in range(control.epochs):
        import medtune_no_such_module  # noqa: F401  (every trial fails here, at its first epoch)

        control.step({"accuracy": 0.5, "val_loss": 1.0})


@pytest.mark.integration
@pytest.mark.parametrize("trainable, error, kind, message", [
    (imports_a_missing_module, RunStoppedError, "ModuleNotFoundError",
     "trial fixed-seed0 raised ModuleNotFoundError: No module named 'medtune_no_such_module' (test_compare.py:"),
    (reports_loss_not_val_loss, InputError, "InputError",
     "trial fixed-seed0 failed: LRControl.step: the epoch's metrics lack 'val_loss' (loss_metric); "
     "they hold 'accuracy'"),
])
def test_an_error_every_trial_would_repeat_stops_the_run_at_the_first_trial_in_one_quiet_line(
        local_ray, tmp_path, capfd, trainable, error, kind, message):
    """4 trials of 50 epochs, one at a time: the first trial's error at its first epoch ends the run, the other
    three never start (without the stop, each would run and fail the same way), and what the caller sees is
    medtune's lines, the trial's error in one line, and none of Tune's own output."""
    with pytest.raises(error) as info:
        compare(trainable, ["fixed", "cosine"], [0, 1], 50, metric="accuracy", output=tmp_path, name="stopped",
                max_concurrent=1)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    session = next(tmp_path.glob("stopped-*"))
    errors = sorted(session.glob("*/error.txt"))
    epochs = [line for f in session.glob("*/result.json") for line in f.read_text().splitlines() if line.strip()]
    assert len(errors) == 1 and "method=fixed,seed=0" in errors[0].parent.name and epochs == []
    from mlflow.tracking import MlflowClient  # no trial run is left looking finished (measured)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stopped")
    statuses = [r.info.status for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("medtune.kind") == "trial"]
    assert statuses and "FINISHED" not in statuses and "FAILED" in statuses, statuses
    out, err = capfd.readouterr()
    assert "[medtune] stopped: 200 trial-epochs to run" in out
    assert f"[medtune] WARNING: stopped: trial fixed seed 0 failed: {kind}: " in err
    assert f"the full traceback is in {errors[0]}" in err
    assert f"[medtune] WARNING: stopping the run: trial fixed-seed0 raised {kind} at its first epoch" in err
    for noise in ("Trial status", "│", "╭", "TensorBoard", "tensorboard", "Traceback", "Unhandled error",
                  "Trials did not complete", "Failed to fetch metrics"):
        assert noise not in out + err, noise


def waits_for_the_other_then_fails(config):
    """``fixed`` trains (marking its first epoch in a file); ``cosine`` waits until it has, then fails at its first
    epoch with an error every trial would repeat: the run is stopped while ``fixed`` is mid-run."""
    import pathlib
    import time

    import torch

    marker = pathlib.Path(config["marker"])
    model = torch.nn.Linear(2, 1)
    control = medtune.LRControl(torch.optim.SGD(model.parameters(), lr=1e-3), config)
    if config["method"] == "cosine":
        deadline = time.monotonic() + 300
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        import a_module_that_is_not_there  # noqa: F401
    for epoch in range(1, 1001):
        control.step({"accuracy": epoch / 1000, "val_loss": 1.0})
        marker.touch()
        time.sleep(0.05)


def test_trials_a_stop_leaves_unfinished_are_killed_with_why_and_never_look_measured(local_ray, tmp_path):
    from mlflow.tracking import MlflowClient

    with pytest.raises(RunStoppedError):
        compare(waits_for_the_other_then_fails, ["fixed", "cosine"], [0], 1000, metric="accuracy", output=tmp_path,
                name="stopped-mid-run", max_concurrent=2, params={"marker": str(tmp_path / "fixed-trains")})
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stopped-mid-run")
    runs = {r.data.params["method"]: r for r in client.search_runs([experiment.experiment_id])
            if "method" in r.data.params}
    assert runs["cosine"].info.status == "FAILED"
    assert runs["fixed"].info.status == "KILLED"
    assert runs["fixed"].data.tags["medtune.error"].startswith(
        "stopped unfinished: trial cosine-seed0 raised ModuleNotFoundError")
