"""Build typed, frozen dataclass configurations from plain dicts (YAML, Tune configs).

``from_dict(Cls, data)`` checks, before anything runs: unknown keys (with the
nearest valid name suggested), wrong types (``int`` where ``float`` is wanted is
fine, ``bool`` for a number is not), nested dataclasses, tuples and lists; the
dataclass's own ``__post_init__`` checks ranges and cross-field rules. Every
failure is one :class:`~medtune.errors.InputError` line prefixed with the
field's dotted path, e.g. ``train.epochs=0 must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from medtune.errors import InputError, did_you_mean

__all__ = ["from_dict", "to_dict"]

T = TypeVar("T")  # a dataclass; not bound to one, so that classes made by make_dataclass count too


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (tuples/lists/dataclasses built)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except InputError as exc:
                errors.append(exc)
        raise errors[0]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise InputError(f"{path}={value!r} must be a mapping of {_type_name(tp)} fields")
        return from_dict(tp, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{path}={value!r} must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"{path}={value!r} must have exactly {len(args)} items")
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{path}={value!r} must be a mapping")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{path}={value!r} must be a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InputError(f"{path}={value!r} must be an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{path}={value!r} must be true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{path}={value!r} must be a string")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; every error is one line naming ``path.field``.

    Args:
        cls: a (frozen) dataclass; its ``__post_init__`` may raise ``ValueError``.
        data: the fields; missing ones take their defaults.
        path: the dotted prefix used in messages (``""`` for the top level).
    """
    data = data or {}
    prefix = f"{path}." if path else ""
    if not isinstance(data, dict):
        raise InputError(f"{path or 'spec'}={data!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]  # T is a dataclass
    for key in data:
        if key not in names:
            raise InputError(
                f"{prefix}{key} is not a known setting{did_you_mean(key, names)}; "
                f"valid keys here: {', '.join(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise InputError(f"{prefix}{exc}" if prefix and not str(exc).startswith(prefix) else str(exc)) from None
    except ValueError as exc:
        raise InputError(f"{prefix}{exc}") from None


def to_dict(obj: Any) -> Any:
    """The inverse: a dataclass (tree) as plain dicts and lists, tuples as lists (YAML/JSON-friendly)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
