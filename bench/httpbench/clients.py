"""Search clients (these run inside worker processes): ``make_client(kind, target)``."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from httpbench.common import COLLECTION, EF, FLOOR, INPROC_PAIRED, K, base_kind


class RequestError(RuntimeError):
    """A non-200 answer; the message names the exact request that misbehaved."""


def _json_codec() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any], str]:
    try:
        import orjson
    except ImportError:
        return (lambda obj: json.dumps(obj).encode()), json.loads, "json (stdlib)"
    return (lambda obj: orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)), orjson.loads, (
        f"orjson {orjson.__version__}")


class SearchClient:
    """One connection (or embedded handle) answering ``search(query) -> ids``."""

    encoder = ""

    def __init__(self) -> None:
        # Raw Server-Timing headers, parsed after the timed loop (parsing costs ~9 us,
        # which is the benchmark's bookkeeping, not the client's or the server's).
        self.server_timing: list[str] = []
        self.keep_timing = False
        self.reconnects = 0

    def search(self, q: np.ndarray) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class InProcess(SearchClient):
    """Peregrine's embedded engine, the same directory the server later serves."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        import peregrine

        self.db = peregrine.open(directory)
        self.col = self.db.collection(COLLECTION)

    def search(self, q: np.ndarray) -> list[int]:
        # The HTTP search returns no payload by default (as Qdrant's); neither does this.
        return [int(h.id) for h in self.col.search(q, k=K, ef=EF, with_payload=False)]

    def close(self) -> None:
        self.db.close()


class _KeepAlive(SearchClient):
    """A raw HTTP/1.1 keep-alive socket with TCP_NODELAY.

    The request is formatted in one go and the answer parsed only for its status,
    headers and body: the client costs microseconds, so what is measured is the
    server and the loopback, not a client library (``StdlibHttp`` measures
    ``http.client`` too, for reference).
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.sock: socket.socket | None = None
        self._connect()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self.sock is not None
        self.sock.sendall(request)
        status_line = self.rfile.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.partition(b":")
            headers[key.strip().lower().decode()] = value.strip().decode()
        if "content-length" in headers:
            data = self.rfile.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            data = b"".join(parts)
        else:
            raise ConnectionError("answer without a length")
        return status, headers, data

    def post(self, path: str, body: bytes, headers: dict[str, str]
             ) -> tuple[bytes, dict[str, str]]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for attempt in (0, 1):
            try:
                status, answer_headers, data = self._exchange(request)
                break
            except (OSError, ValueError, IndexError) as exc:
                # Servers close keep-alive connections idle for a while; like any HTTP
                # client, retry once on a fresh connection.
                self._connect()
                self.reconnects += 1
                if attempt:
                    raise RequestError(f"POST {path} ({headers.get('Content-Type')}, "
                                       f"{len(body)} B): {exc!r}") from None
        if status != 200:
            raise RequestError(f"POST {path} ({headers.get('Content-Type')}, {len(body)} B) "
                               f"-> {status}: {data[:300]!r}")
        return data, answer_headers

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class _StdlibKeepAlive(_KeepAlive):
    """The same exchange through ``http.client`` (what most Python code would use)."""

    def _connect(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.conn.connect()
        if self.conn.sock is not None:
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = None

    def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        path = lines[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in lines[2:])
        headers.pop("Content-Length", None)
        self.conn.request("POST", path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


class PeregrineHttp(_KeepAlive):
    """POST /collections/{name}/points/search with a JSON or a msgpack body."""

    def __init__(self, url: str, fmt: str) -> None:
        super().__init__(url)
        self._init_codec(fmt)

    def _init_codec(self, fmt: str) -> None:
        self.path = f"/collections/{COLLECTION}/points/search"
        if fmt == "msgpack":
            import msgpack

            self.headers = {"Content-Type": "application/msgpack",
                            "Accept": "application/msgpack"}
            self.encode: Callable[[np.ndarray], bytes] = lambda q: msgpack.packb(
                {"vector": np.asarray(q, "<f4").tobytes(), "limit": K})
            self.decode: Callable[[bytes], Any] = lambda b: msgpack.unpackb(b, raw=False)
            self.encoder = f"msgpack {'.'.join(map(str, msgpack.version))}"
        else:
            dumps, loads, self.encoder = _json_codec()
            self.headers = {"Content-Type": "application/json"}
            self.encode = lambda q: dumps({"vector": q, "limit": K})
            self.decode = loads

    def search(self, q: np.ndarray) -> list[int]:
        data, headers = self.post(self.path, self.encode(q), self.headers)
        if self.keep_timing:
            self.server_timing.append(headers.get("server-timing", ""))
        doc = self.decode(data)
        return [int(h["id"]) for h in doc["result"]]


class PeregrineStdlib(_StdlibKeepAlive, PeregrineHttp):
    """The JSON path through ``http.client``: a typical Python client's own cost."""


