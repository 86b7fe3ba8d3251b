"""The embedding cache and the OpenAI-compatible remote embedder, on the real model."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from peregrine.embed import CachedEmbedder, RemoteEmbedder, RemoteEmbedError, TextEmbedder


@pytest.fixture(scope="module")
def model() -> TextEmbedder:
    return TextEmbedder()


class Counting:
    """Records what reaches the real model."""

    def __init__(self, inner: TextEmbedder) -> None:
        self.inner, self.calls = inner, []  # type: list[list[str]]

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def test_cache_embeds_each_distinct_text_once(model: TextEmbedder) -> None:
    counting = Counting(model)
    cache = CachedEmbedder(counting, "minilm", capacity=10)
    texts = ["red running shoes", "a blue kettle", "red running shoes", "  red  running\tshoes "]
    out = cache.encode(texts)
    assert counting.calls == [["red running shoes", "a blue kettle"]]
    _same_direction(out, model.encode(texts))
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    again = cache.encode(["a blue kettle", "red running shoes"])
    assert len(counting.calls) == 1 and cache.hits == 4 and cache.misses == 2
    np.testing.assert_array_equal(again, out[[1, 0]])


def test_cache_is_bounded_and_evicts_least_recently_used(model: TextEmbedder) -> None:
    counting = Counting(model)
    cache = CachedEmbedder(counting, "minilm", capacity=2)
    a, b, c = "apples", "bananas", "cherries"
    first = cache.encode([a, b])
    cache.encode([a])  # a is now the most recent
    cache.encode([c])  # evicts b
    assert len(cache) == 2
    cache.encode([a])
    assert counting.calls[-1] == [c]
    cache.encode([b])
    assert counting.calls[-1] == [b]
    _same_direction(cache.encode([b])[0], first[1])


def test_cache_keys_depend_on_the_model_id(model: TextEmbedder) -> None:
    one = CachedEmbedder(model, "minilm-v1")
    two = CachedEmbedder(model, "minilm-v2")
    assert one.key("text") != two.key("text")
    assert one.key("text") == one.key(" text ")


def _same_direction(a: np.ndarray, b: np.ndarray) -> None:
    """The int8 graph quantizes activations per call, so one text's vector moves a
    little with its batch-mates: compare by cosine, as the embedder's own bound does."""
    cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert np.min(cos) > 0.99


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def embeddings_server(model: TextEmbedder) -> Iterator[str]:
    """A minimal OpenAI-compatible embeddings server backed by the real model."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def embeddings(request: Request) -> JSONResponse:
        body: Any = await request.json()
        if request.headers.get("authorization") != "Bearer sk-test":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        inputs = body["input"]
        vectors = model.encode(inputs) * 3.0  # un-normalised, as some servers answer
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()}
                for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data[::-1], "model": body["model"]})

    app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(5)


def test_remote_embedder_matches_the_local_model(embeddings_server: str,
                                                 model: TextEmbedder) -> None:
    remote = RemoteEmbedder(embeddings_server, "all-MiniLM-L6-v2", api_key="sk-test",
                            batch_size=2)
    texts = ["open a socket", "bake a cake", "a red shoe", "a blue kettle", "tea"]
    out = remote.encode(texts)
    assert out.shape == (5, 384) and remote.dim == 384
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    _same_direction(out, model.encode(texts))  # in order
    cached = CachedEmbedder(remote, "remote:all-MiniLM-L6-v2")
    np.testing.assert_allclose(cached.encode(texts[:2]), out[:2], atol=1e-6)
    remote.close()


def test_remote_embedder_errors_are_typed(embeddings_server: str) -> None:
    remote = RemoteEmbedder(embeddings_server, "m", api_key="wrong")
    with pytest.raises(RemoteEmbedError, match="401"):
        remote.encode(["x"])
    unreachable = RemoteEmbedder(f"http://127.0.0.1:{_free_port()}/v1", "m", timeout_s=2)
    with pytest.raises(RemoteEmbedError, match="failed"):
        unreachable.encode(["x"])
