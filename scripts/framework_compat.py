"""Do LangChain's and LlamaIndex's Qdrant vector stores work unchanged against Peregrine?

The script drives each framework's own ``QdrantVectorStore`` (REST, ``url=...``,
``prefer_grpc=False``) through its public API against a Peregrine server, and prints one
``PASS``/``FAIL`` line per step. On a failure it also prints the HTTP exchanges of that
step that the server answered with an error (route, request body, response body), taken
from the qdrant-client's own ``httpx`` transport, and the server's access-log lines with
status >= 400. What is under test is the vector-store protocol, not embedding quality:
both frameworks get a deterministic embedding (a hash-seeded random unit vector per text,
dimension 64), so no model and no torch are needed.

How to run it: the frameworks are not dependencies of Peregrine, so they live in a
virtualenv of their own, outside the repository::

    python3 -m venv /work/venv-frameworks
    /work/venv-frameworks/bin/pip install langchain-qdrant langchain-core \\
        llama-index-vector-stores-qdrant llama-index-core
    /work/venv-frameworks/bin/python scripts/framework_compat.py

The script starts the server itself (``peregrine serve``, by default the one in the
repository's ``.venv``; ``--peregrine`` picks another) on a free loopback port with a
temporary data directory, and stops it with SIGTERM at the end. ``--only langchain`` or
``--only llamaindex`` runs one framework; ``--no-seed`` keeps a failed insert from being
worked around (by default, when a framework's own insert fails, the same points are
stored with plain array vectors so that the read steps after it still get exercised).
The exit status is 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DIM = 64
BODY_LIMIT = 1200

# -- deterministic embedding --------------------------------------------------------------


def hash_vector(text: str, dim: int = DIM) -> list[float]:
    """A unit vector seeded by the text's SHA-256: equal texts get equal vectors."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vec = np.random.default_rng(seed).standard_normal(dim)
    return [float(x) for x in vec / np.linalg.norm(vec)]


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``peregrine serve`` on a free port with a temporary data dir; stderr goes to a file."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.tmp = tempfile.TemporaryDirectory(prefix="peregrine-compat-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(self.tmp.name) / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> None:
        data = Path(self.tmp.name) / "data"
        data.mkdir()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--data", str(data), "--http-port", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text())
            with contextlib.suppress(httpx.HTTPError):
                info = httpx.get(self.url + "/", timeout=1).json()
                print(f"server: {self.binary} at {self.url} reports {info}")
                return
            time.sleep(0.1)
        raise RuntimeError("server did not answer GET / within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()

    def new_log_lines(self) -> list[dict[str, Any]]:
        """Access-log lines written since the last call."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            chunk = log.read()
        self._log_offset += len(chunk)
        lines = []
        for raw in chunk.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines


# -- recording what the frameworks send ----------------------------------------------------


@dataclass
class Exchange:
    method: str
    url: str
    request_body: str
    status: int
    response_body: str


@dataclass
class Recorder:
    """Wraps ``httpx.Client.send`` / ``AsyncClient.send`` (used by qdrant-client's REST)."""

    exchanges: list[Exchange] = field(default_factory=list)

    def install(self) -> None:
        sync_send = httpx.Client.send
        async_send = httpx.AsyncClient.send
        recorder = self

        def send(client: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
            response = sync_send(client, request, **kw)
            recorder.note(request, response)
            return response

        async def asend(
            client: httpx.AsyncClient, request: httpx.Request, **kw: Any
        ) -> httpx.Response:
            response = await async_send(client, request, **kw)
            await response.aread()
            recorder.note(request, response)
            return response

        httpx.Client.send = send  # type: ignore[assignment,method-assign]
        httpx.AsyncClient.send = asend  # type: ignore[assignment,method-assign]

    def note(self, request: httpx.Request, response: httpx.Response) -> None:
        body = ""
        if response.status_code >= 400:
            with contextlib.suppress(Exception):
                response.read()
            body = response.text
        self.exchanges.append(Exchange(
            request.method, str(request.url), _short(request.content), response.status_code,
            body,
        ))

    def take(self) -> list[Exchange]:
        taken, self.exchanges = self.exchanges, []
        return taken


def _short(content: bytes) -> str:
    text = content.decode(errors="replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(_elide_vectors(json.loads(text)))
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT] + "...(cut)"


def _elide_vectors(value: Any) -> Any:
    """Long float lists (vectors) become '[64 floats]' so request bodies stay readable."""
    if isinstance(value, list):
        if len(value) > 8 and all(isinstance(x, float) for x in value):
            return f"[{len(value)} floats]"
        return [_elide_vectors(v) for v in value]
    if isinstance(value, dict):
        return {k: _elide_vectors(v) for k, v in value.items()}
    return value


# -- steps -----------------------------------------------------------------------------


@dataclass
class Result:
    framework: str
    step: str
    ok: bool
    note: str = ""


class Runner:
    def __init__(self, server: Server, recorder: Recorder) -> None:
        self.server = server
        self.recorder = recorder
        self.results: list[Result] = []

    def step(self, framework: str, name: str, fn: Callable[[], Any]) -> bool:
        self.recorder.take()
        self.server.new_log_lines()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                note = fn()
                ok, error = True, ""
            except Exception as exc:  # report every failure, whatever its kind
                ok, note = False, None
                error = "".join(traceback.format_exception_only(exc)).strip()
                if os.environ.get("COMPAT_TRACEBACK"):
                    traceback.print_exc()
        time.sleep(0.05)  # let the access log catch up
        failed: list[Exchange] = []
        seen: set[tuple[str, str, str]] = set()
        for ex in self.recorder.take():  # retries repeat the same exchange: show it once
            if ex.status >= 400 and (ex.method, ex.url, ex.request_body) not in seen:
                seen.add((ex.method, ex.url, ex.request_body))
                failed.append(ex)
        log_errors: list[tuple[Any, ...]] = []
        for entry in self.server.new_log_lines():
            status = entry.get("status")
            key = (entry.get("method"), entry.get("route"), status)
            if isinstance(status, int) and status >= 400 and key not in log_errors:
                log_errors.append(key)
        line = f"{'PASS' if ok else 'FAIL'}  {framework:10s} {name}"
        if note:
            line += f"  ({note})"
        print(line, flush=True)
        if not ok:
            print(f"      error: {_indent(error)}")
        for ex in failed:
            print(f"      http:  {ex.method} {ex.url} -> {ex.status}")
            print(f"             request:  {ex.request_body}")
            print(f"             response: {_short(ex.response_body.encode())}")
        for method, route, status in log_errors:
            print(f"      log:   {method} {route} -> {status}")
        for warning in caught:
            if "qdrant" in str(warning.filename) or "compatib" in str(warning.message):
                print(f"      warning: {warning.message}")
        self.results.append(Result(framework, name, ok, note or ("" if ok else error)))
        return ok


def _indent(text: str) -> str:
    return text.replace("\n", "\n             ")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- LangChain -------------------------------------------------------------------------

TEXTS = [
    "the falcon is the fastest bird",
    "peregrines nest on cliffs and skyscrapers",
    "a vector database stores embeddings",
    "qdrant speaks a REST protocol",
    "langchain chains prompts and tools",
    "llamaindex builds indexes over documents",
]
CATEGORIES = ["bird", "bird", "db", "db", "framework", "framework"]


def point_id(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def run_langchain(runner: Runner, url: str, seed: bool) -> None:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from qdrant_client import QdrantClient, models

    class HashEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [hash_vector(t) for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return hash_vector(text)

    fw = "langchain"
    name = "lc_docs"
    emb = HashEmbeddings()
    metas = [{"category": c, "rank": i} for i, c in enumerate(CATEGORIES)]
    ids = [point_id(t) for t in TEXTS]
    store: dict[str, QdrantVectorStore] = {}
    raw = QdrantClient(url=url, prefer_grpc=False, check_compatibility=False)

    def seed_plain(texts: Sequence[str], meta: Sequence[dict[str, Any]],
                   pids: Sequence[str]) -> None:
        """The same points as LangChain writes them, but with plain array vectors."""
        raw.upsert(name, points=[
            models.PointStruct(id=i, vector=hash_vector(t),
                               payload={"page_content": t, "metadata": m})
            for t, m, i in zip(texts, meta, pids, strict=True)
        ])

    def from_texts() -> str:
        store["vs"] = QdrantVectorStore.from_texts(
            TEXTS[:4], emb, metadatas=metas[:4], ids=ids[:4], url=url, prefer_grpc=False,
            collection_name=name, force_recreate=True,
        )
        check(raw.count(name).count == 4, f"count is {raw.count(name).count}, expected 4")
        return "4 texts"

    if not runner.step(fw, "from_texts (create collection + upsert)", from_texts):
        if not seed:
            return
        print("      (seeding: collection + plain-vector upsert, then construct the store)")
        if not raw.collection_exists(name):
            raw.create_collection(name, vectors_config=models.VectorParams(
                size=DIM, distance=models.Distance.COSINE))
        seed_plain(TEXTS[:4], metas[:4], ids[:4])
        store["vs"] = QdrantVectorStore(raw, name, embedding=emb)

    def construct_existing() -> str:
        store["vs"] = QdrantVectorStore.from_existing_collection(
            name, emb, url=url, prefer_grpc=False, retrieval_mode=RetrievalMode.DENSE)
        return "validates collection config via GET /collections/{name}"

    runner.step(fw, "from_existing_collection", construct_existing)
    vs = store["vs"]

    def add_texts() -> str:
        added = vs.add_texts(TEXTS[4:], metadatas=metas[4:], ids=ids[4:])
        check(list(map(str, added)) == ids[4:], f"returned ids {added}")
        check(raw.count(name).count == 6, f"count is {raw.count(name).count}, expected 6")
        return "2 more texts with metadatas and ids"

    if not runner.step(fw, "add_texts with metadatas and ids", add_texts) and seed:
        seed_plain(TEXTS[4:], metas[4:], ids[4:])

    def similarity_search() -> str:
        docs = vs.similarity_search(TEXTS[2], k=3)
        check(len(docs) == 3, f"got {len(docs)} docs")
        check(docs[0].page_content == TEXTS[2], f"top hit {docs[0].page_content!r}")
        check(docs[0].metadata.get("category") == "db", f"metadata {docs[0].metadata}")
        check(docs[0].metadata.get("_id") == ids[2], f"_id {docs[0].metadata.get('_id')}")
        return "top hit is the query text, metadata and id round-trip"

    runner.step(fw, "similarity_search", similarity_search)

    def with_score() -> str:
        pairs = vs.similarity_search_with_score(TEXTS[1], k=2)
        check(len(pairs) == 2, f"got {len(pairs)}")
        doc, score = pairs[0]
        check(doc.page_content == TEXTS[1], f"top hit {doc.page_content!r}")
        check(abs(score - 1.0) < 1e-4, f"score {score}")
        check(pairs[1][1] < score, f"scores {[p[1] for p in pairs]}")
        return f"top score {score:.4f}"

    runner.step(fw, "similarity_search_with_score", with_score)

    def relevance() -> str:
        pairs = vs.similarity_search_with_relevance_scores(TEXTS[1], k=2)
        check(pairs[0][0].page_content == TEXTS[1], "top hit")
        return f"relevance {pairs[0][1]:.4f}"

    runner.step(fw, "similarity_search_with_relevance_scores", relevance)

    def filtered() -> str:
        flt = models.Filter(must=[models.FieldCondition(
            key="metadata.category", match=models.MatchValue(value="framework"))])
        docs = vs.similarity_search(TEXTS[0], k=5, filter=flt)
        got = sorted(d.metadata["category"] for d in docs)
        check(got == ["framework", "framework"], f"categories {got}")
        rng = models.Filter(must=[models.FieldCondition(
            key="metadata.rank", range=models.Range(gte=1, lt=3))])
        ranks = sorted(d.metadata["rank"] for d in vs.similarity_search(TEXTS[0], k=5,
                                                                          filter=rng))
        check(ranks == [1, 2], f"ranks {ranks}")
        return "MatchValue and Range on metadata.<key>"

    runner.step(fw, "similarity_search with metadata filter", filtered)

    def score_threshold() -> str:
        docs = vs.similarity_search(TEXTS[3], k=5, score_threshold=0.99)
        check([d.page_content for d in docs] == [TEXTS[3]], f"{len(docs)} docs")
        return "score_threshold=0.99 keeps only the exact match"

    runner.step(fw, "similarity_search with score_threshold", score_threshold)

    def mmr() -> str:
        docs = vs.max_marginal_relevance_search(TEXTS[0], k=3, fetch_k=6, lambda_mult=0.5)
        check(len(docs) == 3, f"got {len(docs)}")
        check(docs[0].page_content == TEXTS[0], f"top hit {docs[0].page_content!r}")
        return "k=3 fetch_k=6"

    runner.step(fw, "max_marginal_relevance_search", mmr)

    def get_by_ids() -> str:
        docs = vs.get_by_ids([ids[0], ids[5]])
        got = sorted(d.page_content for d in docs)
        check(got == sorted([TEXTS[0], TEXTS[5]]), f"got {got}")
        return "2 of 2"

    runner.step(fw, "get_by_ids", get_by_ids)

    def retriever() -> str:
        docs = vs.as_retriever(search_kwargs={"k": 2}).invoke(TEXTS[4])
        check(len(docs) == 2 and docs[0].page_content == TEXTS[4], f"got {docs}")
        return "k=2"

    runner.step(fw, "as_retriever().invoke", retriever)

    def retriever_mmr() -> str:
        docs = vs.as_retriever(search_type="mmr", search_kwargs={"k": 2}).invoke(TEXTS[4])
        check(len(docs) == 2, f"got {len(docs)}")
        return "search_type=mmr"

    runner.step(fw, "as_retriever(search_type='mmr').invoke", retriever_mmr)

    def add_documents() -> str:
        doc = Document(page_content="an extra document", metadata={"category": "extra"},
                       id=point_id("extra"))
        added = vs.add_documents([doc])
        check(list(map(str, added)) == [point_id("extra")], f"ids {added}")
        return "Document with id"

    runner.step(fw, "add_documents", add_documents)

    def delete() -> str:
        check(vs.delete(ids=[ids[0], ids[1]]) is True, "delete did not report success")
        left = vs.get_by_ids([ids[0], ids[1], ids[2]])
        left_ids = [d.metadata["_id"] for d in left]
        check(left_ids == [ids[2]], f"left {left_ids}")
        return "2 deleted, get_by_ids sees only the third"

    runner.step(fw, "delete by ids", delete)

    def async_search() -> str:
        docs = asyncio.run(vs.asimilarity_search(TEXTS[3], k=1))
        check(docs[0].page_content == TEXTS[3], f"got {docs}")
        return "asimilarity_search"

    runner.step(fw, "asimilarity_search", async_search)


# -- LlamaIndex ------------------------------------------------------------------------


def run_llamaindex(runner: Runner, url: str, seed: bool) -> None:
    from llama_index.core import Settings, StorageContext, VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import (
        BaseNode,
        MetadataMode,
        NodeRelationship,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.vector_stores import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
    )
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import AsyncQdrantClient, QdrantClient, models

    class HashEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return hash_vector(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return hash_vector(text)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return hash_vector(query)

    Settings.llm = None  # type: ignore[assignment]  # no LLM: retrieval only
    fw = "llamaindex"
    name = "li_nodes"
    embed = HashEmbedding(model_name="hash64")
    docs = ["doc-birds", "doc-dbs", "doc-frameworks"]
    nodes = [
        TextNode(
            text=t, id_=point_id("li" + t),
            metadata={"category": c, "rank": i},
            # embed the bare text, so that querying a node's text finds it with score 1
            excluded_embed_metadata_keys=["category", "rank"],
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=docs[i // 2])},
        )
        for i, (t, c) in enumerate(zip(TEXTS, CATEGORIES, strict=True))
    ]
    holder: dict[str, Any] = {}
    raw = QdrantClient(url=url, prefer_grpc=False, check_compatibility=False)

    def construct() -> str:
        # url= alone is refused by the framework (it wants an api_key with it), so the
        # documented client=/aclient= form is used.
        holder["vs"] = QdrantVectorStore(
            collection_name=name,
            client=QdrantClient(url=url, prefer_grpc=False),
            aclient=AsyncQdrantClient(url=url, prefer_grpc=False),
        )
        return "QdrantVectorStore(client=, aclient=)"

    if not runner.step(fw, "construct QdrantVectorStore", construct):
        return
    vs: QdrantVectorStore = holder["vs"]

    def build() -> str:
        ctx = StorageContext.from_defaults(vector_store=vs)
        holder["index"] = VectorStoreIndex(nodes, storage_context=ctx, embed_model=embed)
        check(raw.count(name).count == 6, f"count is {raw.count(name).count}, expected 6")
        return "6 TextNodes embedded by a custom BaseEmbedding"

    if not runner.step(fw, "VectorStoreIndex build (create collection + upload)", build):
        if not seed:
            return
        print("      (seeding: plain-vector upsert of the points LlamaIndex built)")
        if not raw.collection_exists(name):
            raw.create_collection(name, vectors_config=models.VectorParams(
                size=DIM, distance=models.Distance.COSINE))
        for node in nodes:
            node.embedding = hash_vector(node.get_content(metadata_mode=MetadataMode.EMBED))
        points, _ = vs._build_points(list[BaseNode](nodes), vs.sparse_vector_name)
        raw.upsert(name, points=[
            models.PointStruct(id=p.id, payload=p.payload,
                               vector=next(iter(p.vector.values())))
            for p in points
        ])
        holder["index"] = VectorStoreIndex.from_vector_store(vs, embed_model=embed)
    index: VectorStoreIndex = holder["index"]

    def retrieve() -> str:
        hits = index.as_retriever(similarity_top_k=3).retrieve(TEXTS[2])
        check(len(hits) == 3, f"got {len(hits)}")
        check(hits[0].node.get_content() == TEXTS[2], f"top {hits[0].node.get_content()!r}")
        check(hits[0].node.metadata.get("category") == "db", f"meta {hits[0].node.metadata}")
        return f"top score {hits[0].score:.4f}"

    runner.step(fw, "retrieve without filters", retrieve)

    def retrieve_eq() -> str:
        flt = MetadataFilters(filters=[MetadataFilter(key="category", value="bird")])
        hits = index.as_retriever(similarity_top_k=5, filters=flt).retrieve(TEXTS[4])
        got = sorted(h.node.metadata["category"] for h in hits)
        check(got == ["bird", "bird"], f"got {got}")
        return "category == bird"

    runner.step(fw, "retrieve with metadata filter (EQ)", retrieve_eq)

    def retrieve_ops() -> str:
        flt = MetadataFilters(filters=[
            MetadataFilter(key="rank", value=1, operator=FilterOperator.GTE),
            MetadataFilter(key="rank", value=4, operator=FilterOperator.LT),
            MetadataFilter(key="category", value="db", operator=FilterOperator.NE),
        ])
        hits = index.as_retriever(similarity_top_k=6, filters=flt).retrieve(TEXTS[0])
        ranks = sorted(h.node.metadata["rank"] for h in hits)
        check(ranks == [1], f"ranks {ranks}")
        return "GTE, LT, NE combined with AND"

    runner.step(fw, "retrieve with range / NE filters", retrieve_ops)

    def retrieve_or_in() -> str:
        flt = MetadataFilters(filters=[
            MetadataFilter(key="category", value=["db"], operator=FilterOperator.IN),
            MetadataFilter(key="rank", value=0),
        ], condition=FilterCondition.OR)
        hits = index.as_retriever(similarity_top_k=6, filters=flt).retrieve(TEXTS[0])
        ranks = sorted(h.node.metadata["rank"] for h in hits)
        check(ranks == [0, 2, 3], f"ranks {ranks}")
        return "IN, OR"

    runner.step(fw, "retrieve with IN / OR filters", retrieve_or_in)

    def retrieve_more_ops() -> str:
        nin = MetadataFilters(filters=[
            MetadataFilter(key="category", value=["bird", "db"], operator=FilterOperator.NIN)])
        ranks = sorted(h.node.metadata["rank"] for h in
                       index.as_retriever(similarity_top_k=6, filters=nin).retrieve(TEXTS[0]))
        check(ranks == [4, 5], f"NIN ranks {ranks}")
        nested = MetadataFilters(filters=[
            MetadataFilter(key="category", value="db"),
            MetadataFilters(filters=[MetadataFilter(key="rank", value=2),
                                     MetadataFilter(key="rank", value=5)],
                            condition=FilterCondition.OR),
        ])
        ranks = sorted(h.node.metadata["rank"] for h in
                       index.as_retriever(similarity_top_k=6, filters=nested).retrieve(TEXTS[0]))
        check(ranks == [2], f"nested ranks {ranks}")
        negated = MetadataFilters(filters=[MetadataFilter(key="category", value="db")],
                                  condition=FilterCondition.NOT)
        ranks = sorted(h.node.metadata["rank"] for h in
                       index.as_retriever(similarity_top_k=6, filters=negated).retrieve(TEXTS[0]))
        check(ranks == [0, 1, 4, 5], f"NOT ranks {ranks}")
        return "NIN, nested MetadataFilters (AND of OR), NOT"

    runner.step(fw, "retrieve with NIN / nested / NOT filters", retrieve_more_ops)

    def retrieve_text_match() -> str:
        flt = MetadataFilters(filters=[
            MetadataFilter(key="category", value="frame", operator=FilterOperator.TEXT_MATCH)])
        ranks = sorted(h.node.metadata["rank"] for h in
                       index.as_retriever(similarity_top_k=6, filters=flt).retrieve(TEXTS[0]))
        check(ranks == [4, 5], f"ranks {ranks}")
        return "MatchText without a full-text index (substring)"

    runner.step(fw, "retrieve with TEXT_MATCH filter", retrieve_text_match)

    def retrieve_is_empty() -> str:
        flt = MetadataFilters(filters=[
            MetadataFilter(key="missing_key", value=None, operator=FilterOperator.IS_EMPTY)])
        hits = index.as_retriever(similarity_top_k=6, filters=flt).retrieve(TEXTS[0])
        check(len(hits) == 6, f"got {len(hits)}")
        return "is_empty on an absent key"

    runner.step(fw, "retrieve with IS_EMPTY filter", retrieve_is_empty)

    def query_doc_ids() -> str:
        res = vs.query(VectorStoreQuery(query_embedding=hash_vector(TEXTS[0]),
                                        similarity_top_k=6, doc_ids=[docs[1]],
                                        node_ids=[nodes[2].node_id, nodes[0].node_id]))
        check(res.ids == [nodes[2].node_id], f"ids {res.ids}")
        return "doc_ids -> MatchAny on doc_id, node_ids -> has_id"

    runner.step(fw, "query with doc_ids / node_ids", query_doc_ids)

    def async_add() -> str:
        extra = TextNode(text="an async node", id_=point_id("li-async"),
                         metadata={"category": "async", "rank": 9},
                         embedding=hash_vector("an async node"))
        asyncio.run(vs.async_add([extra]))
        check(raw.count(name).count == 7, f"count is {raw.count(name).count}, expected 7")
        return "AsyncQdrantClient upsert"

    if not runner.step(fw, "async_add (async client)", async_add) and seed:
        raw.upsert(name, points=[models.PointStruct(
            id=point_id("li-async"), vector=hash_vector("an async node"),
            payload={"category": "async", "rank": 9, "doc_id": "none"})])

    def payload_indexes() -> str:
        QdrantVectorStore(
            collection_name=name,
            client=QdrantClient(url=url, prefer_grpc=False, check_compatibility=False),
            payload_indexes=cast(Any, [{"field_name": "category", "field_schema": "keyword"},
                                       {"field_name": "rank", "field_schema": "integer"}]),
        )
        return "payload_indexes= on an existing collection"

    runner.step(fw, "construct with payload_indexes", payload_indexes)

    def query_direct() -> str:
        res = vs.query(VectorStoreQuery(query_embedding=hash_vector(TEXTS[5]),
                                        similarity_top_k=2))
        check(res.ids is not None and res.ids[0] == nodes[5].node_id, f"ids {res.ids}")
        return "vector_store.query(VectorStoreQuery)"

    runner.step(fw, "vector_store.query", query_direct)

    def get_nodes() -> str:
        got = vs.get_nodes(node_ids=[nodes[0].node_id, nodes[3].node_id])
        check(sorted(n.node_id for n in got) == sorted([nodes[0].node_id, nodes[3].node_id]),
              f"got {[n.node_id for n in got]}")
        return "scroll with has_id"

    runner.step(fw, "get_nodes by ids", get_nodes)

    def aretrieve() -> str:
        hits = asyncio.run(index.as_retriever(similarity_top_k=1).aretrieve(TEXTS[1]))
        check(hits[0].node.get_content() == TEXTS[1], "top hit")
        return "AsyncQdrantClient"

    runner.step(fw, "aretrieve (async client)", aretrieve)

    def delete_nodes() -> str:
        vs.delete_nodes(node_ids=[nodes[4].node_id])
        check(raw.count(name).count == 6, f"count is {raw.count(name).count}, expected 6")
        return "1 node by id"

    runner.step(fw, "delete_nodes(node_ids)", delete_nodes)

    def delete_ref_doc() -> str:
        index.delete_ref_doc(docs[0])
        left = sorted(p.payload["doc_id"] for p in raw.scroll(name, limit=10)[0]
                      if p.payload is not None)
        check(docs[0] not in left and len(left) == 4, f"doc_ids left {left}")
        return "delete_ref_doc -> filter on doc_id"

    runner.step(fw, "delete by ref_doc_id", delete_ref_doc)

    def delete_by_filter() -> str:
        vs.delete_nodes(filters=MetadataFilters(filters=[
            MetadataFilter(key="category", value="db")]))
        check(raw.count(name).count == 2, f"count is {raw.count(name).count}, expected 2")
        return "delete_nodes(filters=...)"

    runner.step(fw, "delete_nodes(filters)", delete_by_filter)

    def adelete() -> str:
        asyncio.run(vs.adelete_nodes(node_ids=[point_id("li-async")]))
        check(raw.count(name).count == 1, f"count is {raw.count(name).count}, expected 1")
        return "adelete_nodes(node_ids)"

    runner.step(fw, "adelete_nodes (async client)", adelete)

    def clear() -> str:
        vs.clear()
        check(not raw.collection_exists(name), "collection still exists")
        return "delete collection"

    runner.step(fw, "clear", clear)


# -- main -------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(binary: str) -> Iterator[Server]:
    server = Server(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("qdrant-client", "langchain-core", "langchain-qdrant", "llama-index-core",
                 "llama-index-vector-stores-qdrant", "httpx"):
        try:
            parts.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--peregrine", default=str(REPO / ".venv" / "bin" / "peregrine"),
                        help="the peregrine executable (default: the repository's .venv)")
    parser.add_argument("--only", choices=["langchain", "llamaindex"])
    parser.add_argument("--no-seed", action="store_true",
                        help="stop a framework at its first failed insert")
    args = parser.parse_args(argv)

    print(f"python {sys.version.split()[0]}: {versions()}")
    recorder = Recorder()
    recorder.install()
    with serving(args.peregrine) as server:
        runner = Runner(server, recorder)
        if args.only in (None, "langchain"):
            run_langchain(runner, server.url, seed=not args.no_seed)
        if args.only in (None, "llamaindex"):
            run_llamaindex(runner, server.url, seed=not args.no_seed)
    failed = [r for r in runner.results if not r.ok]
    print(f"\n{len(runner.results) - len(failed)} passed, {len(failed)} failed")
    for r in failed:
        print(f"  FAIL {r.framework}: {r.step}: {r.note.splitlines()[-1] if r.note else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
