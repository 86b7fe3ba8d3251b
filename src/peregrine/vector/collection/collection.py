"""A collection: segments + WAL + optimizer behind one thread-safe API.

Write path: validate -> append one WAL record -> apply under the exclusive
lock (tombstone old versions, append to the mutable segment). The call
returns only after the apply, so reads see the write at once (no refresh
interval). Read path: under the shared lock, evaluate the filter per segment,
let each segment plan exact-vs-HNSW, merge the per-segment top-k.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from peregrine.core.errors import (
    ClosedError,
    InvalidInputError,
    InvalidPayloadError,
    StorageError,
)
from peregrine.core.locks import ReadWriteLock
from peregrine.vector.collection import codec
from peregrine.vector.collection.manifest import CONFIG_FILE, Manifest, write_atomic
from peregrine.vector.collection.optimizer import Optimizer
from peregrine.vector.collection.wal import Op, WriteAheadLog
from peregrine.vector.ids import KeyArray, PointId, decode_key, decode_keys, encode_id, encode_ids
from peregrine.vector.segment.filters import CompiledFilter, compile_filter
from peregrine.vector.segment.kernels import F32, I64, public_scores, top_k
from peregrine.vector.segment.mutable import MutableSegment, Segment
from peregrine.vector.segment.payload_index import PAYLOAD_INDEX_TYPES, Mask
from peregrine.vector.segment.sealed import SealedSegment
from peregrine.vector.types import CollectionConfig, Hit, Record

log = logging.getLogger(__name__)

# True/False, a list of keys to include, or Qdrant's {"include": [...]} /
# {"exclude": [...]} selector.
WithPayload = bool | Sequence[str] | dict[str, list[str]]


class Collection:
    def __init__(
        self,
        directory: Path,
        config: CollectionConfig,
        fsync: str = "group",
        fsync_interval_ms: int = 50,
        background: bool = True,
    ) -> None:
        self.directory = directory
        self.config = config
        self._fsync = fsync
        self._fsync_interval_ms = fsync_interval_ms
        self._background = background
        self._rw = ReadWriteLock()
        self._write_lock = threading.Lock()  # orders WAL appends with their apply
        self._closed = False
        self._load()

    # -- lifecycle ------------------------------------------------------------
    def _load(self) -> None:
        self.manifest = Manifest.load(self.directory)
        seg_root = self.directory / "segments"
        seg_root.mkdir(parents=True, exist_ok=True)
        listed = set(self.manifest.segments)
        for stray in seg_root.iterdir():  # half-built or superseded segments
            if not stray.name.isdigit() or int(stray.name) not in listed:
                shutil.rmtree(stray, ignore_errors=True)
        self.segments: list[Segment] = []
        for seg_id in self.manifest.segments:
            path = seg_root / str(seg_id)
            if not path.exists():
                raise StorageError(f"segment {seg_id} listed in the manifest is missing")
            self.segments.append(self._open_sealed(seg_id))
        self.mutable = self._new_mutable(self.manifest.checkpoint + 1)
        self.segments.append(self.mutable)
        self.wal = WriteAheadLog(self.directory / "wal", self._fsync, self._fsync_interval_ms)
        # Replay tombstones sealed rows and may freeze segments: both report to
        # the optimizer, which therefore exists first and starts afterwards.
        self.optimizer = Optimizer(self)
        replayed = 0
        for record in self.wal.replay(self.manifest.checkpoint):
            self._apply(record.op, record.body, record.seq)
            replayed += 1
        if replayed:
            log.info("collection %s: replayed %d WAL records", self.config.name, replayed)
        self.wal.open_for_append()
        if self._background:
            self.optimizer.start()

    def _open_sealed(self, seg_id: int) -> SealedSegment:
        return SealedSegment(seg_id, self.directory / "segments" / str(seg_id),
                             self.config.metric, self.config.index)

    def _new_mutable(self, first_seq: int) -> MutableSegment:
        seg_id = self.manifest.next_segment_id
        self.manifest.next_segment_id += 1
        return MutableSegment(seg_id, self.config.dim, self.config.index.segment_rows,
                              self.config.metric, first_seq)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.optimizer.stop()
        with self._write_lock, self._rw.write():
            self.wal.close()
            for seg in self.segments:
                if isinstance(seg, SealedSegment):
                    seg.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"collection {self.config.name!r} is closed")

    @property
    def name(self) -> str:
        return self.config.name

    # -- writes ---------------------------------------------------------------
    def upsert(self, ids: Any, vectors: Any, payloads: Sequence[Any] | None = None) -> int:
        """Insert or replace points; atomic per call. Returns the WAL sequence number."""
        self._check_open()
        batch = codec.prepare_upsert(ids, vectors, payloads, self.config.dim, self.config.metric)
        if batch.keys.size == 0:
            return self.wal.last_seq
        return self._log_and_apply(Op.UPSERT, batch.encode(), batch)

    def delete(self, ids: Any = None, filter: dict[str, Any] | None = None) -> int:
        """Delete by ids or by filter (exactly one). Returns how many points went."""
        self._check_open()
        if (ids is None) == (filter is None):
            raise InvalidInputError("delete needs exactly one of ids= or filter=")
        if ids is not None:
            keys = np.unique(encode_ids(ids))
            with self._write_lock:
                with self._rw.read():
                    found = sum(seg.lookup(keys)[0].size for seg in self.segments)
                self._log_and_apply_locked(Op.DELETE, codec.encode_delete(keys), keys)
            return found
        compiled = compile_filter(filter)
        with self._write_lock:
            with self._rw.read():
                keys = self._matching_keys(compiled)
            if keys.size:
                self._log_and_apply_locked(Op.DELETE, codec.encode_delete(keys), keys)
        return int(keys.size)

    def set_payload(self, ids: Any, payload: dict[str, Any], overwrite: bool = False) -> None:
        """Merge (or replace) the payload of existing points; missing ids are ignored."""
        if not isinstance(payload, dict):
            raise InvalidPayloadError("payload must be a JSON object")
        codec.encode_payload(payload)
        self._rewrite_payloads(
            ids, lambda old: payload if overwrite else {**(old or {}), **payload}
        )

    def delete_payload(self, ids: Any, keys: Sequence[str]) -> None:
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise InvalidInputError("keys must be a list of payload key names")
        drop = set(keys)
        self._rewrite_payloads(
            ids, lambda old: {k: v for k, v in (old or {}).items() if k not in drop}
        )

    def clear_payload(self, ids: Any) -> None:
        self._rewrite_payloads(ids, lambda old: None)

    def _rewrite_payloads(self, ids: Any, change: Any) -> None:
        """Payload edits are copy-on-write: the point is re-upserted with its vector."""
        self._check_open()
        keys = np.unique(encode_ids(ids))
        with self._write_lock:
            with self._rw.read():
                found: list[tuple[bytes, F32, dict[str, Any] | None]] = []
                for seg in self.segments:
                    pos, rows = seg.lookup(keys)
                    vecs = seg.vectors_view()
                    for p, r in zip(pos.tolist(), rows.tolist(), strict=True):
                        found.append((keys[p], np.asarray(vecs[r]), seg.payload(r)))
            if not found:
                return
            new_keys = np.asarray([f[0] for f in found], dtype=keys.dtype)
            vectors = np.stack([f[1] for f in found])
            blobs = [codec.encode_payload(change(f[2])) for f in found]
            batch = codec.UpsertBatch(new_keys, vectors, blobs)
            self._log_and_apply_locked(Op.UPSERT, batch.encode(), batch)

    def _log_and_apply(self, op: Op, body: bytes, decoded: Any) -> int:
        with self._write_lock:
            return self._log_and_apply_locked(op, body, decoded)

    def _log_and_apply_locked(self, op: Op, body: bytes, decoded: Any) -> int:
        self._check_open()
        seq = self.wal.append(op, body)
        self._apply(op, body, seq, decoded)
        return seq

    def _apply(self, op: Op, body: bytes, seq: int, decoded: Any = None) -> None:
        with self._rw.write():
            if op is Op.UPSERT:
                batch = decoded if decoded is not None else codec.UpsertBatch.decode(body)
                self._tombstone(batch.keys)
                self._append(batch, seq)
            elif op is Op.DELETE:
                self._tombstone(decoded if decoded is not None else codec.decode_delete(body))

    def _tombstone(self, keys: KeyArray) -> None:
        for seg in self.segments:
            _, rows = seg.lookup(keys)  # live rows only
            if rows.size:
                rows = np.unique(rows)  # a delete may name a point twice
                seg.deleted[rows] = True
                seg.n_deleted += int(rows.size)
                if isinstance(seg, SealedSegment):
                    self.optimizer.dirty.add(seg.id)

    def _append(self, batch: codec.UpsertBatch, seq: int) -> None:
        start, n = 0, batch.keys.shape[0]
        while start < n:
            if self.mutable.free == 0:
                self.mutable.frozen = True
                self.mutable = self._new_mutable(seq)
                self.segments.append(self.mutable)
                self.optimizer.wake()
            stop = min(n, start + self.mutable.free)
            self.mutable.append(batch.keys[start:stop], batch.vectors[start:stop],
                                batch.blobs[start:stop])
            start = stop

    # -- reads ----------------------------------------------------------------
    def _allowed(self, seg: Segment, compiled: CompiledFilter | None) -> Mask | None:
        deleted = seg.deleted[: seg.n_rows]
        if compiled is None:
            return ~deleted if seg.n_deleted else None
        return compiled(seg) & ~deleted

    def _matching_keys(self, compiled: CompiledFilter | None) -> KeyArray:
        parts = []
        for seg in self.segments:
            allowed = self._allowed(seg, compiled)
            keys = seg.keys_view()
            parts.append(keys if allowed is None else keys[allowed])
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, "S17")

    def search(
        self,
        vector: Any,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        ef: int | None = None,
        exact: bool = False,
        with_payload: WithPayload = True,
        with_vectors: bool = False,
        score_threshold: float | None = None,
        offset: int = 0,
    ) -> list[Hit]:
        """Nearest neighbours of one vector, best first."""
        query = codec.as_vectors(vector, self.config.dim, self.config.metric, "query vector")
        if query.shape[0] != 1:
            raise InvalidInputError("search takes one vector; use search_batch for several")
        return self._search(query, k, filter, ef, exact, with_payload, with_vectors,
                            score_threshold, offset)[0]

    def search_batch(
        self,
        vectors: Any,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        ef: int | None = None,
        exact: bool = False,
        with_payload: WithPayload = True,
        with_vectors: bool = False,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        queries = codec.as_vectors(vectors, self.config.dim, self.config.metric, "query vectors")
        return self._search(queries, k, filter, ef, exact, with_payload, with_vectors,
                            score_threshold, 0)

    def _search(
        self,
        queries: F32,
        k: int,
        filter: dict[str, Any] | None,
        ef: int | None,
        exact: bool,
        with_payload: WithPayload,
        with_vectors: bool,
        score_threshold: float | None,
        offset: int,
    ) -> list[list[Hit]]:
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError("k (limit) must be a positive integer")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be a non-negative integer")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 1):
            raise InvalidInputError("ef must be a positive integer")
        if score_threshold is not None and (
            isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float))
        ):
            raise InvalidInputError("score_threshold must be a number")
        _check_with_payload(with_payload)
        compiled = compile_filter(filter)
        fetch = int(k) + offset
        ef_eff = max(ef or self.config.index.ef, fetch)
        with self._rw.read():
            found: list[tuple[Segment, F32, I64]] = []
            for seg in self.segments:
                if seg.n_rows == 0:
                    continue
                allowed = self._allowed(seg, compiled)
                if allowed is not None and not allowed.any():
                    continue
                scores, rows = seg.search(queries, fetch, allowed, ef_eff, exact)
                found.append((seg, scores, rows))
            return [self._hits(found, qi, fetch, offset, with_payload, with_vectors,
                               score_threshold) for qi in range(queries.shape[0])]

    def _hits(
        self,
        found: list[tuple[Segment, F32, I64]],
        qi: int,
        fetch: int,
        offset: int,
        with_payload: WithPayload,
        with_vectors: bool,
        score_threshold: float | None,
    ) -> list[Hit]:
        if not found:
            return []
        if len(found) == 1:
            cand_s, cand_r = found[0][1][qi], found[0][2][qi]
            cand_seg = None
        else:
            cand_s = np.concatenate([f[1][qi] for f in found])
            cand_r = np.concatenate([f[2][qi] for f in found])
            cand_seg = np.concatenate([np.full(f[2].shape[1], j) for j, f in enumerate(found)])
        valid = cand_r >= 0
        if not valid.all():
            cand_s, cand_r = cand_s[valid], cand_r[valid]
            cand_seg = cand_seg[valid] if cand_seg is not None else None
        if cand_seg is not None:
            best_s, pos = top_k(cand_s[None, :], fetch)
            cand_s, cand_r, cand_seg = best_s[0], cand_r[pos[0]], cand_seg[pos[0]]
        metric = self.config.metric
        scores = public_scores(cand_s[offset:fetch], metric)
        rows = cand_r[offset:fetch]
        if score_threshold is not None:
            ok = scores >= score_threshold if metric.higher_is_better else scores <= score_threshold
            cut = int(np.argmin(ok)) if not ok.all() else ok.size
            scores, rows = scores[:cut], rows[:cut]
        if cand_seg is None:
            return _segment_hits(found[0][0], rows, scores, with_payload, with_vectors)
        # Hits from several segments: build each segment's, then put them back in
        # score order.
        seg_of = cand_seg[offset:offset + rows.size]
        hits: list[Any] = [None] * rows.size
        for j in np.unique(seg_of).tolist():
            where = np.flatnonzero(seg_of == j)
            part = _segment_hits(found[j][0], rows[where], scores[where], with_payload,
                                 with_vectors)
            for w, hit in zip(where.tolist(), part, strict=True):
                hits[w] = hit
        return hits

    def ids_matching(self, filter: dict[str, Any] | None) -> list[PointId]:
        """Every live point id the filter selects, in id order (one filter pass)."""
        self._check_open()
        compiled = compile_filter(filter)
        with self._rw.read():
            return decode_keys(self._matching_keys(compiled))

    def retrieve(
        self, ids: Any, with_payload: WithPayload = True, with_vectors: bool = False
    ) -> list[Record]:
        """Points by id, in the order asked; unknown ids are skipped (as Qdrant does)."""
        self._check_open()
        _check_with_payload(with_payload)
        keys = encode_ids(ids)
        out: dict[int, Record] = {}
        with self._rw.read():
            for seg in self.segments:
                pos, rows = seg.lookup(keys)
                for p, r in zip(pos.tolist(), rows.tolist(), strict=True):
                    out[p] = Record(
                        id=decode_key(keys[p]),
                        payload=_select(seg.payload(r), with_payload),
                        vector=seg.vectors_view()[r].tolist() if with_vectors else None,
                    )
        return [out[p] for p in sorted(out)]

    def count(self, filter: dict[str, Any] | None = None) -> int:
        self._check_open()
        compiled = compile_filter(filter)
        with self._rw.read():
            total = 0
            for seg in self.segments:
                allowed = self._allowed(seg, compiled)
                total += seg.n_rows if allowed is None else int(np.count_nonzero(allowed))
            return total

    def scroll(
        self,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: Any = None,
        with_payload: WithPayload = True,
        with_vectors: bool = False,
    ) -> tuple[list[Record], Any]:
        """Points in id order from ``offset`` (an id, inclusive); returns (page, next id)."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError("limit must be a positive integer")
        _check_with_payload(with_payload)
        compiled = compile_filter(filter)
        start = np.asarray([encode_id(offset)], dtype="S17")[0] if offset is not None else None
        with self._rw.read():
            keys_parts, seg_parts, row_parts = [], [], []
            for j, seg in enumerate(self.segments):
                allowed = self._allowed(seg, compiled)
                keys = seg.keys_view()
                rows = np.arange(seg.n_rows) if allowed is None else np.flatnonzero(allowed)
                sel = keys[rows]
                if start is not None:
                    keep = sel >= start
                    sel, rows = sel[keep], rows[keep]
                keys_parts.append(sel)
                row_parts.append(rows)
                seg_parts.append(np.full(rows.size, j))
            all_keys = np.concatenate(keys_parts)
            if all_keys.size == 0:
                return [], None
            take = min(limit + 1, all_keys.size)
            order = (np.argpartition(all_keys, take - 1)[:take] if take < all_keys.size
                     else np.arange(all_keys.size))
            order = order[np.argsort(all_keys[order], kind="stable")]
            all_rows, all_segs = np.concatenate(row_parts), np.concatenate(seg_parts)
            records = []
            for idx in order[:limit].tolist():
                seg = self.segments[int(all_segs[idx])]
                row = int(all_rows[idx])
                records.append(Record(
                    id=decode_key(all_keys[idx]),
                    payload=_select(seg.payload(row), with_payload),
                    vector=seg.vectors_view()[row].tolist() if with_vectors else None,
                ))
            next_id = decode_key(all_keys[order[limit]]) if take > limit else None
            return records, next_id

    # -- payload indexes ------------------------------------------------------------
    def create_payload_index(self, field: str, schema: str = "keyword") -> None:
        """Declare an index; sealed segments persist it from their next build on."""
        self._check_open()
        if not isinstance(field, str) or not field:
            raise InvalidInputError("field name must be a non-empty string")
        if schema not in PAYLOAD_INDEX_TYPES:
            raise InvalidInputError(f"payload index type must be one of {PAYLOAD_INDEX_TYPES}")
        with self._write_lock:
            indexes = {**self.config.payload_indexes, field: schema}
            self._set_config(indexes)
        with self._rw.read():
            for seg in self.segments:  # build now rather than on the first query
                seg.field_index(field)

    def delete_payload_index(self, field: str) -> None:
        self._check_open()
        with self._write_lock:
            indexes = {k: v for k, v in self.config.payload_indexes.items() if k != field}
            self._set_config(indexes)

    def _set_config(self, payload_indexes: dict[str, str]) -> None:
        self.config = CollectionConfig(self.config.name, self.config.dim, self.config.metric,
                                       self.config.index, payload_indexes)
        write_atomic(self.directory / CONFIG_FILE, orjson.dumps(self.config.to_dict()))

    # -- maintenance ------------------------------------------------------------
    def optimize(self) -> None:
        """Seal and index everything pending, merge segments, drop tombstones."""
        self._check_open()
        self.optimizer.run_full()

    def snapshot(self, path: str | Path) -> Path:
        from peregrine.vector.collection.snapshot import create_snapshot

        self._check_open()
        return create_snapshot(self, Path(path))

    def restore(self, path: str | Path) -> None:
        """Replace this collection's contents with a snapshot's (same name kept)."""
        from peregrine.vector.collection.snapshot import restore_snapshot

        self._check_open()
        restore_snapshot(self, Path(path))

    def info(self) -> dict[str, Any]:
        self._check_open()
        with self._rw.read():
            sealed = [s for s in self.segments if isinstance(s, SealedSegment)]
            pending = [s for s in self.segments if isinstance(s, MutableSegment)]
            points = sum(s.n_rows - int(np.count_nonzero(s.deleted[: s.n_rows]))
                         for s in self.segments)
            return {
                "name": self.name,
                "points": points,
                "segments": len(self.segments),
                "sealed_segments": len(sealed),
                "unindexed_rows": sum(s.n_rows for s in pending),
                "index_backlog_segments": sum(1 for s in pending if s.frozen),
                "wal_bytes": self.wal.size_bytes(),
                "config": self.config.to_dict(),
            }

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        cfg = self.config
        return f"Collection({self.name!r}, dim={cfg.dim}, metric={cfg.metric.value})"


