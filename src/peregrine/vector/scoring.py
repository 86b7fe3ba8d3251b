"""Scores that are not one vector's similarity, as Qdrant defines them (its own
client's local mode is the reference the tests use). ``core`` is the engine's
internal similarity: the dot product (cosine on normalised vectors) or, for l2,
the negated squared distance; higher is better everywhere.

- recommend ``best_score``: a point's best positive similarity, squashed into
  (0, 1) by ``0.5 * (x / (1 + |x|) + 1)``, when it beats its best negative one;
  otherwise minus the squashed best negative.
- recommend ``sum_scores``: the sum over positives minus the sum over negatives.
- discovery: per context pair +1 when the point is nearer the positive, -1 when
  nearer the negative, 0 on a tie, plus the squashed similarity to the target.
- context: per pair ``x / (1 + |x|)`` of ``min(pos - neg - eps, 0)``, summed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from peregrine.vector.segment.kernels import F32, score_block
from peregrine.vector.types import Metric

Scorer = Callable[[F32], F32]
EPSILON = np.float32(1.1920929e-7)


def _squash(x: F32) -> F32:
    return np.asarray(x / (1.0 + np.abs(x)), dtype=np.float32)


def _scaled(x: F32) -> F32:
    return np.asarray(0.5 * (_squash(x) + 1.0), dtype=np.float32)


def _core(examples: F32, vectors: F32, metric: Metric) -> F32:
    """(n_examples, n) internal similarities."""
    return score_block(vectors, examples, metric)


def best_score(positive: F32, negative: F32, metric: Metric) -> Scorer:
    def score(vectors: F32) -> F32:
        n = vectors.shape[0]
        pos = _core(positive, vectors, metric).max(axis=0) if len(positive) else \
            np.full(n, -np.inf, np.float32)
        neg = _core(negative, vectors, metric).max(axis=0) if len(negative) else \
            np.full(n, -np.inf, np.float32)
        return np.where(pos > neg, _scaled(pos), -_scaled(neg)).astype(np.float32)
    return score


def sum_scores(positive: F32, negative: F32, metric: Metric) -> Scorer:
    def score(vectors: F32) -> F32:
        n = vectors.shape[0]
        pos = _core(positive, vectors, metric).sum(axis=0) if len(positive) else np.zeros(n)
        neg = _core(negative, vectors, metric).sum(axis=0) if len(negative) else np.zeros(n)
        return np.asarray(pos - neg, dtype=np.float32)
    return score


def _pair_terms(pairs: F32, vectors: F32, metric: Metric) -> tuple[F32, F32]:
    """``pairs`` is (n_pairs, 2, dim): similarities to each pair's positive and
    negative, each (n_pairs, n)."""
    pos = _core(pairs[:, 0], vectors, metric)
    neg = _core(pairs[:, 1], vectors, metric)
    return pos, neg


def discovery(target: F32, pairs: F32, metric: Metric) -> Scorer:
    def score(vectors: F32) -> F32:
        pos, neg = _pair_terms(pairs, vectors, metric)
        ranks = np.sign(pos - neg).sum(axis=0)
        return np.asarray(ranks + _scaled(_core(target[None, :], vectors, metric)[0]),
                          dtype=np.float32)
    return score


def context(pairs: F32, metric: Metric) -> Scorer:
    def score(vectors: F32) -> F32:
        pos, neg = _pair_terms(pairs, vectors, metric)
        return np.asarray(_squash(np.minimum(pos - neg - EPSILON, 0.0)).sum(axis=0),
                          dtype=np.float32)
    return score
