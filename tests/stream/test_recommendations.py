"""The shipped example, driven from outside as its users drive it: `peregrine serve`
and `peregrine worker` processes, a plain NATS client publishing clicks, and the
stream-administration routes and CLI over the same server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "edge"))
from apiutil import free_port  # noqa: E402
from examples.click_producer import ClickModel, catalog  # noqa: E402


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    def __init__(self, tmp: Path) -> None:
        self.port, self.nats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.nats = f"nats://127.0.0.1:{self.nats_port}"
        self.log = (tmp / "procs.log").open("ab")
        self.tmp = tmp
        # The contract the acceptance checks use, flag for flag.
        self.server = subprocess.Popen(
            [sys.executable, "-m", "peregrine", "serve", "--port", str(self.port),
             "--nats-port", str(self.nats_port), "--data", str(tmp / "data")],
            stdout=self.log, stderr=subprocess.STDOUT)
        _wait(lambda: httpx.get(self.url + "/readyz", timeout=1).status_code == 200, 60,
              "the server")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "peregrine", "worker", "examples.recommendations:pipeline",
             "--url", self.url, "--nats", self.nats],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        _wait(lambda: any(p["name"] == "recommendations" for p in self.get("/streams/pipelines")),
              60, "the worker's consumer")

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["result"]

    def stop(self) -> None:
        for proc in (self.worker, self.server):
            proc.terminate()
        for proc in (self.worker, self.server):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()

    def logs(self) -> str:
        return (self.tmp / "procs.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    try:
        yield r
    finally:
        r.stop()


async def _drive(nats_url: str, clicks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Publish clicks one by one (each after the previous recommendation), as a plain
    NATS client; return each event's recommendation."""
    nc = await nats.connect(nats_url)
    got: dict[str, dict[str, Any]] = {}
    arrived = asyncio.Event()

    async def on_message(msg: Any) -> None:
        body = json.loads(msg.data)
        assert msg.subject == f"recommendations.{body['user_id']}"
        got[body["event_id"]] = body
        arrived.set()

    await nc.subscribe("recommendations.>", cb=on_message)
    for click in clicks:
        arrived.clear()
        await nc.publish("clicks", json.dumps(click).encode())
        await asyncio.wait_for(arrived.wait(), 30)
    # poison: not JSON, and schema-invalid (user id that is no subject token)
    await nc.publish("clicks", b"{not json")
    await nc.publish("clicks", json.dumps({**clicks[0], "event_id": "bad-user",
                                           "user_id": "a.b"}).encode())
    await nc.flush()
    await nc.close()
    return got


def test_recommendations_example_end_to_end(running: Running) -> None:
    rng = random.Random(3)
    model = ClickModel(catalog(40, rng), users=3, seed=5)
    clicks = [model.click() for _ in range(60)]
    try:
        got = asyncio.run(_drive(running.nats, clicks))
    except Exception:
        raise AssertionError(running.logs()) from None
    seen: dict[str, list[str]] = {}
    for click in clicks:
        rec = got[click["event_id"]]
        assert set(rec) == {"event_id", "user_id", "product_ids"}
        assert rec["user_id"] == click["user_id"]
        earlier = set(seen.get(click["user_id"], [])) - {click["product_id"]}
        # The user's own products only, the clicked one excluded, at most five.
        assert set(rec["product_ids"]) <= earlier
        assert len(rec["product_ids"]) == min(5, len(earlier))
        seen.setdefault(click["user_id"], []).append(click["product_id"])
    pairs = {(c["user_id"], c["product_id"]) for c in clicks}
    assert len(pairs) < len(clicks)  # products repeat
    count = httpx.post(running.url + "/collections/products/points/count",
                       json={"exact": True}, timeout=10).json()["result"]["count"]
    assert count == len(pairs)

    # Operations over HTTP: the pipeline, its lag, its two dead letters.
    pipe = _wait(lambda: next((p for p in running.get("/streams/pipelines")
                               if p["dead_letters"] == 2 and p["lag"] == 0
                               and p["in_flight"] == 0), None), 30, "dead letters")
    assert pipe["name"] == "recommendations" and pipe["source"] == "clicks"
    assert running.get("/streams/pipelines/recommendations")["dead_letters"] == 2
    letters = running.get("/streams/pipelines/recommendations/dead-letters")
    assert [d["stage"] for d in letters] == ["decode", "validate"]
    assert letters[1]["event_id"] == "bad-user"
    # ... the same from the command line
    out = subprocess.run([sys.executable, "-m", "peregrine", "pipelines", "--nats",
                          running.nats], capture_output=True, text=True, timeout=60, check=True)
    listed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(p["name"], p["dead_letters"]) for p in listed] == [("recommendations", 2)]
    # Bad input is a 4xx with a message; deleting needs no body.
    r = httpx.get(running.url + "/streams/pipelines/no-such")
    assert r.status_code == 404 and "not found" in r.json()["status"]["error"]
    r = httpx.get(running.url + "/streams/pipelines/recommendations/dead-letters",
                  params={"limit": 0})
    assert r.status_code in (400, 422)
    r = httpx.post(running.url + "/streams/pipelines/recommendations/dead-letters/delete",
                   json={"seqs": [letters[0]["seq"]]})
    assert r.status_code == 200 and r.json()["result"] == {"deleted": 1}
    r = httpx.post(running.url + "/streams/pipelines/recommendations/dead-letters/delete")
    assert r.status_code == 200 and r.json()["result"] == {"deleted": 1}
    assert running.get("/streams/pipelines/recommendations")["dead_letters"] == 0
