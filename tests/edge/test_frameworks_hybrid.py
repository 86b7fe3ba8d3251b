"""LangChain, LlamaIndex and Haystack in their hybrid (dense + sparse) modes,
end to end against `peregrine serve`.

Each framework creates its own collection (a named dense vector and a sparse
one), writes through its own code path and searches in hybrid and sparse mode.
The dense vectors are the bundled all-MiniLM-L6-v2 (the embed face), the sparse
ones Peregrine's BM25 encoder; the expected rankings are computed here in plain
Python (cosine, BM25 with IDF over the corpus, RRF with 1 / (2 + position)).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from peregrine.vector.service import Bm25Encoder

pytest.importorskip("onnxruntime")

CORPUS = [
    "The central bank raised interest rates to fight inflation.",
    "A striker scored twice as the home team won the football final.",
    "The new GPU doubles the speed of training large language models.",
    "Heavy rain caused flooding across the river valley overnight.",
    "The museum opened an exhibition of Renaissance paintings.",
    "Bond yields climbed after the inflation report surprised markets.",
    "The tennis champion retired after twenty years on tour.",
    "Researchers released an open model for protein structure prediction.",
    "A volcano erupted, sending ash over nearby villages.",
    "The orchestra performed a symphony by Beethoven to a full hall.",
    "Electric car sales grew as battery prices fell.",
    "The football club signed a young goalkeeper from Brazil.",
]
QUERIES = ["inflation and interest rates", "football match goals",
           "training language models on GPUs", "flooding after heavy rain"]
EXPECTED_TOP = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def embedder() -> Any:
    from peregrine.embed import TextEmbedder

    return TextEmbedder()


@pytest.fixture(scope="module")
def dense(embedder: Any) -> np.ndarray:
    return np.asarray(embedder.encode(CORPUS), dtype=np.float64)


def _bm25_ranking(query: str, top: int) -> list[int]:
    enc = Bm25Encoder()
    docs = enc.encode_documents(CORPUS)
    q = enc.encode_queries([query])[0]
    n = len(docs)
    scores: dict[int, float] = {}
    for d in q.indices.tolist():
        df = sum(1 for v in docs if d in v.indices.tolist())
        idf = math.log((n - df + 0.5) / (df + 0.5) + 1)
        for pid, v in enumerate(docs):
            where = v.indices.tolist()
            if d in where:
                scores[pid] = scores.get(pid, 0.0) + float(v.values[where.index(d)]) * idf
    return sorted(scores, key=lambda p: (-scores[p], p))[:top]


def _dense_ranking(dense: np.ndarray, qv: np.ndarray, top: int) -> list[int]:
    sims = dense @ (qv / np.linalg.norm(qv))
    return [int(i) for i in np.argsort(-sims, kind="stable")[:top]]


def _rrf(*rankings: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for ranking in rankings:
        for pos, pid in enumerate(ranking):
            out[pid] = out.get(pid, 0.0) + 1.0 / (2 + pos)
    return out


@pytest.fixture
def collection(client: QdrantClient) -> Iterator[str]:
    name = f"fw-{uuid.uuid4().hex[:8]}"
    yield name
    if client.collection_exists(name):
        client.delete_collection(name)


def _check_layout(client: QdrantClient, name: str, dense: str, sparse: str) -> None:
    info = client.get_collection(name)
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict) and vectors[dense].size == 384
    assert info.config.params.sparse_vectors is not None
    assert sparse in info.config.params.sparse_vectors
    assert info.points_count == len(CORPUS)


def test_langchain_hybrid_and_sparse(client: QdrantClient, collection: str, embedder: Any,
                                     dense: np.ndarray) -> None:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings, SparseVector

    class Dense(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [list(map(float, v)) for v in embedder.encode(texts)]

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    class Bm25(SparseEmbeddings):
        enc = Bm25Encoder()

        def embed_documents(self, texts: list[str]) -> list[SparseVector]:
            return [SparseVector(indices=v.indices.tolist(), values=v.values.tolist())
                    for v in self.enc.encode_documents(texts)]

        def embed_query(self, text: str) -> SparseVector:
            v = self.enc.encode_queries([text])[0]
            return SparseVector(indices=v.indices.tolist(), values=v.values.tolist())

    store = QdrantVectorStore.construct_instance(
        embedding=Dense(), sparse_embedding=Bm25(), retrieval_mode=RetrievalMode.HYBRID,
        collection_name=collection, client_options={"url": client._client.rest_uri},
        vector_name="dense", sparse_vector_name="sparse")
    store.add_documents([Document(page_content=t, metadata={"pos": i})
                         for i, t in enumerate(CORPUS)], ids=list(range(len(CORPUS))))
    _check_layout(client, collection, "dense", "sparse")
    k = 4
    for query, top in zip(QUERIES, EXPECTED_TOP, strict=True):
        found = store.similarity_search_with_score(query, k=k)
        qv = np.asarray(embedder.encode([query])[0], dtype=np.float64)
        fused = _rrf(_dense_ranking(dense, qv, k), _bm25_ranking(query, k))
        assert found[0][0].metadata["pos"] == top
        for doc, score in found:
            assert fused[doc.metadata["pos"]] == pytest.approx(score)
        assert sorted((s for _, s in found), reverse=True) == pytest.approx(
            sorted(fused.values(), reverse=True)[:k])
    sparse_store = QdrantVectorStore(client=store.client, collection_name=collection,
                                     sparse_embedding=Bm25(),
                                     retrieval_mode=RetrievalMode.SPARSE,
                                     sparse_vector_name="sparse", vector_name="dense")
    for query in QUERIES:
        found = sparse_store.similarity_search(query, k=3)
        assert [d.metadata["pos"] for d in found] == _bm25_ranking(query, 3)


def test_llamaindex_hybrid(client: QdrantClient, collection: str, embedder: Any,
                           dense: np.ndarray) -> None:
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    enc = Bm25Encoder()

    def sparse_docs(texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        vs = enc.encode_documents(texts)
        return [v.indices.tolist() for v in vs], [v.values.tolist() for v in vs]

    def sparse_queries(texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        vs = enc.encode_queries(texts)
        return [v.indices.tolist() for v in vs], [v.values.tolist() for v in vs]

    store = QdrantVectorStore(collection_name=collection, client=client, enable_hybrid=True,
                              sparse_doc_fn=sparse_docs, sparse_query_fn=sparse_queries)
    vectors = embedder.encode(CORPUS)
    store.add([TextNode(text=t, id_=str(uuid.UUID(int=i + 1)), metadata={"pos": i},
                        embedding=list(map(float, v)))
               for i, (t, v) in enumerate(zip(CORPUS, vectors, strict=True))])
    info = client.get_collection(collection)
    assert info.points_count == len(CORPUS) and info.config.params.sparse_vectors
    # LlamaIndex fuses the dense and the sparse top-k itself (relative score
    # fusion): its hybrid answer holds only points of the two server rankings.
    for query in QUERIES:
        qv = list(map(float, embedder.encode([query])[0]))
        dense_top = _dense_ranking(dense, np.asarray(qv), 3)
        for mode, expect in ((VectorStoreQueryMode.DEFAULT, dense_top),
                             (VectorStoreQueryMode.SPARSE, _bm25_ranking(query, 3))):
            got = store.query(VectorStoreQuery(query_str=query, query_embedding=qv,
                                               similarity_top_k=3, sparse_top_k=3, mode=mode))
            assert [n.metadata["pos"] for n in got.nodes] == expect
        result = store.query(VectorStoreQuery(query_str=query, query_embedding=qv,
                                              similarity_top_k=3, sparse_top_k=3,
                                              mode=VectorStoreQueryMode.HYBRID))
        picked = {n.metadata["pos"] for n in result.nodes}
        assert picked and picked <= set(dense_top) | set(_bm25_ranking(query, 3))


def test_haystack_hybrid(server: Any, client: QdrantClient, collection: str, embedder: Any,
                         dense: np.ndarray) -> None:
    from haystack.dataclasses import Document, SparseEmbedding
    from haystack_integrations.components.retrievers.qdrant import (
        QdrantHybridRetriever,
        QdrantSparseEmbeddingRetriever,
    )
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    enc = Bm25Encoder()
    store = QdrantDocumentStore(url=server.url, index=collection, embedding_dim=384,
                                use_sparse_embeddings=True, recreate_index=True,
                                prefer_grpc=False)
    docs = []
    for i, (text, vec, sp) in enumerate(zip(CORPUS, embedder.encode(CORPUS),
                                            enc.encode_documents(CORPUS), strict=True)):
        docs.append(Document(id=str(i), content=text, meta={"pos": i},
                             embedding=list(map(float, vec)),
                             sparse_embedding=SparseEmbedding(indices=sp.indices.tolist(),
                                                              values=sp.values.tolist())))
    assert store.write_documents(docs) == len(CORPUS)
    assert store.count_documents() == len(CORPUS)
    hybrid = QdrantHybridRetriever(document_store=store, top_k=4)
    sparse = QdrantSparseEmbeddingRetriever(document_store=store, top_k=3)
    for query in QUERIES:
        qv = np.asarray(embedder.encode([query])[0], dtype=np.float64)
        q = enc.encode_queries([query])[0]
        q_sparse = SparseEmbedding(indices=q.indices.tolist(), values=q.values.tolist())
        found = hybrid.run(query_embedding=list(map(float, qv)),
                           query_sparse_embedding=q_sparse)["documents"]
        # Its prefetches carry no limit: Qdrant's default, 10 each.
        fused = _rrf(_dense_ranking(dense, qv, 10), _bm25_ranking(query, 10))
        assert [d.score for d in found] == pytest.approx(
            sorted(fused.values(), reverse=True)[:4])
        for doc in found:
            assert fused[doc.meta["pos"]] == pytest.approx(doc.score)
        got = sparse.run(query_sparse_embedding=q_sparse)["documents"]
        assert [d.meta["pos"] for d in got] == _bm25_ranking(query, 3)
