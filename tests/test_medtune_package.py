"""The installed package: one ``medtune`` namespace, a light root, a public API, and a house without circles.

* The import graph of every module of the package is read with :mod:`ast` (function-level imports included, so a
  circle hidden in a function counts): no module names ``cluster``, ``trainables``, ``searchers`` or
  ``dashboards`` as a top-level package, no import goes from a lower layer to a higher one, and no two modules
  reach each other.
* Every module defines ``__all__`` (names it binds), and the package's own imports sit at module top unless a
  comment on the line (or above it) says why one is made in a function.
* ``import medtune`` and ``import medtune.searchers`` load neither Ray nor MLflow (in a fresh interpreter).
* A wheel built from the checkout and the editable install each work from a folder outside the checkout, also
  from a folder that holds its own ``cluster/`` and ``searchers/`` packages on ``PYTHONPATH``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"medtune": "medtune", "searchers": "medtune.searchers", "trainables": "medtune.trainables",
           "dashboards": "medtune.dashboards", "cluster": "medtune.cluster"}
# Layers, bottom up; trainables and dashboards stand side by side and import neither each other. cluster/ is layered
# by role too: what a run writes and shows (runs), operations (ops), the studies, the command line (cli).
RANK = {"medtune": 0, "medtune.searchers": 1, "medtune.trainables": 2, "medtune.dashboards": 2,
        "medtune.cluster.runs": 3, "medtune.cluster.ops": 4, "medtune.cluster.studies": 5, "medtune.cluster.cli": 6,
        "medtune.cluster": 7}
BARE = ("cluster", "trainables", "searchers", "dashboards")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = f.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = f
    return out


def _layer(module: str) -> str:
    for depth in (3, 2):
        head = ".".join(module.split(".")[:depth])
        if head in RANK:
            return head
    return "medtune"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(the package's modules that ``name`` imports anywhere in its body, the bare top-level names it imports)."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found, bare = set(), []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in BARE:
                bare.append(target)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found, bare


def _graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    modules = _modules()
    graph, bare = {}, {}
    for name, path in modules.items():
        graph[name], bare[name] = _imports(name, path, modules)
    return graph, bare


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_a_bare_top_level_package_name():
    _, bare = _graph()
    offenders = {m: names for m, names in bare.items() if names}
    assert not offenders, f"import these as medtune.<package>: {offenders}"


def test_no_import_goes_up_a_layer_or_across_between_trainables_and_dashboards():
    graph, _ = _graph()
    bad = [f"{a} -> {b}" for a, targets in graph.items() for b in sorted(targets)
           if RANK[_layer(b)] > RANK[_layer(a)] or (RANK[_layer(b)] == RANK[_layer(a)] and _layer(a) != _layer(b))]
    assert not bad, "imports against the layers: " + "; ".join(bad)


def test_the_package_has_no_import_circle():
    graph, _ = _graph()
    assert not _cycles(graph)


def test_the_circle_finder_finds_a_circle_and_a_hidden_one(tmp_path):
    """The checks above can fail: a two-module circle, one hidden in a function, and an upward import are found."""
    a = tmp_path / "a.py"
    a.write_text("from medtune.cluster import b\n")
    b = tmp_path / "b.py"
    b.write_text("def f():\n    from medtune.cluster import a\n    import cluster.spec\n")
    modules = {"medtune.cluster.a": a, "medtune.cluster.b": b}
    graph = {n: _imports(n, p, modules)[0] for n, p in modules.items()}
    assert _cycles(graph) == [["medtune.cluster.a", "medtune.cluster.b"]]
    assert _imports("medtune.cluster.b", b, modules)[1] == ["cluster.spec"]


def test_every_package_lists_its_public_names_and_they_exist():
    import importlib

    for package in ("medtune", *[p for p in FOLDERS.values() if p != "medtune"]):
        mod = importlib.import_module(package)
        assert mod.__all__, package
        for name in mod.__all__:
            assert getattr(mod, name) is not None, f"{package}.{name}"


def test_every_module_lists_its_public_names_in_all_and_they_exist():
    """Each module of the package (the heavy ones too) defines ``__all__``, a list of distinct names it binds."""
    import importlib

    missing, absent = [], []
    for name in _modules():
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None)
        if not isinstance(names, (list, tuple)) or len(set(names)) != len(names):
            missing.append(name)
            continue
        absent += [f"{name}.{n}" for n in names if not hasattr(mod, n)]
    assert not missing, "define __all__ (a list of distinct public names) in: " + ", ".join(missing)
    assert not absent, "names in __all__ that the module does not define: " + ", ".join(absent)


def _unexplained_function_imports(path: Path) -> list[str]:
    """``line: statement`` of each ``import medtune...`` / ``from medtune... import`` (or relative import) inside a
    function with no comment on its line or on the line above; consecutive imports share the comment above the
    first of them."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, str(path))

    def own(node: ast.stmt) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name == "medtune" or a.name.startswith("medtune.") for a in node.names)
        if isinstance(node, ast.ImportFrom):
            return bool(node.level) or node.module == "medtune" or (node.module or "").startswith("medtune.")
        return False

    def explained(node: ast.stmt, previous: ast.stmt | None, previous_ok: bool) -> bool:
        if any("#" in line for line in lines[node.lineno - 1:node.end_lineno]):
            return True
        if node.lineno >= 2 and lines[node.lineno - 2].lstrip().startswith("#"):
            return True
        return previous is not None and own(previous) and previous.end_lineno == node.lineno - 1 and previous_ok

    out: list[str] = []
    seen: set[int] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                previous, previous_ok = None, False
                for stmt in block:
                    ok = True
                    if own(stmt) and id(stmt) not in seen:
                        seen.add(id(stmt))
                        ok = explained(stmt, previous, previous_ok)
                        if not ok:
                            out.append(f"{stmt.lineno}: {lines[stmt.lineno - 1].strip()}")
                    previous, previous_ok = stmt, ok
    return out


