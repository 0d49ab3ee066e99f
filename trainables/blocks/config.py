"""Typed method configs built from plain dicts, with one-line errors that name the field.

Each method declares a dataclass (nested dataclasses allowed) whose fields carry a docstring and
a type; `build` turns a dict (from YAML, `--set` or Ray Tune) into it, rejecting unknown keys,
wrong types and, through the dataclass's optional `check()` method, out-of-range values.

YAML (search-space files and `--set` values, read with `read_yaml`) turns unquoted `off`, `no`, `null` or
`007` into False, None or 7 before anyone knows which field they are for. `read_yaml` keeps each such
scalar as a `Plain` (the value YAML reads and the text the user wrote); `coerce` and `thaw` then give a field
the value when its type takes it, and otherwise the text: `autocast: off` is the string "off", while
`double_quant: off` stays False.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the dotted field name."""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclasses.dataclass(frozen=True)
class Plain:
    """An unquoted YAML scalar that YAML reads as a bool, null or number: that value and the text as written."""

    value: Any
    text: str

    def __repr__(self) -> str:
        return repr(self.text)

    def pick(self, tp: Any) -> Any:
        """The value when `tp` takes it, else the text when `tp` takes that (a string field), else the value
        (whose error then names it as YAML read it)."""
        if tp is Any:
            return self.value
        for candidate in (self.value, self.text):
            try:
                coerce(candidate, tp, "")
                return candidate
            except ConfigError:
                continue
        return self.value


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader whose unquoted bool, null, int and float scalars (not mapping keys) come out as `Plain`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = super().construct_object(key_node, deep=True)  # keys as YAML reads them
            key = key.value if isinstance(key, Plain) else key
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found an unhashable key", key_node.start_mark) from None
            out[key] = self.construct_object(value_node, deep=deep)
        return out


def _plain_constructor(tag: str) -> Any:
    base = yaml.SafeLoader.yaml_constructors[tag]

    def construct(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        value = base(loader, node)
        return Plain(value, node.value) if node.style is None else value

    return construct


for _tag in ("bool", "null", "int", "float"):
    _PlainLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _plain_constructor(f"tag:yaml.org,2002:{_tag}"))


def read_yaml(text: str) -> Any:
    """YAML as `yaml.safe_load` reads it, except that unquoted bools, nulls and numbers are `Plain`:
    `thaw` (or `build`) turns them into what each field takes."""
    return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass


def thaw(value: Any, tp: Any = Any) -> Any:
    """`value` (from `read_yaml`) with every `Plain` replaced by what its field, typed by `tp`, takes;
    mappings follow a dataclass's fields (unknown keys: as YAML reads them)."""
    if isinstance(value, Plain):
        return value.pick(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        shaped = [o for o in get_args(tp) if dataclasses.is_dataclass(o) or get_origin(o) in (dict, list, tuple)]
        tp = shaped[0] if len(shaped) == 1 else Any
        origin = get_origin(tp)
    if isinstance(value, Mapping):
        if dataclasses.is_dataclass(tp):
            hints = get_type_hints(tp)
            return {k: thaw(v, hints.get(k, Any)) for k, v in value.items()}
        item_tp = get_args(tp)[1] if origin is dict and get_args(tp) else Any
        return {k: thaw(v, item_tp) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        item_tp = get_args(tp)[0] if origin in (list, tuple) and get_args(tp) else Any
        return [thaw(v, item_tp) for v in value]
    return value


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value  # a Plain stays one: the field it is for is known later (thaw)
    if isinstance(value, Plain):
        value = value.pick(tp)
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


# ---------------------------------------------------------------------------------------------
# Secrets: nothing token-like reaches MLflow, the report or a trial's artifacts
# ---------------------------------------------------------------------------------------------

REDACTED = "[redacted]"
_TOKEN_PATTERNS = re.compile(
    r"hf_[A-Za-z0-9]{20,}"                        # Hugging Face
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"                 # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}"  # GitHub
    r"|glpat-[\w-]{20,}|xox[abprs]-[\w-]{10,}"     # GitLab, Slack
    r"|sk-[A-Za-z0-9_-]{20,}"                     # OpenAI-style API keys
    r"|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}"       # JWTs
)
_SECRET_NAME_PARTS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS", "APIKEY"}
_SECRET_NAME_PAIRS = ("API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "SECRET_KEY", "AUTH_KEY")


def secret_name(name: str) -> bool:
    """Whether a variable or field name says it holds a secret (HF_TOKEN, AWS_SECRET_ACCESS_KEY, api_key; not
    max_new_tokens or TOKENIZERS_PARALLELISM)."""
    upper = name.upper().replace("-", "_").replace(".", "_")
    return bool(_SECRET_NAME_PARTS & set(upper.split("_"))) or any(p in upper for p in _SECRET_NAME_PAIRS)


_SECRET_FIELDS = {"token", "hf_token", "auth_token", "access_token", "api_token", "api_key", "secret", "password",
                  "secret_key", "access_key", "secret_access_key", "aws_secret_access_key", "private_key"}
"""Config keys whose string value is a credential (not `eos_token` or `max_new_tokens`, which name tokens)."""


def _looks_like_token(text: str) -> bool:
    """A whole value shaped like a random credential: 32+ characters of one word (letters, digits, + / = _ -)
    that mixes upper case, lower case and digits as randomly as base64 does (the class changes at 40% of
    the characters or more). Paths, hub ids (`MyOrg/WhisperLargeV3-Clinical2024`), hex digests and sentences
    are not."""
    if len(text) < 32 or re.fullmatch(r"[A-Za-z0-9+/=_-]+", text) is None or text.count("/") > 2:
        return False
    classes = [0 if c.isupper() else 1 if c.islower() else 2 for c in text if c.isalnum()]
    if len(set(classes)) < 3:
        return False
    changes = sum(a != b for a, b in zip(classes, classes[1:], strict=False))
    return changes >= 0.4 * len(text)


def redact_text(text: str) -> str:
    """`text` with the values of secret-named environment variables and token-shaped substrings replaced."""
    secrets = sorted((v for k, v in os.environ.items() if secret_name(k) and len(v) >= 8), key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _TOKEN_PATTERNS.sub(REDACTED, text)


def redact(value: Any, name: str = "") -> Any:
    """A config, params or tags structure with every secret-looking string redacted: values of secret-named
    keys, whole values shaped like a token, and secrets inside longer strings (`redact_text`)."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, name) for v in value]
    if isinstance(value, str):
        if value and (name.rsplit(".", 1)[-1].lower() in _SECRET_FIELDS or _looks_like_token(value)):
            return REDACTED
        return redact_text(value)
    return value


__all__ = [
    "ConfigError", "Plain", "build", "require", "to_dict", "flatten", "unflatten", "field_type", "merge", "read_yaml",
    "thaw", "redact", "redact_text", "REDACTED",
]
