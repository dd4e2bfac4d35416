"""Tests for medtune.cluster.studies.lr_experiment, the one LR-experiment assembly: `medtune run` of the LR study and
`medtune.compare` build their Tuner through it (built here for real, never fitted: no Ray is started), and the
specs around it: compare's keyword arguments are CompareSpec's fields (an unknown one is the one line an unknown
spec key is), and every study's spec opens with the checks of the one StudySpec base."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import pydoc
import sys
from pathlib import Path

import pytest

import medtune
from medtune.cluster.studies import compare as compare_mod
from medtune.cluster.studies import lr_experiment, lr_study
from medtune.cluster.studies.compare import COMPARE_SIGNATURE, CompareSpec, compare, make_spec
from medtune.cluster.studies.own_study import OwnTrainingSpec
from medtune.cluster.studies.registry import STUDIES
from medtune.cluster.studies.spec import StudySpec
from medtune.config import from_dict, to_dict
from medtune.errors import InputError


def user_trainable(config):  # never run: no Tuner here is fitted
    raise AssertionError("no trial may start")


@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "runs" / "exp-20260101-000000"
    folder.mkdir(parents=True)
    info = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment_id": "1", "session": folder.name,
            "mailbox": f"medtune-x-{folder.name}", "memory_path": str(folder.parent / lr_experiment.MEMORY_FILE),
            "task": "0123456789ab"}
    return folder, info


@pytest.fixture
def assembled(monkeypatch):
    """Every LRExperiment the assembly's run_config and qlearning_scheduler are called with."""
    seen: dict[str, list] = {"run_config": [], "qlearning_scheduler": []}
    for name in seen:
        real = getattr(lr_experiment, name)

        def spy(exp, *args, _real=real, _name=name, **kwargs):
            seen[_name].append(exp)
            return _real(exp, *args, **kwargs)

        monkeypatch.setattr(lr_experiment, name, spy)
    return seen


def parts(tuner):
    """What a Tuner was assembled from: callbacks, checkpoints kept, retries, scheduler, the grid's keys."""
    internal = tuner._local_tuner
    run, tune_config = internal.get_run_config(), internal._tune_config
    return {"callbacks": [type(c).__name__ for c in run.callbacks], "keep": run.checkpoint_config.num_to_keep,
            "retries": run.failure_config.max_failures, "scheduler": type(tune_config.scheduler).__name__,
            "reuse": tune_config.reuse_actors, "limit": tune_config.max_concurrent_trials,
            "storage": Path(run.storage_path) / run.name, "space": internal._param_space}


def test_both_callers_build_their_tuner_through_the_one_assembly_and_differ_only_in_trainable_and_config(
        session, assembled):
    folder, info = session
    lr_spec = lr_study.LRStudySpec(methods=("fixed", "qlearning", "pbt"), seeds=(0, 1), max_failures=1)
    own = make_spec(user_trainable, ["fixed", "qlearning", "pbt"], [0, 1], epochs=4, metric="accuracy",
                    max_failures=1, max_concurrent=2)
    lr_parts = parts(lr_study.build_tuner("study", lr_spec, folder, info, data=None))
    own_parts = parts(compare_mod.build_tuner(own, user_trainable, folder, info))

    assert [e.name for e in assembled["run_config"]] == ["lr-schedulers", "compare"]
    assert [e.own_training for e in assembled["qlearning_scheduler"]] == [False, True]
    for p in (lr_parts, own_parts):
        assert p["callbacks"][:4] == ["MLflowTracker", "EpisodeRecorder", "ProgressLog", "FailFast"]
        assert p["keep"] == lr_experiment.KEEP_CHECKPOINTS and p["retries"] == 1
        assert p["scheduler"] == "StudyScheduler" and p["reuse"] is True  # PBT beside the Q-learning scheduler
        assert p["storage"] == folder  # Tune's state is the session folder itself
        assert p["space"]["method"] == {"grid_search": ["pbt", "fixed", "qlearning"]}  # PBT's members first
        assert p["space"]["seed"] == {"grid_search": [0, 1]}
    assert lr_parts["callbacks"] == own_parts["callbacks"]
    assert lr_parts["limit"] is None and own_parts["limit"] == 2
    # the trainable's config: the study's sections, or the user's params and the LRControl section
    assert {"data", "model", "train", "threads"} <= set(lr_parts["space"]) and "lr_control" not in lr_parts["space"]
    assert own_parts["space"]["study"] == "own" and own_parts["space"]["lr_control"]["metric"] == "accuracy"