class QdrantHttp(SearchClient):
    """qdrant-client's REST transport against Peregrine (POST .../points/query)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        from qdrant_client import QdrantClient

        self.client = QdrantClient(url=url, prefer_grpc=False, timeout=60)
        self.encoder = "qdrant-client (pydantic models, httpx)"

    def search(self, q: np.ndarray) -> list[int]:
        # qdrant-client asks for payloads unless told not to; the other paths get none.
        res = self.client.query_points(COLLECTION, query=q.tolist(), limit=K, with_payload=False)
        return [int(p.id) for p in res.points]

    def close(self) -> None:
        self.client.close()


class ChromaClient(SearchClient):
    """Chroma's own ``HttpClient``; ids and distances only (what Peregrine returns)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import chromadb

        u = urlsplit(url)
        self.client = chromadb.HttpClient(host=u.hostname or "127.0.0.1", port=u.port or 8000)
        self.col = self.client.get_collection(COLLECTION, embedding_function=None)
        self.encoder = f"chromadb {chromadb.__version__}"

    def search(self, q: np.ndarray) -> list[int]:
        res = self.col.query(query_embeddings=[q], n_results=K, include=["distances"])
        return [int(i) for i in res["ids"][0]]


class ChromaRaw(_KeepAlive):
    """The request Chroma's client sends, posted with the same lean client as Peregrine's."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        base = "/api/v2/tenants/default_tenant/databases/default_database/collections"
        with urllib.request.urlopen(f"{url}{base}/{COLLECTION}", timeout=30) as r:
            cid = json.loads(r.read())["id"]
        self.path = f"{base}/{cid}/query"
        self.dumps, self.loads, self.encoder = _json_codec()
        self.headers = {"Content-Type": "application/json"}

    def search(self, q: np.ndarray) -> list[int]:
        body = self.dumps({"query_embeddings": [q], "n_results": K, "include": ["distances"]})
        data, _ = self.post(self.path, body, self.headers)
        return [int(i) for i in self.loads(data)["ids"][0]]


def make_client(kind: str, target: str) -> SearchClient:
    kind = base_kind(kind)
    if kind in ("inproc", INPROC_PAIRED):
        return InProcess(target)
    if kind in ("peregrine-json", FLOOR):
        return PeregrineHttp(target, "json")
    if kind == "peregrine-msgpack":
        return PeregrineHttp(target, "msgpack")
    if kind == "peregrine-json-stdlib":
        return PeregrineStdlib(target, "json")
    if kind == "qdrant-client":
        return QdrantHttp(target)
    if kind == "chroma":
        return ChromaClient(target)
    if kind == "chroma-raw":
        return ChromaRaw(target)
    raise ValueError(f"unknown client {kind!r}")


def parse_server_timing(header: str) -> dict[str, float]:
    """``parse;dur=0.02, engine;dur=0.31`` -> {"parse": 0.02, "engine": 0.31} (ms)."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        for param in rest.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
    return out
