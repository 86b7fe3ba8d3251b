"""What a caller asks the vector store's front door for, as typed values.

Protocols (Qdrant REST, and later in-process faces) translate their wire
shapes into these; ``VectorService`` gives them their meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from peregrine.vector.collection.results import WithPayload
from peregrine.vector.documents import Document
from peregrine.vector.formula import FormulaQuery
from peregrine.vector.ids import PointId
from peregrine.vector.types import SparseVector

# A query by example: a stored point's id, a dense vector, or a sparse one or a
# text to infer one from (for a sparse vector, named by ``using``).
Example = PointId | np.ndarray | SparseVector | Document


@dataclass(slots=True)
class ReadOptions:
    """What every nearest-neighbour read shares (Qdrant repeats these per request).

    Not frozen only because a frozen dataclass costs ~1.5 us more to build, on
    every search; treat it as a value all the same.
    """

    limit: int = 10
    offset: int = 0
    filter: dict[str, Any] | None = None
    ef: int | None = None  # HNSW beam; None: the collection's
    exact: bool = False  # exhaustive scan instead of the graph
    with_payload: WithPayload = False
    with_vector: bool | Sequence[str] = False  # a list names the vectors to return
    score_threshold: float | None = None
    lookup: str | None = None  # the collection whose points example ids name
    using: str | None = None  # the vector searched; None: the primary one


@dataclass(frozen=True, slots=True)
class Mmr:
    """Maximal marginal relevance: a diverse pick among the nearest candidates."""

    diversity: float = 0.5  # 0: relevance only
    candidates: int | None = None  # how many nearest points to pick from


@dataclass(frozen=True, slots=True)
class NearestQuery:
    """Nearest to a vector, or to a stored point (which is left out of the results)."""

    example: Example
    mmr: Mmr | None = None


@dataclass(frozen=True, slots=True)
class RecommendQuery:
    """Like the positive examples and unlike the negative ones, by ``strategy``:
    ``average_vector`` (a nearest search for one target), ``best_score`` or
    ``sum_scores`` (exact scans, ``scoring.py``)."""

    positive: Sequence[Example]
    negative: Sequence[Example] = ()
    strategy: str = "average_vector"


@dataclass(frozen=True, slots=True)
class DiscoverQuery:
    """Near ``target`` within the zones the (positive, negative) pairs mark."""

    target: Example
    pairs: Sequence[tuple[Example, Example]]


@dataclass(frozen=True, slots=True)
class ContextQuery:
    """Points on the positive side of every (positive, negative) pair."""

    pairs: Sequence[tuple[Example, Example]]


@dataclass(frozen=True, slots=True)
class Fusion:
    """Merge the prefetches' rankings: ``rrf`` (reciprocal rank) or ``dbsf``
    (distribution-based score fusion)."""

    method: str


@dataclass(frozen=True, slots=True)
class OrderByQuery:
    """Points in the order of a numeric payload field (score 0, ``order_value``)."""

    key: str
    descending: bool = False
    start_from: float | None = None


@dataclass(frozen=True, slots=True)
class SampleRandom:
    """Random points among those selected (score 0)."""


# None: no ranking, points in id order (Qdrant's query without "query").
Query = (NearestQuery | RecommendQuery | DiscoverQuery | ContextQuery | OrderByQuery | Fusion
         | SampleRandom | FormulaQuery | None)


@dataclass(frozen=True, slots=True)
class Prefetch:
    """A sub-query whose results the query above it ranks or fuses; its filter is
    combined with every filter above it."""

    query: Query = None
    prefetch: tuple[Prefetch, ...] = ()
    filter: dict[str, Any] | None = None
    limit: int = 10
    ef: int | None = None
    exact: bool = False
    score_threshold: float | None = None
    lookup: str | None = None
    using: str | None = None


@dataclass(frozen=True, slots=True)
class PointSelector:
    """Points named by id, or every point a filter matches (exactly one)."""

    ids: Sequence[PointId] | None = None
    filter: dict[str, Any] | None = None
