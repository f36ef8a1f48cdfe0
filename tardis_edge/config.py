"""Typed configs: one dataclass per stage, loaded from defaults <- YAML file <- ``--key=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key and the known ones. The resolved
config is saved in every run folder and travels inside every checkpoint. Training builds its stage configs with
it; export rebuilds them from a checkpoint with ``from_dict``. No torch import.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the field's annotated type, or raise naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"config key {key!r}: cannot use {value!r} as {annotation}: {'; '.join(errors)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config key {key!r}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise TypeError(f"config key {key!r}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(f"config key {key!r}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise TypeError(f"config key {key!r}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise TypeError(f"config key {key!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise TypeError(f"config key {key!r}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise TypeError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise TypeError(f"config key {key!r}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise KeyError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"known keys: {', '.join(prefix + k for k in fields)}"
        )
    kwargs = {name: _convert(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML/JSON-friendly dict of a (nested) config dataclass."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "--c=x"]`` -> ``{"a": {"b": "1"}, "c": "x"}`` (values converted later by type)."""
    out: dict[str, Any] = {}
    for item in items:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ValueError(
                f"override {item!r} must look like --key=value (nested keys with dots: --distill.epochs=5)"
            )
        key, value = text.split("=", 1)
        key = key.replace("-", "_")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file <- ``--key=value`` overrides, type-checked."""
    import yaml

    data = to_dict(cls())
    if yaml_path is not None:
        p = Path(yaml_path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} not found")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping at the top level, got {type(loaded).__name__}")
        data = merge(data, loaded)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    import yaml

    from tardis_edge.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
