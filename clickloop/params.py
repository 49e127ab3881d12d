"""Typed configuration: each stage has a config dataclass, filled from its params.yaml section.

Unknown keys are an error (a typo in params.yaml must not silently fall back to a default);
missing keys take the dataclass default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

PARAMS_FILE = Path(os.environ.get("CLICKLOOP_PARAMS", "params.yaml"))


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def section(name: str, cls: type[T], path: str | os.PathLike[str] = PARAMS_FILE) -> T:
    """The `name` section of params.yaml as a `cls` instance."""
    return from_dict(cls, load_params(path).get(name) or {}, where=name)


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a (nested) mapping, checking keys."""
    if not isinstance(values, dict):
        raise TypeError(f"params {where or cls.__name__}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"params {where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            if dataclasses.is_dataclass(arm) and isinstance(value, dict):
                return from_dict(arm, value, where)
        return value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is dict and isinstance(value, dict):
        value_hint = typing.get_args(hint)[1]
        return {key: _coerce(value_hint, item, f"{where}.{key}") for key, item in value.items()}
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data (for reports)."""
    return dataclasses.asdict(config)