def _check_with_payload(with_payload: Any) -> None:
    if isinstance(with_payload, bool):
        return
    keys = with_payload
    if isinstance(with_payload, dict):
        if len(with_payload) != 1 or next(iter(with_payload)) not in ("include", "exclude"):
            raise InvalidInputError(
                'a payload selector is {"include": [...]} or {"exclude": [...]}')
        keys = next(iter(with_payload.values()))
    if isinstance(keys, str) or not isinstance(keys, (list, tuple)) or not all(
        isinstance(k, str) for k in keys
    ):
        raise InvalidInputError("with_payload must be a bool, a list of payload keys "
                                'or {"include"|"exclude": [keys]}')


def _select(payload: dict[str, Any] | None, with_payload: WithPayload) -> dict[str, Any] | None:
    if with_payload is True:
        return payload
    if not with_payload or payload is None:
        return None
    if isinstance(with_payload, dict):
        if "exclude" in with_payload:
            drop = set(with_payload["exclude"])
            return {k: v for k, v in payload.items() if k not in drop}
        with_payload = with_payload["include"]
    return {k: payload[k] for k in with_payload if k in payload}


def _segment_hits(seg: Segment, rows: I64, scores: npt.NDArray[np.float64],
                  with_payload: WithPayload, with_vectors: bool) -> list[Hit]:
    """Hits that all come from one segment (the usual case): no regrouping."""
    ids = seg.point_ids(rows)
    none: list[Any] = [None] * len(ids)
    payloads = ([_select(p, with_payload) for p in seg.payloads(rows)] if with_payload
                else none)
    vectors = seg.vectors_view()[rows].tolist() if with_vectors else none
    return [Hit(i, sc, p, v) for i, sc, p, v in
            zip(ids, scores.tolist(), payloads, vectors, strict=True)]
