"""The sessions routes of `peregrine serve`: the acceptance contract, SIGKILL
durability, and two servers sharing sessions through one Redis."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
from redisutil import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
from apiutil import ServerProcess


def test_turns_survive_sigkill_of_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data)
    try:
        ids = []
        for i, role in enumerate(["user", "assistant", "user"]):
            r = httpx.post(f"{server.url}/sessions/chat-7/turns",
                           json={"role": role, "content": f"message {i}"})
            assert r.status_code == 200, r.text
            ids.append(r.json()["turn_id"])
        r = httpx.get(f"{server.url}/sessions/chat-7/turns", params={"last": 2})
        assert [t["content"] for t in r.json()["turns"]] == ["message 1", "message 2"]
        assert set(r.json()["turns"][0]) == {"turn_id", "role", "content", "ts"}
        # Bad input: a clear 4xx, nothing written.
        assert httpx.post(f"{server.url}/sessions/chat-7/turns",
                          json={"role": "user"}).status_code in (400, 422)
        assert httpx.get(f"{server.url}/sessions/chat-7/turns",
                         params={"last": -1}).status_code in (400, 422)
        r = httpx.patch(f"{server.url}/state/user/u1/settings",
                        json={"locale": "de-DE", "quantization": "q4"})
        assert r.status_code == 200 and r.json()["locale"] == "de-DE"
        assert httpx.patch(f"{server.url}/state/planet/p/settings",
                           json={"a": 1}).status_code == 400
        assert httpx.patch(f"{server.url}/state/user/u1/settings",
                           json=[1, 2]).status_code in (400, 422)
    finally:
        server.stop(signal.SIGKILL)
    again = ServerProcess(data)
    try:
        r = httpx.get(f"{again.url}/sessions/chat-7/turns", params={"last": 10})
        assert [t["turn_id"] for t in r.json()["turns"]] == ids
        assert httpx.get(f"{again.url}/state/user/u1/settings").json() == {
            "locale": "de-DE", "quantization": "q4"}  # durable too
        assert httpx.delete(f"{again.url}/sessions/chat-7").json() == {"deleted": True}
        r = httpx.get(f"{again.url}/sessions/chat-7/turns", params={"last": 10})
        assert r.json() == {"turns": []}
    finally:
        again.stop()


def test_a_second_server_on_the_same_redis_reads_the_session(
        tmp_path: Path, redis_server: RedisServer) -> None:
    # No secret configured: the nodes agree on one through Redis.
    one = ServerProcess(tmp_path / "one", "--redis", redis_server.url)
    two = ServerProcess(tmp_path / "two", "--redis", redis_server.url)
    try:
        for text in ("hi", "hello, how can I help?"):
            r = httpx.post(f"{one.url}/sessions/s1/turns", json={"role": "user",
                                                                  "content": text})
            assert r.status_code == 200
        r = httpx.get(f"{two.url}/sessions/s1/turns", params={"last": 5})
        assert [t["content"] for t in r.json()["turns"]] == ["hi", "hello, how can I help?"]
    finally:
        one.stop()
        two.stop()
