"""A result that cannot mislead: a failed method is marked failed (never a row of zeros), a learned method that
never acted is marked inactive with a ``Warning:`` line and no verdict, and a run whose every trial failed ends
with one line, no table. Unit tests on hand-made frames, then three short real runs (local Ray, MLflow SQLite).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

import medtune
from medtune.cluster.runs.progress import ProgressLog
from medtune.cluster.runs.tracking import trial_error, trial_params
from medtune.cluster.studies.compare import adapted_note, compare, make_spec
from medtune.cluster.studies.registry import load_spec
from medtune.cluster.studies.spec import SpecError
from medtune.dashboards.comparison import activity_warnings, format_table, lr_changes, skipped_lines
from medtune.dashboards.comparison import compare_runs as table_of
from medtune.dashboards.metric_report import MetricReport, verdicts_of
from medtune.dashboards.views import cell
from medtune.errors import TrialsFailedError


def curves_frame() -> pd.DataFrame:
    """fixed and cosine measured, qlearning acted in one seed, greedy never changed the LR, pbt never exploited."""
    rows = []
    lrs = {"fixed": [0.1, 0.1, 0.1], "cosine": [0.1, 0.05, 0.01], "qlearning": None, "greedy": [0.1, 0.1, 0.1],
           "pbt": [0.1, 0.1, 0.1]}
    for method, lr in lrs.items():
        for seed in (0, 1):
            trace = lr or ([0.1, 0.1, 0.1] if seed == 0 else [0.1, 0.05, 0.05])  # qlearning: seed 1 acted
            for epoch, value in enumerate(trace, start=1):
                rows.append({"run_id": f"{method}{seed}", "method": method, "seed": seed, "epoch": epoch,
                             "acc": 0.5 + 0.1 * epoch + 0.01 * seed, "lr": value, "diverged": 0})
    return pd.DataFrame(rows)


FAILURES = pd.DataFrame([{"run_id": "step0", "method": "step", "seed": 0, "error": "RuntimeError: boom (t.py:3 in f)"},
                         {"run_id": "step1", "method": "step", "seed": 1, "error": "RuntimeError: boom (t.py:3 in f)"}])


def test_lr_changes_count_epochs_whose_lr_differs_beyond_a_relative_tolerance():
    assert lr_changes([0.1, 0.1, 0.1 * (1 + 1e-12), 0.05, 0.05, 0.01]) == 2
    assert math.isnan(lr_changes([math.nan, math.nan]))


def test_a_failed_method_is_marked_not_zero_and_an_inactive_learned_one_is_warned_and_not_judged():
    table = table_of(curves_frame(), 0.7, "acc", "max", FAILURES)
    assert table.loc["step", "status"] == "failed" and table.loc["step", "seeds"] == 0
    assert table.loc["step", "failed"] == 2 and math.isnan(table.loc["step", "final_acc_mean"])  # no zeros
    assert table.loc["greedy", "status"] == "inactive" and table.loc["pbt", "status"] == "inactive"
    assert table.loc["qlearning", "status"] == "" and table.loc["qlearning", "lr_changes_mean"] == 0.5
    assert table.loc["cosine", "lr_changes_mean"] == 2 and table.loc["fixed", "status"] == ""  # classic: never
    assert table.loc["pbt", "exploits_mean"] == 0 and math.isnan(table.loc["cosine", "exploits_mean"])
    text = format_table(table, 0.7, "acc")
    step_line = next(line for line in text.splitlines() if line.startswith("step"))
    assert "failed (2/2)" in step_line and "0.0" not in step_line
    assert "(0 exploits)" in next(line for line in text.splitlines() if line.startswith("pbt"))

    warnings = activity_warnings(table, epochs=3, intervals={"pbt": 10})
    assert [w.split()[1] for w in warnings] == ["greedy", "pbt"] and all(w.startswith("Warning: ") for w in warnings)
    pbt = warnings[1]
    assert "never exploited" in pbt and "due after 10 epochs, and the trials ran 3" in pbt
    assert "set pbt.perturbation_interval" in pbt
    assert "never changed the LR" in warnings[0] and "schedules.greedy.patience" in warnings[0]

    verdicts = verdicts_of(table, "acc", "max", None)
    assert list(verdicts) == ["qlearning"]  # greedy and pbt inactive, step failed: no verdict as if measured
    assert not any(m in line for line in verdicts["qlearning"] for m in ("greedy", "pbt", "step"))
    skipped = skipped_lines(table, FAILURES)
    assert "No verdict for step: every trial failed: RuntimeError: boom (t.py:3 in f)." in skipped

    report = MetricReport("e", "1", "s", "acc", "max", 0.7, "", curves_frame(), table, verdicts, failures=FAILURES,
                          epochs=3, intervals={"pbt": 10})
    text = report.text()
    assert "step: 2 of 2 trials failed; first error (seed 0): RuntimeError: boom" in text
    assert "Warning: pbt never exploited" in text and "Warning: greedy never changed the LR" in text


def test_one_seed_shows_the_value_alone():
    frame = curves_frame()
    table = table_of(frame[frame["seed"] == 0], 0.7, "acc")
    line = next(line for line in format_table(table, 0.7, "acc").splitlines() if line.startswith("fixed"))
    assert "±" not in line and "0.800" in line
    assert cell(0.8, 0.0, n=1) == "0.800" and cell(0.8, 0.1, n=2) == "0.800 ± 0.100" and cell(0.8, math.nan) == "0.800"


def test_the_estimate_says_estimating_until_a_few_epochs_are_measured():
    log = ProgressLog("study", trial_epochs=100, metric="dice")
    log.setup()
    trial = SimpleNamespace(trial_id="a", status="RUNNING", config={"method": "fixed", "seed": 0})
    log.on_trial_result(0, [trial], trial, {"epoch": 1, "dice": 0.1})  # 50 s of start-up would say "51 min"
    assert "estimating the time left" in log.line([trial], log.started + 50)
    for epoch in (2, 3, 4):
        log.on_trial_result(0, [trial], trial, {"epoch": epoch, "dice": 0.1})
    assert "left" in log.line([trial], log.first_result_at + 6) and "about 3 min left" in \
        log.line([trial], log.first_result_at + 6)  # 2 s an epoch, 96 left


def test_a_spec_with_trainable_and_another_study_is_told_what_trainable_needs(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nstudy: lr\ntrainable: mymod:train\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert "a spec with trainable: needs no study:" in str(info.value) and "remove study: 'lr'" in str(info.value)
    assert "not a known setting" not in str(info.value)


def test_a_trial_logs_only_its_own_methods_tuned_params_and_its_error_line(tmp_path):
    config = {"method": "cosine", "seed": 0, "tuned": {"cosine": {"lr": 0.1}, "step": {"lr": 0.2}},
              "pbt_exploits": 2}
    params = trial_params(config)
    assert params["tuned.cosine.lr"] == "0.1" and not any(k.startswith("tuned.step") for k in params)
    assert "pbt_exploits" not in params  # a metric, not a param
    (tmp_path / "error.txt").write_text("Failure # 1 (occurred at now)\nTraceback (most recent call last):\n"
                                        '  File "t.py", line 3, in f\nRuntimeError: boom\n')
    assert trial_error(SimpleNamespace(error_file=str(tmp_path / "error.txt"))) == "RuntimeError: boom"


def ok(config):
    raise AssertionError("never run")


def test_unset_intervals_adapt_to_the_budget_and_explicit_ones_win():
    common = dict(seeds=[0], metric="acc", mode="max", loss_metric="val_loss", min_lr=1e-4, max_lr=0.5, lr=None,
                  name="t", target=None, params=None, schedules=None, warm_start=None, cpus_per_trial=1.0,
                  gpus_per_trial=0.0, max_concurrent=0, max_failures=0)
    short = make_spec(ok, ["pbt", "qlearning"], epochs=4, qlearning=None, pbt=None, **common)
    assert short.pbt.perturbation_interval == 1 and short.agent_config().patience == 1
    assert short.agent_config().cooldown == 1
    assert "pbt.perturbation_interval 1" in adapted_note(short)[0] and "qlearning.patience 1" in adapted_note(short)[0]
    mine = make_spec(ok, ["pbt", "qlearning"], epochs=4, qlearning={"patience": 2}, pbt={"perturbation_interval": 3},
                     **common)
    assert mine.pbt.perturbation_interval == 3 and mine.agent_config().patience == 2 and "pbt" not in str(mine.adapted)
    long = make_spec(ok, ["fixed", "qlearning"], epochs=30, qlearning=None, pbt=None, **common)
    assert long.agent_config().patience == 3 and long.agent_config().cooldown == 5 and long.adapted == {}


# -- real runs ----------------------------------------------------------------------------------------------------

def raises_at_once(config):
    raise RuntimeError("boom in the user's code")


def regression(config):
    """A tiny regression trained by SGD through LRControl (with a checkpoint, so PBT can clone it)."""
    import torch

    torch.manual_seed(config["seed"])
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    y = 3 * x + 0.5
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05 + 0.05 * config["seed"])
    control = medtune.LRControl(opt, config)
    for _ in range(control.resume(model), control.epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        control.step({"acc": float(1 / (1 + loss.item())), "val_loss": loss.item()}, model=model)


@pytest.mark.integration
def test_every_trial_failing_raises_one_error_and_the_report_says_why(local_ray, tmp_path):
    from medtune.dashboards.metric_report import build_metric_report

    with pytest.raises(TrialsFailedError) as info:
        compare(raises_at_once, ["fixed"], [0], 1, metric="acc", output=tmp_path, name="fails")
    message = str(info.value)
    assert "trial fixed-seed0" in message and "RuntimeError" in message and "boom in the user's code" in message
    assert "\n" not in message
    report = build_metric_report(f"sqlite:///{tmp_path / 'mlflow.db'}", "fails", None, "acc")  # MLflow alone
    assert report.table.loc["fixed", "status"] == "failed"
    assert "fixed: 1 of 1 trials failed; first error (seed 0): RuntimeError: boom in the user's code" in report.text()


@pytest.mark.integration
def test_the_cli_run_of_a_failing_trainable_exits_1_with_the_line_and_no_table(local_ray, tmp_path, monkeypatch,
                                                                               capsys):
    import importlib

    import ray.cloudpickle

    from medtune.cluster.cli.main import main

    (tmp_path / "failing_train.py").write_text("def train(config):\n    raise RuntimeError('no data here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ray.cloudpickle.register_pickle_by_value(importlib.import_module("failing_train"))
    (tmp_path / "spec.yaml").write_text("name: failing\ntrainable: failing_train:train\nmetric: acc\n"
                                        "methods: [fixed]\nseeds: [0]\nepochs: 1\n")
    assert main(["run", str(tmp_path / "spec.yaml"), "--output", str(tmp_path / "out")]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "every trial failed; the first, trial fixed-seed0, raised RuntimeError: no data here" in text
    assert "Comparison of experiment" not in text and "final acc" not in text  # no table


@pytest.mark.integration
def test_a_short_compare_counts_what_pbt_and_qlearning_did_and_warns_of_the_one_that_never_acted(local_ray, tmp_path):
    result = compare(regression, ["pbt", "qlearning"], [0, 1], 4, metric="acc", min_lr=1e-3, max_lr=0.5,
                     output=tmp_path, name="short", qlearning={"patience": 10})  # explicit: it wins, and never acts
    table = result.table
    assert table.loc["pbt", "exploits_mean"] > 0 and table.loc["pbt", "status"] == ""  # interval 1: it exploited
    assert table.loc["qlearning", "lr_changes_mean"] == 0 and table.loc["qlearning", "status"] == "inactive"
    assert ("Warning: qlearning never changed the LR in any trial; its first decision is due after 10 epochs, "
            "and the trials ran 4") in result.text
    assert "Adapted to the 4-epoch budget" in result.text and "pbt.perturbation_interval 1" in result.text
    assert "qlearning" not in result.verdicts and "pbt" in result.verdicts
    assert "exploits)" in result.text
    csv = pd.read_csv(result.session_dir / "report" / "comparison.csv", index_col=0)
    assert {"lr_changes_mean", "exploits_mean", "failed", "status"} <= set(csv.columns)
