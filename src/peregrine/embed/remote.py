"""An embedder that calls an OpenAI-compatible ``/embeddings`` endpoint.

For deployments whose embedding model runs elsewhere (OpenAI, a vLLM or TEI
server, any gateway speaking the same API). Same surface as
:class:`~peregrine.embed.TextEmbedder` (``dim``, ``encode``), so a pipeline's
embed stage and :class:`~peregrine.embed.CachedEmbedder` take either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["RemoteEmbedError", "RemoteEmbedder"]

_MAX_INPUTS = 2048  # OpenAI's cap on inputs per request


class RemoteEmbedError(RuntimeError):
    """The endpoint failed or answered something that is not an embeddings list."""


class RemoteEmbedder:
    """``POST {base_url}/embeddings`` with ``{"model", "input": [...]}``.

    ``base_url`` is the API root (``https://api.openai.com/v1``,
    ``http://host:8000/v1``); the key comes from ``api_key`` or
    ``OPENAI_API_KEY``. Vectors are L2-normalised unless ``normalize`` is
    False, so inner-product collections rank by cosine as with the local model.
    ``dim`` is learned from the first answer unless given.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 dim: int | None = None, batch_size: int = 256, timeout_s: float = 30.0,
                 normalize: bool = True) -> None:
        import httpx

        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.model = model
        self.batch_size = max(1, min(batch_size, _MAX_INPUTS))
        self.normalize = normalize
        self._dim = dim
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                    timeout=timeout_s)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int | None = None
               ) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single str")
        step = max(1, min(batch_size or self.batch_size, self.batch_size))
        parts = [self._call(list(texts[i:i + step])) for i in range(0, len(texts), step)]
        if not parts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        out = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        self._dim = out.shape[1]
        return out

    def _call(self, batch: list[str]) -> npt.NDArray[np.float32]:
        import httpx

        try:
            r = self._client.post("/embeddings", json={"model": self.model, "input": batch,
                                                       "encoding_format": "float"})
        except httpx.HTTPError as exc:
            raise RemoteEmbedError(f"embeddings request failed: {exc}") from exc
        if r.status_code != 200:
            raise RemoteEmbedError(f"embeddings endpoint answered {r.status_code}: "
                                   f"{r.text[:300]}")
        try:
            data: Any = r.json()["data"]
            rows = sorted(data, key=lambda d: d["index"])
            out = np.asarray([d["embedding"] for d in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteEmbedError(f"not an embeddings answer: {exc}") from exc
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise RemoteEmbedError(f"asked for {len(batch)} embeddings, got shape {out.shape}")
        return out

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RemoteEmbedder(model={self.model!r}, url={str(self._client.base_url)!r})"
