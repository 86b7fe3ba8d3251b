"""The OpenAI protocol in front of replicas (``peregrine llm --replicas R`` or
``[llm] upstreams``), mounted at ``/v1``: the same routes, forwarded whole.

The router decides the priority class (API key, ``x-priority``) and charges
the key's rate limits once, here, then passes the class on in ``x-priority``;
the replica validates the request and answers. Replies are relayed as they
come: JSON bodies with their status, server-sent events one by one.
"""

from __future__ import annotations

import math
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
            try:
                self.limits.charge(key or "", _tokens(body))
            except RateLimited as exc:
                raise HttpError(429, str(exc),
                                {"Retry-After": str(math.ceil(exc.retry_after_s))}) from None
            try:
                reply = await router.forward(path, body, {"x-priority": priority})
            except UnavailableError as exc:
                raise HttpError(503, str(exc)) from None
            if reply.events is not None:
                return EventStream(reply.events, {**reply.headers, "x-priority": priority})
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


def _tokens(body: dict[str, Any]) -> int:
    """What a request may cost, charged before it runs: its prompt (about four bytes
    a token) and its most generated tokens."""
    most = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    prompt = body.get("messages") or body.get("prompt") or ""
    return int(most if isinstance(most, int) else 256) + len(orjson.dumps(prompt)) // 4
