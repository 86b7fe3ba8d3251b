"""Durability: SIGKILL a writer at random moments, and damage the WAL tail by hand.

The writer (crash_writer.py) upserts, overwrites and deletes 50-point batches
with fsync="always" and a background optimizer sealing/merging 64-row
segments, acknowledging each call on stdout after it returns. After every
kill the parent reopens the directory and checks that every acknowledged
write is there, every acknowledged delete is applied, each batch is all or
nothing (also across overwrites), nothing is duplicated, and nothing appears
that was never written; then it starts the writer again on the same directory.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from crash_writer import BATCH, lacks_primary, side_of, vector_of
from vutil import dump

import peregrine

WRITER = Path(__file__).with_name("crash_writer.py")


class Round:
    """One writer process: its stdout lines arrive through a queue."""

    def __init__(self, path: Path, seed: int, first: int, live: dict[int, int],
                 extra: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), str(seed), str(first),
             json.dumps(live), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self, timeout: float = 30.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("writer stopped talking") from None
        if line is None:
            _, err = self.proc.communicate()
            raise AssertionError(f"writer exited (rc={self.proc.returncode}):\n{err}")
        self.seen.append(line)
        return line

    def kill(self) -> list[str]:
        """SIGKILL, then every line the writer managed to print."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        while (line := self.lines.get(timeout=30)) is not None:
            self.seen.append(line)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return self.seen


def _side_points(c: peregrine.Collection) -> dict[Any, tuple[Any, tuple[float, ...] | None]]:
    """``dump`` for a collection with side vectors: each point's named dense and
    sparse vectors are checked against the version its payload names, and a
    point whose version lacks the primary vector ``main`` has none (None)."""
    out: dict[Any, tuple[Any, tuple[float, ...] | None]] = {}
    offset = None
    while True:
        page, offset = c.scroll(limit=997, offset=offset, with_vectors=True)
        for r in page:
            assert r.id not in out and isinstance(r.vector, dict)
            (want,) = side_of([r.id], r.payload["v"])
            assert r.vector["img"] == pytest.approx(want["img"], abs=1e-6)
            sparse = r.vector["s"]
            assert dict(zip(sparse["indices"], sparse["values"], strict=True)) == dict(zip(
                want["s"]["indices"], want["s"]["values"], strict=True))  # type: ignore[index]
            if lacks_primary(r.id, r.payload["v"]):
                assert "main" not in r.vector
                out[r.id] = (r.payload, None)
            else:
                out[r.id] = (r.payload, tuple(r.vector["main"]))
        if offset is None:
            break
    if out:  # the sparse index holds exactly the live points, once each
        every = {"indices": [100, 101, 102, 103, 104], "values": [1.0] * 5}
        hits = c.search_named("s", every, k=len(out), with_payload=False)
        assert sorted(h.id for h in hits) == sorted(out)
    return out


def _observe(path: Path, side: bool = False) -> dict[int, int]:
    """Reopen and read every batch's version, asserting integrity on the way."""
    db = peregrine.open(path, background=False)
    try:
        c = db.collection("crash")
        points = _side_points(c) if side else dump(c)  # no id is returned twice
        assert c.count() == len(points)
        by_batch: dict[int, dict[int, int]] = defaultdict(dict)
        for pid, (payload, vec) in points.items():
            b, v = payload["batch"], payload["v"]
            assert pid // BATCH == b, (pid, payload)
            if vec is not None:
                np.testing.assert_array_equal(np.asarray(vec, np.float32),
                                              vector_of(np.asarray([pid]), v)[0])
            by_batch[b][pid] = v
        observed = {}
        for b, members in by_batch.items():
            assert len(members) == BATCH, f"batch {b} is partial: {len(members)} of {BATCH}"
            versions = set(members.values())
            assert len(versions) == 1, f"batch {b} mixes versions {versions}"
            observed[b] = versions.pop()
        having = sorted(pid for pid, (_, vec) in points.items() if vec is not None)
        if having:  # search sees exactly the points with the vector, once each
            q = vector_of(np.asarray([7]), 0)[0]
            hits = c.search(q, k=len(points), exact=True, with_payload=False)
            assert sorted(h.id for h in hits) == having
            ann = c.search(q, k=10)
            assert len({h.id for h in ann}) == len(ann) and {h.id for h in ann} <= set(having)
        return observed
    finally:
        db.close()


