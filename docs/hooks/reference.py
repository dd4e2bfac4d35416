"""MkDocs hook: the reference pages, generated at build time from the code so they cannot drift from it.

- ``reference/spec.md``: every key of every study's spec, walked from the study registry
  (:data:`medtune.cluster.studies.registry.STUDIES`: each study's spec dataclass and, recursively, the dataclasses
  its fields hold), plus the suite spec. Per key: its type, its default and its documentation, read from the class
  docstrings' ``Attributes:`` (or ``Args:``) sections and the comments beside or above the field; a class built
  with ``make_dataclass`` (no source, or a ``TYPE_CHECKING`` stand-in) takes the text of a field no source declares
  from a dataclass of its module with a field of that name.
- ``reference/lr-methods.md``: ``medtune.searchers.lr_methods.markdown_table()`` (guarded: a version without it
  builds, with a line saying so).
- ``reference/api.md``: one mkdocstrings block per public name of ``medtune`` and ``medtune.dashboards`` (their
  ``_PUBLIC`` tables, the names ``import medtune`` loads on first use).

``tests/test_docs.py`` imports this file to check the generated pages, and builds the site with ``--strict``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import io
import logging
import re
import shutil
import sys
import tempfile
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

from medtune.cluster.studies.registry import STUDIES

log = logging.getLogger("mkdocs.hooks.reference")

SECTION = re.compile(r"^(Attributes|Args|Arguments|Fields|Parameters):\s*$")
ENTRY = re.compile(r"^([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
ROLE = re.compile(r":(?:class|func|mod|data|meth|attr|exc|obj):`~?([^`]+)`")


# --- reading the field docs ---------------------------------------------------------------------------------------

def docstring_fields(doc: str | None) -> dict[str, str]:
    """``{field: text}`` from a Google-style docstring's ``Attributes:`` / ``Args:`` sections.

    An entry is ``name: text`` (or ``a, b: text`` for several names) at the section's first indent; deeper lines
    continue it; the section ends at the first line that is not indented.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        if not SECTION.match(lines[i]):
            i += 1
            continue
        i += 1
        base, entry = None, None
        while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
            line = lines[i]
            i += 1
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            base = indent if base is None else base
            match = ENTRY.match(line.strip())
            if indent == base and match:
                entry = [match.group(2)]
                for name in match.group(1).split(","):
                    out[name.strip()] = entry
            elif entry is not None:
                entry.append(line.strip())
    return {name: " ".join(parts).strip() for name, parts in out.items()}


def comment_fields(cls: type) -> dict[str, str]:
    """``{field: text}`` from the comments of a class's own source: the comment ending a field's line, else the
    comment lines directly above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.line[:tok.start[1]].strip() == "", tok.string.lstrip("#").strip())
    node = ast.parse(source).body[0]
    out = {}
    for stmt in getattr(node, "body", []):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        trailing = [text for line, (alone, text) in comments.items()
                    if stmt.lineno <= line <= stmt.end_lineno and not alone]
        above, line = [], stmt.lineno - 1
        while line in comments and comments[line][0]:
            above.insert(0, comments[line][1])
            line -= 1
        text = " ".join(trailing) or " ".join(above)
        if text:
            out[stmt.target.id] = text
    return out


def own_docs(cls: type) -> dict[str, str]:
    """The fields documented by ``cls`` and its bases (docstrings, then comments, the subclass winning)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update(docstring_fields(klass.__dict__.get("__doc__")))
            docs.update(comment_fields(klass))
    return docs


