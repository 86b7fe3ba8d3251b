"""A router over OpenAI-compatible replicas: ``peregrine llm`` engine processes it
starts itself, or any upstream (vLLM on a GPU host, another Peregrine).

Each request goes to a model version chosen by weight (A/B or canary), then
to a healthy replica of that version: the one whose prompt prefix it saw last
(prefix affinity, where that prefix's KV is likely cached) unless that one has
many more outstanding tokens than the least loaded, else the least loaded.
Replicas are health-checked every second. A replica that fails before the
first token (connection refused or reset, a 5xx, a stream that ends empty) is
marked down and the request goes to another one, so a replica dying costs the
client nothing but time; after the first token a failure ends the stream with
an error event, since what was sent cannot be taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from peregrine.core.errors import InvalidInputError, UnavailableError
from peregrine.runtime.nats import die_with_parent, free_port
from peregrine.serve.settings import LlmSettings

log = logging.getLogger("peregrine.serve")

_AFFINITY_KEYS = 100_000
_AFFINITY_CHARS = 1024  # the prompt's start that names its prefix
_AFFINITY_SLACK = 4096  # outstanding tokens a replica may carry above the least loaded
_ATTEMPTS = 3


@dataclass(eq=False)
class Upstream:
    url: str  # ends before /v1
    weight: float = 1.0
    version: str = "default"
    healthy: bool = True
    outstanding: int = 0
    outstanding_tokens: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


@dataclass
class RouterReply:
    """A replica's answer: a whole JSON body, or server-sent events to relay."""

    status: int
    body: bytes = b""
    events: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def parse_upstreams(text: str) -> list[Upstream]:
    """``url[=weight][@version]``, comma separated."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        spec, _, version = part.partition("@")
        url, _, weight = spec.partition("=")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise InvalidInputError(f"llm.upstreams: bad weight in {part!r}") from None
        if not url.startswith(("http://", "https://")) or w < 0:
            raise InvalidInputError(f"llm.upstreams: {part!r} is not url[=weight][@version]")
        out.append(Upstream(url.rstrip("/").removesuffix("/v1"), w, version or "default"))
    return out


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("peregrine_router_requests", "Requests by model version and "
                                "outcome", ["version", "outcome"], registry=registry)
        self.ttfb = Histogram("peregrine_router_first_byte_seconds", "To the replica's first "
                              "answer byte, by version", ["version"], registry=registry,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.failovers = Counter("peregrine_router_failovers", "Requests moved to another "
                                 "replica before their first token", ["version"],
                                 registry=registry)
        self.healthy = Gauge("peregrine_router_replica_up", "1 while a replica passes its "
                             "health check", ["upstream", "version"], registry=registry)
        self.outstanding = Gauge("peregrine_router_outstanding_tokens", "Tokens in flight "
                                 "per replica", ["upstream", "version"], registry=registry)


class ReplicaRouter:
    def __init__(self, upstreams: list[Upstream], registry: CollectorRegistry | None = None,
                 model_id: str = "") -> None:
        if not upstreams:
            raise InvalidInputError("the router needs at least one upstream")
        self.upstreams = upstreams
        self.model_id = model_id
        self.metrics = _Metrics(registry) if registry is not None else None
        self._affinity: OrderedDict[bytes, Upstream] = OrderedDict()
        self._client: httpx.AsyncClient | None = None
        self._health: asyncio.Task[None] | None = None
        self._rng = random.Random()

    # -- replicas of our own ------------------------------------------------------------
    @classmethod
    def with_replicas(cls, settings: LlmSettings, registry: CollectorRegistry | None,
                      model_id: str) -> ReplicaRouter:
        """Start ``settings.replicas`` ``peregrine llm`` processes (threads shared out)
        plus any ``upstreams``; returns once every replica of ours answers."""
        upstreams = parse_upstreams(settings.upstreams)
        threads = max(1, settings.n_threads // max(1, settings.replicas))
        mine = []
        for _ in range(settings.replicas if settings.replicas > 1 or not upstreams else 0):
            port = free_port()
            cmd = [sys.executable, "-m", "peregrine", "llm", "--port", str(port),
                   "--replicas", "1", "--threads", str(threads)]
            if settings.model:
                cmd += ["--model", settings.model]
            env = {**os.environ, "PEREGRINE_LLM_UPSTREAMS": "", "PEREGRINE_HTTP_API_KEY": "",
                   "PEREGRINE_HTTP_READ_ONLY_API_KEY": ""}
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
            mine.append(Upstream(f"http://127.0.0.1:{port}", 1.0, "default", process=proc))
        router = cls(mine + upstreams, registry, model_id)
        deadline = time.monotonic() + 120
        for up in mine:
            while not _ready(up.url):
                if up.process is not None and up.process.poll() is not None:
                    router.close()
                    raise UnavailableError(f"replica {up.url} exited at start-up")
                if time.monotonic() > deadline:
                    router.close()
                    raise UnavailableError(f"replica {up.url} did not start")
                time.sleep(0.1)
        return router

    def close(self) -> None:
        for up in self.upstreams:
            if up.process is not None and up.process.poll() is None:
                up.process.terminate()
        for up in self.upstreams:
            if up.process is not None:
                try:
                    up.process.wait(20)
                except subprocess.TimeoutExpired:
                    up.process.kill()

    # -- health ---------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=2),
                                             limits=httpx.Limits(max_connections=1000))
            self._health = asyncio.get_running_loop().create_task(self._check_health())
        return self._client

    async def _check_health(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(up) for up in self.upstreams))
            await asyncio.sleep(1.0)

    async def _probe(self, up: Upstream) -> None:
        assert self._client is not None
        try:
            r = await self._client.get(up.url + "/v1/models", timeout=2)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        if up.process is not None and up.process.poll() is not None:
            ok = False
        if ok != up.healthy:
            log.warning("replica %s is %s", up.url, "up" if ok else "down")
        up.healthy = ok
        if self.metrics is not None:
            self.metrics.healthy.labels(up.url, up.version).set(int(ok))

    # -- choosing -----------------------------------------------------------------------------
    def pick(self, affinity: bytes, exclude: set[int]) -> Upstream:
        live = [u for u in self.upstreams if u.healthy and id(u) not in exclude]
        if not live:
            raise UnavailableError("no healthy replica")
        weights: dict[str, float] = {}
        for u in live:
            weights[u.version] = weights.get(u.version, 0.0) + u.weight
        versions = [v for v, w in weights.items() if w > 0] or list(weights)
        version = self._rng.choices(versions, [weights[v] or 1.0 for v in versions])[0]
        candidates = [u for u in live if u.version == version]
        least = min(candidates, key=lambda u: (u.outstanding_tokens, u.outstanding))
        sticky = self._affinity.get(affinity)
        if sticky is not None and sticky in candidates and \
                sticky.outstanding_tokens <= least.outstanding_tokens + _AFFINITY_SLACK:
            chosen = sticky
        else:
            chosen = least
        self._affinity[affinity] = chosen
        self._affinity.move_to_end(affinity)
        while len(self._affinity) > _AFFINITY_KEYS:
            self._affinity.popitem(last=False)
        return chosen

    # -- forwarding -----------------------------------------------------------------------------
    async def models(self) -> list[dict[str, Any]]:
        for up in self.upstreams:
            if up.healthy:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = await self._http().get(up.url + "/v1/models", timeout=5)
                    if r.status_code == 200:
                        data: list[dict[str, Any]] = r.json().get("data", [])
                        return data
        raise UnavailableError("no healthy replica")

    async def forward(self, path: str, body: dict[str, Any], headers: dict[str, str]
                      ) -> RouterReply:
        """Send ``body`` to ``/v1{path}`` of a replica, failing over before the first
        token; a streaming request's reply carries the events to relay."""
        client = self._http()
        affinity = _affinity_key(body)
        tokens = request_tokens(body)
        payload = orjson.dumps(body)
        tried: set[int] = set()
        last_error = "no healthy replica"
        last_busy: RouterReply | None = None
        for _ in range(_ATTEMPTS):
            try:
                up = self.pick(affinity, tried)
            except UnavailableError:
                break
            tried.add(id(up))
            up.outstanding += 1
            up.outstanding_tokens += tokens
            self._gauge(up)
            started = time.perf_counter()
            released = False

            def release(up: Upstream = up) -> None:
                nonlocal released
                if not released:
                    released = True
                    up.outstanding -= 1
                    up.outstanding_tokens -= tokens
                    self._gauge(up)

            try:
                request = client.build_request("POST", up.url + "/v1" + path, content=payload,
                                               headers={**headers,
                                                        "content-type": "application/json"})
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                release()
                last_error = f"{up.url}: {exc}"
                self._down(up, exc)
                continue
            if response.status_code >= 500:
                await response.aclose()
                release()
                last_error = f"{up.url}: HTTP {response.status_code}"
                self._down(up, last_error)
                continue
            if response.status_code == 429 and len(tried) < len(self.upstreams):
                busy = await response.aread()  # that replica is full: another may not be
                await response.aclose()
                release()
                last_busy = RouterReply(429, busy, headers={
                    k: v for k, v in response.headers.items() if k.lower() == "retry-after"})
                continue
            relay = {k: v for k, v in response.headers.items()
                     if k.lower() in ("retry-after", "x-priority")}
            if not body.get("stream") or response.status_code != 200:
                try:
                    data = await response.aread()
                except httpx.HTTPError as exc:
                    release()
                    last_error = f"{up.url}: {exc}"
                    self._down(up, exc)
                    continue
                finally:
                    await response.aclose()
                release()
                self._count(up, started, "ok" if response.status_code < 400 else "error")
                return RouterReply(response.status_code, data, headers=relay)
            lines = response.aiter_lines()
            try:
                first = await _first_token(lines)
            except (httpx.HTTPError, StopAsyncIteration) as exc:
                await response.aclose()
                release()
                last_error = f"{up.url}: the stream ended before its first token"
                self._down(up, exc)
                continue
            self._count(up, started, "ok")
            return RouterReply(200, events=_relay(first, lines, response, release),
                               headers=relay)
        if last_busy is not None:  # every replica tried was full
            return last_busy
        if self.metrics is not None:
            self.metrics.requests.labels("-", "unavailable").inc()
        raise UnavailableError(f"no replica could answer ({last_error})")

    def _down(self, up: Upstream, why: object) -> None:
        if up.healthy:
            log.warning("replica %s failed (%s): failing over", up.url, why)
        up.healthy = False
        if self.metrics is not None:
            self.metrics.failovers.labels(up.version).inc()
            self.metrics.healthy.labels(up.url, up.version).set(0)

    def _count(self, up: Upstream, started: float, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(up.version, outcome).inc()
            self.metrics.ttfb.labels(up.version).observe(time.perf_counter() - started)

    def _gauge(self, up: Upstream) -> None:
        if self.metrics is not None:
            self.metrics.outstanding.labels(up.url, up.version).set(up.outstanding_tokens)

    async def aclose(self) -> None:
        if self._health is not None:
            self._health.cancel()
        if self._client is not None:
            await self._client.aclose()


async def _first_token(lines: AsyncIterator[str]) -> list[str]:
    """The stream's ``data:`` lines up to the first that carries text or an end (what
    proves the replica is generating; a chat stream's role chunk comes before)."""
    held = []
    async for line in lines:
        if not line.startswith("data:"):
            continue
        held.append(line)
        data = line[5:].strip()
        if data == "[DONE]" or _carries_output(data):
            return held
    raise StopAsyncIteration


def _carries_output(data: str) -> bool:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return True
    if not isinstance(event, dict) or "error" in event:
        return True
    for choice in event.get("choices") or []:
        delta = choice.get("delta") or {}
        if choice.get("text") or delta.get("content") or choice.get("finish_reason"):
            return True
    return bool(event.get("usage"))


async def _relay(first: list[str], lines: AsyncIterator[str], response: httpx.Response,
                 release: Any) -> AsyncIterator[bytes]:
    try:
        for line in first:
            yield line[5:].strip().encode()
        try:
            async for line in lines:
                if line.startswith("data:"):
                    yield line[5:].strip().encode()
        except httpx.HTTPError as exc:  # the replica died mid-stream
            yield orjson.dumps({"error": {"message": f"the replica failed: {exc}",
                                          "type": "server_error"}})
    finally:
        await response.aclose()
        release()


def _affinity_key(body: dict[str, Any]) -> bytes:
    """What names a request's prefix: the start of its prompt or conversation."""
    if "messages" in body:
        text = orjson.dumps(body.get("messages"))[:_AFFINITY_CHARS]
    else:
        prompt = body.get("prompt", "")
        text = orjson.dumps(prompt)[:_AFFINITY_CHARS]
    return hashlib.blake2b(text, digest_size=16).digest()


def request_tokens(body: dict[str, Any]) -> int:
    """What a request may cost before it runs: its prompt (about four bytes a token)
    and its most generated tokens (256 when it names none or nonsense)."""
    most = body.get("max_tokens") or body.get("max_completion_tokens")
    most = most if isinstance(most, int) and not isinstance(most, bool) and most > 0 else 256
    prompt = body.get("messages") or body.get("prompt") or ""
    try:
        size = len(orjson.dumps(prompt))
    except TypeError:
        size = 0
    return int(most) + size // 4


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