def test_the_own_training_marks_what_only_a_users_trainable_needs(session):
    folder, info = session
    own = make_spec(user_trainable, ["qlearning"], [0], epochs=4, metric="accuracy", mode="min")
    exp = compare_mod.experiment(own)
    scheduler = lr_experiment.qlearning_scheduler(exp, folder, info["mailbox"])
    assert scheduler.require_control and scheduler.dice_metric == "accuracy" and scheduler.mode == "min"
    lr_spec = lr_study.LRStudySpec(methods=("fixed", "qlearning"))
    study = lr_experiment.qlearning_scheduler(lr_study.experiment(lr_spec), folder, "")
    assert not study.require_control and study.dice_metric == "dice" and study.mode == "max"
    tracker = lr_experiment.run_config(exp, folder.name, folder.parent, info).callbacks[0]
    assert tracker.metrics is None  # a user's trainable: every number it reports is logged
    with pytest.raises(ValueError, match="kind='other' must be one of study, main, pbt"):
        lr_experiment.build_tuner(exp, user_trainable, {}, folder, info, kind="other")


def test_a_legacy_lr_sessions_pbt_tuner_keeps_its_folder_and_one_interval_more(session):
    folder, info = session
    spec = lr_study.LRStudySpec(methods=("fixed", "pbt"), seeds=(0,))
    main, pbt = (parts(lr_study.build_tuner(kind, spec, folder, info, data=None)) for kind in ("main", "pbt"))
    assert main["scheduler"] == "QLearningLRScheduler" and main["space"]["method"] == {"grid_search": ["fixed"]}
    assert pbt["storage"] == folder / lr_experiment.PBT_DIR and pbt["reuse"] is False
    assert pbt["keep"] == 2 * spec.pbt.perturbation_interval + lr_experiment.KEEP_CHECKPOINTS


def test_session_keys_and_task_keys_are_what_sessions_were_written_with(tmp_path):
    folder = tmp_path / "digits-20260101-000000"
    spec = lr_study.LRStudySpec(methods=("fixed", "qlearning"))
    keys = lr_study.lr_session_keys(spec, folder)
    assert keys["mailbox"] == f"medtune-lr-{folder.name}" and keys["tuners"] == ["study"]
    assert keys["memory_path"] == str(tmp_path / "episodic-memory.jsonl")
    data = {k: v for k, v in to_dict(spec.data).items() if k not in ("cache_rate", "cache")}
    before = json.dumps([data, to_dict(spec.model), spec.train.batch_size], sort_keys=True)  # the earlier formula
    assert keys["task"] == hashlib.sha1(before.encode()).hexdigest()[:12]
    assert lr_experiment.session_keys("compare", folder, "t")["mailbox"] == f"medtune-compare-{folder.name}"
    assert (lr_experiment.JOURNAL_FILE, lr_experiment.MEMORY_FILE, lr_experiment.QTABLE_FILE) == (
        "qlearning-journal.jsonl", "episodic-memory.jsonl", "qtable.json")


