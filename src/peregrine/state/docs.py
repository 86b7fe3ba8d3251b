"""Shared documents served by one process: ``SharedDoc`` replicas on a thread of
their own, for the front door and the HTTP routes.

pycrdt documents are not thread-safe, so every replica lives on the hub thread's
event loop and callers reach them through ``DocHub``'s blocking methods. The
thread starts on first use and connects to the NATS hub (``nats-py`` reconnects
by itself); while the hub is unreachable the documents keep working locally and
their updates stay pending in the node's log until a periodic sync publishes
them. A document is the Yjs document its name stands for: its root map ``data``
holds JSON values (numbers are doubles, as in Yjs), and any Yjs client can sync
the whole document with state vectors and updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from peregrine.core.errors import InvalidInputError, UnavailableError
from peregrine.state.crdt import SharedDoc, UpdateLog

log = logging.getLogger("peregrine.state")
T = TypeVar("T")

MAX_UPDATE_BYTES = 1 << 20  # one update applied through the API
_SYNC_S = 1.0  # how often pending updates are offered to the hub again


class DocHub:
    def __init__(self, log_path: Path, nats_url: str | None, node: str,
                 max_docs: int = 1000) -> None:
        self.log_path, self.nats_url, self.node = log_path, nats_url, node
        self.max_docs = max_docs
        self._docs: OrderedDict[str, SharedDoc] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._stop: asyncio.Event | None = None
        self._store: UpdateLog | None = None
        self._js: Any = None

    # -- the thread --------------------------------------------------------------------
    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._started:
            if self._loop is None:
                ready = threading.Event()

                async def main() -> None:
                    self._loop = asyncio.get_running_loop()
                    self._stop = asyncio.Event()
                    self._store = UpdateLog(self.log_path)
                    ready.set()
                    await self._follow_hub(self._stop)

                self._thread = threading.Thread(target=asyncio.run, args=(main(),),
                                                name="state-docs", daemon=True)
                self._thread.start()
                if not ready.wait(10):
                    raise UnavailableError("the shared-document thread did not start")
            assert self._loop is not None
            return self._loop

    async def _follow_hub(self, stop: asyncio.Event) -> None:
        nc = None
        while not stop.is_set():
            if self.nats_url and nc is None:
                try:
                    import nats

                    nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1,
                                            reconnect_time_wait=1, connect_timeout=2,
                                            allow_reconnect=True)
                    self._js = nc.jetstream()
                    for doc in self._docs.values():
                        await doc.connect(self._js)
                except Exception as exc:  # offline: documents work locally
                    log.debug("crdt hub unreachable: %s", exc)
                    nc = None
            elif nc is not None and nc.is_connected:
                for doc in list(self._docs.values()):
                    with contextlib.suppress(Exception):
                        await doc.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _SYNC_S)
        for doc in self._docs.values():
            await doc.disconnect()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout_s: float = 10) -> T:
        loop = self._ensure_started()
        return asyncio.run_coroutine_threadsafe(fn(), loop).result(timeout_s)

    async def _doc(self, name: str) -> SharedDoc:
        doc = self._docs.get(name)
        if doc is None:
            assert self._store is not None
            doc = SharedDoc(name, self._store, self.node)
            self._docs[name] = doc
            if self._js is not None:
                with contextlib.suppress(Exception):  # offline: it follows on reconnect
                    await doc.connect(self._js)
            while len(self._docs) > self.max_docs:  # the least recently used leaves
                _, gone = self._docs.popitem(last=False)
                await gone.disconnect()
        self._docs.move_to_end(name)
        return doc

    # -- what callers use ----------------------------------------------------------------
    def read(self, name: str) -> dict[str, Any]:
        """The document's ``data`` map as JSON values."""
        async def run() -> dict[str, Any]:
            from pycrdt import Map

            value: dict[str, Any] = (await self._doc(name)).doc.get("data", type=Map).to_py()
            return value or {}

        return self._call(run)

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into ``data`` in one transaction (``None`` removes a key);
        the edit is logged durably and published to the hub."""
        if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
            raise InvalidInputError("changes must be an object with string keys")

        async def run() -> dict[str, Any]:
            from pycrdt import Map

            doc = (await self._doc(name)).doc
            data = doc.get("data", type=Map)
            with doc.transaction():
                for key, value in changes.items():
                    if value is None:
                        if key in data:
                            del data[key]
                    else:
                        data[key] = value
            result: dict[str, Any] = data.to_py() or {}
            return result

        return self._call(run)

    def state_vector(self, name: str) -> bytes:
        async def run() -> bytes:
            return bytes((await self._doc(name)).doc.get_state())

        return self._call(run)

    def diff(self, name: str, since: bytes | None) -> bytes:
        """What a replica at state vector ``since`` lacks (everything when None)."""
        async def run() -> bytes:
            doc = (await self._doc(name)).doc
            try:
                return bytes(doc.get_update(since) if since else doc.get_update())
            except Exception as exc:  # pycrdt raises on a malformed state vector
                raise InvalidInputError(f"not a Yjs state vector: {exc}") from None

        return self._call(run)

    def apply(self, name: str, update: bytes) -> None:
        """A client's Yjs update, applied as this node's own edit (logged, published)."""
        if len(update) > MAX_UPDATE_BYTES:
            raise InvalidInputError(f"an update is at most {MAX_UPDATE_BYTES} bytes")

        async def run() -> None:
            doc = (await self._doc(name)).doc
            try:
                doc.apply_update(update)
            except Exception as exc:
                raise InvalidInputError(f"not a Yjs update: {exc}") from None

        self._call(run)

    def close(self) -> None:
        if self._loop is None or self._stop is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self._store is not None:
            self._store.close()
