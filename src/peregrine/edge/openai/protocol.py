"""The OpenAI protocol, mounted at ``/v1`` on the shared edge.

| route | what |
|---|---|
| ``GET /v1/models`` | the served model |
| ``POST /v1/completions`` | text completion; ``stream: true`` for server-sent events |
| ``POST /v1/chat/completions`` | chat completion (the model's chat template) |

Both completions take ``max_tokens``, ``temperature``, ``top_p``, ``top_k``,
``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty`` and logprobs,
and report ``usage`` (in the last chunk with ``stream_options.include_usage``).
The priority class comes from the API key (``[llm] keys``) or the
``x-priority`` header, within the key's class. A full queue or a key past its
rate answers 429 with ``Retry-After``. Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``. Translation only: the
inference face's front door does the work.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from peregrine.edge.http.protocol import (
    Call,
    EventStream,
    HttpError,
    Operation,
    Protocol,
    describe_validation,
)
from peregrine.serve.service import (
    Chunk,
    InferenceService,
    OverloadedError,
    RateLimited,
    SamplingParams,
)

MAX_TEXT = 1 << 20  # characters of a prompt or a message
MAX_STOPS = 4


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=1000)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever comes

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS or any(not 1 <= len(s) <= 256 for s in stops):
            raise HttpError(400, f"stop: at most {MAX_STOPS} strings of 1-256 characters")
        return tuple(stops)


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: Literal[False] = False
    best_of: int = Field(1, ge=1, le=1)

    def text(self) -> str:
        prompt = self.prompt if isinstance(self.prompt, str) else (self.prompt or [""])[0]
        if len(prompt) > MAX_TEXT:
            raise HttpError(400, f"prompt: at most {MAX_TEXT} characters")
        return prompt


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise HttpError(400, "messages: only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: None = None
    response_format: dict[str, Any] | None = None


class OpenAIProtocol(Protocol):
    name = "openai"
    prefix = "/v1"

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def accepts_key(self, key: bytes) -> bool:
        return self.service.knows_key(key.decode("latin-1"))

    def error(self, status: int, message: str, seconds: float) -> bytes:
        kind = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}.get(status, "server_error")
        return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                       "code": None}})

    def validation_error(self, exc: ValidationError, where: str) -> HttpError:
        return HttpError(400, describe_validation(exc, f"Invalid {where}"))

    def operations(self) -> list[Operation]:
        service = self.service

        async def models(call: Call) -> Any:
            return {"object": "list", "data": service.models()}

        async def completions(call: Call) -> Any:
            body: CompletionRequest = call.body
            service.check_model(body.model)
            prompt = await call.run(service.tokenize_prompt, body.text())
            params = _params(body, body.max_tokens, body.logprobs)
            return await self._answer(call, body, prompt, params, chat=False)

        async def chat(call: Call) -> Any:
            body: ChatRequest = call.body
            service.check_model(body.model)
            if body.response_format and body.response_format.get("type") not in (None, "text"):
                raise HttpError(400, "response_format: only text is supported")
            messages = [{"role": "system" if m.role == "developer" else m.role,
                         "content": m.text()} for m in body.messages]
            if any(len(m["content"]) > MAX_TEXT for m in messages):
                raise HttpError(400, f"messages: at most {MAX_TEXT} characters each")
            prompt = await call.run(service.tokenize_chat, messages)
            top = body.top_logprobs if body.logprobs else None
            params = _params(body, body.max_completion_tokens or body.max_tokens,
                             (top or 0) if body.logprobs else None)
            return await self._answer(call, body, prompt, params, chat=True)

        return [
            Operation("GET", "/models", "list_models", "openai", "The served models", models),
            Operation("POST", "/completions", "completions", "openai", "Text completion",
                      completions, body=CompletionRequest),
            Operation("POST", "/chat/completions", "chat_completions", "openai",
                      "Chat completion", chat, body=ChatRequest),
        ]

    async def _answer(self, call: Call, body: _Sampling, prompt: list[int],
                      params: SamplingParams, chat: bool) -> Any:
        service = self.service
        key, asked = caller_of(call)
        priority = service.priority(key, asked)
        try:  # refusals (429) come before anything is sent; a queued request streams
            chunks = await service.submit(prompt, params, priority, key or "")
        except (OverloadedError, RateLimited) as exc:
            raise HttpError(429, str(exc), {"Retry-After": str(math.ceil(exc.retry_after_s))}
                            ) from None
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        model = service.model_id
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return EventStream(_sse(chunks, ident, created, model, chat, include_usage,
                                    service, params.logprobs),
                               {"x-priority": priority})
        collect = asyncio.ensure_future(_collect(chunks))
        gone = asyncio.ensure_future(_disconnected(call))
        try:  # a client that leaves frees its slot, streaming or not
            await asyncio.wait((collect, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not collect.done():
                collect.cancel()
                await asyncio.gather(collect, return_exceptions=True)
                await chunks.aclose()
        if collect.cancelled():
            raise HttpError(499, "the client closed the request")
        text, tokens, finish, usage = collect.result()
        content = "".join(text)
        logprobs = _logprobs(tokens, service, chat) if params.logprobs is not None else None
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                                                              "content": content},
                                      "logprobs": logprobs, "finish_reason": finish}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": content, "logprobs": logprobs,
                      "finish_reason": finish}
            obj = "text_completion"
        return {"id": ident, "object": obj, "created": created, "model": model,
                "choices": [choice], "usage": usage}


async def _collect(chunks: AsyncGenerator[Chunk, None]
                   ) -> tuple[list[str], list[Any], str | None, dict[str, Any] | None]:
    text: list[str] = []
    tokens: list[Any] = []
    try:
        async for chunk in chunks:
            if chunk.finish_reason is not None or chunk.usage is not None:
                return text, tokens, chunk.finish_reason, chunk.usage
            text.append(chunk.text)
            if chunk.token is not None and chunk.token.logprob is not None:
                tokens.append(chunk.token)
    finally:
        await chunks.aclose()
    return text, tokens, None, None


async def _disconnected(call: Call) -> None:
    """Returns when the client has gone (its request body was read already)."""
    while (await call.receive())["type"] != "http.disconnect":
        pass


def _params(body: _Sampling, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
    return SamplingParams(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                          max_tokens=max_tokens or 256, stop=body.stops(), seed=body.seed,
                          presence_penalty=body.presence_penalty,
                          frequency_penalty=body.frequency_penalty, logprobs=logprobs,
                          ignore_eos=body.ignore_eos)


def caller_of(call: Call) -> tuple[str | None, str | None]:
    key = asked = None
    for name, value in call.scope.get("headers", []):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            key = value[7:].strip().decode("latin-1")
        elif name == b"api-key":
            key = value.decode("latin-1")
        elif name == b"x-priority":
            asked = value.decode("latin-1").strip().lower()
    return key, asked


def _logprobs(tokens: list[Any], service: InferenceService, chat: bool) -> dict[str, Any]:
    text, raw = service.token_text, service.token_bytes
    if chat:
        return {"content": [
            {"token": text(t.id), "logprob": t.logprob, "bytes": list(raw(t.id)),
             "top_logprobs": [{"token": text(i), "logprob": lp, "bytes": list(raw(i))}
                              for i, lp in t.top]}
            for t in tokens]}
    return {"tokens": [text(t.id) for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{text(i): lp for i, lp in t.top} for t in tokens],
            "text_offset": []}


async def _sse(chunks: AsyncGenerator[Chunk, None], ident: str, created: int,
               model: str, chat: bool, include_usage: bool, service: InferenceService,
               logprobs: int | None) -> AsyncIterator[Any]:
    """OpenAI's chunks, then ``[DONE]``; closing this closes the generation."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def event(choice: dict[str, Any], usage: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": ident, "object": obj, "created": created,
                               "model": model, "choices": [choice] if choice else []}
        if include_usage:
            out["usage"] = usage
        return out

    def piece(chunk: Chunk) -> dict[str, Any]:
        lp = (_logprobs([chunk.token], service, chat)
              if logprobs is not None and chunk.token is not None
              and chunk.token.logprob is not None else None)
        if chat:
            return {"index": 0, "delta": {"content": chunk.text}, "logprobs": lp,
                    "finish_reason": None}
        return {"index": 0, "text": chunk.text, "logprobs": lp, "finish_reason": None}

    try:
        if chat:
            yield event({"index": 0, "delta": {"role": "assistant", "content": ""},
                         "logprobs": None, "finish_reason": None})
        chunk: Chunk | None = await anext(chunks, None)
        while chunk is not None:
            if chunk.finish_reason is not None or chunk.usage is not None:
                end = ({"index": 0, "delta": {}, "logprobs": None,
                        "finish_reason": chunk.finish_reason} if chat else
                       {"index": 0, "text": "", "logprobs": None,
                        "finish_reason": chunk.finish_reason})
                yield event(end)
                if include_usage:
                    yield event({}, chunk.usage)
                break
            yield event(piece(chunk))
            chunk = await anext(chunks, None)
        yield "[DONE]"
    finally:
        await chunks.aclose()
