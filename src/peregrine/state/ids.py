"""Stored identifiers: HMAC-SHA256 of the caller's tenant and id with a secret, so
raw user and session ids never reach Redis or the local store."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable
from pathlib import Path

from peregrine.core.errors import InvalidInputError
from peregrine.core.fsio import write_atomic

_ID = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable ASCII, no spaces


def check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInputError(f"{kind} must be 1-256 printable ASCII characters, no spaces")
    return value


def load_secret(configured: str, data: Path,
                shared: Callable[[bytes], bytes | None] | None = None) -> bytes:
    """The configured secret; else the one the nodes on a shared Redis agreed on
    (``shared(proposal)`` sets it if absent and returns the one in force), kept
    under ``<data>/state/secret``; else one generated once there. Nodes must hash
    ids with the same secret to share sessions: set ``[state] secret`` explicitly
    in production, since a secret kept in Redis is readable by Redis's users."""
    if configured:
        return configured.encode()
    path = data / "state" / "secret"
    local = path.read_bytes().strip() if path.is_file() else None
    secret = local or os.urandom(32).hex().encode()
    if shared is not None:
        agreed = shared(secret)
        if agreed is not None:
            secret = agreed
    if secret != local:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secret)
        path.chmod(0o600)
    return secret


def stored_id(secret: bytes, tenant: str, kind: str, value: str) -> str:
    """Hex HMAC of (tenant, kind, id): stable, unlinkable without the secret."""
    message = b"\x00".join((tenant.encode(), kind.encode(), value.encode()))
    return hmac.digest(secret, message, hashlib.sha256).hex()


class StoredIds:
    """``stored_id`` with the secret bound and answers remembered: a session is
    read and written many times, and the HMAC plus the checks cost more than the
    rest of a memory hit. Bounded: the memo is dropped whole when full."""

    def __init__(self, secret: bytes, max_entries: int = 1 << 16) -> None:
        self._secret, self._max = secret, max_entries
        self._memo: dict[tuple[str, str, str], str] = {}

    def __call__(self, tenant: str, kind: str, value: str) -> str:
        key = (tenant, kind, value)
        found = self._memo.get(key)
        if found is None:
            check_id("tenant", tenant)
            check_id(f"{kind} id", value)
            found = stored_id(self._secret, tenant, kind, value)
            if len(self._memo) >= self._max:
                self._memo.clear()
            self._memo[key] = found
        return found
