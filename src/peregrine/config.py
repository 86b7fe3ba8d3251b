"""Server configuration: defaults, then a TOML file, then environment, then flags.

Every setting has one name used everywhere: ``port`` is ``port = 6333`` in the
file, ``PEREGRINE_PORT`` in the environment and ``--port`` on the command line.
docs/server.md lists them all.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from peregrine.core.errors import InvalidInputError
from peregrine.runtime import idle_poll

ENV_PREFIX = "PEREGRINE_"


@dataclass(frozen=True)
class ServerConfig:
    # storage
    data: str = "./data"
    snapshots: str = ""  # default: <data>/snapshots
    fsync: str = "group"  # "always" | "group" | "never"
    # network
    host: str = "127.0.0.1"
    port: int = 6333
    tls_cert: str = ""
    tls_key: str = ""
    keep_alive_s: int = 75  # idle keep-alive connections are closed after this
    # security
    api_key: str = ""
    read_only_api_key: str = ""
    # limits
    max_body_bytes: int = 32 << 20
    max_snapshot_bytes: int = 16 << 30
    max_batch: int = 10_000  # points per upsert/delete, searches per batch
    max_limit: int = 10_000  # k, scroll page size
    request_timeout_s: float = 30.0
    # performance
    workers: int = 0  # engine threads; 0 = 4 x CPU cores
    inline_reads: bool = True  # a read with no other engine work in flight skips the pool
    cache_entries: int = 10_000  # result cache; 0 disables
    cache_bytes: int = 64 << 20
    idle_poll: bool = False  # keep idle CPUs polling, not halting (core/idle_poll.py)
    # observability
    log_level: str = "info"
    access_log: bool = True
    tracing: bool = False  # also on when OTEL_TRACES_EXPORTER names an exporter
    # What GET / reports as "version": the Qdrant API level served, so that
    # qdrant-client's compatibility check passes.
    # 1.16: clients 1.15-1.17 accept it silently; newer ones only warn.
    qdrant_version: str = "1.16.0"

    def engine_threads(self) -> int:
        return self.workers if self.workers > 0 else 4 * (os.cpu_count() or 1)

    def snapshot_dir(self) -> Path:
        return Path(self.snapshots) if self.snapshots else Path(self.data) / "snapshots"

    def validate(self) -> ServerConfig:
        if self.fsync not in ("always", "group", "never"):
            raise InvalidInputError("fsync must be 'always', 'group' or 'never'")
        if not 0 <= self.port <= 65535:
            raise InvalidInputError("port must be between 0 and 65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidInputError("TLS needs both tls_cert and tls_key")
        if self.api_key and self.api_key == self.read_only_api_key:
            raise InvalidInputError("api_key and read_only_api_key must differ")
        for name in ("max_body_bytes", "max_batch", "max_limit"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be positive")
        if self.request_timeout_s <= 0:
            raise InvalidInputError("request_timeout_s must be positive")
        if self.idle_poll and not idle_poll.available():
            raise InvalidInputError("idle_poll needs Linux (SCHED_IDLE and CPU affinity)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise InvalidInputError("log_level must be debug, info, warning or error")
        return self


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    try:
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in (int, "int"):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind in (float, "float"):
            return float(value)
        return str(value)
    except ValueError:
        raise InvalidInputError(f"{source}: {name} has an invalid value {value!r}") from None


def load_config(file: str | Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """Merge the layers; unknown keys in the file are an error, not a silent typo."""
    env = os.environ if env is None else env
    kinds = {f.name: f.type for f in fields(ServerConfig)}
    values: dict[str, Any] = {}
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = env[ENV_PREFIX + "CONFIG"]
    if file is not None:
        try:
            document = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInputError(f"cannot read config file {file}: {exc}") from None
        for key, value in document.items():
            if key not in kinds:
                raise InvalidInputError(f"{file}: unknown setting {key!r}")
            values[key] = _coerce(key, kinds[key], value, str(file))
    for key, kind in kinds.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _coerce(key, kind, raw, ENV_PREFIX + key.upper())
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, kinds[key], value, "--" + key.replace("_", "-"))
    return replace(ServerConfig(), **values).validate()
