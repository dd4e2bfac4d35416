"""What the ``medtune`` command shows: medtune's own log lines, and other libraries' noise only with ``--verbose``.

medtune's modules log through :mod:`logging` (``logging.getLogger(__name__)``); :func:`setup` gives the
``medtune`` logger one handler that prints ``[medtune] message`` on standard output (``[medtune] WARNING: ...`` on
standard error for warnings and errors; a record logged with ``extra={"plain": True}``, such as a report's table, as it
is). Without ``verbose``, Ray, Tune, MLflow and the web servers log warnings only, Python warnings from other packages
are hidden (in this process and in the Ray workers it starts), Tune prints no status tables, and the trials' own output
is not forwarded to the driver.

The Python API (``medtune.compare``, ``medtune.run``, ``medtune.resume``) shows the same while it runs
(:func:`python_api`): medtune's lines (a caller that configured :mod:`logging` for them keeps its own
handlers), Ray's and Tune's own output only with ``verbose=True``. A failed trial is one line in either, its
full traceback in the trial's ``error.txt``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "ERRORS_ONLY", "QUIET_ENV", "QUIET_LOGGERS", "VERBOSE_ENV", "python_api", "quiet_api", "ray_logging_level",
    "setup", "tune_verbosity", "verbose",
]

VERBOSE_ENV = "MEDTUNE_VERBOSE"  # "1": what --verbose turns on, inherited by job drivers and trials
QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "alembic", "urllib3", "werkzeug",
                 "uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn", "huey", "dash", "filelock", "matplotlib")
# Errors only: Ray's notice that token authentication is on (the default of Ray 2.60) on every start, and Tune's
# "Failed to fetch metrics" for the trials a stopped run never started.
ERRORS_ONLY = ("ray._private.authentication.authentication_token_setup", "ray.tune.analysis.experiment_analysis")
# Without --verbose: Tune's classic reporter (silent at verbose=0: no configuration box, no TensorBoard hint,
# no status tables), no traceback per failed trial (medtune says each in one line, the full text is in the
# trial's error.txt), nor again as Ray's "Unhandled error" when a stopped trial's last step raised too.
QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0", "RAY_IGNORE_UNHANDLED_ERRORS": "1"}


class _NoTuneSummary(logging.Filter):
    """Drops Tune's "Trials did not complete: [...]" at the end of a run (medtune names each failed trial)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or not str(record.msg).startswith("Trials did not complete")


_NO_TUNE_SUMMARY = _NoTuneSummary()


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if getattr(record, "plain", False):  # a report's text: printed as it is
            return text
        if record.exc_info and verbose():
            text += "\n" + self.formatException(record.exc_info)
        return f"[medtune] {'WARNING: ' if record.levelno >= logging.WARNING else ''}{text}"


class _Console(logging.StreamHandler):
    """Lines to whatever ``sys.stdout`` is at the time (a test's capture, a redirected stream), warnings and
    errors to ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        self._stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)

    @property
    def stream(self):  # type: ignore[override]
        return getattr(self, "_stream", sys.stdout)

    @stream.setter
    def stream(self, _value) -> None:
        pass


def verbose() -> bool:
    """Whether ``--verbose`` is on (in this process or the one that started it)."""
    return os.environ.get(VERBOSE_ENV) == "1"


def setup(verbose_output: bool = False) -> None:
    """Route medtune's log lines to standard output and quiet other libraries unless ``verbose_output``."""
    if verbose_output:
        os.environ[VERBOSE_ENV] = "1"
    root = logging.getLogger("medtune")
    if not any(getattr(h, "_medtune", False) for h in root.handlers):
        root.addHandler(_handler())
    root.setLevel(logging.DEBUG if verbose() else logging.INFO)
    root.propagate = False
    if verbose():
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _hide_warnings()
    # Ray workers and other child processes start with these; they read PYTHONWARNINGS at start-up.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its own level when it is imported
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ERRORS_ONLY:
        logging.getLogger(name).setLevel(logging.ERROR)
    _add_filter(logging.getLogger("ray.tune.tune"), _NO_TUNE_SUMMARY)


