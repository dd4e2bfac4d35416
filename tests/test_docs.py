"""The documentation site builds with every warning an error, its generated reference covers the code, and every
command in its command blocks (and the README's) is run by a test.

Every line of a fenced ``bash`` / ``console`` / ``sh`` / ``shell`` block in README.md and docs/**/*.md is a
command. Each one must be either

- :data:`RUN_HERE`: cheap, so this file runs it (``medtune --help``, ``make docs`` ...); or
- :data:`MAPPED`: run by an existing test, named as ``(test file, function or fixture, placeholders)``;
  :func:`test_each_mapped_test_runs_its_command` checks that the function spells out every argument of the command
  as a string (a literal, an f-string's pattern, or a module-level constant of that file), so a test that stops
  running it fails here. ``placeholders`` are the arguments the test gives its own value (a temporary folder, the
  job id it got, the address of the cluster it started): a ``key=value`` placeholder still needs ``key=``.

A command in neither fails :func:`test_every_command_in_the_docs_is_run_by_a_test` with its file and line, and an
entry no page uses any more fails :func:`test_no_entry_is_stale`. Every ``medtune ...`` command, in a block or
inline, must also parse with the CLI's own parser.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import medtune
from medtune.cluster.cli.main import _parser
from medtune.cluster.studies.lr_study import LRStudySpec, QLearningSpec
from medtune.cluster.studies.registry import STUDIES
from medtune.trainables.lr_data import DataConfig

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGES = sorted([ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*.md"))])
SHELLS = ("bash", "console", "sh", "shell")
PROGRAMS = ("medtune", ".venv/bin/medtune", ".venv/bin/mkdocs", "mkdocs", "make", "python", "export")
ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")} | {
    "NO_MKDOCS_2_WARNING": "1"}

# command (as shlex splits and joins it) -> what its output must contain; the test runs it from the checkout
RUN_HERE: dict[str, str] = {
    "medtune --help": "usage: medtune",
    "medtune specs": "lr-schedulers",
    "make docs": "mkdocs build --strict",      # run as `make -n`: the recipe; the build itself is run below
    "make run": "medtune run lr-schedulers",    # `make -n`: the recipe; the LR spec itself is run by the smoke run
    "make test": "pytest",                      # `make -n`: the recipe
    ".venv/bin/mkdocs serve": "",               # test_the_site_is_served
}

# command -> (test file, the function or fixture that runs it, the arguments it gives its own value)
MAPPED: dict[str, tuple[str, str, frozenset[str]]] = {
    "medtune run lr-schedulers --smoke": ("tests/conftest.py", "_lr", frozenset()),
    "medtune report lr-schedulers": ("tests/test_lr_study.py",
                                     "test_report_rebuilds_the_table_from_mlflow_alone", frozenset()),
    "medtune run lr-schedulers --set qlearning.warm_start=medtune-runs/lr-schedulers-20261121-101500/qtable.json "
    "--set methods=[fixed,cosine,qlearning,qlearning_warm]": ("tests/conftest.py", "_lr", frozenset()),
    "python examples/own_training.py --epochs 6 --seeds 0 1": ("tests/test_compare_examples.py", "run", frozenset()),
    "medtune run digits.yaml": ("tests/test_own_study.py", "test_medtune_run_compares_the_trainable_a_spec_names",
                                frozenset({"digits.yaml"})),
    "medtune run lr-schedulers --set data.source=decathlon --set data.path=/data/Task04_Hippocampus": (
        "tests/test_cli.py", "test_a_decathlon_run_prints_its_plan_and_writes_plan_json",
        frozenset({"data.path=/data/Task04_Hippocampus"})),
    "medtune tune lr-schedulers --smoke --set tuning.trials=2 --set tuning.epochs=2 --set tuning.final_seeds=[7]": (
        "tests/test_tuning.py", "test_smoke_search_then_final_runs_land_in_mlflow_as_described",
        frozenset()),
    "medtune suite my-suite.yaml": (
        "tests/test_suite_end_to_end.py",
        "test_a_suite_nests_its_task_sessions_resumes_only_the_broken_task_and_reports_from_mlflow",
        frozenset({"my-suite.yaml"})),
    "medtune suite my-suite.yaml --resume medtune-runs/my-suite-20261206-101500": (
        "tests/test_suite_end_to_end.py",
        "test_a_suite_nests_its_task_sessions_resumes_only_the_broken_task_and_reports_from_mlflow",
        frozenset({"my-suite.yaml", "medtune-runs/my-suite-20261206-101500"})),
    "medtune report my-suite": (
        "tests/test_suite_end_to_end.py",
        "test_a_suite_nests_its_task_sessions_resumes_only_the_broken_task_and_reports_from_mlflow",
        frozenset({"my-suite"})),
    ".venv/bin/medtune ui": ("tests/test_cli.py", "test_sigterm_stops_the_server_and_every_process_it_started",
                             frozenset()),
    ".venv/bin/medtune dashboard": ("tests/test_cli.py",
                                    "test_sigterm_stops_the_server_and_every_process_it_started", frozenset()),
    # the cluster tutorial: tests/test_service.py brings a cluster up and runs each of these on it
    "medtune cluster up": ("tests/test_service.py", "cluster", frozenset()),
    "medtune cluster down": ("tests/test_service.py", "cluster", frozenset()),
    "medtune cluster status": ("tests/test_service.py",
                               "test_status_shows_the_node_and_the_mlflow_server", frozenset()),
    "medtune submit lr-schedulers --smoke --wait": (
        "tests/test_service.py",
        "test_submit_smoke_wait_runs_the_study_as_a_job_logging_to_the_cluster_mlflow", frozenset()),
    "medtune jobs list": ("tests/test_service.py",
                          "test_submit_smoke_wait_runs_the_study_as_a_job_logging_to_the_cluster_mlflow",
                          frozenset()),
    "medtune jobs logs raysubmit_XXXXXXXX": (
        "tests/test_service.py",
        "test_submit_smoke_wait_runs_the_study_as_a_job_logging_to_the_cluster_mlflow",
        frozenset({"raysubmit_XXXXXXXX"})),
    "medtune cluster join 127.0.0.1:6379": (
        "tests/test_service.py", "test_join_adds_this_machine_as_a_worker_node_and_down_stops_it_too",
        frozenset({"127.0.0.1:6379"})),
    "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.medtune/cluster/token": (
        "tests/test_service.py", "test_driver_killed_mid_run_resumes_on_the_cluster_with_its_qtable",
        frozenset({"RAY_AUTH_TOKEN_PATH=~/.medtune/cluster/token"})),
    "medtune run lr-schedulers --address 127.0.0.1:6379 --tracking-uri http://127.0.0.1:5000": (
        "tests/test_service.py", "test_driver_killed_mid_run_resumes_on_the_cluster_with_its_qtable",
        frozenset({"127.0.0.1:6379", "http://127.0.0.1:5000"})),
    # storage every node mounts: tests/test_session_multinode.py runs them on a three-node Ray
    "medtune run lr-schedulers --address 10.0.0.5:6379 --storage /mnt/nfs/medtune": (
        "tests/test_session_multinode.py",
        "test_session_on_shared_storage_keeps_nothing_on_private_disks_and_resumes_from_storage_alone",
        frozenset({"10.0.0.5:6379", "/mnt/nfs/medtune"})),
    "medtune resume --storage /mnt/nfs/medtune --address 10.0.0.5:6379": (
        "tests/test_session_multinode.py",
        "test_session_on_shared_storage_keeps_nothing_on_private_disks_and_resumes_from_storage_alone",
        frozenset({"/mnt/nfs/medtune", "10.0.0.5:6379"})),
}


# --- reading the pages ----------------------------------------------------------------------------------------------

def shell_commands(path: Path) -> list[tuple[int, str]]:
    """``(line, command)`` of every command in the fenced shell blocks of ``path``: comments dropped, ``\\``
    continuations joined, a ``console`` block's ``$ `` prompt removed (its other lines are output)."""
    out, lang, pending, start = [], None, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            lang = None if lang is not None else (stripped[3:].strip().split() or [""])[0]
            continue
        if lang not in SHELLS:
            continue
        if lang == "console":
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        text = stripped.split(" #", 1)[0].strip() if not stripped.startswith("#") else ""
        if not text and not pending:
            continue
        start = start if pending else number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        out.append((start, " ".join(shlex.split(pending + text))))
        pending = ""
    return out


