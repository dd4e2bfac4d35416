"""mypy over the installed ``medtune`` namespace: ``python tests/typecheck.py [mypy options]`` (``make check``).

The package's folders install under other names (``cluster/`` is ``medtune.cluster``, see
``[tool.setuptools.package-dir]`` in pyproject.toml), and the editable install maps them with an import hook that mypy
does not follow, so ``mypy -p medtune`` alone would check ``medtune/`` only. This runs mypy's own build with the
sources named explicitly, each file under its ``medtune.`` module name, read from the same package-dir table; the
options come from ``[tool.mypy]``. Errors name the files in the checkout.
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build
from mypy.modulefinder import BuildSource
from mypy.util import FancyFormatter, count_stats

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    """Every module of the package by its installed name -> its file in the checkout."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = {}
    for package, folder in package_dir.items():
        base = ROOT / folder
        for f in sorted(base.rglob("*.py")):
            parts = f.relative_to(base).with_suffix("").parts
            if package == "medtune" and len(parts) > 1:
                continue  # a folder inside medtune/ would be its own entry in package-dir
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = f
    return out


def main(argv: list[str]) -> int:
    fscache = FileSystemCache()
    stdout, stderr = sys.stdout, sys.stderr
    # (a target is required; the sources below replace it)
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *argv, str(ROOT / "medtune")],
                                 stdout=stdout, stderr=stderr, fscache=fscache)
    options.fast_module_lookup = True  # imports of medtune.* resolve through the sources below
    sources = [BuildSource(str(path), name) for name, path in modules().items()]
    _, messages, blockers = run_build(sources, options, fscache, time.time(), stdout, stderr)
    n_errors, n_notes, n_files = count_stats(messages)
    formatter = FancyFormatter(stdout, stderr, options.hide_error_codes)
    if n_errors:
        print(formatter.format_error(n_errors, n_files, len(sources), blockers=blockers), flush=True)
        return 2 if blockers else 1
    print(formatter.format_success(len(sources)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
