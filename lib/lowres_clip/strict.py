"""Strict building of typed dataclasses from mappings (profiles, parameters, cluster settings).

Unknown keys are errors naming their path and the accepted keys; values are checked against the
field annotations. Light: used by the configuration layer, imports nothing heavy.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from .settings import ConfigError

def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations of a foreign dataclass: check keys, not types
        return {}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against the type ``hint`` (light coercion: int -> float, list -> tuple)."""
    if hint is Any or hint is None:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {hint.__name__} fields, got {value!r}.")
        return from_dict(hint, value, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{path}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}.")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {args}, got {value!r}.")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{path}: expected a string, got {value!r}.")
        return str(value)
    if origin in (list, tuple, cabc.Sequence) or hint in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}.")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            inner = Any  # fixed-length tuples: length and items are the owner's to check
        else:
            inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or hint is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}.")
        return dict(value)
    return value


def from_dict(cls: type, data: Mapping[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) mapping, strictly.

    Unknown keys raise :class:`ConfigError` naming ``path.key`` and listing the accepted keys;
    values are type-checked against the field annotations; nested dataclass fields are built
    recursively. Validation errors of the dataclass itself (``__post_init__`` / ``validate``)
    become :class:`ConfigError` too.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"unknown key '{where}' for {cls.__name__}; accepted keys: {', '.join(fields)}.")
    hints = _type_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k, Any), f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from exc
    return obj
