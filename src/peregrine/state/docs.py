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
from peregrine.state.crdt import SharedDoc, UpdateLog, publish_pending

# What pycrdt may raise on bad input: its errors, and Rust panics, which pyo3 raises
# as a BaseException (pyo3_runtime.PanicException, not importable).
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)

log = logging.getLogger("peregrine.state")
T = TypeVar("T")

MAX_UPDATE_BYTES = 1 << 20  # one update applied through the API
MAX_DOC_BYTES = 16 << 20  # updates kept per document before edits are refused
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
            if self._thread is None or not self._thread.is_alive():
                self._loop = None
                ready = threading.Event()
                failed: list[BaseException] = []

                async def main() -> None:
                    try:
                        self._store = self._store or UpdateLog(self.log_path)
                    except BaseException as exc:
                        failed.append(exc)
                        ready.set()
                        return
                    self._loop = asyncio.get_running_loop()
                    self._stop = asyncio.Event()
                    ready.set()
                    await self._follow_hub(self._stop)

                self._thread = threading.Thread(target=asyncio.run, args=(main(),),
                                                name="state-docs", daemon=True)
                self._thread.start()
                ready.wait(10)
                if failed or self._loop is None:
                    self._thread = None
                    raise UnavailableError(f"shared documents are unavailable: "
                                           f"{failed[0] if failed else 'no thread'}")
            assert self._loop is not None
            return self._loop

    async def _connect(self) -> Any:
        """One bounded attempt at the hub (nats-py's own retries would never return
        while it is down); None when unreachable."""
        import nats

        assert self.nats_url is not None
        async def quiet(exc: Exception) -> None:
            log.debug("crdt hub: %s", exc)

        try:
            return await asyncio.wait_for(nats.connect(
                self.nats_url, connect_timeout=2, max_reconnect_attempts=-1,
                reconnect_time_wait=1, allow_reconnect=True, error_cb=quiet), 5)
        except (TimeoutError, Exception) as exc:
            log.debug("crdt hub unreachable: %s", exc)
            return None

    async def _follow_hub(self, stop: asyncio.Event) -> None:
        nc = None
        while not stop.is_set():
            try:
                if self.nats_url and nc is None:
                    nc = await self._connect()
                    if nc is not None:
                        self._js = nc.jetstream()
                        for doc in list(self._docs.values()):
                            await doc.connect(self._js)
                elif nc is not None and nc.is_connected:
                    for doc in list(self._docs.values()):
                        await doc.sync()
                    assert self._store is not None
                    for name in self._store.docs_pending():  # closed documents' edits
                        if name not in self._docs:
                            await publish_pending(self._js, self._store, name, self.node)
            except Exception as exc:  # the hub went away mid-way: next round
                log.debug("crdt sync deferred: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _SYNC_S)
        for doc in list(self._docs.values()):
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

        _check_values(changes)

        async def run() -> dict[str, Any]:
            from pycrdt import Map

            shared = await self._doc(name)
            self._check_size(shared.name)
            doc = shared.doc
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

    def _check_size(self, name: str) -> None:
        assert self._store is not None
        if self._store.size(name) > MAX_DOC_BYTES:
            raise InvalidInputError(f"the document holds over {MAX_DOC_BYTES} bytes of "
                                    "updates; no more edits are taken")

    def diff(self, name: str, since: bytes | None) -> bytes:
        """What a replica at state vector ``since`` lacks (everything when None)."""
        async def run() -> bytes:
            doc = (await self._doc(name)).doc
            try:
                return bytes(doc.get_update(since) if since else doc.get_update())
            except BaseException as exc:  # a malformed state vector
                if isinstance(exc, _FATAL):
                    raise
                raise InvalidInputError(f"not a Yjs state vector: {exc}") from None

        return self._call(run)

    def apply(self, name: str, update: bytes) -> None:
        """A client's Yjs update, applied as this node's own edit (logged, published)."""
        if len(update) > MAX_UPDATE_BYTES:
            raise InvalidInputError(f"an update is at most {MAX_UPDATE_BYTES} bytes")

        async def run() -> None:
            shared = await self._doc(name)
            self._check_size(shared.name)
            try:
                shared.doc.apply_update(update)
            except BaseException as exc:
                if isinstance(exc, _FATAL):
                    raise
                raise InvalidInputError(f"not a Yjs update: {exc}") from None

        self._call(run)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():  # never close the log under a live thread
                log.warning("the shared-document thread did not stop")
                return
        if self._store is not None:
            self._store.close()


def _check_values(changes: dict[str, Any]) -> None:
    """What Yjs can hold: numbers are doubles (integers past 2^53 are refused, not
    silently rounded or, past 2^63, a panic of the binding)."""
    stack: list[Any] = [changes]
    while stack:
        value = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, int):
            if abs(value) > 2**53:
                raise InvalidInputError("numbers in a document are doubles: integers must "
                                        "be within +-2^53")
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise InvalidInputError("numbers in a document must be finite")
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        else:
            raise InvalidInputError(f"a document holds JSON values, not {type(value).__name__}")