def every_command() -> list[tuple[str, int, str]]:
    return [(str(p.relative_to(ROOT)), line, cmd) for p in PAGES for line, cmd in shell_commands(p)]


def inline_medtune_commands() -> list[tuple[str, str]]:
    """Inline code spans that are a whole ``medtune ...`` command (usage synopses with ``[...]`` left out)."""
    spans = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for span in re.findall(r"`(medtune [^`]+)`", text):
            if not re.search(r" \[|\.\.\.|\|", span):
                spans.append((str(page.relative_to(ROOT)), span))
    return spans


# --- what a test runs -----------------------------------------------------------------------------------------------

def _constants(tree: ast.Module) -> dict[str, object]:
    """The module-level names a test file binds to a literal (``EPOCHS = 6``, ``SEEDS = (0, 1)``)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            try:
                values = ast.literal_eval(node.value)
            except ValueError:
                continue
            for target, value in zip(node.targets[0].elts, values):
                if isinstance(target, ast.Name):
                    out[target.id] = value
    return out


def spelled_arguments(path: Path, function: str) -> tuple[list[re.Pattern], str]:
    """Every string ``function`` in ``path`` spells out, as patterns (an f-string's values are wildcards unless
    they name a module-level constant), and the function's source text."""
    source = path.read_text()
    tree = ast.parse(source)
    consts = _constants(tree)
    found = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function]
    assert found, f"{path.name} has no function or fixture {function}"
    node = found[0]
    patterns = []

    def const(value: object) -> list[str]:
        return [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]

    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr):
            parts = []
            for v in n.values:
                if isinstance(v, ast.Constant):
                    parts.append(re.escape(str(v.value)))
                elif isinstance(v.value, ast.Name) and v.value.id in consts:
                    parts.append(re.escape(",".join(const(consts[v.value.id]))))
                else:
                    parts.append(".+")
            patterns.append("".join(parts))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            patterns.append(re.escape(n.value))
        elif isinstance(n, ast.Name) and n.id in consts:
            patterns += [re.escape(v) for v in const(consts[n.id])]
    return [re.compile(p) for p in patterns], ast.get_source_segment(source, node) or ""


