"""Stop a whole run at a trial error that every trial would repeat, and say a trial's error in one line.

A trial that fails at its first epoch with an import error, a name, attribute or type error in the user's
code, a missing key, medtune's own :class:`~medtune.errors.InputError` (a metric key ``LRControl.step`` did not
get, say) or a shape mismatch in the first batch fails the same way in every other trial: the same code runs on
the same data. :class:`FailFast` (a Tune callback) sees such an error when the trial fails, before it has
reported more than one result, and asks Tune to stop every trial at once (its :meth:`stopper`); the run then
ends with one line naming the trial and the error (:meth:`FailFast.error`) instead of running every other
trial into the same error. Any other error (a worker that died, memory, a file system, a numerical blow-up
later in training) fails that trial alone, and the others go on.

:func:`summary` shortens a trial's traceback (Tune writes the full text to ``error.txt`` in the trial's
folder) to its type, message and the frame that raised it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ray.tune import Callback, Stopper

from medtune.errors import InputError, TrialsFailedError

__all__ = [
    "ERROR_FILE", "FailFast", "REPEATING", "RunStoppedError", "SHAPE_MISMATCH", "all_failed_error", "error_path",
    "error_text", "one_line", "repeats", "summary", "trial_name",
]

log = logging.getLogger(__name__)

ERROR_FILE = "error.txt"  # Tune's full text of a trial's errors, in the trial's folder
# Errors of these types at a trial's first epoch repeat in every trial (the same code on the same data).
REPEATING = frozenset({"ImportError", "ModuleNotFoundError", "NameError", "UnboundLocalError", "AttributeError",
                       "TypeError", "KeyError", "SyntaxError", "IndentationError", "NotImplementedError",
                       "InputError"})
# RuntimeError / ValueError / IndexError messages of a tensor shape or size mismatch (PyTorch, MONAI, NumPy).
SHAPE_MISMATCH = re.compile(
    r"shapes? cannot be multiplied|size mismatch|must match the size of tensor|does not match the broadcast|"
    r"could not be broadcast|operands could not be broadcast|expected input\b.*\bto have \d+ channels|"
    r"input batch_size .* to match target batch_size|is invalid for input of size|"
    r"expected (?:\d+D|[a-z\- ]+) input|expected .* dimensions?|sizes of tensors must match|"
    r"shape mismatch|mismatch in shape|out of bounds|Dimension out of range",
    re.IGNORECASE,
)
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def summary(text: str) -> tuple[str, str, str]:
    """``(type, message, frame)`` of the last exception in a traceback's text.

    ``type`` is the exception's class name without its module (``ModuleNotFoundError``, ``InputError``),
    ``message`` its message's first line, ``frame`` where it was raised: ``file.py:LINE in function``, the
    last frame outside Ray's and Python's own files (``""`` when the text has none). Text that is no traceback
    gives ``("", its last line, "")``.
    """
    lines = [line.rstrip() for line in str(text).splitlines()]
    frames = [(i, m) for i, m in ((i, _FRAME.match(line)) for i, line in enumerate(lines)) if m]
    start = frames[-1][0] + 1 if frames else 0
    head = ""
    for line in lines[start:]:
        if line and not line[0].isspace() and not line.startswith(("Traceback", "Failure #", "The above", "During")):
            head = line  # the first unindented line after the last frame: "module.Type: message"
            break
    if not head:
        rest = [line.strip() for line in lines if line.strip()]
        return "", (rest[-1] if rest else ""), ""
    match = re.match(r"^(?P<type>[A-Za-z_][\w.]*)(?:\((?P<cause>[\w.]+)\))?(?::\s*(?P<msg>.*))?$", head)
    if not match or (match["msg"] is None and not re.search(r"(Error|Exception|Exit|Interrupt|Iteration)$",
                                                                match["type"])):
        return "", head.strip(), ""
    kind = (match["cause"] or match["type"]).rsplit(".", 1)[-1]
    own = [m for _, m in frames if not _library(m["file"])]
    frame = (own or [m for _, m in frames])[-1:] if frames else []
    where = f"{Path(frame[0]['file']).name}:{frame[0]['line']} in {frame[0]['func']}" if frame else ""
    return kind, (match["msg"] or "").strip(), where


def _library(path: str) -> bool:
    """A frame of Ray, Tune or Python itself (not the user's code nor medtune's)."""
    parts = Path(path).parts
    return ("site-packages" in parts and any(p in parts for p in ("ray", "torch", "monai", "numpy"))) or (
        "lib" in parts and "site-packages" not in parts and any(p.startswith("python3") for p in parts))


def one_line(text: str) -> str:
    """A trial's error in one line: ``Type: message (file.py:LINE in function)``."""
    kind, message, where = summary(text)
    line = f"{kind}: {message}" if kind and message else kind or message or "an error without a message"
    return line + (f" ({where})" if where else "")


