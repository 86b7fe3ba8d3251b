"""``peregrine bench llm``: load on any OpenAI-compatible server, measured per token.

Closed loop (``--concurrency N``: N clients, each sending its next request when
the last one ends) or open loop (``--rate R`` requests a second, whatever the
answers). Every request streams, so the time to the first token, the gaps
between tokens and the end are seen as the client sees them. Prompts are
built from a seeded word list; ``--shared-prefix T`` starts every prompt with
the same T-token preamble (what a prefix cache can reuse), else each prompt
starts differently. Reports p50/p90/p99 of TTFT, inter-token latency and
end-to-end latency, and tokens per second over the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

_WORDS = ("river", "market", "signal", "harbor", "lantern", "orchard", "meadow", "canyon",
          "glacier", "summit", "beacon", "archive", "compass", "falcon", "prism", "quarry",
          "saddle", "thunder", "velvet", "willow", "ember", "fjord", "garnet", "hollow",
          "ivory", "juniper", "kettle", "lagoon", "marble")


@dataclass
class LoadConfig:
    url: str  # the server's base, with or without /v1
    concurrency: int = 8
    duration_s: float = 30.0
    rate: float = 0.0  # > 0: open loop at this many requests a second
    prompt_tokens: int = 64
    shared_prefix: int = 0
    max_tokens: int = 64
    model: str = ""
    chat: bool = False
    priority: str | None = None
    api_key: str = "none"
    ignore_eos: bool = True
    seed: int = 0
    warmup: int = 1


@dataclass
class Sample:
    ttft: float
    gaps: list[float]
    e2e: float
    tokens: int
    ok: bool = True
    status: int = 200


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    rejected: int = 0
    failed: int = 0

    def summary(self) -> dict[str, Any]:
        ok = [s for s in self.samples if s.ok]

        def pct(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
            arr = np.asarray(values) * 1000
            return {"p50_ms": float(np.percentile(arr, 50)),
                    "p90_ms": float(np.percentile(arr, 90)),
                    "p99_ms": float(np.percentile(arr, 99)), "mean_ms": float(arr.mean())}

        wall = max(1e-9, self.ended - self.started)
        tokens = sum(s.tokens for s in ok)
        return {"requests": len(ok), "rejected_429": self.rejected, "failed": self.failed,
                "seconds": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
                "requests_per_s": len(ok) / wall,
                "ttft": pct([s.ttft for s in ok]),
                "itl": pct([g for s in ok for g in s.gaps]),
                "e2e": pct([s.e2e for s in ok])}


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


class _Prompts:
    """Prompts of about ``prompt_tokens`` tokens (a word is about 1.3 tokens)."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.prefix = (_words(random.Random(cfg.seed + 1), int(cfg.shared_prefix / 1.3))
                       + "\n") if cfg.shared_prefix else ""

    def next(self) -> str:
        own = max(1, int((self.cfg.prompt_tokens - self.cfg.shared_prefix) / 1.3))
        return (self.prefix + f"[{self.rng.randrange(10**9)}] " + _words(self.rng, own)
                + "\nContinue:")


async def _one(http: httpx.AsyncClient, cfg: LoadConfig, prompt: str) -> Sample:
    base = cfg.url.rstrip("/").removesuffix("/v1")
    body: dict[str, Any] = {"max_tokens": cfg.max_tokens, "temperature": 0.0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if cfg.model:
        body["model"] = cfg.model
    if cfg.ignore_eos:
        body["ignore_eos"] = True
    if cfg.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = prompt
        path = "/v1/completions"
    headers = {"authorization": f"Bearer {cfg.api_key}"}
    if cfg.priority:
        headers["x-priority"] = cfg.priority
    started = time.perf_counter()
    first = last = 0.0
    gaps: list[float] = []
    chunks = 0
    usage_tokens = None
    async with http.stream("POST", base + path, content=orjson.dumps(body),
                           headers={**headers, "content-type": "application/json"}) as r:
        if r.status_code != 200:
            await r.aread()
            return Sample(0.0, [], 0.0, 0, ok=False, status=r.status_code)
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict):
                continue
            if "error" in event:  # the stream ended in an error: not a success
                return Sample(0.0, [], time.perf_counter() - started, 0, ok=False, status=500)
            if event.get("usage"):
                usage_tokens = event["usage"].get("completion_tokens")
            choices = event.get("choices") or []
            text = ""
            if choices:
                c = choices[0]
                text = c.get("text") or (c.get("delta") or {}).get("content") or ""
            if not text:
                continue
            now = time.perf_counter()
            if not first:
                first = now
            else:
                gaps.append(now - last)
            last = now
            chunks += 1
    end = time.perf_counter()
    return Sample(first - started if first else end - started, gaps, end - started,
                  usage_tokens if usage_tokens is not None else chunks)


async def run_load(cfg: LoadConfig) -> LoadResult:
    prompts = _Prompts(cfg)
    result = LoadResult()
    limits = httpx.Limits(max_connections=max(cfg.concurrency, 64) * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10), limits=limits) as http:
        for _ in range(cfg.warmup):  # the first request of a server pays its loading
            await _one(http, cfg, prompts.next())
        result.started = time.perf_counter()
        deadline = result.started + cfg.duration_s

        async def record(prompt: str) -> None:
            try:
                sample = await _one(http, cfg, prompt)
            except httpx.HTTPError:
                result.failed += 1
                return
            if sample.ok:
                result.samples.append(sample)
            elif sample.status == 429:
                result.rejected += 1
            else:
                result.failed += 1

        if cfg.rate > 0:
            tasks = []
            gap = 1.0 / cfg.rate
            at = result.started
            while at < deadline:
                now = time.perf_counter()
                if at > now:
                    await asyncio.sleep(at - now)
                tasks.append(asyncio.create_task(record(prompts.next())))
                at += gap
            await asyncio.gather(*tasks)
        else:
            async def client() -> None:
                while time.perf_counter() < deadline:
                    await record(prompts.next())

            await asyncio.gather(*(client() for _ in range(cfg.concurrency)))
        result.ended = time.perf_counter()
    return result
