"""The caches over HTTP on `peregrine serve`: results (per tenant, TTL), cached
embeddings and the semantic response cache (the built-in embedder and the
vector store), with clear 4xx answers for bad input."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
from apiutil import ServerProcess


def test_result_embedding_and_semantic_caches(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    server = ServerProcess(tmp_path / "data")
    url = server.url + "/state"
    try:
        with httpx.Client(timeout=60) as http:
            # Results: per tenant, with a TTL, deletable.
            assert http.get(f"{url}/results/q1").status_code == 404
            r = http.put(f"{url}/results/q1", json={"value": {"rows": [1, 2], "ok": True}})
            assert r.status_code == 200, r.text
            assert http.get(f"{url}/results/q1").json() == {"value": {"rows": [1, 2],
                                                                      "ok": True}}
            assert http.get(f"{url}/results/q1", headers={"x-tenant": "b"}).status_code == 404
            http.put(f"{url}/results/brief", json={"value": 1, "ttl_s": 0.2})
            time.sleep(0.3)
            assert http.get(f"{url}/results/brief").status_code == 404
            assert http.delete(f"{url}/results/q1").json() == {"deleted": True}
            assert http.get(f"{url}/results/q1").status_code == 404
            assert http.put(f"{url}/results/q1", json={"ttl_s": 5}).status_code in (400, 422)
            assert http.put(f"{url}/results/q1",
                            json={"value": 1, "ttl_s": -1}).status_code in (400, 422)
            # Embeddings: by model and normalized text.
            r = http.put(f"{url}/embeddings", json={"model": "m", "texts": ["Hello  world", "b"],
                                                    "vectors": [[0.5, 1.0], [2.0, -1.0]]})
            assert r.json() == {"stored": 2}
            r = http.post(f"{url}/embeddings/lookup",
                          json={"model": "m", "texts": ["Hello world", "nope", "b"]})
            assert r.json() == {"vectors": [[0.5, 1.0], None, [2.0, -1.0]]}
            assert http.post(f"{url}/embeddings/lookup",
                             json={"model": "other", "texts": ["b"]}).json() == {
                "vectors": [None]}
            assert http.put(f"{url}/embeddings", json={
                "model": "m", "texts": ["a", "b"], "vectors": [[1.0]]}).status_code == 400
            assert http.post(f"{url}/embeddings/lookup",
                             json={"model": "m", "texts": []}).status_code in (400, 422)
            # The semantic cache: a close prompt gets the answer back.
            r = http.put(f"{url}/semantic", json={
                "prompt": "How do I reset my password?",
                "answer": "Use 'Forgot password' on the sign-in page."})
            assert r.status_code == 200, r.text
            hit = http.post(f"{url}/semantic/lookup",
                            json={"prompt": "how can I reset my password"}).json()["hit"]
            assert hit["answer"].startswith("Use 'Forgot") and hit["score"] >= 0.9
            assert http.post(f"{url}/semantic/lookup", json={
                "prompt": "What is the capital of France?"}).json() == {"hit": None}
            assert http.post(f"{url}/semantic/lookup",
                             json={"prompt": "how can I reset my password"},
                             headers={"x-tenant": "b"}).json() == {"hit": None}
            stats = http.get(f"{url}/caches").json()
            assert stats["results"]["misses"] >= 3 and stats["embeddings"]["memory_hits"] == 2
            assert stats["semantic"]["hits"] == 1
            metrics = http.get(server.url + "/metrics").text
            assert 'peregrine_state_cache_total{cache="result",result="miss"}' in metrics
    finally:
        server.stop()
