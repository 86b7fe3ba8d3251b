"""The OpenAI protocol in front of replicas (``peregrine llm --replicas R`` or
``[llm] upstreams``), mounted at ``/v1``: the same routes, forwarded whole.

The router decides the priority class (API key, ``x-priority``) and charges
the key's rate limits once, here, then passes the class on in ``x-priority``;
the replica validates the request and answers. Replies are relayed as they
come: JSON bodies with their status, server-sent events one by one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response

from peregrine.core.errors import UnavailableError
from peregrine.edge.http.protocol import Call, EventStream, HttpError, Operation
from peregrine.edge.openai.protocol import OpenAIProtocol, caller_of
from peregrine.serve.service import (
    LlmSettings,
    RateLimited,
    RateLimits,
    ReplicaRouter,
    request_tokens,
    resolve_priority,
)

_MAX_BODY_KEYS = 64


class OpenAIRouterProtocol(OpenAIProtocol):
    def __init__(self, router: ReplicaRouter, settings: LlmSettings) -> None:
        self.router = router
        self.settings = settings
        self.keys = settings.key_table()
        self.limits = RateLimits(self.keys)

    def accepts_key(self, key: bytes) -> bool:
        return key.decode("latin-1") in self.keys

    async def _refunding(self, events: AsyncIterator[bytes], key: str, charged: int
                         ) -> AsyncIterator[bytes]:
        """Relay a stream, then give the key back what was charged and not generated
        (from the stream's usage, else one token per chunk of text)."""
        used = chunks = 0
        try:
            async for event in events:
                if event != b"[DONE]":
                    with contextlib.suppress(Exception):
                        data = orjson.loads(event)
                        if data.get("usage"):
                            used = int(data["usage"]["total_tokens"])
                        elif data.get("choices"):
                            chunks += 1
                yield event
        finally:
            self.limits.refund(key, charged - (used or chunks))

    def operations(self) -> list[Operation]:
        router = self.router

        async def models(call: Call) -> Any:
            try:
                return {"object": "list", "data": await router.models()}
            except UnavailableError as exc:
                raise HttpError(503, str(exc)) from None

        async def forward(call: Call, path: str) -> Any:
            body: dict[str, Any] = call.body
            if len(body) > _MAX_BODY_KEYS:
                raise HttpError(400, "the request has too many fields")
            key, asked = caller_of(call)
            priority = resolve_priority(self.keys, key, asked, self.settings.default_class)
            charged = request_tokens(body)
            try:
                self.limits.charge(key or "", charged)
            except RateLimited as exc:
                raise HttpError(429, str(exc),
                                {"Retry-After": str(math.ceil(exc.retry_after_s))}) from None
            try:
                reply = await router.forward(path, body, {"x-priority": priority})
            except BaseException as exc:
                self.limits.refund(key or "", charged)
                if isinstance(exc, UnavailableError):
                    raise HttpError(503, str(exc)) from None
                raise
            if reply.events is not None:
                return EventStream(self._refunding(reply.events, key or "", charged),
                                   {**reply.headers, "x-priority": priority})
            used = charged
            if reply.status == 200:
                with contextlib.suppress(Exception):
                    used = int(orjson.loads(reply.body)["usage"]["total_tokens"])
            else:
                used = 0  # refused: nothing was generated
            self.limits.refund(key or "", charged - used)
            return Response(reply.body, reply.status, headers=reply.headers,
                            media_type="application/json")

        async def completions(call: Call) -> Any:
            return await forward(call, "/completions")

        async def chat(call: Call) -> Any:
            return await forward(call, "/chat/completions")

        return [
            Operation("GET", "/models", "list_models", "openai", "The served models", models),
            Operation("POST", "/completions", "completions", "openai", "Text completion",
                      completions, body=dict[str, Any]),
            Operation("POST", "/chat/completions", "chat_completions", "openai",
                      "Chat completion", chat, body=dict[str, Any]),
        ]


