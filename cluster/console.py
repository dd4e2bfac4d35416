"""What the ``medtune`` command shows: medtune's own log lines, and other libraries' noise only with ``--verbose``.

medtune's modules log through :mod:`logging` (``logging.getLogger(__name__)``); :func:`setup` gives the
``medtune`` logger one handler that prints ``[medtune] message`` on standard output (``[medtune] WARNING: ...``
on standard error for warnings and errors; a record logged with ``extra={"plain": True}``, such as a report's table, as it is). Without ``verbose``, Ray, Tune, MLflow and the web servers log warnings only, Python
warnings from other packages are hidden (in this process and in the Ray workers it starts), Tune prints no
status tables, and the trials' own output is not forwarded to the driver.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "MEDTUNE_VERBOSE"  # "1": what --verbose turns on, inherited by job drivers and trials
QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "alembic", "urllib3", "werkzeug",
                 "uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn", "huey", "dash", "filelock", "matplotlib")


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
        handler = _Console()
        handler.setFormatter(_Format())
        handler._medtune = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose() else logging.INFO)
    root.propagate = False
    if verbose():
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"medtune(\..*)?$")
    # Ray workers and other child processes start with these; they read PYTHONWARNINGS at start-up.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its own level when it is imported
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: silent at verbose=0, no header box
    # Ray's notice that token authentication is on (the default of Ray 2.60) on every start
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def tune_verbosity() -> int:
    """The ``verbose`` value for ``tune.RunConfig``: Tune's own status output only with ``--verbose``."""
    return 1 if verbose() else 0


def ray_logging_level() -> int:
    """``logging_level`` for ``ray.init``: Ray's start-up messages only with ``--verbose``."""
    return logging.INFO if verbose() else logging.WARNING
