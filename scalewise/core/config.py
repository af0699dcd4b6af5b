"""Build typed configs from plain dicts with errors that name the parameter and the fix."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter is unknown, missing or has a value outside what is allowed."""


def check_choice(name: str, value: Any, allowed: typing.Sequence[Any]) -> None:
    """Raise ConfigError ``<name>=<value> is unknown; allowed: [...]`` unless ``value`` is in ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is unknown; allowed: {list(allowed)}")


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Instantiate the dataclass ``cls`` from ``values``, checking and converting each type.

    Nested dataclass fields are built recursively. Numbers written the way YAML 1.1 reads as
    strings (``1e-3``, ``5e+3``) are accepted for float and int fields (an int must be
    integral). ``where`` names the origin of the values (for example
    ``"params.yaml: train_tokenizer"``) and is used in every error message.

    Raises:
        ConfigError: an unknown key (the message lists the allowed ones), a missing required
            key, or a value of the wrong type (the message names the field and its type).
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown parameter(s) {unknown}; allowed: {sorted(fields)}"
        )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in values:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required parameter '{name}'")
            continue
        kwargs[name] = coerce(values[name], hints.get(name, Any), f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the type annotation ``tp`` (converted where lossless).

    Handles ``bool``, ``int``, ``float``, ``str``, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
    ``dict[K, V]``, ``Literal[...]`` and nested dataclasses; anything else passes through.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} settings, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        return _to_int(value, where)
    if tp is float:
        return _to_float(value, where)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return type(value)(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


# Numbers in exponent form without a dot (``1e-3``, ``5e+3``): YAML 1.1 (PyYAML) reads them as strings.
_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _number_from_string(value: str) -> float | None:
    return float(value) if _EXPONENT_NUMBER.fullmatch(value.strip()) else None


def _to_float(value: Any, where: str) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and (number := _number_from_string(value)) is not None:
        return number
    raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    number = _number_from_string(value) if isinstance(value, str) else value
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of ``cls``."""
    try:
        return typing.get_type_hints(cls)
    except NameError as exc:  # an annotation names something the module does not import
        raise TypeError(f"config {cls.__qualname__}: unresolvable field annotation ({exc})") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """The dataclass ``config`` as a plain (JSON/YAML-serialisable) dict."""
    return dataclasses.asdict(config)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
