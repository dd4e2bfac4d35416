"""Tests for medtune.cluster.runs.console: medtune's lines on stdout with the [medtune] prefix, others quiet."""

from __future__ import annotations

import logging
import os
import subprocess
import sys


def test_lines_warnings_and_plain_text_are_formatted_for_a_person():
    code = ("import logging; from medtune.cluster.runs import console; console.setup(); "
            "log = logging.getLogger('medtune.cluster.studies.session'); log.info('session folder: x'); "
            "log.warning('MLflow at y failed'); log.info('table', extra={'plain': True}); "
            "logging.getLogger('ray').info('ray says hi'); logging.getLogger('mlflow').warning('mlflow warns'); "
            "import warnings; warnings.warn('a deprecation', DeprecationWarning)")
    env = {k: v for k, v in os.environ.items() if k not in ("MEDTUNE_VERBOSE", "PYTHONWARNINGS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[medtune] session folder: x", "table"]
    assert "[medtune] WARNING: MLflow at y failed" in out.stderr.splitlines()
    assert "ray says hi" not in out.stderr and "a deprecation" not in out.stderr
    assert "mlflow warns" in out.stderr  # other libraries' warnings still show


def test_verbose_shows_other_libraries_and_reaches_child_processes():
    code = ("import logging, os; from medtune.cluster.runs import console; console.setup(verbose_output=True); "
            "logging.basicConfig(level=logging.INFO); logging.getLogger('ray').info('ray says hi'); "
            "print(os.environ['MEDTUNE_VERBOSE'], console.tune_verbosity(), console.ray_logging_level())")
    env = {k: v for k, v in os.environ.items() if k != "MEDTUNE_VERBOSE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"1 1 {logging.INFO}" and "ray says hi" in out.stderr
