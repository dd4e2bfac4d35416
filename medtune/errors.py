"""The one error type that means "the user gave us something we cannot use".

Every layer (spec loading, data loaders, configuration dataclasses) raises
:class:`InputError` with a single line naming the problem, the offending value
and the fix. The CLI turns it into that line on stderr and exit status 2,
before any trial starts. It lives in the root package ``medtune``, the lowest
layer, which every other one may import without pulling in Ray or MLflow.
"""

__all__ = ["InputError", "TrialsFailedError", "did_you_mean", "error_line"]


class InputError(ValueError):
    """Bad user input: a spec, a data folder or a file medtune cannot use.

    The message must be one line: what is wrong, which value, how to fix it.
    """


def did_you_mean(name: object, valid: "list[str] | tuple[str, ...]") -> str:
    """Return `` (did you mean 'x'?)`` for the valid name nearest to ``name``, else ``""``.

    Case is ignored in the comparison (``SCHEDULEFREE`` suggests ``schedulefree``, ``BADGE`` ``badge``), though not in
    the names.
    """
    import difflib

    folded: dict[str, str] = {}
    for v in valid:
        folded.setdefault(str(v).lower(), str(v))
    text = str(name).lower()
    if text in folded:
        return f" (did you mean {folded[text]!r}?)"
    close = difflib.get_close_matches(text, list(folded), n=1, cutoff=0.5)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


def error_line(error: object) -> str:
    """The one line of a trial's error that names the problem: an ``InputError``'s message, else the last
    non-empty line of the text (``ValueError: boom`` for a traceback), else the error's type name.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "InputError:" in line:
            return line.split("InputError:", 1)[1].strip()
    return lines[-1] if lines else type(error).__name__


class TrialsFailedError(RuntimeError):
    """Every trial of a run failed: there is no result to show, so there is no table.

    The message is one line naming the first trial's error (its type and message) and the trial.

    Attributes:
        trial: the first failed trial's name, e.g. ``fixed-seed0``.
        error: that trial's error line, e.g. ``ValueError: boom``.
        failed: how many trials failed (all of them).
    """

    def __init__(self, trial: str, error: str, failed: int) -> None:
        self.trial, self.error, self.failed = trial, error, failed
        others = f" (and the other {failed - 1} trials)" if failed > 1 else ""
        super().__init__(f"every trial failed; the first, trial {trial}, raised {error}{others}")
