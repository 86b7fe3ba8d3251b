"""An embedding cache keyed by SHA-256 of the normalized text and the model id.

Real streams repeat themselves: the same product description, the same query,
the same document chunk arrive again and again. Embedding is the expensive
stage (milliseconds per text on CPU), so an embedder wrapped in
:class:`CachedEmbedder` embeds each distinct text once and serves the rest
from memory.

The key is ``sha256(model_id + NUL + normalize(text))``: 32 bytes whatever the
text's length, and no raw text is kept. Vectors live in one pre-allocated
float32 matrix (``capacity x dim``); a full cache reuses the row of its least
recently used entry, so memory is fixed at construction.
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["CachedEmbedder", "Encoder", "normalize_text", "text_key"]


class Encoder(Protocol):
    """Anything that turns texts into a (n, dim) float32 array."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def normalize_text(text: str) -> str:
    """Unicode NFC with runs of whitespace collapsed and the ends trimmed: two
    texts that differ only there tokenize identically, so they share a vector."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_key(model_id: str, text: str) -> bytes:
    """SHA-256 of the model id and the normalized text: the key of a text's vector,
    in this cache and in the state face's shared one."""
    return hashlib.sha256(model_id.encode() + b"\x00" + normalize_text(text).encode()).digest()


class CachedEmbedder:
    """Wraps an encoder with a bounded LRU of its vectors.

    Only the distinct texts a batch misses reach the encoder, in one call.
    Thread-safe: the lock is held for the bookkeeping, not the encoding, so two
    threads may occasionally embed the same new text; both get the same vector.
    """

    def __init__(self, encoder: Any, model_id: str, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.encoder = encoder
        self.model_id = model_id
        self.capacity = capacity
        self._rows: OrderedDict[bytes, int] = OrderedDict()
        self._matrix: npt.NDArray[np.float32] | None = None  # allocated on first vector
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def __len__(self) -> int:
        return len(self._rows)

    def key(self, text: str) -> bytes:
        return text_key(self.model_id, text)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> npt.NDArray[np.float32]:
        """Vectors of ``texts`` (n, dim), from the cache where it has them."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single str")
        keys = [self.key(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        todo: dict[bytes, list[int]] = {}
        with self._lock:
            for i, k in enumerate(keys):
                row = self._rows.get(k)
                if row is None:
                    todo.setdefault(k, []).append(i)
                    continue
                self._rows.move_to_end(k)
                assert self._matrix is not None
                out[i] = self._matrix[row]
            self.hits += len(texts) - len(todo)  # a repeat within the batch is a hit
            self.misses += len(todo)
        if not todo:
            return out
        firsts = [positions[0] for positions in todo.values()]
        fresh = np.asarray(self.encoder.encode([texts[i] for i in firsts]), dtype=np.float32)
        with self._lock:
            for (k, positions), vector in zip(todo.items(), fresh, strict=True):
                out[positions] = vector
                self._store(k, vector)
        return out

    def _store(self, key: bytes, vector: npt.NDArray[np.float32]) -> None:
        if self._matrix is None:
            self._matrix = np.empty((self.capacity, vector.shape[0]), dtype=np.float32)
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) < self.capacity:
                row = len(self._rows)
            else:
                _, row = self._rows.popitem(last=False)
            self._rows[key] = row
        else:
            self._rows.move_to_end(key)
        self._matrix[row] = vector

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def __repr__(self) -> str:
        return (f"CachedEmbedder({self.encoder!r}, entries={len(self._rows)}/{self.capacity}, "
                f"hits={self.hits}, misses={self.misses})")
