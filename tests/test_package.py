"""The installed package: one ``medtune`` namespace, a light root, a public API, and a house without circles.

* The import graph of every module of the package is read with :mod:`ast` (function-level imports included, so a
  circle hidden in a function counts): no module names ``cluster``, ``trainables``, ``searchers`` or
  ``dashboards`` as a top-level package, no import goes from a lower layer to a higher one, and no two modules
  reach each other.
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


def test_importing_medtune_and_its_cores_loads_neither_ray_nor_mlflow():
    code = ("import sys, medtune, medtune.searchers, medtune.searchers.qlearning_agent; "
            "from medtune import InputError, QLearningLRAgent, GreedyLR, EffortController; "
            "heavy = sorted(m for m in ('ray', 'mlflow') if m in sys.modules); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_version_is_one_string_in_the_package_the_distribution_and_the_cli():
    import importlib.metadata

    import medtune

    assert medtune.__version__ == importlib.metadata.version("medtune")
    out = subprocess.run([str(Path(sys.executable).parent / "medtune"), "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"medtune {medtune.__version__}"


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
