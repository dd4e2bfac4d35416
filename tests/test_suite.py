"""Suite specs: loaded, merged into each task's study spec and checked before anything runs (no Ray here)."""

from __future__ import annotations

import pytest

from medtune.cluster.studies.spec import SpecError
from medtune.cluster.studies.suite import load_suite


def test_the_built_in_suite_builds_every_task_with_the_suites_methods_seeds_and_budget():
    suite, specs = load_suite("lr-suite")
    assert list(specs) == list(suite.tasks) and len(specs) >= 2
    for task, spec in specs.items():
        assert spec.name == f"lr-suite-{task}"
        assert spec.methods == suite.methods and spec.seeds == suite.seeds and spec.train.epochs == suite.epochs
    assert {s.data.spatial_size for s in specs.values()} == {(24, 24, 24), (32, 32, 32)}  # two sizes
    small, smoke = load_suite("lr-suite", smoke=True, overrides=["epochs=2"])
    assert small.seeds == (0,) and all(s.train.epochs == 2 and s.seeds == (0,) for s in smoke.values())


@pytest.mark.parametrize("overrides, needle", [
    (["tasks.phantom-24.set.methods=[fixed]"], "tasks.phantom-24.set.methods: the suite sets methods"),
    (["tasks.phantom-24.set.data.num_volumes=2"], "tasks.phantom-24: data.num_volumes=2"),
    (["tasks.extra.spec=paser"], "tasks.extra: study='paser' is not an LR comparison"),
    (["tasks.extra.spec=lr-suite"], "tasks.extra.spec='lr-suite' is a suite"),
    (["methods=[fixed,qlearnin]"], "did you mean 'qlearning'"),
    (["epochs=0"], "epochs=0 must be >= 1"),
])
def test_bad_suite_input_is_one_line_naming_the_field(overrides, needle):
    with pytest.raises(SpecError) as err:
        load_suite("lr-suite", overrides=overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_study_spec_is_no_suite_and_a_suite_is_no_study_spec():
    from medtune.cluster.studies.registry import load_spec

    with pytest.raises(SpecError, match="medtune run lr-schedulers"):
        load_suite("lr-schedulers")
    with pytest.raises(SpecError, match="medtune suite lr-suite"):
        load_spec("lr-suite")


def test_a_recorded_task_spec_holds_unless_a_setting_it_recorded_changed():
    from medtune.cluster.studies.suite import same_spec

    old = {"train": {"epochs": 2, "base_lr": 1e-3}, "seeds": [0]}
    assert same_spec(old, {"train": {"epochs": 2, "base_lr": 1e-3, "new_field": 1}, "seeds": [0]})
    assert not same_spec(old, {"train": {"epochs": 3, "base_lr": 1e-3}, "seeds": [0]})
    assert not same_spec(old, {"train": {"epochs": 2, "base_lr": 1e-3}, "seeds": [0, 1]})