def test_medtunes_own_imports_are_at_module_top_unless_a_comment_says_why():
    """A function-level import of the package's own modules needs a reason on its line or the line above (keeping
    ``import medtune``, ``medtune.searchers`` or the CLI light); every other one belongs at the top of the module."""
    bad = [f"{path.relative_to(ROOT)}:{hit}" for path in _modules().values()
           for hit in _unexplained_function_imports(path)]
    assert not bad, "move to the module's top, or say why on the line:\n" + "\n".join(bad)


def test_the_function_import_check_finds_an_unexplained_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent("""\
        import medtune.errors


        def f():
            from medtune.util import is_int


        def g():
            # light: no Ray
            from medtune.config import to_dict
            from medtune import util
            import json
            from . import sibling


        def h():
            import medtune.tags  # why
            x = 1
            from .x import y
        """))
    assert _unexplained_function_imports(f) == ["5: from medtune.util import is_int", "13: from . import sibling",
                                                "19: from .x import y"]


def test_the_type_check_names_every_module_by_its_installed_name():
    """``make check``'s mypy run (tests/typecheck.py) reads the package-dir table of pyproject.toml: it must cover
    the same modules, under the same ``medtune.*`` names, as the layer checks above."""
    from tests import typecheck

    assert typecheck.modules() == _modules()


