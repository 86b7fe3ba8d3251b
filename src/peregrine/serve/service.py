"""The inference face's front door: language models served with continuous batching.

``InferenceService.open(settings)`` serves one GGUF model (the built-in Gemma 3
270M unless ``[llm] model`` names a file) through an ``InferenceEngine``,
created on first use unless ``preload``. ``submit`` queues a completion (or
refuses it at once) and returns an async iterator of its ``Chunk``s; leaving it
early (a client gone) cancels the request and frees its slot before the next
step. Priority classes come from the API
key's configuration or the caller's choice, within what the key allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from peregrine.core.errors import InvalidInputError
from peregrine.serve.engine import InferenceEngine, OverloadedError
from peregrine.serve.limits import RateLimited, RateLimits
from peregrine.serve.metrics import LlmMetrics
from peregrine.serve.model import DEFAULT_MODEL, LlamaModel, default_model_path
from peregrine.serve.router import ReplicaRouter, RouterReply, request_tokens
from peregrine.serve.sampling import SamplingParams, TokenInfo
from peregrine.serve.scheduler import RANK, Request
from peregrine.serve.settings import CLASSES, LlmSettings

__all__ = ["CLASSES", "Chunk", "InferenceService", "LlmSettings", "OverloadedError",
           "RateLimited", "RateLimits", "ReplicaRouter", "RouterReply", "SamplingParams",
           "TokenInfo", "request_tokens", "resolve_priority"]

MAX_MESSAGES = 256


def resolve_priority(keys: dict[str, tuple[str, float, float]], key: str | None,
                     asked: str | None, default: str) -> str:
    """The class of a request: its key's, or lower if the caller asks for less. A
    caller without a configured key (the edge's own key, or none) may ask for any."""
    if asked is not None and asked not in CLASSES:
        raise InvalidInputError(f"x-priority must be one of {', '.join(CLASSES)}")
    entry = keys.get(key or "")
    if entry is None:
        return asked or default
    ceiling = entry[0]
    if asked is None or RANK[asked] < RANK[ceiling]:
        return ceiling
    return asked


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a completion: ``text`` (maybe empty) with its token's details, or
    the end (``finish_reason`` and ``usage`` set)."""

    text: str = ""
    token: TokenInfo | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


class InferenceService:
    def __init__(self, settings: LlmSettings, metrics: LlmMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = settings.key_table()
        self.limits = RateLimits(self.keys)
        self._engine: InferenceEngine | None = None
        self._lock = threading.Lock()
        path = settings.model
        self.model_id = settings.model_name or (Path(path).stem if path else DEFAULT_MODEL)
        self.created = int(time.time())

    @classmethod
    def open(cls, settings: LlmSettings, registry: CollectorRegistry | None = None
             ) -> InferenceService:
        service = cls(settings, LlmMetrics(registry) if registry is not None else None)
        if settings.preload:
            service.engine()
        return service

    def engine(self) -> InferenceEngine:
        """The engine, loading the model on first use."""
        with self._lock:
            if self._engine is None:
                s = self.settings
                path = s.model or default_model_path()
                model = LlamaModel(path, slots=s.slots, n_ctx=s.n_ctx, n_batch=s.step_tokens,
                                   threads=s.n_threads, name=self.model_id,
                                   gpu_layers=s.gpu_layers,
                                   batch_invariant=s.batch_invariant)
                self._engine = InferenceEngine(model, s, self.metrics)
            return self._engine

    # -- who asks, at which priority ---------------------------------------------------
    def knows_key(self, key: str) -> bool:
        return key in self.keys

    def priority(self, key: str | None, asked: str | None) -> str:
        return resolve_priority(self.keys, key, asked, self.settings.default_class)

    # -- generation ----------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return [{"id": self.model_id, "object": "model", "created": self.created,
                 "owned_by": "peregrine"}]

    def check_model(self, model: str | None) -> None:
        if model and model != self.model_id:
            from peregrine.core.errors import NotFoundError

            raise NotFoundError(f"the model {model!r} does not exist; this server has "
                                f"{self.model_id!r}")

    def token_text(self, token: int) -> str:
        """A token as text (special tokens spelt out), for logprobs."""
        return self.engine().model.piece(token)

    def token_bytes(self, token: int) -> bytes:
        """A token's bytes as generated text has them."""
        return self.engine().model.piece_bytes(token)

    def tokenize_prompt(self, prompt: str) -> list[int]:
        return self.engine().model.tokenize(prompt, add_special=True, parse_special=False)

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        if not 1 <= len(messages) <= MAX_MESSAGES:
            raise InvalidInputError(f"messages must hold 1-{MAX_MESSAGES} messages")
        return self.engine().model.chat_prompt(messages)

    async def submit(self, prompt: list[int], params: SamplingParams, priority: str,
                     key: str = "") -> AsyncGenerator[Chunk, None]:
        """Queue the completion of ``prompt`` (tokens) and return its chunks as they
        come. A refusal (``OverloadedError``: the class's queue is full;
        ``RateLimited``: the key's budget) is raised here, before anything is sent;
        a request that waits for a slot is in its queue when this returns."""
        s = self.settings
        if not 1 <= params.max_tokens <= s.max_tokens:
            raise InvalidInputError(f"max_tokens must be 1..{s.max_tokens}")
        engine = await asyncio.to_thread(self.engine)
        budget = len(prompt) + params.max_tokens
        try:
            self.limits.charge(key, budget)
        except RateLimited:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.model_id, priority, "rate_limit").inc()
            raise
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()

        def on_event(event: tuple[str, Any, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(events.put_nowait, event)

        req = Request(list(prompt), params, priority, on_event, time.perf_counter(), key)
        try:
            engine.submit(req)
        except BaseException:
            self.limits.refund(key, budget)
            raise
        return self._chunks(engine, req, events, key, budget)

    async def _chunks(self, engine: InferenceEngine, req: Request,
                      events: asyncio.Queue[tuple[str, Any, Any]], key: str, budget: int
                      ) -> AsyncGenerator[Chunk, None]:
        finished = False
        try:
            while True:
                kind, a, b = await events.get()
                if kind == "token":
                    yield Chunk(a, b)
                elif kind == "done":
                    finished = True
                    yield Chunk(finish_reason=a, usage=b)
                    return
                else:
                    finished = True
                    raise RuntimeError(a)
        finally:
            if not finished:  # the caller left: the slot frees before the next step
                engine.cancel(req)
            self.limits.refund(key, budget - len(req.prompt) - len(req.generated))

    def stats(self) -> dict[str, Any]:
        if self._engine is None:
            return {"model": self.model_id, "loaded": False}
        return {**self._engine.stats(), "loaded": True}

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