def declared(cls: type) -> set[str]:
    """The fields the source of ``cls`` or of one of its bases declares (``name: type`` in the class body)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        except (OSError, TypeError, SyntaxError, IndexError):
            continue
        names |= {s.target.id for s in getattr(node, "body", [])
                  if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return names


def field_docs(cls: type) -> dict[str, str]:
    """Every documented field of ``cls``: :func:`own_docs`; for a field it leaves out that no source declares (a
    class built with ``make_dataclass``: it has no source, or only a ``TYPE_CHECKING`` stand-in of that name), a
    same-named field of another dataclass of its module."""
    docs = own_docs(cls)
    source = declared(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs and f.name not in source]
    if missing:
        module = sys.modules.get(cls.__module__)
        for other in vars(module).values() if module else ():
            if other is cls or not (isinstance(other, type) and dataclasses.is_dataclass(other)):
                continue
            names = {f.name for f in dataclasses.fields(other)}
            if not names & set(missing):
                continue
            found = own_docs(other)
            for name in list(missing):
                if name in names and name in found:
                    docs[name] = found[name]
                    missing.remove(name)
    return docs


def markdown(text: str) -> str:
    """reStructuredText roles and double backticks as Markdown code; safe in a table cell."""
    text = ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1] if m.group(0).count('~') else m.group(1)}`", text)
    parts = text.replace("``", "`").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("|", "&#124;") for i, p in enumerate(parts))


# --- types and defaults --------------------------------------------------------------------------------------------

def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls`` (a field that does not resolve keeps its string)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation naming a TYPE_CHECKING-only import: resolve field by field
        namespace = vars(sys.modules[cls.__module__])
        out = {}
        for f in dataclasses.fields(cls):
            try:
                out[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307
            except Exception:  # noqa: BLE001
                out[f.name] = f.type
        return out


def nested(tp: Any) -> Iterator[type]:
    """The dataclasses a field's type holds (``X``, ``X | None``, ``tuple[X, ...]``, ``dict[str, X]``)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        yield tp
    for arg in typing.get_args(tp):
        yield from nested(arg)


