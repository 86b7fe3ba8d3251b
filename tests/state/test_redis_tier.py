"""Two nodes on one real Redis: shared sessions, memory invalidation, and a Redis
killed mid-run (degradation, then catch-up of what was written meanwhile)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redisutil import RedisServer

from peregrine.state.service import StateService, StateSettings


def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _contents(state: StateService, sid: str) -> list[str]:
    return [t.content for t in state.last_turns(sid, 100)]


def test_nodes_share_sessions_and_survive_a_redis_restart(tmp_path: Path,
                                                          redis_server: RedisServer) -> None:
    settings = StateSettings(redis=redis_server.url, secret="shared-secret", retry_s=0.1)
    a = StateService.open(settings, tmp_path / "a")
    b = StateService.open(settings, tmp_path / "b")  # its own, empty data directory
    try:
        assert a.redis_up and b.redis_up
        a.append_turn("conv", "user", "one")
        assert _contents(b, "conv") == ["one"]  # read through Redis, then cached
        a.append_turn("conv", "assistant", "two")
        # b's memory copy is dropped by a's invalidation, so b sees the new turn.
        _eventually(lambda: _contents(b, "conv") == ["one", "two"])

        redis_server.kill()
        a.append_turn("conv", "user", "three (redis down)")  # no error: local tiers
        assert a.redis_up is False
        assert _contents(a, "conv") == ["one", "two", "three (redis down)"]
        assert a.stats()["pending"] == 1
        b.append_turn("other", "user", "b alone")
        assert _contents(b, "other") == ["b alone"]

        redis_server.start()  # back, and empty: it lost everything
        _eventually(lambda: a.redis_up and b.redis_up)
        assert a.stats()["pending"] == 0
        # Only what each node wrote while Redis was down was replayed...
        _eventually(lambda: "three (redis down)" in _contents(b, "conv"))
        assert _contents(a, "other") == ["b alone"]
        # ... and new turns flow again.
        b.append_turn("conv", "assistant", "four")
        _eventually(lambda: _contents(a, "conv")[-1] == "four")
    finally:
        a.close()
        b.close()


def test_deletes_made_while_redis_is_down_reach_it(tmp_path: Path,
                                                   redis_server: RedisServer) -> None:
    settings = StateSettings(redis=redis_server.url, secret="s", retry_s=0.1)
    a = StateService.open(settings, tmp_path / "a")
    b = StateService.open(settings, tmp_path / "b")
    try:
        a.append_turn("gone", "user", "x")
        assert _contents(b, "gone") == ["x"]
        redis_server.kill()
        a.delete_session("gone")
        assert a.redis_up is False
        redis_server.start()
        a.append_turn("keep", "user", "y")  # unrelated traffic
        _eventually(lambda: a.redis_up)
        b.sync()
        _eventually(lambda: b.redis_up)
        # Redis came back (empty here) with a's deletion replayed; b's memory is
        # cleared when its invalidation listener resubscribes: gone for b too.
        _eventually(lambda: _contents(b, "gone") == [])
    finally:
        a.close()
        b.close()


def test_write_behind_reaches_the_other_node_shortly(tmp_path: Path,
                                                     redis_server: RedisServer) -> None:
    settings = StateSettings(redis=redis_server.url, secret="s", write_mode="behind")
    a = StateService.open(settings, tmp_path / "a")
    b = StateService.open(settings, tmp_path / "b")
    try:
        for i in range(50):
            a.append_turn("wb", "user", f"t{i}")
        assert _contents(a, "wb")[-1] == "t49"  # read-your-writes on the node at once
        _eventually(lambda: len(_contents(b, "wb")) == 50, 5)
        embedding = b"\x00" * 16
        a.embeddings.put("k", embedding)
        assert b.embeddings.get("k") == embedding  # shared through Redis
        assert b.embeddings.hits["redis"] == 1
    finally:
        a.close()
        b.close()


def test_result_cache_is_shared_and_a_change_reaches_the_other_nodes_memory(
        tmp_path: Path, redis_server: RedisServer) -> None:
    settings = StateSettings(redis=redis_server.url, secret="s")
    a = StateService.open(settings, tmp_path / "a")
    b = StateService.open(settings, tmp_path / "b")
    try:
        a.put_result("answer:42", b"v1")
        assert b.get_result("answer:42") == b"v1"  # from Redis, now in b's memory
        assert b.results.hits["redis"] == 1
        assert b.get_result("answer:42", tenant="other") is None
        a.put_result("answer:42", b"v2")  # b's memory copy is dropped by the notice
        _eventually(lambda: b.get_result("answer:42") == b"v2", 5)
        assert a.delete_result("answer:42") is True
        _eventually(lambda: b.get_result("answer:42") is None, 5)
        a.put_result("short", b"x", ttl_s=0.3)
        assert b.get_result("short") == b"x"  # b keeps it no longer than Redis does
        time.sleep(0.4)
        assert b.get_result("short") is None and a.get_result("short") is None
        import redis

        stored = redis.Redis.from_url(redis_server.url).keys("pg:c:result:*")
        assert all(b"answer" not in k and b"short" not in k for k in stored)  # HMACs
    finally:
        a.close()
        b.close()
