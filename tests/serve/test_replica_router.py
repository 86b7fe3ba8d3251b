"""The router over replicas: prefix affinity and least outstanding tokens, weighted
versions, and failover when a replica is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from llmutil import MODEL, LlmServer

from peregrine.core.errors import UnavailableError
from peregrine.serve.router import ReplicaRouter, Upstream, parse_upstreams

openai = pytest.importorskip("openai")


def test_pick_follows_the_prefix_until_that_replica_is_far_busier() -> None:
    a, b = Upstream("http://a"), Upstream("http://b")
    router = ReplicaRouter([a, b])
    first = router.pick(b"system-prompt-1", set())
    first.outstanding_tokens += 100
    assert router.pick(b"system-prompt-1", set()) is first  # affinity over a small load
    other = b if first is a else a
    assert router.pick(b"another-prefix", set()) is other  # new prefix: least loaded
    first.outstanding_tokens += 10_000
    assert router.pick(b"system-prompt-1", set()) is other  # far busier: spread
    with pytest.raises(UnavailableError):
        router.pick(b"x", {id(a), id(b)})
    ups = parse_upstreams("http://h1:8000/v1=3@v1, http://h2:8000@v2")
    assert [(u.url, u.weight, u.version) for u in ups] == [
        ("http://h1:8000", 3.0, "v1"), ("http://h2:8000", 1.0, "v2")]


def test_weights_split_traffic_between_versions(tmp_path: Path) -> None:
    v1 = LlmServer(tmp_path, llm_slots="2")
    v2 = LlmServer(tmp_path, llm_slots="2")
    router = LlmServer(tmp_path, llm_upstreams=f"{v1.url}=3@v1,{v2.url}=1@v2")
    try:
        client = router.client()
        for _ in range(40):
            out = client.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
            assert out.choices[0].finish_reason in ("length", "stop")
        n1 = router.metric("peregrine_router_requests_total", version="v1", outcome="ok")
        n2 = router.metric("peregrine_router_requests_total", version="v2", outcome="ok")
        assert n1 + n2 == 40 and 20 <= n1 <= 38 and n2 >= 2
    finally:
        router.stop()
        v1.stop()
        v2.stop()


def test_a_killed_replica_costs_no_request(tmp_path: Path) -> None:
    router = LlmServer(tmp_path, llm_replicas="2", llm_slots="2")
    try:
        client = router.client()
        text = client.completions.create(model=MODEL, prompt="The capital of France is",
                                         max_tokens=6, temperature=0).choices[0].text
        metrics = httpx.get(router.url + "/metrics").text
        ports = sorted({line.split('upstream="http://127.0.0.1:')[1].split('"')[0]
                        for line in metrics.splitlines()
                        if line.startswith("peregrine_router_outstanding_tokens{")})
        assert len(ports) >= 1
        pids = subprocess.run(["pgrep", "-f", f"peregrine llm --port {ports[0]} "],
                              capture_output=True, text=True).stdout.split()
        assert pids
        os.kill(int(pids[0]), signal.SIGKILL)
        # Straight away, before any health check: every request still gets its answer.
        for i in range(6):
            if i % 2:
                out = client.completions.create(model=MODEL, prompt="The capital of France is",
                                                max_tokens=6, temperature=0)
                assert out.choices[0].text == text
            else:
                stream = client.completions.create(model=MODEL,
                                                   prompt="The capital of France is",
                                                   max_tokens=6, temperature=0, stream=True)
                assert "".join(c.choices[0].text for c in stream if c.choices) == text
        assert router.metric("peregrine_router_failovers_total") >= 1
        time.sleep(1.5)
        assert router.metric("peregrine_router_replica_up") == 1  # one left, seen down
    finally:
        router.stop()
