"""The semantic response cache (real embedder, real vector store) and reads by
token budget."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from peregrine.state.service import SemanticCache, StateService, StateSettings
from peregrine.vector.service import VectorService

pytest.importorskip("onnxruntime")

from peregrine.embed import TextEmbedder


def test_a_close_prompt_gets_the_cached_answer(tmp_path: Path) -> None:
    vector = VectorService.open(tmp_path / "data")
    try:
        cache = SemanticCache(vector, TextEmbedder(), threshold=0.8, ttl_s=60)
        assert cache.get("How do I reset my password?") is None
        cache.put("How do I reset my password?", "Use 'Forgot password' on the login page.")
        hit = cache.get("how can I reset my password")
        assert hit is not None and hit.answer.startswith("Use 'Forgot") and hit.score >= 0.8
        assert cache.get("What is the capital of France?") is None  # unrelated: a miss
        assert cache.get("how can I reset my password", tenant="other") is None
        assert (cache.hits, cache.misses) == (1, 3)
        short = SemanticCache(vector, cache.encoder, collection="short", ttl_s=0.05)
        short.put("hello there", "hi")
        time.sleep(0.1)
        assert short.get("hello there") is None  # expired
        assert short.purge_expired() == 1
    finally:
        vector.close()


def test_turns_within_a_token_budget(tmp_path: Path) -> None:
    state = StateService.open(StateSettings(), tmp_path)
    for text in ("a" * 400, "b" * 40, "c" * 40, "d" * 40):  # ~100, 10, 10, 10 tokens
        state.append_turn("s", "user", text)
    assert [t.content[0] for t in state.turns_within("s", 35)] == ["b", "c", "d"]
    assert [t.content[0] for t in state.turns_within("s", 15)] == ["d"]
    assert len(state.turns_within("s", 1000)) == 4
    assert state.turns_within("s", 0) == []
    state.close()


def test_the_semantic_cache_is_bounded(tmp_path: Path) -> None:
    vector = VectorService.open(tmp_path / "data")
    try:
        cache = SemanticCache(vector, TextEmbedder(), collection="bounded", max_entries=10,
                              ttl_s=60)
        for i in range(25):
            cache.put(f"question number {i} about topic {i * 7}", f"answer {i}")
            assert vector.count("bounded") <= 10
        hit = cache.get("question number 24 about topic 168")  # the newest stay
        assert hit is not None and hit.answer == "answer 24"
        oldest = cache.get("question number 0 about topic 0")  # evicted first
        assert oldest is None or oldest.answer != "answer 0"
    finally:
        vector.close()
