"""The benchmarks' closing table: every benchmark's figure, target and verdict, printed last.

Each benchmark records its block through :func:`tests.bench._common.report`; a benchmark that failed before
reporting is listed as ERROR. The run fails (non-zero exit) when any benchmark MISSED its target or errored.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.bench import _common

_FAILED: dict[str, str] = {}  # node id -> the phase that failed
_RAN: list[str] = []


@pytest.fixture(autouse=True)
def _current_benchmark(request):
    _common.CURRENT_TEST[0] = request.node.nodeid
    _RAN.append(request.node.nodeid)
    yield
    _common.CURRENT_TEST[0] = ""


def pytest_runtest_logreport(report):
    if report.failed:
        _FAILED.setdefault(report.nodeid, report.when)


def _rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for rec in _common.RECORDS:
        verdict = rec["verdict"]
        if verdict not in ("MET", "MISSED"):
            verdict = "MISSED" if rec["test"] in _FAILED else f"MET ({verdict})"
        rows.append((rec["test"].split("::")[-1], rec["figure"], rec["target"], verdict))
    reported = {rec["test"] for rec in _common.RECORDS}
    for nodeid in dict.fromkeys(_RAN):
        if nodeid in _FAILED and nodeid not in reported:
            rows.append((nodeid.split("::")[-1], "no figure: it failed before reporting", "", "ERROR"))
    return rows


def pytest_sessionfinish(session, exitstatus):
    if any(v in ("MISSED", "ERROR") for *_, v in _rows()) and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_unconfigure(config):
    rows = _rows()
    if not rows:
        return
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        commit = (commit + (" + uncommitted changes" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    head = ("benchmark", "figure", "target", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    missed = sum(v in ("MISSED", "ERROR") for *_, v in rows)
    out = ["", f"===== BENCHMARKS: commit {commit}, {_common.machine()} =====", line(head),
           "-+-".join("-" * w for w in widths), *map(line, rows),
           f"===== {len(rows) - missed} MET, {missed} MISSED or ERROR ====="]
    print("\n".join(out), flush=True)
