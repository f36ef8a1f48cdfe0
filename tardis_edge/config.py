"""Typed configs: one dataclass per stage, loaded from defaults <- YAML file <- ``--key=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key and the known ones. The resolved
config is saved in every run folder and travels inside every checkpoint. Training builds its stage configs with
it; export rebuilds them from a checkpoint with ``from_dict``. No torch import.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError, TypeError):
    """A config value of the wrong type, or a config file that cannot be used (the message names the key/file)."""


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
        raise ConfigError(f"config key {key!r}: cannot use {value!r} as {annotation}: {'; '.join(errors)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
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
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    if annotation is Path:
        return Path(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
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


def config_differences(
    old: dict[str, Any],
    new: dict[str, Any],
    ignore: set[str] = frozenset(),
    prefix: str = "",  # type: ignore[assignment]
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every field that differs between two config dicts (nested dicts
    walked, keys in ``ignore`` skipped), sorted by key."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        name = prefix + key
        if name in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, ignore, name + ".")
        elif a != b:
            out.append((name, a, b))
    return out


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file <- ``--key=value`` overrides, type-checked."""
    import yaml

    data = to_dict(cls())
    if yaml_path is not None:
        p = Path(yaml_path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"config file {p}{where}: not valid YAML ({problem}); fix the file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} is not a text (UTF-8) file; pass a YAML config") from None
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


def field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field of dataclass ``cls`` in its source (empty when the source is not at hand)."""
    import inspect
    import re

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments = {}
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if match and match.group(1) in names:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def options_help(cfg: Any, changed_by: str = "", changed: Any = None, prefix: str = "") -> str:
    """One line per config field: ``--section.key=DEFAULT  comment``, for an entry point's ``--help``.

    Args:
        cfg: a config dataclass instance holding the defaults to show.
        changed_by: name of an alternative set of defaults (e.g. ``"demo"``) ...
        changed: ... and that instance: where a value differs, the line says ``[demo: VALUE]``.
        prefix: key prefix for nested sections (internal).
    """
    lines = []
    comments = field_comments(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        other = getattr(changed, f.name) if changed is not None else None
        if dataclasses.is_dataclass(value):
            lines.append(options_help(value, changed_by, other, prefix=f"{prefix}{f.name}."))
            continue

        def shown(v: Any) -> str:
            v = to_dict(v) if not isinstance(v, (list, tuple)) else [to_dict(x) for x in v]
            return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)

        line = f"  --{prefix}{f.name}={shown(value)}"
        if changed is not None and to_dict(other) != to_dict(value):
            line += f"  [{changed_by}: {shown(other)}]"
        if f.name in comments:
            line = f"{line:<48}  {comments[f.name]}" if len(line) < 48 else f"{line}  {comments[f.name]}"
        lines.append(line)
    return "\n".join(lines)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` that shows each option's default, unless its help text already names one (``default ...``)
    or there is none to show (None, False, a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        if isinstance(default, (list, tuple)) and not default:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"