def test_an_unknown_compare_keyword_is_the_one_line_of_an_unknown_spec_key(tmp_path):
    with pytest.raises(InputError) as call:
        compare(user_trainable, ["fixed"], [0], epochz=3, output=tmp_path / "out")
    line = str(call.value)
    assert line.startswith("epochz is not a known setting (did you mean 'epochs'?); valid keys here: ")
    assert "\n" not in line and "checkpoint_every" in line and "cpus_per_trial" in line
    with pytest.raises(InputError) as spec_key:
        from_dict(OwnTrainingSpec, {"trainable": "tests.test_lr_experiment:user_trainable", "epochz": 3})
    assert str(spec_key.value).split("; valid keys here")[0] == line.split("; valid keys here")[0]
    with pytest.raises(InputError, match="takes .*positional|too many positional"):
        compare(user_trainable, ["fixed"], [0], 2, "acc", "max", "val_loss", 1e-4, 0.5, None, "extra")
    assert not (tmp_path / "out").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_compares_arguments_are_compare_specs_fields_and_help_shows_them():
    params = inspect.signature(medtune.compare).parameters
    assert inspect.signature(medtune.compare) == COMPARE_SIGNATURE
    run_only = {"output", "tracking_uri", "address", "tune", "verbose"}
    resources = {"cpus_per_trial", "gpus_per_trial", "max_concurrent"}
    fields = {f.name for f in dataclasses.fields(CompareSpec)}
    assert set(params) - run_only - resources - {"trainable"} == fields - set(compare_mod.NOT_ARGUMENTS)
    assert list(params)[:4] == ["trainable", "methods", "seeds", "epochs"]  # positional as before
    assert params["epochs"].default == 30 and params["pbt"].default is None
    assert params["name"].kind is inspect.Parameter.KEYWORD_ONLY
    text = pydoc.render_doc(medtune.compare)
    assert "epochs: int = 30" in text and "max_concurrent: int = 0" in text and "Compare LR methods" in text


def test_the_own_training_spec_reuses_compares_fields_rather_than_repeating_them():
    own = {f.name for f in dataclasses.fields(OwnTrainingSpec)}
    assert issubclass(OwnTrainingSpec, CompareSpec)
    assert own - {f.name for f in dataclasses.fields(CompareSpec)} == {"tuning"}
    spec = OwnTrainingSpec(trainable="tests.test_lr_experiment:user_trainable", metric="accuracy", seeds=(0,))
    kwargs = spec.compare_kwargs()
    assert set(kwargs) == set(COMPARE_SIGNATURE.parameters) - {"trainable", "output", "tracking_uri", "address",
                                                                   "tune", "verbose"}
    assert make_spec(user_trainable, **kwargs).metric == "accuracy"
    with pytest.raises(InputError, match="adapted=.* is set by medtune itself"):
        OwnTrainingSpec(trainable="tests.test_lr_experiment:user_trainable", adapted={"x": 1})


def _valid(study: str) -> dict:
    return {"trainable": "tests.test_lr_experiment:user_trainable"} if study == "own" else {}


@pytest.mark.parametrize("study", sorted(STUDIES))
@pytest.mark.parametrize("bad, message", [
    ({"name": "two words"}, "name='two words' must be a non-empty word"),
    ({"max_failures": -1}, "max_failures=-1 must be >= 0"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, 0]}, "seeds=[0, 0] has duplicates"),
    ({"storage": "s3://bucket/x"}, "storage"),
    ({"study": "nope"}, "study='nope': this is the"),
    ({"resources": {"cpus_per_trial": 0}}, "resources.cpus_per_trial=0.0 must be > 0"),
])
def test_the_base_checks_apply_to_every_study_spec(study, bad, message):
    cls = STUDIES[study].spec
    assert issubclass(cls, StudySpec)
    with pytest.raises(InputError) as info:
        from_dict(cls, {**_valid(study), **bad})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_study_spec_declares_the_opening_once():
    opening = [f.name for f in dataclasses.fields(StudySpec)]
    for study in STUDIES.values():
        names = [f.name for f in dataclasses.fields(study.spec)]
        assert names[: len(opening)] == opening, study.name  # the base's fields, in the base's order
        assert study.spec.__dataclass_fields__["study"].default == study.name