def _run_crash_loop(path: Path, rounds: int, seed: int, extra: list[str]) -> dict[str, int]:
    r = random.Random(seed)
    acked: dict[int, int] = {}  # batch -> version: the durable truth
    begun: set[int] = set()
    first = 0
    stats = {"rounds": 0, "acks": 0, "inflight_applied": 0, "inflight_lost": 0}
    for n in range(rounds):
        rnd = Round(path, r.randrange(2**31), first, acked, extra)
        assert rnd.next_line() == "READY"
        if r.random() < 0.5:
            target = r.randint(1, 14)
            acks = 0
            while acks < target:
                acks += rnd.next_line().startswith("ACK")
            time.sleep(r.uniform(0, 0.02))
        else:
            time.sleep(r.uniform(0.05, 0.5))
        lines = rnd.kill()

        expected = dict(acked)
        pending: tuple[str, int, int] | None = None
        for line in lines[1:]:
            kind, op, b, v = line.split()
            b, v = int(b), int(v)
            if kind == "BEGIN":
                pending = (op, b, v)
                if op == "U":
                    begun.add(b)
                continue
            assert pending == (op, b, v), (pending, line)
            pending = None
            stats["acks"] += 1
            if op in "UO":
                expected[b] = v
            elif op in "DX":
                del expected[b]

        observed = _observe(path, "--side" in extra)
        assert set(observed) <= begun, f"batches never written: {set(observed) - begun}"
        for b in begun | set(observed):
            allowed = {expected.get(b)}
            if pending is not None and pending[1] == b:
                allowed.add(pending[2] if pending[0] in "UO" else None)
            assert observed.get(b) in allowed, (
                f"round {n}: batch {b} is {observed.get(b)}, expected one of {allowed} "
                f"(in flight: {pending})")
        if pending is not None and pending[0] != "P":
            changed = observed.get(pending[1]) != expected.get(pending[1])
            stats["inflight_applied" if changed else "inflight_lost"] += 1
        acked = observed
        first = max(begun, default=-1) + 1
        stats["rounds"] += 1
    return stats


@pytest.mark.slow
def test_sigkill_loop_keeps_acknowledged_writes(tmp_path: Path) -> None:
    """7 kills, each followed by a checking reopen and a writer that continues."""
    stats = _run_crash_loop(tmp_path / "db", rounds=7, seed=20240611, extra=[])
    assert stats["rounds"] == 7 and stats["acks"] >= 7, stats


@pytest.mark.slow
def test_sigkill_loop_keeps_named_and_sparse_vectors(tmp_path: Path) -> None:
    """The same loop with a named dense and a sparse vector on every point, and
    a named primary vector some points lack: each acknowledged version comes
    back with its own vectors (and without the primary where it lacked it), and
    the sparse index and the primary's searches hold exactly their points."""
    stats = _run_crash_loop(tmp_path / "db", rounds=5, seed=20261201, extra=["--side"])
    assert stats["rounds"] == 5 and stats["acks"] >= 5, stats


def test_sigkill_across_segment_boundaries_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    rnd = Round(path, 1, 0, {}, ["--no-deletes"])
    assert rnd.next_line() == "READY"
    acks = 0
    while acks < 5:  # 250 rows: past several 64-row segment boundaries
        acks += rnd.next_line().startswith("ACK")
    rnd.kill()
    _observe(path)


# --------------------------------------------------------------------------
# WAL damage by hand
# --------------------------------------------------------------------------
_HEADER = struct.Struct("<IIQB")


def _records(wal: Path) -> list[tuple[int, int]]:
    """(offset, length) of each record, parsed independently of the engine."""
    data = wal.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        body_len, crc, seq, op = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size: pos + _HEADER.size + body_len]
        assert zlib.crc32(body, zlib.crc32(struct.pack("<QB", seq, op))) == crc
        out.append((pos, _HEADER.size + body_len))
        pos += _HEADER.size + body_len
    return out


