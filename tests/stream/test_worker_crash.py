"""SIGKILL a worker mid-batch: every published event is applied exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "edge"))
from apiutil import ServerProcess, ok

N = 3000
HERE = Path(__file__).parent


@pytest.fixture
def server(tmp_path: Path) -> Any:
    proc = ServerProcess(tmp_path / "data")
    yield proc
    proc.stop()


def _worker(server: ServerProcess, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "peregrine", "worker", "crash_pipeline:pipeline",
         "--data", str(server.data), "--vector-url", server.url, "--config", str(config)],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_batch_applies_every_event_once(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    http = httpx.Client(base_url=server.url, timeout=30)
    ok(http.put("/collections/events", json={"vectors": {"size": 4, "distance": "Dot"}}))
    url = (server.data / "nats.url").read_text().strip()
    config = tmp_path / "worker.toml"
    config.write_text("[stream]\nack_wait_s = 2.0\nbatch_ms = 1.0\n")
    log = tmp_path / "workers.log"

    def count() -> int:
        return int(ok(http.post("/collections/events/points/count", json={}))["count"])

    a, b = _worker(server, config, log), _worker(server, config, log)
    seqs: dict[int, int] = {}

    async def produce() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        # The workers create the stream; publish once it exists.
        for _ in range(200):
            try:
                await js.stream_info("PG_CRASH")
                break
            except Exception:
                await asyncio.sleep(0.05)
        for i in range(N):
            ack = await js.publish("in.crash", orjson.dumps(
                {"id": i, "n": i * 7, "vec": [float(i), 1.0, 0.0, 0.0]}),
                headers={"Nats-Msg-Id": f"e{i}"})
            seqs[i] = ack.seq
        # A producer retry of the same events: JetStream drops them as duplicates.
        for i in range(50):
            await js.publish("in.crash", orjson.dumps({"id": i, "n": -1, "vec": [0, 0, 0, 0]}),
                             headers={"Nats-Msg-Id": f"e{i}"})
        await nc.close()

    asyncio.run(produce())
    try:
        _wait(lambda: count() >= N // 4, 120, "a quarter of the events")
        a.send_signal(signal.SIGKILL)  # mid-batch: its in-flight events are redelivered
        a.wait()
        killed_at = count()
        assert killed_at < N
        a = _worker(server, config, log)
        _wait(lambda: count() >= N, 180, "every event")
        time.sleep(3)  # ack_wait: a redelivery would land now
        assert count() == N
        points = ok(http.post("/collections/events/points/scroll",
                              json={"limit": N + 10, "with_payload": True}))["points"]
        assert sorted(p["id"] for p in points) == list(range(N))
        for p in points:
            assert p["payload"]["n"] == p["id"] * 7
            assert p["payload"]["_seq"] == seqs[p["id"]]
        listed = subprocess.run(
            [sys.executable, "-m", "peregrine", "dlq", "list", "crash", "--data",
             str(server.data)], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.strip() == ""
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert b.returncode == 0, log.read_text()[-3000:]
    http.close()