def repeats(text: str) -> bool:
    """Whether the error in ``text`` is of a kind every trial of the run would raise too."""
    kind, message, _ = summary(text)
    if kind in REPEATING:
        return True
    return kind in ("RuntimeError", "ValueError", "IndexError") and bool(SHAPE_MISMATCH.search(message))


def trial_name(trial: Any) -> str:
    """``method-seedN`` where the trial's config has them (as in the comparison's lines), else Tune's name."""
    config = getattr(trial, "config", None) or {}
    if "method" in config and "seed" in config:
        return f"{config['method']}-seed{config['seed']}"
    return str(trial)


def error_text(trial: Any) -> str:
    """The text Tune wrote for the trial's latest error (``""`` when there is none to read)."""
    path = getattr(trial, "error_file", None)  # the driver's copy: written before the callbacks run
    try:
        return Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""


def error_path(trial: Any) -> str:
    """Where the full text of the trial's error is kept (its folder in the session), for a person to open."""
    folder = getattr(trial, "path", None) or getattr(trial, "local_path", None)
    return str(Path(folder) / ERROR_FILE) if folder else "the trial's folder"


class FailFast(Callback):
    """A Tune callback that stops every trial after an error every trial would repeat; see the module docstring.

    Pass :meth:`stopper` as the ``RunConfig``'s ``stop`` (it wraps the run's own stopper, if any) and the
    callback itself among its ``callbacks``; after ``Tuner.fit`` :meth:`error` says why the run was stopped.

    Args:
        first_epochs: a trial that has reported at most this many results when it fails counts as failing at
            its first epoch (1: at or right after its first result).
    """

    def __init__(self, first_epochs: int = 1) -> None:
        self.first_epochs = first_epochs
        self.reason: dict[str, str] | None = None  # trial, kind, line, path of the error that stopped the run
        # Results each trial reported to this run (not its training_iteration: a trial resumed from a session
        # carries the iterations of the run before, and fails "at its first epoch" of this one all the same).
        self.results: dict[str, int] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.results[trial.trial_id] = self.results.get(trial.trial_id, 0) + 1

    def _check(self, trial: Any) -> None:
        if self.reason is not None:
            return
        reported = self.results.get(getattr(trial, "trial_id", ""), 0)
        text = error_text(trial)
        if reported > self.first_epochs or not repeats(text):
            return
        kind, message, _ = summary(text)
        self.reason = {"trial": trial_name(trial), "kind": kind, "message": message, "line": one_line(text),
                       "path": error_path(trial)}
        log.warning("stopping the run: trial %s raised %s at its first epoch, which every trial would repeat",
                    self.reason["trial"], kind)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)  # a retry would fail the same way

    def stopper(self, inner: Stopper | None = None) -> Stopper:
        """The ``RunConfig(stop=...)`` that stops every trial once this callback has seen such an error."""
        return _Stop(self, inner)

    def stop_note(self) -> str | None:
        """What a trial stopped by this callback carries as its error (``medtune.error``), None before a stop."""
        if self.reason is None:
            return None
        return f"stopped unfinished: trial {self.reason['trial']} raised {self.reason['line']} at its first epoch"

    def error(self) -> Exception | None:
        """The exception that ends the run after a stop (None when nothing stopped it): an
        :class:`~medtune.errors.InputError` for medtune's own input check raised in a trial, else a
        :class:`RunStoppedError`."""
        if self.reason is None:
            return None
        r = self.reason
        if r["kind"] == "InputError":
            return InputError(f"trial {r['trial']} failed: {r['message']}")
        return RunStoppedError(r["trial"], r["line"], r["path"])


class _Stop(Stopper):
    def __init__(self, fail_fast: FailFast, inner: Stopper | None) -> None:
        self.fail_fast, self.inner = fail_fast, inner

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(self.inner(trial_id, result)) if self.inner is not None else False

    def stop_all(self) -> bool:
        return self.fail_fast.reason is not None or (self.inner is not None and bool(self.inner.stop_all()))


class RunStoppedError(TrialsFailedError):
    """A trial raised an error at its first epoch that every trial would repeat, so the run was stopped.

    The message is one line: the trial, its error (type, message, the frame that raised it) and where the full
    traceback is. Attributes as :class:`~medtune.errors.TrialsFailedError` (``failed`` is 1), and ``path``.
    """

    def __init__(self, trial: str, error: str, path: str) -> None:
        super().__init__(trial, error, 1)
        self.path = path
        self.args = (f"trial {trial} raised {error} at its first epoch, an error every trial would repeat, so the "
                     f"run was stopped (the full traceback: {path})",)

    def __str__(self) -> str:
        return self.args[0]


def all_failed_error(results: list) -> TrialsFailedError | None:
    """The exception of a run whose every trial failed, naming the first trial's error; None otherwise."""
    errored = [r for r in results if r.error is not None]
    if not results or len(errored) < len(results):
        return None
    config = errored[0].config or {}
    return TrialsFailedError(f"{config.get('method', '?')}-seed{config.get('seed', '?')}",
                             one_line(str(errored[0].error)), len(errored))