def _make_db(path: Path, with_delete: bool = False) -> Path:
    with peregrine.open(path, background=False) as db:
        c = db.create_collection("c", 4, "dot", index={"segment_rows": 64})
        for b in range(3):
            c.upsert(list(range(b * 10, b * 10 + 10)), np.full((10, 4), b, np.float32),
                     [{"b": b}] * 10)
        if with_delete:
            c.delete(ids=list(range(10, 20)))
    (wal,) = (path / "collections" / "c" / "wal").glob("*.wal")
    return wal


def _batches(path: Path) -> list[int]:
    with peregrine.open(path, background=False) as db:
        c = db.collection("c")
        points = dump(c)
        return sorted({p["b"] for p, _ in points.values()})


DAMAGE = {
    "garbage appended": (lambda data, recs: data + os.urandom(37), [0, 1, 2]),
    "zeros appended": (lambda data, recs: data + bytes(4096), [0, 1, 2]),
    "huge length appended": (lambda data, recs: data + _HEADER.pack(2**31, 0, 4, 1), [0, 1, 2]),
    "last record cut in header": (lambda data, recs: data[: recs[-1][0] + 7], [0, 1]),
    "last record cut in body": (lambda data, recs: data[: recs[-1][0] + recs[-1][1] - 5], [0, 1]),
    "last record bit flip": (lambda data, recs: _flip(data, recs[-1][0] + recs[-1][1] - 3),
                             [0, 1]),
    "middle record bit flip": (lambda data, recs: _flip(data, recs[1][0] + 30), [0]),
}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_wal_torn_tail_is_dropped(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "db"
    wal = _make_db(path)
    data = wal.read_bytes()
    recs = _records(wal)
    assert len(recs) == 3
    fn, survivors = DAMAGE[damage]
    wal.write_bytes(fn(data, recs))
    assert _batches(path) == survivors
    # the log was cut back to its intact prefix, so new appends are readable
    intact = recs[len(survivors) - 1][0] + recs[len(survivors) - 1][1]
    assert wal.stat().st_size == intact
    with peregrine.open(path, background=False) as db:
        db.collection("c").upsert(list(range(100, 110)), np.ones((10, 4)), [{"b": 9}] * 10)
    assert _batches(path) == [*survivors, 9]
    assert len(_records(wal)) == len(survivors) + 1


def test_torn_delete_record_keeps_points(tmp_path: Path) -> None:
    path = tmp_path / "db"
    wal = _make_db(path, with_delete=True)
    recs = _records(wal)
    assert len(recs) == 4
    wal.write_bytes(wal.read_bytes()[: recs[-1][0] + recs[-1][1] - 1])
    assert _batches(path) == [0, 1, 2]  # the delete never happened


def test_interrupted_build_leftovers_are_cleaned(tmp_path: Path) -> None:
    """What a crash mid-build, mid-drop or mid-restore leaves behind is ignored."""
    path = tmp_path / "db"
    with peregrine.open(path, background=False) as db:
        c = db.create_collection("c", 4, "dot", index={"segment_rows": 16})
        c.upsert(list(range(40)), np.ones((40, 4)), [{"i": i} for i in range(40)])
        c.optimize()
        want = dump(c)
        seg_dir = c.directory / "segments"
        live_segments = sorted(p.name for p in seg_dir.iterdir())
    (seg_dir / "999.tmp").mkdir()
    (seg_dir / "999.tmp" / "vectors.npy").write_bytes(b"half")
    (seg_dir / "998").mkdir()  # complete-looking but never published in the manifest
    (seg_dir / "998" / "meta.json").write_text("{}")
    for stray in (".drop-abc", ".restore-def", ".create-123", ".snapshot-c-1"):
        (path / "collections" / stray).mkdir()
        (path / "collections" / stray / "junk").write_text("x")
    with peregrine.open(path, background=False) as db:
        assert db.list_collections() == ["c"]
        assert dump(db.collection("c")) == want
        assert sorted(p.name for p in seg_dir.iterdir()) == live_segments
        assert [p.name for p in (path / "collections").iterdir()] == ["c"]
        db.collection("c").upsert([100], [[1, 2, 3, 4]])
        db.collection("c").optimize()  # segment ids do not collide with the leftovers
    with peregrine.open(path, background=False) as db:
        assert db.collection("c").count() == 41
