"""Small helpers every layer shares: value checks for hand-written config validation, and atomic file writes.

Nothing here imports Ray, MLflow or torch.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np

__all__ = ["atomic_write", "float3", "int3", "is_int", "is_number", "lazy_exports", "secret_file", "single_threaded"]


def is_int(x: object) -> TypeGuard[int | np.integer]:
    """True for a Python or numpy integer, False for ``bool`` (``True`` is not a count)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def int3(values: Iterable[Any]) -> tuple[int, int, int]:
    """Three values as ints (a 3D shape, patch size or stride); ValueError unless there are exactly three."""
    a, b, c = (int(v) for v in values)
    return a, b, c


def float3(values: Iterable[Any]) -> tuple[float, float, float]:
    """Three values as floats (a 3D spacing); ValueError unless there are exactly three."""
    a, b, c = (float(v) for v in values)
    return a, b, c


def is_number(x: object) -> TypeGuard[int | float | np.integer | np.floating]:
    """True for a finite Python or numpy int or float, False for ``bool``, NaN and infinities."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(binary_file)`` so that a reader sees the old file or the whole new one.

    The bytes go to a temporary file beside ``path``, are fsynced, then renamed over it; on any error the
    temporary file is removed and ``path`` is untouched. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names load on first use (PEP 562).

    Args:
        package: the package's ``__name__`` (for the error message).
        names: public name -> the module that defines it, e.g. ``{"GreedyLR": "medtune.searchers.greedy_lr"}``.

    A package's ``__init__`` can so list its whole API in ``__all__`` without importing Ray, MLflow or torch
    until a name that needs them is used.
    """
    import importlib
    import sys

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__


def secret_file(path: str | os.PathLike, generate: Callable[[], str]) -> Path:
    """The secret kept in ``path`` (mode 0600), written once with ``generate()`` when it is missing.

    The file is created with ``O_EXCL`` and mode 0600 from the start, so the secret is never readable by
    others, not even for a moment; an existing file keeps its content and is set back to 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # written by a concurrent caller
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(generate())
    os.chmod(path, 0o600)
    return path


def single_threaded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with torch's intra-op thread pool at one thread, then restore the caller's count.

    A multi-threaded torch reduction (a mean, a standard deviation, a resampling) splits its sum by thread, so
    its last bits depend on how many threads the machine gives it. Data prepared outside a trial (a driver, a
    notebook: :func:`medtune.trainables.lr_data.load_split`) goes through this decorator, so the same spec gives the
    same arrays on a 2-core laptop and a 64-core node, with or without ``OMP_NUM_THREADS``, and the same arrays
    as a trial's cache (which runs on ``resources.cpus_per_trial`` threads, one by default). torch is imported
    only when ``fn`` is called.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper
