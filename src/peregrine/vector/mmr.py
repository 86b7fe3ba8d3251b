"""Maximal marginal relevance: a diverse top-k from a list of nearest candidates.

Retrieval for an LLM wants relevant *and* different passages. Greedy MMR (as
Qdrant's query API and LangChain do it) picks the most relevant candidate,
then repeatedly the one maximising ``λ·relevance − (1−λ)·(max similarity to
anything picked)``, with ``λ = 1 − diversity``. Similarity uses the
collection's own metric so relevance and redundancy are on one scale.
"""

from __future__ import annotations

import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.vector.types import Metric


def pairwise_similarity(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    v: np.ndarray = np.asarray(vectors, dtype=np.float32)
    if metric is Metric.COSINE:
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = (v / np.where(norms == 0, 1, norms)).astype(np.float32)
        sim: np.ndarray = v @ v.T
        return sim
    if metric is Metric.DOT:
        dot: np.ndarray = v @ v.T
        return dot
    if metric is Metric.L1:
        l1 = np.stack([np.abs(v - row).sum(axis=1) for row in v]) if len(v) else \
            np.zeros((0, 0), np.float32)
        return -l1
    sq = np.einsum("ij,ij->i", v, v)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * (v @ v.T), 0))
    negated: np.ndarray = -dist  # higher is more similar, like relevance of L2 hits below
    return negated


def maximal_marginal_relevance(scores: np.ndarray, vectors: np.ndarray, metric: Metric,
                               diversity: float, limit: int) -> list[int]:
    """Indices of the picked candidates, in pick order.

    ``scores`` are the candidates' query scores as the engine returns them
    (similarities, or distances for L2).
    """
    if not 0.0 <= diversity <= 1.0:
        raise InvalidInputError("mmr diversity must be between 0 and 1")
    n = len(scores)
    if n == 0 or limit < 1:
        return []
    relevance = np.asarray(scores, dtype=np.float64)
    if not metric.higher_is_better:
        relevance = -relevance
    similarity = pairwise_similarity(vectors, metric)
    lam = 1.0 - diversity
    first = int(np.argmax(relevance))
    picked = [first]
    available = np.ones(n, dtype=bool)
    available[first] = False
    redundancy = similarity[first].astype(np.float64)
    while len(picked) < min(limit, n):
        value = lam * relevance - (1.0 - lam) * redundancy
        value[~available] = -np.inf
        best = int(np.argmax(value))
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, similarity[best])
    return picked