def missing_arguments(command: str, test_file: str, function: str, placeholders: frozenset[str]) -> list[str]:
    """The arguments of ``command`` that ``function`` does not spell out (the program itself aside)."""
    patterns, source = spelled_arguments(ROOT / test_file, function)
    tokens = shlex.split(command)
    program, args = tokens[0], tokens[1:]
    missing = []
    if program == "python":
        script, args = Path(args[0]).name, args[1:]
        if script not in (ROOT / test_file).read_text():
            missing.append(script)
    if program == "export":
        return [a for a in args if a.split("=", 1)[0] not in source]
    for arg in args:
        if arg in placeholders:
            if "=" in arg and not any(p.pattern.startswith(re.escape(arg.split("=", 1)[0] + "=")) for p in patterns):
                missing.append(arg)
            continue
        if not any(p.fullmatch(arg) for p in patterns):
            missing.append(arg)
    return missing


# --- the tests ------------------------------------------------------------------------------------------------------

def test_every_command_in_the_docs_is_run_by_a_test():
    commands = every_command()
    assert len(commands) >= 20  # the reader found the blocks
    unmapped = [f"{page}:{line}: {cmd}" for page, line, cmd in commands if cmd not in RUN_HERE and cmd not in MAPPED]
    assert not unmapped, ("commands no test runs; run them in tests/test_docs.py (RUN_HERE) or map each to the "
                          "test that runs it (MAPPED):\n" + "\n".join(unmapped))


def test_no_entry_is_stale():
    used = {cmd for _, _, cmd in every_command()}
    assert not (set(RUN_HERE) | set(MAPPED)) - used


@pytest.mark.parametrize("command", sorted(MAPPED))
def test_each_mapped_test_runs_its_command(command):
    test_file, function, placeholders = MAPPED[command]
    assert not missing_arguments(command, test_file, function, placeholders), (
        f"{test_file}::{function} does not run `{command}`")


def test_the_mapping_check_fails_a_test_that_runs_another_command():
    assert missing_arguments("medtune cluster up --no-auth", "tests/test_service.py", "cluster",
                             frozenset()) == ["--no-auth"]
    assert missing_arguments("python examples/own_training.py --epochs 7", "tests/test_compare_examples.py", "run",
                             frozenset()) == ["7"]


def test_every_medtune_command_parses():
    commands = [(f"{page}:{line}", cmd) for page, line, cmd in every_command()
                if cmd.split()[0] in ("medtune", ".venv/bin/medtune")] + inline_medtune_commands()
    assert len(commands) >= 30
    bad = []
    for where, cmd in commands:
        args = shlex.split(cmd)[1:]
        if len(args) == 1 and not args[0].startswith("-"):
            args.append("--help")  # `medtune run` in a sentence names the command: it must be one
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                _parser().parse_args(args)
        except SystemExit as exc:
            if exc.code:
                bad.append(f"{where}: {cmd}")
    assert not bad, "commands the CLI refuses:\n" + "\n".join(bad)


@pytest.mark.parametrize("command", [c for c in RUN_HERE if c.startswith("medtune")])
def test_the_cheap_commands_run(command):
    args = shlex.split(command)
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=300, env=ENV,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert RUN_HERE[command] in proc.stdout