def type_name(f: dataclasses.Field, tp: Any) -> str:
    if isinstance(f.type, str):
        return f.type
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def value(v: Any) -> str:
    """A default as YAML would spell it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v else '""'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(v):
        return "its section's defaults"
    return f"`{value(v)}`"


def anchor(cls: type) -> str:
    return cls.__name__.lower()


# --- the spec reference --------------------------------------------------------------------------------------------

def study_specs() -> list[tuple[str, type]]:
    """``(study name, spec class)`` of every registered study, then the suite spec (not a study of the registry)."""
    specs = [(name, study.spec) for name, study in STUDIES.items()]
    suite = getattr(importlib.import_module("medtune.cluster.studies.suite"), "SuiteSpec", None)
    if suite is not None:
        specs.append(("suite", suite))
    return specs


def walk(cls: type, seen: dict[type, list[str]], path: str = "") -> None:
    """Record every dataclass under ``cls`` with the dotted spec paths it appears at."""
    resolved = hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        for sub in nested(resolved.get(f.name)):
            where = f"{path}{f.name}"
            if sub not in seen:
                seen[sub] = []
                walk(sub, seen, f"{where}.")
            if where not in seen[sub]:
                seen[sub].append(where)


def field_table(cls: type) -> list[str]:
    docs, resolved = field_docs(cls), hints(cls)
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = resolved.get(f.name)
        kind = f"`{type_name(f, tp)}`"
        links = [f"[{sub.__name__}](#{anchor(sub)})" for sub in nested(tp)]
        if links:
            kind += " (" + ", ".join(links) + ")"
        rows.append(f"| `{f.name}` | {kind} | {default(f)} | {markdown(docs.get(f.name, ''))} |")
    return rows


def first_paragraph(cls: type) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return markdown(doc.split("\n\n", 1)[0]) if doc else ""


def spec_reference() -> str:
    specs = study_specs()
    lines = [
        "# Spec reference",
        "",
        "Generated when the site is built, from the typed configuration: the study registry's spec classes and the "
        "frozen dataclasses their sections are made of. Types, defaults and texts are the code's own; a key "
        "without a text has none in the code yet. A spec is checked against these classes before anything "
        "starts: an unknown key, a wrong type or an out-of-range value is one line and exit status 2.",
        "",
        "The built-in specs (`medtune specs` lists them) set some keys differently from these defaults: "
        "`cluster/specs/<name>.yaml` holds each, every key commented.",
        "",
    ]
    seen: dict[type, list[str]] = {}
    for _name, cls in specs:
        walk(cls, seen)
    for name, cls in specs:
        lines += [f"## `{name}`: {cls.__name__} {{#{anchor(cls)}}}", "",
                  f"`{cls.__module__}.{cls.__qualname__}`. {first_paragraph(cls)}", ""]
        lines += field_table(cls) + [""]
    lines += ["## Sections", "", "The dataclasses the specs' sections are built from, each once, with the keys "
              "it appears under.", ""]
    for cls, paths in seen.items():
        if cls in dict(specs).values():
            continue
        where = ", ".join(f"`{p}`" for p in paths)
        lines += [f"### {cls.__name__} {{#{anchor(cls)}}}", "",
                  f"`{cls.__module__}.{cls.__qualname__}`, under {where}. {first_paragraph(cls)}", ""]
        lines += field_table(cls) + [""]
    return "\n".join(lines)


# --- the LR method table -------------------------------------------------------------------------------------------

def lr_method_table() -> str:
    head = ["# LR methods", "", "Every method of the learning-rate study, generated from the code when the site "
            "is built.", ""]
    try:
        module: types.ModuleType | None = importlib.import_module("medtune.searchers.lr_methods")
    except ImportError:
        module = None
    table = getattr(module, "markdown_table", None)
    if callable(table):
        return "\n".join(head + [table(), ""])
    log.info("medtune.searchers.lr_methods has no markdown_table(): the LR methods page lists nothing")
    return "\n".join(head + ["This version of medtune has no `medtune.searchers.lr_methods.markdown_table()` to "
                             "generate the table from.", ""])


# --- the Python API ------------------------------------------------------------------------------------------------

API_PACKAGES = ("medtune", "medtune.dashboards")


def api_reference() -> str:
    lines = ["# Python API", "", "Generated from the docstrings of the public names (`__all__`) of `medtune` and "
             "`medtune.dashboards`. `import medtune` is light: each name below loads its module the first time "
             "it is used.", ""]
    for package in API_PACKAGES:
        public = importlib.import_module(package)._PUBLIC
        lines += [f"## `{package}`", ""]
        for name, module in public.items():
            lines += [f"::: {module}.{name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


# --- where mkdocstrings reads the source -----------------------------------------------------------------------------

_MIRROR: list[Path] = []


def source_tree() -> Path:
    """A folder holding ``medtune/`` as one tree: the root package's files and, linked in, each subpackage that is
    installed from a folder of its own (``cluster/`` as ``medtune.cluster``, ...), so a static reader of the source
    (griffe) finds ``medtune.cluster.studies.compare`` where Python imports it from."""
    root = Path(next(iter(importlib.util.find_spec("medtune").submodule_search_locations)))
    for package in API_PACKAGES:
        for module in importlib.import_module(package)._PUBLIC.values():
            importlib.import_module(module)
    for _name, cls in study_specs():
        importlib.import_module(cls.__module__)
    mirror = Path(tempfile.mkdtemp(prefix="medtune-docs-"))
    _MIRROR.append(mirror)
    package = mirror / "medtune"
    package.mkdir()
    for child in root.iterdir():
        (package / child.name).symlink_to(child)
    for name in sorted({m.split(".")[1] for m in list(sys.modules) if m.startswith("medtune.")}):
        spec = importlib.util.find_spec(f"medtune.{name}")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if locations and not (package / name).exists():
            (package / name).symlink_to(locations[0])
    return mirror


@event_priority(100)  # before mkdocstrings reads its handlers' settings
def on_config(config):  # noqa: ANN001 - MkDocs' hook signature
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {}).setdefault("paths", []).insert(0, str(source_tree()))
    return config


def on_shutdown() -> None:
    while _MIRROR:
        shutil.rmtree(_MIRROR.pop(), ignore_errors=True)


PAGES = {
    "reference/spec.md": spec_reference,
    "reference/lr-methods.md": lr_method_table,
    "reference/api.md": api_reference,
}


def on_files(files, config):  # noqa: ANN001 - MkDocs' hook signature
    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files
