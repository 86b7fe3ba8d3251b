"""`peregrine llm` through the official `openai` client: streaming and not, usage,
429 with Retry-After, per-key classes and rate limits, and a client that leaves
mid-stream freeing its slot."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llmutil import MODEL, LlmServer

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")



@pytest.fixture
def server(tmp_path: Path) -> Iterator[LlmServer]:
    srv = LlmServer(tmp_path, llm_slots="2", llm_queue="2")
    yield srv
    srv.stop()


def test_completions_and_chat_through_the_openai_client(server: LlmServer) -> None:
    client = server.client()
    assert [m.id for m in client.models.list()] == [MODEL]
    whole = client.completions.create(model=MODEL, prompt="The capital of France is",
                                      max_tokens=16, temperature=0)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 16
    assert whole.usage.prompt_tokens == 6
    text = whole.choices[0].text
    assert len(text.split()) >= 5
    stream = client.completions.create(model=MODEL, prompt="The capital of France is",
                                       max_tokens=16, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        pieces.extend(c.text for c in chunk.choices)
        usage = chunk.usage or usage
    assert "".join(pieces) == text  # the same greedy completion, streamed
    assert usage is not None and usage.completion_tokens == 16
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens > 0  # the prompt was cached
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Name a colour."}],
        max_tokens=12, temperature=0.7, seed=7, logprobs=True, top_logprobs=3)
    message = chat.choices[0].message
    assert message.role == "assistant" and message.content
    assert chat.choices[0].logprobs is not None
    assert len(chat.choices[0].logprobs.content[0].top_logprobs) == 3
    again = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Name a colour."}],
        max_tokens=12, temperature=0.7, seed=7)
    assert again.choices[0].message.content == message.content  # a seed repeats
    events = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        stream=True))
    assert events[0].choices[0].delta.role == "assistant"
    assert events[-1].choices[0].finish_reason in ("length", "stop")
    # Bad input: OpenAI-shaped 4xx errors.
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, n=3)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=10**7)
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and "error" in r.json()


def test_a_full_queue_answers_429_with_retry_after_and_leaving_frees_the_slot(
        server: LlmServer) -> None:
    client = server.client()
    streams = []
    for i in range(4):  # two slots, two waiting (their streams open at once): full
        stream = client.completions.create(model=MODEL, prompt="Count slowly: one,",
                                           max_tokens=1500, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})
        streams.append(stream)
        if i == 1:
            next(iter(streams[1]))  # both running before the next two come
    assert server.metric("peregrine_llm_queue_depth") == 2
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert server.metric("peregrine_llm_rejected_total", reason="queue_full") == 1
    for stream in streams:  # every client leaves
        stream.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.metric("peregrine_llm_running_sequences") == 0:
            break
        time.sleep(0.1)
    assert server.metric("peregrine_llm_running_sequences") == 0
    assert server.metric("peregrine_llm_requests_total", reason="cancelled") >= 2
    done = client.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    assert done.choices[0].finish_reason in ("length", "stop")


def test_keys_choose_the_class_and_carry_rate_limits(tmp_path: Path) -> None:
    srv = LlmServer(tmp_path, http_api_key="edge-key",
                    llm_keys="gold:premium,bulk:batch:2:100000")
    try:
        def priority(key: str, asked: str | None = None) -> str:
            headers = {"authorization": f"Bearer {key}"}
            if asked:
                headers["x-priority"] = asked
            with httpx.stream("POST", srv.url + "/v1/completions", headers=headers,
                              json={"prompt": "Hi", "max_tokens": 1, "stream": True},
                              timeout=60) as r:
                assert r.status_code == 200, r.read()
                r.read()
                return r.headers["x-priority"]

        assert priority("gold") == "premium"
        assert priority("gold", "batch") == "batch"  # a key may ask for less
        assert priority("edge-key", "premium") == "premium"  # the edge's key: any class
        assert priority("bulk", "premium") == "batch"  # never more than its class
        bulk = srv.client("bulk")  # 2 requests a minute: one left
        bulk.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
        with pytest.raises(openai.RateLimitError) as limited:
            bulk.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
        assert int(limited.value.response.headers["retry-after"]) >= 1
        with pytest.raises(openai.AuthenticationError):
            srv.client("stranger").completions.create(model=MODEL, prompt="Hi",
                                                      max_tokens=1)
    finally:
        srv.stop()


def test_serve_mounts_v1_beside_the_other_faces(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
    from apiutil import ServerProcess

    server = ServerProcess(tmp_path / "data")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        out = client.completions.create(model=MODEL, prompt="Water boils at",
                                        max_tokens=4, temperature=0)
        assert out.usage is not None and out.usage.completion_tokens == 4
        assert httpx.get(server.url + "/collections").status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert re.search(r"peregrine_llm_time_to_first_token_seconds_count\{.*\} 1", metrics)
    finally:
        server.stop()
