"""Tests for medtune.cluster.runs.fail_fast (a trial's error in one line; a run stopped at an error every trial
repeats) and for the Python API's console (medtune.cluster.runs.console.python_api). Fake trials, no Ray cluster;
the real runs are in tests/test_compare.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from medtune.cluster.runs.fail_fast import FailFast, RunStoppedError, one_line, repeats, summary
from medtune.cluster.runs.progress import ProgressLog
from medtune.errors import InputError, TrialsFailedError

RAY = "/venv/lib/python3.11/site-packages/ray/tune/trainable/function_trainable.py"


def traceback(*frames: tuple[str, int, str], last: str) -> str:
    """The text Tune writes to a trial's error.txt: Ray's header, the frames, the exception's line."""
    lines = ["Failure # 1 (occurred at 2026-01-01_00-00-00)",
             "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=10.0.0.1, actor_id=ab, repr=train)"]
    for file, line, func in frames:
        lines += [f'  File "{file}", line {line}, in {func}', "    code()", "    ^^^^^^"]
    return "\n".join([*lines, last, ""])


IMPORT = traceback((RAY, 249, "_trainable_func"), ("/home/me/train.py", 12, "train"),
                   last="ModuleNotFoundError: No module named 'monai_extra'")
SHAPE = traceback(("/home/me/train.py", 30, "train"), ("/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py",
                                                       125, "forward"),
                  last="RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x10 and 12x2)")
KEY = traceback(("/home/me/train.py", 40, "train"), ("/work/medtune/trainables/lr_control.py", 479, "step"),
                last="medtune.errors.InputError: LRControl.step: the epoch's metrics lack 'val_loss' (loss_metric); "
                     "they hold 'accuracy'")
CRASH = traceback(("/home/me/train.py", 50, "train"), last="RuntimeError: CUDA error: an illegal memory access")


def test_a_traceback_is_said_as_its_type_message_and_the_users_frame_that_raised_it():
    assert summary(IMPORT) == ("ModuleNotFoundError", "No module named 'monai_extra'", "train.py:12 in train")
    # PyTorch raised it, from the user's line: the user's frame is the one named
    assert one_line(SHAPE) == ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x10 and 12x2) "
                               "(train.py:30 in train)")
    assert summary(KEY)[0] == "InputError" and summary(KEY)[2] == "lr_control.py:479 in step"
    assert summary("no traceback here") == ("", "no traceback here", "")
    assert one_line("") == "an error without a message"


@pytest.mark.parametrize("text, repeated", [
    (IMPORT, True), (SHAPE, True), (KEY, True), (CRASH, False),
    ("Traceback\n  File \"/a/t.py\", line 1, in f\n    x\nAttributeError: 'Net' object has no attribute 'fc'", True),
    ("ValueError: Expected input batch_size (8) to match target batch_size (4).", True),
    ("ValueError: the loss is nan", False),
    ("ray.exceptions.RayActorError: The actor died unexpectedly before finishing this task.", False),
    ("OSError: [Errno 28] No space left on device", False),
])
def test_only_errors_every_trial_would_repeat_stop_the_run(text, repeated):
    assert repeats(text) is repeated


class Trial:
    def __init__(self, tmp_path, name: str, text: str | None, reported: int = 0):
        self.trial_id, self.status, self.config = name, "ERROR", {"method": name, "seed": 0}
        self.path = str(tmp_path / name)  # the session's copy; error_file is the driver's
        self.error_file = None
        if text is not None:
            (tmp_path / f"{name}.txt").write_text(text)
            self.error_file = str(tmp_path / f"{name}.txt")
        self.reported = reported  # results this trial reported to the run before it failed


def failed(ff: FailFast, trial: Trial, recover: bool = False) -> None:
    """The callback sees ``trial``'s results, then its error (or its retry)."""
    for _ in range(trial.reported):
        ff.on_trial_result(0, [], trial, {})
    (ff.on_trial_recover if recover else ff.on_trial_error)(0, [], trial)


def test_fail_fast_stops_everything_at_a_repeating_error_of_a_first_epoch_only(tmp_path):
    ff = FailFast()
    stop = ff.stopper()
    failed(ff, Trial(tmp_path, "late", IMPORT, reported=5))  # at epoch 5: not a first epoch
    failed(ff, Trial(tmp_path, "crash", CRASH))  # a crash of one trial: the others go on
    failed(ff, Trial(tmp_path, "unread", None))  # no error text to judge
    assert not stop.stop_all() and ff.error() is None
    failed(ff, Trial(tmp_path, "fixed", IMPORT), recover=True)  # a retry would fail the same way
    assert stop.stop_all()
    error = ff.error()
    assert isinstance(error, RunStoppedError) and isinstance(error, TrialsFailedError)
    assert str(error) == ("trial fixed-seed0 raised ModuleNotFoundError: No module named 'monai_extra' "
                          f"(train.py:12 in train) at its first epoch, an error every trial would repeat, so the "
                          f"run was stopped (the full traceback: {tmp_path / 'fixed' / 'error.txt'})")
    failed(ff, Trial(tmp_path, "cosine", SHAPE))  # the first error is the one said
    assert "fixed-seed0" in str(ff.error())


