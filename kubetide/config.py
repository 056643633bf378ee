"""Configuration: one YAML file, environment overrides, typed sections with clear errors.

Every component owns a frozen dataclass of its settings (defaults on the fields, a
``validate()`` method raising ``ValueError`` for bad values) and builds it from its section
of the file with :func:`build`, which names the offending field on any error::

    actuator:
      dry_run: true
      protected_namespaces: [kube-system, kube-public, kube-node-lease, kubetide]

Environment overrides, applied on top of the file:
- ``KUBETIDE_BOOTSTRAP`` → ``kafka.bootstrap_servers``;
- ``KUBETIDE__SECTION__KEY=value`` (double underscores separate levels; the value is
  parsed as YAML, so ``true``, ``3`` and ``[a, b]`` work): e.g. ``KUBETIDE__ACTUATOR__DRY_RUN=true``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "kubetide")


class ConfigError(ValueError):
    """A configuration problem, with the dotted path of the bad field in the message."""


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The merged configuration mapping: file (if any) + environment overrides."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = path or env.get("KUBETIDE_CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    if env.get("KUBETIDE_BOOTSTRAP"):
        data.setdefault("kafka", {})["bootstrap_servers"] = env["KUBETIDE_BOOTSTRAP"]
    for key, raw in env.items():
        if not key.startswith("KUBETIDE__"):
            continue
        parts = [p.lower() for p in key[len("KUBETIDE__"):].split("__") if p]
        if not parts:
            continue
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parts)} overrides a non-mapping value")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def section(config: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = config
    for p in path:
        node = node.get(p, {}) if isinstance(node, Mapping) else {}
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{'.'.join(path)}: expected a mapping, got {type(node).__name__}")
    return node


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple, frozenset, set):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else origin(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        ktp, vtp = args or (Any, Any)
        return {_coerce(k, ktp, f"{where}.{k}"): _coerce(v, vtp, f"{where}.{k}") for k, v in value.items()}
    return value


def build(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Build the settings dataclass ``cls`` from ``data``; errors name ``where.field``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(f"{where}.{key}: unknown setting (known: {', '.join(sorted(fields))})")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{where}.{exc}" if not str(exc).startswith(where) else str(exc)) from None
    return obj
