"""A spec that starts from another (``base:``): a user's own variant of a built-in spec; the StudySpec base every
study's spec opens with."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from medtune.cluster.studies.registry import load_spec
from medtune.cluster.studies.spec import SpecError, StudySpec, read_spec_file
from medtune.config import from_dict
from medtune.errors import InputError


def test_a_variant_overrides_section_by_section_and_resolves_its_base_beside_itself(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: lr-schedulers\nname: mine\ntrain: {epochs: 7}\n")
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nname: child\nsmoke: {train.epochs: 2}\n")
    data, _ = read_spec_file(str(tmp_path / "child.yaml"))
    assert data["name"] == "child" and "base" not in data
    assert data["train"]["epochs"] == 7 and data["train"]["loss"] == "dice_ce"   # merged, not replaced
    assert data["smoke"]["train.epochs"] == 2 and data["smoke"]["seeds"] == [0]
    assert load_spec(str(tmp_path / "child.yaml"), smoke=True).train.epochs == 2


def test_a_base_chain_that_loops_or_names_nothing_is_one_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(SpecError, match="comes back to itself"):
        read_spec_file(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: lr-schedulerz\n")
    with pytest.raises(SpecError, match="did you mean 'lr-schedulers'"):
        read_spec_file(str(tmp_path / "c.yaml"))


def test_a_loop_through_a_relative_path_is_caught_not_a_traceback(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.yaml").write_text("base: ../d/a.yaml\n")
    with pytest.raises(SpecError, match="comes back to itself"):
        read_spec_file(str(tmp_path / "d" / "a.yaml"))


@dataclass(frozen=True)
class ToySpec(StudySpec):
    """A study of its own: the base's opening and checks come with the subclassing alone."""

    KNOWN_METHODS: ClassVar[tuple[str, ...]] = ("a", "b")
    METHOD_KIND: ClassVar[str] = "a toy method"
    TITLE: ClassVar[str] = "the toy study's spec"

    name: str = "toy"
    study: str = "toy"
    methods: tuple[str, ...] = ("a",)


def test_a_study_spec_gets_the_bases_opening_and_checks_by_subclassing():
    spec = from_dict(ToySpec, {"seeds": [3], "resources": {"cpus_per_trial": 2}, "smoke": {"seeds": [0]}})
    assert (spec.name, spec.study, spec.seeds, spec.resources.cpus_per_trial, spec.max_failures) == ("toy", "toy", (3,),
                                                                                                      2.0, 2)
    for bad, line in [({"methods": ["c"]}, "methods: 'c' is not a toy method; use any of a, b"),
                      ({"methods": ["A"]}, "(did you mean 'a'?)"),
                      ({"study": "lr"}, "study='lr': this is the toy study's spec; set study: toy"),
                      ({"name": ""}, "name='' must be a non-empty word"),
                      ({"max_failures": -2}, "max_failures=-2 must be >= 0"),
                      ({"methods": ["a", "a"]}, "methods=['a', 'a'] has duplicates")]:
        with pytest.raises(InputError) as info:
            from_dict(ToySpec, bad)
        assert line in str(info.value), bad
