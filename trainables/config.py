"""Typed method configs built from plain dicts, with one-line errors that name the field.

Each method declares a dataclass (nested dataclasses allowed) whose fields carry a docstring and
a type; `build` turns a dict (from YAML, `--set` or Ray Tune) into it, rejecting unknown keys,
wrong types and, through the dataclass's optional `check()` method, out-of-range values.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the dotted field name."""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # `X | None`: X's own error names the exact field
            return coerce(value, real[0], where)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(f"{where}: {value!r} fits none of the allowed forms ({'; '.join(errors)})")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _key_tp, value_tp = get_args(tp) or (str, Any)
        return {str(k): coerce(v, value_tp, _join(where, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {tp!r}")


def build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from `data`; missing keys take the defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{_join(where, unknown[0])}: unknown key (known: {', '.join(sorted(names))})"
        )
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_join(where, missing[0])}: required field missing")
    kwargs = {k: coerce(_onto_default(cls, k, v), hints[k], _join(where, k)) for k, v in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            if where:
                raise ConfigError(f"{where}.{exc}") from None
            raise
    return obj


def _onto_default(cls: type, name: str, value: Any) -> Any:
    """A mapping given for a nested-dataclass field, laid over that field's own default.

    `lora: LoraConfig = field(default_factory=lambda: LoraConfig(stacks=["decoder"]))` must keep
    stacks [decoder] when a file sets only `lora: {r: 4}`; building the mapping alone would fall back
    to LoraConfig's class defaults instead.
    """
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, Mapping) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return merge({k.name: getattr(default, k.name) for k in dataclasses.fields(default) if k.init}, value)


def require(condition: bool, field: str, message: str) -> None:
    """Raise a ConfigError naming `field` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _join(prefix, str(key))
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is a value, not a section")
        node[leaf] = value
    return out


def field_type(cls: type, dotted: str) -> Any:
    """The declared type of a dotted field of `cls` (for type-checking `--set` overrides)."""
    tp: Any = cls
    for i, part in enumerate(dotted.split(".")):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{dotted}: {'.'.join(dotted.split('.')[:i])} has no sub-fields")
        hints = get_type_hints(tp)
        if part not in hints:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(hints))})")
        tp = hints[part]
    return tp


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values in `override` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


__all__ = [
    "ConfigError", "build", "require", "to_dict", "flatten", "unflatten", "field_type", "merge"
]