def test_importing_medtune_and_its_cores_loads_neither_ray_nor_mlflow():
    code = ("import sys, medtune, medtune.searchers, medtune.searchers.qlearning_agent; "
            "from medtune import InputError, QLearningLRAgent, GreedyLR, EffortController; "
            "heavy = sorted(m for m in ('ray', 'mlflow') if m in sys.modules); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# Test files not named after one module, and why.
NOT_A_MODULE = {"docs": "the documentation site (docs/, mkdocs.yml) and the commands it shows"}


def test_every_test_file_is_named_after_the_module_or_package_it_tests():
    """``tests/test_<module>.py`` or ``tests/test_<module>_<aspect>.py``: the module a test reads first is in its
    name (a module or subpackage of medtune, or a script of tests/bench)."""
    names = {name.rsplit(".", 1)[-1] for name in _modules()} | {"medtune"}
    names |= {f.stem for f in (ROOT / "tests" / "bench").glob("*.py")}
    unnamed = []
    for f in sorted((ROOT / "tests").glob("test_*.py")):
        stem = f.stem.removeprefix("test_")
        if stem in NOT_A_MODULE:
            continue
        if not any(stem == n or stem.startswith(n + "_") for n in names):
            unnamed.append(f.name)
    assert not unnamed, f"name these after the module they test (test_<module>[_<aspect>].py): {unnamed}"


def test_loading_and_checking_a_spec_imports_no_ray():
    """A bad spec is one line and exit 2 before Ray: loading a study's spec must not even import it."""
    code = ("import sys; from medtune.cluster.studies.registry import load_spec; "
            "[load_spec(s, smoke=True) for s in ('lr-schedulers', 'active-learning', 'apga', 'paser')]; "
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_version_is_one_string_in_the_package_the_distribution_and_the_cli():
    import importlib.metadata

    import medtune

    assert medtune.__version__ == importlib.metadata.version("medtune")
    out = subprocess.run([str(Path(sys.executable).parent / "medtune"), "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"medtune {medtune.__version__}"


# the Q-learning agent outside Ray, as docs/studies/lr.md shows it
README_EXAMPLE = """
import torch
from medtune.searchers.qlearning_agent import QLearningConfig, QLearningLRAgent

model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
agent = QLearningLRAgent(QLearningConfig(base_lr=1e-3), optimizer=optimizer, seed=0)
for epoch, (dice, loss) in enumerate([(0.1, 1.0), (0.2, 0.9), (0.3, 0.8), (0.35, 0.7), (0.4, 0.65), (0.41, 0.6)]):
    lr = agent.step(dice, loss)
print("ok", lr > 0)
"""


def _check_install(python: Path, medtune_cmd: Path, where: Path) -> None:
    """From ``where`` (outside the checkout, with its own cluster/ and searchers/ packages on PYTHONPATH)."""
    for name in ("cluster", "searchers"):
        (where / name).mkdir(parents=True, exist_ok=True)
        (where / name / "__init__.py").write_text("raise ImportError('the user's own package was imported')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    elsewhere = where.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    clean = subprocess.run([str(python), "-c", "import importlib.util as u; print([u.find_spec(n) for n in "
                            "('cluster', 'trainables', 'searchers', 'dashboards')])"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert clean.returncode == 0 and clean.stdout.strip() == "[None, None, None, None]", clean.stdout + clean.stderr
    env["PYTHONPATH"] = str(where)
    version = subprocess.run([str(medtune_cmd), "--version"], capture_output=True, text=True, cwd=where, env=env,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.strip().startswith("medtune 0."), version.stdout + version.stderr
    specs = subprocess.run([str(medtune_cmd), "specs"], capture_output=True, text=True, cwd=where, env=env, timeout=120)
    assert specs.returncode == 0 and "lr-schedulers" in specs.stdout, specs.stderr[-2000:]
    example = subprocess.run([str(python), "-c", README_EXAMPLE], capture_output=True, text=True, cwd=where, env=env,
                             timeout=300)
    assert example.returncode == 0 and example.stdout.strip() == "ok True", example.stderr[-2000:]


def test_the_editable_install_serves_only_the_medtune_namespace(tmp_path):
    bindir = Path(sys.executable).parent
    _check_install(Path(sys.executable), bindir / "medtune", tmp_path / "user-project")


@pytest.mark.timeout(900)
def test_a_wheel_built_from_the_checkout_installs_one_namespace(tmp_path):
    """``pip wheel`` of the checkout, installed without dependencies into a fresh venv that sees this environment's
    packages (torch, Ray, MLflow...), so no download is needed."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("medtune-*.whl")
    import zipfile

    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"medtune"}, tops
    assert "medtune/cluster/specs/lr-schedulers.yaml" in zipfile.ZipFile(wheel).namelist()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    # the outer environment's packages, but not its editable medtune
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "torch").exists())
    python = env_dir / "bin" / "python"
    inner_site = next((env_dir / "lib").glob("python3*/site-packages"))
    (inner_site / "outer.pth").write_text(str(site) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(tmp_path / "target"), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    (inner_site / "aaa-medtune.pth").write_text(str(tmp_path / "target") + "\n")
    launcher = tmp_path / "medtune-cmd"
    launcher.write_text(f"#!/bin/sh\nexec {python} -c 'import sys; from medtune.cluster.cli.main import main; "
                        "sys.exit(main())' \"$@\"\n")
    launcher.chmod(0o755)
    where = tmp_path / "user-project"
    probe = subprocess.run([str(python), "-c", "import medtune; print(medtune.__file__)"], capture_output=True,
                           text=True, cwd="/", timeout=120)
    assert probe.returncode == 0 and str(tmp_path / "target") in probe.stdout, probe.stdout + probe.stderr
    _check_install(python, launcher, where)
    shutil.rmtree(wheels)
