"""How the vector face answers a read: the query execution behind ``VectorService``.

The service checks caps, resolves names and times reads; this runs them
against one collection: nearest searches (on the primary vector through the
HNSW machinery, on a named or sparse vector exactly), maximal marginal
relevance, recommend / discover / context by example (``scoring.py``), random
samples, points in payload order, and multi-stage queries over prefetches
(``universal.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.vector import scoring
from peregrine.vector.collection import named
from peregrine.vector.collection.collection import Collection
from peregrine.vector.documents import Document, DocumentEncoder
from peregrine.vector.errors import PointNotFoundError
from peregrine.vector.formula import FormulaQuery
from peregrine.vector.ids import PointId
from peregrine.vector.mmr import maximal_marginal_relevance
from peregrine.vector.queries import (
    ContextQuery,
    DiscoverQuery,
    Example,
    Fusion,
    Mmr,
    NearestQuery,
    OrderByQuery,
    Prefetch,
    Query,
    ReadOptions,
    RecommendQuery,
    SampleRandom,
)
from peregrine.vector.segment.kernels import normalize_rows
from peregrine.vector.settings import VectorSettings
from peregrine.vector.types import Hit, Metric, SparseVector
from peregrine.vector.universal import Stages, resolve


class QueryExecutor:
    """Runs typed reads against a collection, within the service's settings."""

    def __init__(self, settings: VectorSettings, collection: Callable[[str], Collection],
                 documents: DocumentEncoder) -> None:
        self.settings = settings
        self._filter_limits = settings.filter_limits
        self._collection = collection  # by name or alias (``lookup_from``)
        self._documents = documents

    def check_count(self, n: int, what: str) -> None:
        if n > self.settings.max_batch:
            raise InvalidInputError(f"{n} {what} in one request: the limit (max_batch) is "
                                    f"{self.settings.max_batch}")

    def staged(self, c: Collection, query: Query, options: ReadOptions,
                prefetch: Sequence[Prefetch]) -> list[Hit]:
        if not prefetch:
            if isinstance(query, Fusion):
                raise InvalidInputError("fusion needs prefetches to fuse")
            return self.query(c, query, options)
        if query is None:
            raise InvalidInputError("a query with prefetches needs a query to merge them")
        hits = resolve(query, prefetch, options, Stages(
            lambda q, o: self.query(c, q, o), random_pick,
            lambda using: metric_of(c, using).higher_is_better,
            lambda ids: self._payloads(c, ids), lambda cond, ids: self._matching(c, cond, ids)))
        if not options.with_payload and not options.with_vector:
            return hits
        found = {r.id: r for r in c.retrieve([h.id for h in hits], options.with_payload,
                                             options.with_vector)}
        return [Hit(h.id, h.score, found[h.id].payload, found[h.id].vector, h.order_value)
                for h in hits if h.id in found]

    @staticmethod
    def _payloads(c: Collection, ids: list[PointId]) -> list[dict[str, Any] | None]:
        found = {r.id: r.payload for r in c.retrieve(ids, with_payload=True)}
        return [found.get(i) for i in ids]

    def _matching(self, c: Collection, cond: dict[str, Any], ids: list[PointId]
                  ) -> set[PointId]:
        """Which of ``ids`` a formula's condition (or filter object) admits."""
        clauses = ("must", "should", "must_not", "min_should")
        flt = cond if any(k in cond for k in clauses) else {"must": [cond]}
        return set(c.ids_matching({"must": [flt, {"has_id": ids}]}, self._filter_limits))

    def query(self, c: Collection, query: Query, options: ReadOptions) -> list[Hit]:
        if isinstance(query, SampleRandom):
            ids = random_pick(c.ids_matching(options.filter, self._filter_limits),
                               options.limit + options.offset)[options.offset:]
            return [Hit(r.id, 0.0, r.payload, r.vector) for r in
                    c.retrieve(ids, options.with_payload or False, options.with_vector)]
        if isinstance(query, Fusion | FormulaQuery):
            raise InvalidInputError("fusion and formula need prefetches")
        if isinstance(query, OrderByQuery):
            records = c.scroll_ordered(query.key, query.descending, query.start_from,
                                       options.filter, options.limit + options.offset,
                                       options.with_payload, options.with_vector,
                                       self._filter_limits)
            return [Hit(r.id, 0.0, r.payload, r.vector, r.order_value)
                    for r in records[options.offset:]]
        if query is None:
            page, _ = c.scroll(options.filter, options.limit + options.offset, None,
                               options.with_payload, options.with_vector,
                               self._filter_limits)
            return [Hit(r.id, 0.0, r.payload, r.vector) for r in page[options.offset:]]
        src = c if options.lookup is None else self._collection(options.lookup)
        if options.using is not None and c.config.vector_kind(options.using) != "primary":
            return self.side_query(c, query, options, src)
        if (isinstance(query, RecommendQuery) and query.strategy != "average_vector") or \
                isinstance(query, (DiscoverQuery, ContextQuery)):
            score, exclude = self.scorer(c, query, src)
            o = excluding(options, exclude)
            return c.scan(score, o.limit, o.filter, o.offset, o.with_payload, o.with_vector,
                          o.score_threshold, self._filter_limits)
        if isinstance(query, RecommendQuery):
            target, exclude = self.recommend_target(c, query, src)
            return self.nearest(c, target, excluding(options, exclude))
        example = query.example
        exclude = []
        if isinstance(example, (SparseVector, Document)):
            raise InvalidInputError("a sparse vector or document query needs `using`: the "
                                    "name of a sparse vector of the collection")
        if not isinstance(example, np.ndarray):  # a stored point: its vector, minus itself
            point = example
            example = self.vectors_of(src, [point])[0]
            exclude = [point] if src is c else []
        options = excluding(options, exclude)
        if query.mmr is not None:
            return self.diverse(c, example, options, query.mmr)
        return self.nearest(c, example, options)

    def side_query(self, c: Collection, query: Query, options: ReadOptions,
                    src: Collection) -> list[Hit]:
        """A nearest query on a named dense or a sparse vector (searched exactly)."""
        using = options.using
        assert using is not None
        if not isinstance(query, NearestQuery) or query.mmr is not None:
            raise InvalidInputError(f"vector {using!r} answers nearest queries (a vector or "
                                    "a point id); recommend, discover, context and mmr "
                                    f"use the primary vector {c.config.vector_name!r}")
        example: Any = query.example
        exclude: list[PointId] = []
        if isinstance(example, Document):
            example = self._documents.query(example, c.config, using)
        elif not isinstance(example, (np.ndarray, SparseVector)):
            point = example
            example = self.vectors_of(src, [point], using)[0]
            exclude = [point] if src is c else []
        o = excluding(options, exclude)
        return c.search_named(using, example, k=o.limit, filter=o.filter,
                              with_payload=o.with_payload, with_vectors=o.with_vector,
                              score_threshold=o.score_threshold, offset=o.offset,
                              filter_limits=self._filter_limits, ef=o.ef, exact=o.exact)

    def search(self, c: Collection, vector: Any, options: ReadOptions) -> list[Hit]:
        """Nearest to a vector: the primary one, or the one ``options.using`` names."""
        if options.using is None:
            return self.nearest(c, vector, options)
        return self.query(c, NearestQuery(vector), options)

    def nearest(self, c: Collection, vector: Any, options: ReadOptions) -> list[Hit]:
        return c.search(vector, k=options.limit, filter=options.filter, ef=options.ef,
                        exact=options.exact, with_payload=options.with_payload,
                        with_vectors=options.with_vector,
                        score_threshold=options.score_threshold, offset=options.offset,
                        filter_limits=self._filter_limits)

    def diverse(self, c: Collection, target: np.ndarray, options: ReadOptions,
                 mmr: Mmr) -> list[Hit]:
        """Nearest candidates, then a maximal-marginal-relevance pick among them."""
        wanted = options.limit + options.offset
        pool = max(mmr.candidates or wanted, wanted)
        if pool > self.settings.max_limit:
            raise InvalidInputError(f"mmr candidates_limit must be at most "
                                    f"{self.settings.max_limit} (max_limit)")
        candidates = self.nearest(c, target, ReadOptions(
            limit=pool, filter=options.filter, ef=options.ef, exact=options.exact,
            with_payload=options.with_payload, with_vector=False,
            score_threshold=options.score_threshold))
        if not candidates:
            return []
        order = maximal_marginal_relevance(
            np.array([h.score for h in candidates]),
            self.vectors_of(c, [h.id for h in candidates]),
            c.config.metric, mmr.diversity, wanted)
        picked = [candidates[i] for i in order[options.offset:]]
        if options.with_vector:
            found = {r.id: r.vector for r in c.retrieve([h.id for h in picked], False,
                                                        options.with_vector)}
            picked = [Hit(h.id, h.score, h.payload, found.get(h.id)) for h in picked]
        return picked

    def vectors_of(self, c: Collection, ids: Sequence[PointId],
                    using: str | None = None) -> Any:
        """Stored vectors of existing points, in order: the primary ones as one
        float32 matrix, or those named ``using`` as a list (a sparse one as
        {"indices", "values"}); a missing id or vector is an error."""
        config = c.config
        name = config.vector_name if using is None else using
        if not config.has_side_vectors:  # one unnamed vector: plain lists
            config.vector_kind(name)
            records = c.retrieve(list(ids), with_payload=False, with_vectors=True)
            found = {r.id: r.vector for r in records}
            self.all_found(c, ids, found)
            return np.asarray([found[i] for i in ids], dtype=np.float32)
        records = c.retrieve(list(ids), with_payload=False, with_vectors=[name])
        found = {r.id: r.vector[name] for r in records
                 if isinstance(r.vector, dict) and name in r.vector}
        self.all_found(c, ids, found, name)
        if config.vector_kind(name) == "primary":
            return np.asarray([found[i] for i in ids], dtype=np.float32)
        return [found[i] for i in ids]

    @staticmethod
    def all_found(c: Collection, ids: Sequence[PointId], found: dict[PointId, Any],
                   name: str | None = None) -> None:
        missing = [i for i in ids if i not in found]
        if missing:
            what = "point" if name is None else f"point with vector {name!r} and"
            raise PointNotFoundError(f"no {what} id {missing[0]!r} in collection "
                                     f"{c.name!r}")

    def scorer(self, c: Collection, query: RecommendQuery | DiscoverQuery | ContextQuery,
                src: Collection) -> tuple[scoring.Scorer, list[PointId]]:
        """An exact score for the query's examples (ids name points of ``src``;
        ``scoring.py``), and the ids results must exclude (those of ``c``'s own)."""
        if isinstance(query, RecommendQuery):
            examples = [*query.positive, *query.negative]
            if not examples:
                raise InvalidInputError("recommend needs at least one example")
        else:
            if not query.pairs and isinstance(query, ContextQuery):
                raise InvalidInputError("a context query needs at least one pair")
            examples = [e for pair in query.pairs for e in pair]
            if isinstance(query, DiscoverQuery):
                examples.append(query.target)
        self.check_count(len(examples), "examples")
        ids = point_ids(examples)
        stored: dict[Any, np.ndarray] = dict(zip(ids, self.vectors_of(src, ids), strict=True)) \
            if ids else {}
        dim, metric = c.config.dim, c.config.metric
        if src is not c:
            ids = []

        def rows(items: Sequence[Example]) -> np.ndarray:
            out = np.zeros((len(items), dim), np.float32)
            for i, e in enumerate(items):
                if isinstance(e, np.ndarray):
                    if e.shape != (dim,):
                        raise InvalidInputError(f"example vectors must have dimension {dim}")
                    out[i] = normalize_rows(e[None, :].astype(np.float32))[0] \
                        if metric is Metric.COSINE else e
                else:
                    out[i] = stored[e]
            return out

        if isinstance(query, RecommendQuery):
            make = scoring.best_score if query.strategy == "best_score" else \
                scoring.sum_scores
            return make(rows(query.positive), rows(query.negative), metric), ids
        pairs = rows([e for pair in query.pairs for e in pair]).reshape(-1, 2, dim)
        if isinstance(query, DiscoverQuery):
            return scoring.discovery(rows([query.target])[0], pairs, metric), ids
        return scoring.context(pairs, metric), ids

    def recommend_target(self, c: Collection, query: RecommendQuery, src: Collection
                          ) -> tuple[np.ndarray, list[PointId]]:
        """Qdrant's ``average_vector`` strategy: avg(+) + (avg(+) - avg(-)).

        Returns the target and the example ids, which results must exclude.
        """
        if not query.positive:
            raise InvalidInputError("recommend needs at least one positive example")
        self.check_count(len(query.positive) + len(query.negative), "examples")
        ids = point_ids([*query.positive, *query.negative])
        stored: dict[Any, np.ndarray] = dict(zip(ids, self.vectors_of(src, ids), strict=True)) \
            if ids else {}
        dim = c.config.dim

        def mean(examples: Sequence[Example]) -> np.ndarray:
            rows = [e if isinstance(e, np.ndarray) else stored[e] for e in examples]
            for row in rows:
                if row.shape != (dim,):
                    raise InvalidInputError(f"example vectors must have dimension {dim}")
            average: np.ndarray = np.mean(np.stack(rows), axis=0)
            return average

        positive = mean(query.positive)
        target = 2 * positive - mean(query.negative) if query.negative else positive
        return target.astype(np.float32), ids if src is c else []


def point_ids(examples: Sequence[Example]) -> list[PointId]:
    """The point ids among dense examples (a sparse example is an error here: the
    primary vector is dense)."""
    if any(isinstance(e, (SparseVector, Document)) for e in examples):
        raise InvalidInputError("sparse vectors and documents are examples only for a "
                                "sparse vector named by `using`")
    return [e for e in examples if not isinstance(e, (np.ndarray, SparseVector, Document))]


def metric_of(c: Collection, using: str | None) -> Metric:
    """How vector ``using`` (None: the primary one) scores."""
    return c.config.metric if using is None else named.metric_of(c.config, using)


def random_pick(ids: list[PointId], n: int) -> list[PointId]:
    rng = np.random.default_rng()
    picked = rng.permutation(len(ids)) if len(ids) <= n else rng.choice(len(ids), n,
                                                                         replace=False)
    return [ids[i] for i in picked.tolist()]


def excluding(options: ReadOptions, ids: Sequence[PointId]) -> ReadOptions:
    """The options with a filter that also leaves out the example points."""
    if not ids:
        return options
    flt = options.filter
    combined = {"must": [flt] if flt else [], "must_not": [{"has_id": list(ids)}]}
    return dataclasses.replace(options, filter=combined)