def _hide_warnings() -> None:
    """Other packages' Python warnings hidden, medtune's shown; never a ``ResourceWarning`` (Tune's files of a
    stopped trial are closed by the garbage collector, in whatever frame runs then, medtune's included)."""
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"medtune(\..*)?$")
    warnings.filterwarnings("ignore", category=ResourceWarning)


def _add_filter(logger: logging.Logger, flt: logging.Filter) -> None:
    if flt not in logger.filters:
        logger.addFilter(flt)


def _handler() -> logging.Handler:
    handler = _Console()
    handler.setFormatter(_Format())
    handler._medtune = True  # type: ignore[attr-defined]
    return handler


def _caller_configured(logger: logging.Logger) -> bool:
    """Whether medtune's lines already reach a handler the program set up: ``medtune``'s own (the CLI's, or
    the caller's), or the root logger's with ``medtune`` at INFO or below (``logging.basicConfig(level=INFO)``)."""
    return bool(logger.handlers) or (logger.isEnabledFor(logging.INFO) and bool(logging.getLogger().handlers))


@contextlib.contextmanager
def python_api(verbose_output: bool = False) -> Iterator[None]:
    """What a call of the Python API shows while it runs, as ``medtune run`` would; everything is put back after.

    medtune's lines go to standard output and its warnings to standard error (``[medtune] ...``), unless the
    program already configured logging for them (then its handlers are left as they are). Without
    ``verbose_output`` (nor ``MEDTUNE_VERBOSE=1``), Ray, Tune and MLflow log warnings only (no start-up lines,
    no Tune status box or TensorBoard hint, no traceback per failed trial), other packages' Python warnings are
    hidden and the trials' own output stays in their log files.
    """
    saved_env = {key: os.environ.get(key) for key in (VERBOSE_ENV, *QUIET_ENV)}
    root = logging.getLogger("medtune")
    saved_root = (root.level, root.propagate)
    handler = None
    quieted: dict[str, int] = {}
    tune_log = logging.getLogger("ray.tune.tune")
    filtered = _NO_TUNE_SUMMARY not in tune_log.filters
    with contextlib.ExitStack() as stack:
        try:
            if verbose_output:
                os.environ[VERBOSE_ENV] = "1"
            if not _caller_configured(root):
                handler = _handler()
                root.addHandler(handler)
                root.setLevel(logging.DEBUG if verbose() else logging.INFO)
                root.propagate = False
            if not verbose():
                for key, value in QUIET_ENV.items():
                    os.environ.setdefault(key, value)
                # Ray and MLflow set their loggers' levels when first imported: import them now (every call of
                # the API runs Ray and tracks in MLflow), so that the levels are quieted here and put back after.
                import mlflow  # noqa: F401
                import ray  # noqa: F401
                names = {name: logging.WARNING for name in QUIET_LOGGERS}
                names.update({name: logging.ERROR for name in ERRORS_ONLY})
                for name, level in names.items():
                    logger = logging.getLogger(name)
                    if logger.getEffectiveLevel() < level:
                        quieted[name] = logger.level
                        logger.setLevel(level)
                stack.enter_context(warnings.catch_warnings())
                _hide_warnings()
                _add_filter(tune_log, _NO_TUNE_SUMMARY)
            yield
        finally:
            if filtered:
                tune_log.removeFilter(_NO_TUNE_SUMMARY)
            for name, level in quieted.items():
                logging.getLogger(name).setLevel(level)
            if handler is not None:
                root.removeHandler(handler)
                root.setLevel(saved_root[0])
                root.propagate = saved_root[1]
            for key, previous in saved_env.items():
                if previous is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = previous


def quiet_api(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` (a function of the Python API with a ``verbose`` argument) inside :func:`python_api`."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with python_api(bool(bound.arguments.get("verbose", False))):
            return fn(*args, **kwargs)

    return call


def tune_verbosity() -> int:
    """The ``verbose`` value for ``tune.RunConfig``: Tune's own status output only with ``--verbose``."""
    return 1 if verbose() else 0


def ray_logging_level() -> int:
    """``logging_level`` for ``ray.init``: Ray's start-up messages only with ``--verbose``."""
    return logging.INFO if verbose() else logging.WARNING
