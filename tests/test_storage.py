"""The storage root of a session's state (``--storage`` / ``storage:``): its checks, the session layout under
it, and ``medtune resume`` finding a session from the storage alone.

No Ray and no MLflow here: the tracking checks are stubbed where a session folder is created, so each test is
about the storage logic alone (the integration test in tests/test_session_multinode.py runs it for real).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medtune.cluster.cli.main import main
from medtune.cluster.runs.storage import check_writable, find_session, resolve_storage, storage_path
from medtune.cluster.studies import registry as studies
from medtune.cluster.studies import session as session_mod
from medtune.cluster.studies.lr_study import MEMORY_FILE, LRStudySpec, lr_session_keys
from medtune.errors import InputError


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medtune: error: "), err
    return err[0]


# --- the URI / path checks -------------------------------------------------------------------------------


def test_plain_paths_and_file_uris_name_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_path("shared") == tmp_path / "shared"
    assert storage_path(f"file://{tmp_path}/x") == tmp_path / "x"
    assert storage_path(f"file://localhost{tmp_path}/y") == tmp_path / "y"


@pytest.mark.parametrize("value, needles", [
    ("s4://bucket/runs", ["'s4://bucket/runs'", "unknown scheme 's4'", "did you mean 's3'"]),
    ("ftp://host/runs", ["'ftp://host/runs'", "unknown scheme 'ftp'", "file:// URI"]),
    ("s3://bucket/runs", ["'s3://bucket/runs'", "mount it on every node", "/mnt/bucket/medtune"]),
    ("gs://b", ["'gs://b'", "give the mounted path"]),
    ("file://nas/runs", ["'file://nas/runs'", "host 'nas'", "must be local"]),
    ("", ["''", "is empty"]),
])
def test_bad_scheme_or_object_store_is_one_input_error_naming_the_value(value, needles):
    with pytest.raises(InputError) as err:
        storage_path(value)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_missing_parent_is_refused_and_nothing_is_created(tmp_path):
    value = str(tmp_path / "absent" / "runs")
    with pytest.raises(InputError, match="parent folder .* does not exist") as err:
        resolve_storage(value)
    assert value in str(err.value)
    assert not (tmp_path / "absent").exists()


def test_a_file_is_no_storage(tmp_path):
    target = tmp_path / "runs"
    target.write_text("")
    with pytest.raises(InputError, match="is a file"):
        check_writable(target, str(target))


def test_an_unwritable_place_is_refused(tmp_path):
    with pytest.raises(InputError, match="cannot be created") as err:  # /proc refuses even root
        resolve_storage("/proc/medtune-storage")
    assert "'/proc/medtune-storage'" in str(err.value)
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(InputError, match="cannot be written"):
            resolve_storage(str(ro))


def test_a_writable_storage_is_created_and_left_clean(tmp_path):
    root = resolve_storage(str(tmp_path / "runs"))
    assert root == tmp_path / "runs" and root.is_dir()
    assert list(root.iterdir()) == []  # the probe file is gone
    assert resolve_storage(None) is None


def test_cli_refuses_a_bad_storage_before_anything_starts(capsys, tmp_path):
    assert main(["run", "lr-schedulers", "--output", str(tmp_path / "out"), "--storage", "s3://bucket/x"]) == 2
    assert "'s3://bucket/x'" in one_line(capsys)
    assert main(["run", "lr-schedulers", "--output", str(tmp_path / "out"),
                 "--storage", str(tmp_path / "no" / "where")]) == 2
    assert "does not exist" in one_line(capsys)
    assert main(["run", "lr-schedulers", "--output", str(tmp_path / "out"), "--set", "storage=hdfs://nn/x"]) == 2
    assert "storage 'hdfs://nn/x'" in one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_submit_refuses_a_relative_storage_before_talking_to_any_cluster(capsys, tmp_path):
    assert main(["submit", "lr-schedulers", "--storage", "runs", "--state-dir", str(tmp_path)]) == 2
    assert "relative" in one_line(capsys)


# --- the session layout under a storage root --------------------------------------------------------------


@pytest.fixture
def no_tracking(monkeypatch):
    """create_session without an MLflow store: the storage logic is under test, not MLflow."""
    monkeypatch.setattr(session_mod, "prepare_tracking", lambda uri: None)
    monkeypatch.setattr(session_mod, "ensure_experiment", lambda uri, name, output: "7")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_a_session_lives_under_the_storage_root_and_the_default_store_under_output(tmp_path, no_tracking):
    spec = LRStudySpec(methods=("fixed",), seeds=(0,))
    out, shared = tmp_path / "driver", tmp_path / "shared"
    session_dir, info = session_mod.create_session(spec, out, None, {}, lambda d: lr_session_keys(spec, d),
                                                   storage=str(shared))
    assert session_dir.parent == shared
    assert json.loads((session_dir / "medtune.json").read_text())["storage"] == str(shared)
    assert info["memory_path"] == str(shared / MEMORY_FILE)  # the episodic memory beside the sessions
    assert info["tracking_uri"] == f"sqlite:///{out / 'mlflow.db'}"
    assert [p.name for p in out.iterdir()] == []  # nothing of the session on the driver's disk


def test_spec_storage_is_used_and_the_flag_overrides_it(tmp_path, no_tracking, monkeypatch):
    spec = studies.load_spec("lr-schedulers", overrides=[f"storage={tmp_path / 'from-spec'}"])
    assert spec.storage == str(tmp_path / "from-spec")
    session_dir, _ = session_mod.create_session(spec, tmp_path / "out", None, {})
    assert session_dir.parent == tmp_path / "from-spec"

    seen = {}
    fake = studies.Study("lr", LRStudySpec, lambda s, *a, **k: seen.setdefault("storage", s.storage) and 0,
                         None, None, None)
    monkeypatch.setitem(studies.STUDIES, "lr", fake)
    studies.run(spec, tmp_path / "out", storage=str(tmp_path / "from-flag"))
    assert seen["storage"] == str(tmp_path / "from-flag")


def test_without_storage_sessions_stay_under_output(tmp_path, no_tracking):
    session_dir, info = session_mod.create_session(LRStudySpec(methods=("fixed",)), tmp_path / "out", None, {})
    assert session_dir.parent == tmp_path / "out" and info["storage"] == str(tmp_path / "out")


# --- resume from the storage alone ------------------------------------------------------------------------


def _session(root: Path, name: str, mtime: float, study: str = "lr") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    info = {"session": name, "spec": {"name": name.rsplit("-", 2)[0], "study": study}, "tracking_uri": "sqlite:///x",
            "experiment_id": "1", "memory_path": f"/elsewhere/{MEMORY_FILE}"}
    (folder / "medtune.json").write_text(json.dumps(info))
    os.utime(folder / "medtune.json", (mtime, mtime))
    return folder


def test_find_session_takes_the_named_or_the_latest_one(tmp_path):
    old = _session(tmp_path, "lr-schedulers-20260101-120000", 1000)
    new = _session(tmp_path, "apga-20260102-120000", 2000)
    (tmp_path / "episodic-memory.jsonl").write_text("")
    (tmp_path / "stray").mkdir()
    assert find_session(tmp_path) == new
    assert find_session(tmp_path, old.name) == old
    with pytest.raises(InputError, match="did you mean 'apga-20260102-120000'"):
        find_session(tmp_path, "apga-20260102-12000")
    with pytest.raises(InputError, match="holds no medtune session"):
        find_session(tmp_path / "stray")


def test_resume_locates_the_session_from_the_storage_alone(tmp_path, monkeypatch):
    folder = _session(tmp_path / "shared", "lr-schedulers-20260101-120000", 1000)
    calls = []
    fake = studies.Study("lr", LRStudySpec, None, lambda d, address=None: calls.append((Path(d), address)) or 0,
                         None, None)
    monkeypatch.setitem(studies.STUDIES, "lr", fake)
    monkeypatch.chdir(tmp_path)
    assert studies.resume(storage=str(tmp_path / "shared"), address="h:1") == 0
    assert studies.resume(folder.name, storage="shared") == 0
    assert calls == [(folder, "h:1"), (folder, None)]
    # the session's paths follow the folder it is read from, not where it was written
    info = session_mod.read_session(folder)
    assert info["memory_path"] == str(tmp_path / "shared" / MEMORY_FILE)


def test_resume_without_a_session_or_from_an_empty_storage_is_one_line(capsys, tmp_path):
    assert main(["resume"]) == 2
    assert "--storage ROOT" in one_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["resume", "--storage", str(tmp_path / "empty")]) == 2
    assert "holds no medtune session" in one_line(capsys)
    other = _session(tmp_path / "other", "lr-schedulers-20260101-120000", 1000)
    assert main(["resume", str(other), "--storage", str(tmp_path / "empty")]) == 2
    assert "is not under --storage" in one_line(capsys)
    assert main(["resume", "--storage", str(tmp_path / "unmounted")]) == 2
    assert "is not a folder here" in one_line(capsys)
    assert not (tmp_path / "unmounted").exists()  # resume creates nothing
    assert main(["resume", "--storage", "s3://bucket/runs"]) == 2
    assert "'s3://bucket/runs'" in one_line(capsys)
