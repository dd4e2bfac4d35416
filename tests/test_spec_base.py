"""A spec that starts from another (``base:``): a user's own variant of a built-in spec."""

import pytest

from medtune.cluster.studies.spec import SpecError, read_spec_file
from medtune.cluster.studies.registry import load_spec


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