def test_a_resumed_trial_failing_at_its_first_epoch_of_this_run_stops_it_whatever_it_did_before(tmp_path):
    ff = FailFast()
    trial = Trial(tmp_path, "fixed", IMPORT)
    trial.last_result = {"training_iteration": 13}  # restored from a session 13 epochs in
    failed(ff, trial)
    assert ff.stopper().stop_all() and "fixed-seed0" in str(ff.error())


def test_a_missing_key_stops_the_run_as_the_input_error_it_is_and_the_run_stopper_still_counts(tmp_path):
    class Inner:
        def __call__(self, trial_id, result):
            return result.get("bad", False)

        def stop_all(self):
            return False

    ff = FailFast()
    stop = ff.stopper(Inner())
    assert stop("a", {"bad": True}) and not stop("a", {}) and not stop.stop_all()
    failed(ff, Trial(tmp_path, "qlearning", KEY, reported=1))
    assert stop.stop_all()
    error = ff.error()
    assert type(error) is InputError
    assert str(error) == ("trial qlearning-seed0 failed: LRControl.step: the epoch's metrics lack 'val_loss' "
                          "(loss_metric); they hold 'accuracy'")


def test_progress_says_a_failed_trial_in_one_line_with_where_its_traceback_is(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("medtune"), "propagate", True)  # the CLI's setup may have turned it off
    caplog.set_level(logging.INFO, logger="medtune.cluster.runs.progress")
    log = ProgressLog("study", trial_epochs=None, metric="dice")
    log.setup()
    log.on_trial_error(0, [], Trial(tmp_path, "fixed", IMPORT))
    log.on_trial_recover(0, [], Trial(tmp_path, "cosine", CRASH))
    # (each once: a handler an earlier test's CLI set up may echo a record into caplog a second time)
    lines = list(dict.fromkeys(r.getMessage() for r in caplog.records if r.name == "medtune.cluster.runs.progress"))
    assert lines[-2] == ("study: trial fixed seed 0 failed: ModuleNotFoundError: No module named 'monai_extra' "
                         f"(train.py:12 in train); the full traceback is in {tmp_path / 'fixed' / 'error.txt'}")
    assert lines[-1].startswith("study: trial cosine seed 0 failed and restarts from its last checkpoint: "
                                "RuntimeError: CUDA error")


PYTHON_API = r"""
import logging, os, sys, types, warnings
sys.modules["mlflow"] = types.ModuleType("mlflow")  # python_api imports both; their loggers are not the point here
sys.modules["ray"] = types.ModuleType("ray")
ray_log = logging.getLogger("ray")  # as Ray sets it up when imported
ray_log.setLevel(logging.INFO); ray_log.addHandler(logging.StreamHandler(sys.stderr)); ray_log.propagate = False
from medtune.cluster.runs import console

log = logging.getLogger("medtune.cluster.studies.session")
log.info("before: not shown")                         # nothing configured, outside a call
with console.python_api():
    log.info("during: a progress line")
    log.warning("during: a warning")
    logging.getLogger("ray.tune").info("tune says hi")  # Ray's and Tune's own lines: verbose only
    logging.getLogger("ray.tune.tune").error("Trials did not complete: [t1]")
    warnings.warn("a library's warning", UserWarning)
    print("env", os.environ.get("RAY_AIR_NEW_OUTPUT"), os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS"))
print("after", logging.getLogger("medtune").handlers, ray_log.level, logging.getLogger("ray.tune").level,
      logging.getLogger("ray.tune.tune").filters, os.environ.get("RAY_AIR_NEW_OUTPUT"))
with console.python_api(verbose_output=True):
    log.debug("verbose: a debug line")
    print("verbose env", os.environ.get("MEDTUNE_VERBOSE"), console.tune_verbosity())
print("after verbose", os.environ.get("MEDTUNE_VERBOSE"))
logging.basicConfig(level=logging.INFO, format="caller %(name)s %(message)s", stream=sys.stdout)
with console.python_api():
    log.info("configured: a progress line")
"""


def test_the_python_api_shows_medtunes_lines_alone_and_leaves_a_callers_logging_as_it_was():
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEDTUNE_VERBOSE", "RAY_AIR_NEW_OUTPUT", "TUNE_PRINT_ALL_TRIAL_ERRORS")}
    out = subprocess.run([sys.executable, "-c", PYTHON_API], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[medtune] during: a progress line",
        "env 0 0",
        "after [] 20 0 [] None",  # the handler, the levels, the filter and the environment are put back
        "[medtune] verbose: a debug line",
        "verbose env 1 1",
        "after verbose None",
        "caller medtune.cluster.studies.session configured: a progress line",  # the caller's handler, not medtune's
    ]
    assert "[medtune] WARNING: during: a warning" in out.stderr
    for noise in ("before", "tune says hi", "Trials did not complete", "a library's warning"):
        assert noise not in out.stdout + out.stderr


def test_compare_run_and_resume_take_verbose_and_run_inside_the_python_api_console():
    import inspect

    import medtune
    from medtune.cluster.runs.console import quiet_api

    wrapper = quiet_api(lambda verbose=False: None).__code__
    for fn in (medtune.compare, medtune.run, medtune.resume):
        assert inspect.signature(fn).parameters["verbose"].default is False
        assert fn.__code__ is wrapper
