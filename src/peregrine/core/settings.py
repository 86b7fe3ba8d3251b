"""Layered settings: defaults, then a TOML file, then the environment, then flags.

Settings are frozen dataclasses. A ``Section`` groups one face's settings
(``[http]``, ``[vector]``...); the root settings class holds process-wide
fields and one field per section. Every setting has one name, spelled the
same way in every layer: ``port`` of section ``http`` is ``[http] port`` in
the file, ``PEREGRINE_HTTP_PORT`` in the environment and ``--http-port`` on
the command line; a top-level ``data`` is ``data``, ``PEREGRINE_DATA`` and
``--data``. Unknown names in the file or among the ``PEREGRINE_*``
variables are errors, not silent typos: a mistyped key variable must not
start a server without its key.

Each section validates itself (``validate``); this module only knows how to
read, coerce and merge.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from peregrine.core.errors import InvalidInputError

ENV_PREFIX = "PEREGRINE_"
S = TypeVar("S", bound="Section")


class Section:
    """Base of settings dataclasses; override ``validate`` to check values."""

    def validate(self: S) -> S:
        return self


@dataclasses.dataclass(frozen=True)
class Setting:
    """One leaf setting: where it lives and what type it parses to."""

    section: str  # "" for top-level settings
    name: str
    kind: Any  # bool, int, float, str or tuple[str, ...]
    help: str

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace(".", "-").replace("_", "-")


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Section)


def settings_of(root: type[Section]) -> Iterator[Setting]:
    """Every leaf setting of a root settings class, sections expanded."""
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):  # type: ignore[arg-type]
        kind = hints[f.name]
        if _is_section(kind):
            sub = typing.get_type_hints(kind)
            for g in dataclasses.fields(kind):
                yield Setting(f.name, g.name, sub[g.name], g.metadata.get("help", ""))
        else:
            yield Setting("", f.name, kind, f.metadata.get("help", ""))


def coerce(setting: Setting, value: Any, source: str) -> Any:
    kind = setting.kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(value)
            return float(value)
        if _is_str_tuple(kind):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise ValueError(value)
            return tuple(i.strip() for i in items if i.strip())
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    except ValueError:
        raise InvalidInputError(f"{source}: {setting.key} has an invalid value {value!r}"
                                ) from None


def _is_str_tuple(kind: Any) -> bool:
    return typing.get_origin(kind) is tuple and typing.get_args(kind)[:1] == (str,)


def load_settings(root: type[S], file: str | Path | None = None,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> S:
    """Merge the layers into ``root``; ``overrides`` are keyed by ``section.name``.

    ``PEREGRINE_CONFIG`` names the file when ``file`` is not given.
    """
    env = os.environ if env is None else env
    known = {s.key: s for s in settings_of(root)}
    values: dict[str, Any] = {}
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = env[ENV_PREFIX + "CONFIG"]
    if file is not None:
        try:
            document = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInputError(f"cannot read config file {file}: {exc}") from None
        for key, value in _flatten(document):
            if key not in known:
                raise InvalidInputError(f"{file}: unknown setting {key!r}")
            values[key] = coerce(known[key], value, str(file))
    by_env = {s.env: s for s in known.values()}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        setting = by_env.get(name)
        if setting is None:  # a typo, or a name from before settings had sections
            suffix = name.removeprefix(ENV_PREFIX).lower()
            near = [s.env for s in known.values() if s.name == suffix]
            hint = f"; did you mean {near[0]}?" if near else ""
            raise InvalidInputError(f"unknown setting in the environment: {name}{hint}")
        values[setting.key] = coerce(setting, raw, setting.env)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = coerce(known[key], value, known[key].flag)
    return build(root, values)


def _flatten(document: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in document.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                yield f"{key}.{sub}", item
        else:
            yield key, value


def build(root: type[S], values: Mapping[str, Any]) -> S:
    """``root`` from dotted keys (defaults for the rest), every section validated."""
    hints = typing.get_type_hints(root)
    top: dict[str, Any] = {}
    for f in dataclasses.fields(root):  # type: ignore[arg-type]
        kind = hints[f.name]
        if _is_section(kind):
            section = {k.split(".", 1)[1]: v for k, v in values.items()
                       if k.startswith(f.name + ".")}
            top[f.name] = kind(**section).validate()
        elif f.name in values:
            top[f.name] = values[f.name]
    return root(**top).validate()


def field(default: Any, help: str) -> Any:
    """A setting with its help text (shown by ``--help`` and in docs)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings are immutable: use a tuple")
    return dataclasses.field(default=default, metadata={"help": help})


__all__ = ["ENV_PREFIX", "Section", "Setting", "build", "coerce", "field", "load_settings",
           "settings_of", "types"]