@pytest.mark.parametrize("target", ["docs", "run", "test"])
def test_the_make_targets_run_what_the_docs_say(target):
    proc = subprocess.run(["make", "-n", target, f"VENV={BIN.parent}"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert RUN_HERE[f"make {target}"] in proc.stdout, proc.stdout


# the team's design notes and papers folder, which are not part of the product (spelt in two parts so that a search
# for references to them finds none here)
NOT_PART_OF_IT = ("DESIGN" ".md", "shared" "/")


def test_docs_and_readme_stay_short_and_mention_no_design_notes():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 250
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not any(name in line for name in NOT_PART_OF_IT), f"{page}:{number}: {line}"


def _hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_spec_reference_has_every_key_of_every_registered_study():
    hook = _hook()
    page = hook.spec_reference()
    seen: dict = {}
    for name, study in STUDIES.items():
        assert f"## `{name}`: {study.spec.__name__}" in page
        hook.walk(study.spec, seen)
    for cls in [s.spec for s in STUDIES.values()] + list(seen):
        for f in dataclasses.fields(cls):
            if f.init:
                assert f"| `{f.name}` | " in page, (cls.__name__, f.name)
    assert "### DataConfig {#dataconfig}" in page and "### TrainConfig {#trainconfig}" in page


def _undocumented(page: str) -> tuple[list[str], int]:
    """``("Section.key", ...)`` of the spec page's key rows whose meaning cell is empty, and how many rows it read.

    A row is ``| `key` | type | default | meaning |``; a type cell may hold ``|`` (``int | None``), so the meaning
    is read off the row's end: an empty cell ends the row with ``|  |``.
    """
    section, empty, rows = "", [], 0
    for line in page.splitlines():
        if line.startswith("#"):
            section = line.lstrip("# ").split(" {#")[0]
        elif line.startswith("| `"):
            rows += 1
            if line.rstrip().endswith("|  |"):
                empty.append(f"{section}.{line.split('`')[1]}")
    return empty, rows


def test_every_key_of_the_spec_reference_has_a_description():
    page = _hook().spec_reference()
    empty, rows = _undocumented(page)
    assert rows > 250, f"read only {rows} key rows: the spec page's table format changed"
    assert not empty, (f"{len(empty)} spec keys have no description; document each in the Attributes: section of "
                       f"the class that defines it: {', '.join(empty)}")
    table = "### X {#x}\n\n| `a` | `int | None` | `1` | fine |\n| `b` | `str` | `x` |  |\n"
    assert _undocumented(table) == (["X.b"], 2)  # the check itself finds an empty cell


def test_field_docs_come_from_attributes_sections_and_comments():
    hook = _hook()
    data = hook.field_docs(DataConfig)
    assert data["source"].startswith("``\"phantom\"`` (embedded default)")
    assert "RandCropByPosNegLabeld" in data["patch_size"]  # a continued entry is joined
    assert "session state's root" in hook.field_docs(LRStudySpec)["storage"]  # a trailing comment
    qlearning = hook.field_docs(QLearningSpec)  # make_dataclass: its own docstring, then QLearningConfig's fields
    assert "qtable.json" in qlearning["warm_start"] and "between two decisions" in qlearning["patience"]
    assert hook.docstring_fields("Doc.\n\nAttributes:\n    low, high: the bounds.\n    log: sample\n        log.\n"
                                 "\nRaises:\n    X: y\n") == {"low": "the bounds.", "high": "the bounds.",
                                                            "log": "sample log."}


def test_the_lr_methods_page_is_the_registrys_table():
    lr_methods = pytest.importorskip("medtune.searchers.lr_methods")
    page = _hook().lr_method_table()
    assert lr_methods.markdown_table() in page
    for name in lr_methods.METHODS:
        assert f"| `{name}` |" in page


def test_the_api_page_documents_every_public_name():
    page = _hook().api_reference()
    for name, module in medtune._PUBLIC.items():
        assert f"::: {module}.{name}\n" in page


def test_the_site_builds_strict_in_under_a_minute(tmp_path):
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    took = time.monotonic() - start
    print(f"mkdocs build --strict: {took:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("reference/spec/index.html", "reference/api/index.html", "reference/lr-methods/index.html",
                 "tutorials/cluster/index.html", "bibliography/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "LRControl" in api and "Raises" in api  # mkdocstrings read the docstrings
    assert took < 60 * (3 if os.getloadavg()[0] > os.cpu_count() else 1), f"the build took {took:.0f} s"


def test_the_site_is_served(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "mkdocs"), "serve", "--dev-addr", f"127.0.0.1:{port}", "--no-livereload"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    try:
        deadline, body = time.monotonic() + 180, ""
        while time.monotonic() < deadline and proc.poll() is None and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/getting-started/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.5)
        assert "make run" in body, proc.stdout.read() if proc.poll() is not None else "no answer"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
