"""Build typed configs from plain dicts with errors that name the parameter and the fix."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter is unknown, missing or has a value outside what is allowed."""


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Instantiate the dataclass ``cls`` from ``values``.

    Nested dataclass fields are built recursively. ``where`` names the origin of the values
    (for example ``"params.yaml: train_tokenizer"``) and is used in every error message.

    Raises:
        ConfigError: an unknown key (the message lists the allowed ones) or a missing
            required key.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown parameter(s) {unknown}; allowed: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in values:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required parameter '{name}'")
            continue
        value = values[name]
        ftype = field.type if not isinstance(field.type, str) else _resolve(cls, field.type)
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = from_dict(ftype, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _resolve(cls: type, type_name: str) -> Any:
    import sys

    module = sys.modules[cls.__module__]
    return getattr(module, type_name, None)


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
