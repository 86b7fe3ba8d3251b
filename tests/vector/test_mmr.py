"""Maximal marginal relevance against a direct transcription of its definition."""

from __future__ import annotations

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.mmr import maximal_marginal_relevance
from peregrine.vector.types import Metric


def reference(query: np.ndarray, cands: np.ndarray, metric: Metric, diversity: float,
              limit: int) -> list[int]:
    def sim(a: np.ndarray, b: np.ndarray) -> float:
        if metric is Metric.COSINE:
            return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        if metric is Metric.DOT:
            return float(a @ b)
        if metric is Metric.L1:
            return -float(np.abs(a - b).sum())
        return -float(np.linalg.norm(a - b))

    lam = 1 - diversity
    rel = [sim(query, c) for c in cands]
    picked: list[int] = []
    while len(picked) < min(limit, len(cands)):
        best, best_value = -1, -np.inf
        for i in range(len(cands)):
            if i in picked:
                continue
            redundancy = max((sim(cands[i], cands[j]) for j in picked), default=0.0)
            value = rel[i] if not picked else lam * rel[i] - (1 - lam) * redundancy
            if value > best_value:
                best, best_value = i, value
        picked.append(best)
    return picked


@pytest.mark.parametrize("metric", list(Metric))
@pytest.mark.parametrize("diversity", [0.0, 0.3, 0.5, 1.0])
def test_matches_the_definition(metric: Metric, diversity: float) -> None:
    rng = np.random.default_rng(int(diversity * 10) + len(metric.value))
    for _ in range(10):
        query = rng.standard_normal(6)
        cands = rng.standard_normal((12, 6))
        if metric is Metric.COSINE:
            scores = cands @ query / np.linalg.norm(cands, axis=1) / np.linalg.norm(query)
        elif metric is Metric.DOT:
            scores = cands @ query
        elif metric is Metric.L1:
            scores = np.abs(cands - query).sum(axis=1)
        else:
            scores = np.linalg.norm(cands - query, axis=1)
        got = maximal_marginal_relevance(scores, cands, metric, diversity, 5)
        assert got == reference(query, cands, metric, diversity, 5)


def test_edges() -> None:
    assert maximal_marginal_relevance(np.array([]), np.empty((0, 3)), Metric.DOT, 0.5, 3) == []
    assert maximal_marginal_relevance(np.array([0.1, 0.9]), np.eye(2), Metric.DOT, 0.5,
                                      5) == [1, 0]
    with pytest.raises(InvalidInputError):
        maximal_marginal_relevance(np.array([1.0]), np.eye(1), Metric.DOT, 1.5, 1)
