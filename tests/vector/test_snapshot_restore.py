"""A snapshot that is a well-formed archive but does not load changes nothing.

Each case alters one file of a real snapshot. With the snapshot's file list
rewritten to match (``listed``) the deep checks must find the damage; with the
list removed (``unlisted``, as in snapshots made before it existed) too. In
every case restoring raises InvalidSnapshotError, the existing collection
keeps its points and takes writes, nothing is left behind under a new name,
and the database reopens.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vutil import dump

import peregrine
from peregrine.vector.collection.snapshot import CONTENTS

DIM = 4
_HEADER = struct.Struct("<IIQB")


def _crc(seq: int, op: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<QB", seq, op))) & 0xFFFFFFFF


def _rewrite_last_record(root: Path, change: Callable[[int, int, bytes], tuple[int, bytes]]
                         ) -> None:
    """Replace the newest WAL record (one the restore must replay) by
    ``change(seq, op, body) -> (op, body)`` under a valid CRC, as a writer that
    does not know the format would."""
    wal = sorted((root / "wal").glob("*.wal"))[-1]
    data = wal.read_bytes()
    pos = 0
    while True:
        length, _, seq, op = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end == len(data):
            break
        pos = end
    new_op, new_body = change(seq, op, data[pos + _HEADER.size:end])
    record = _HEADER.pack(len(new_body), _crc(seq, new_op, new_body), seq, new_op) + new_body
    wal.write_bytes(data[:pos] + record)


def _config(root: Path, **changes: Any) -> None:
    path = root / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _truncate_wal(root: Path, n: int) -> None:
    wal = sorted((root / "wal").glob("*.wal"))[-1]
    wal.write_bytes(wal.read_bytes()[:-n])


def _manifest(root: Path, **changes: Any) -> None:
    path = root / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _segment(root: Path) -> Path:
    return root / "segments" / str(json.loads((root / "manifest.json").read_text())
                                   ["segments"][0])


def _reverse_key_order(root: Path) -> None:
    path = _segment(root) / "key_order.npy"
    np.save(path, np.load(path)[::-1].copy())


def _first_payload(root: Path, blob: bytes) -> None:
    seg = _segment(root)
    offsets = np.load(seg / "payload_offsets.npy")
    data = (seg / "payload.bin").read_bytes()
    first = int(offsets[1])
    (seg / "payload.bin").write_bytes(blob + data[first:])
    np.save(seg / "payload_offsets.npy",
            np.concatenate([[0], offsets[1:] - first + len(blob)]).astype(np.uint64))


def _flat_index(root: Path) -> None:
    import faiss

    seg = _segment(root)
    rows = np.load(seg / "vectors.npy")
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    faiss.write_index(index, str(seg / "index.faiss"))


def _list_payload(seq: int, op: int, body: bytes) -> tuple[int, bytes]:
    """An upsert of the same point whose payload is a JSON list."""
    n, dim = struct.unpack_from("<II", body)
    assert n >= 1
    keys = body[8:8 + 17]
    vector = body[8 + 17 * n:8 + 17 * n + 4 * dim]
    return op, struct.pack("<II", 1, dim) + keys + vector + struct.pack("<I", 3) + b"[1]"


def _missing_segment(root: Path) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    seg = root / "segments" / str(manifest["segments"][0])
    for f in sorted(seg.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    seg.rmdir()


CASES: dict[str, Callable[[Path], None]] = {
    "config dim -5": lambda r: _config(r, dim=-5),
    "config dim 10**12": lambda r: _config(r, dim=10**12),
    "config a list": lambda r: (r / "config.json").write_text("[1, 2]"),
    "config dim 8 over 4-d rows": lambda r: _config(r, dim=8),
    "config missing": lambda r: (r / "config.json").unlink(),
    "WAL record of unknown kind": lambda r: _rewrite_last_record(r, lambda s, o, b: (7, b)),
    "WAL record body too short": lambda r: _rewrite_last_record(r, lambda s, o, b: (o, b[:9])),
    "WAL file named abc.wal": lambda r: sorted((r / "wal").glob("*.wal"))[0].rename(
        r / "wal" / "abc.wal"),
    "WAL truncated by 7 bytes": lambda r: _truncate_wal(r, 7),
    "manifest corrupt": lambda r: (r / "manifest.json").write_bytes(b"{garbage"),
    "manifest lists a missing segment": _missing_segment,
    "segment vectors damaged": lambda r: next((r / "segments").rglob("vectors.npy")
                                              ).write_bytes(b"\x93NUMPY garbage"),
    "manifest checkpoint -5": lambda r: _manifest(r, checkpoint=-5),
    "manifest lists a segment twice": lambda r: _manifest(
        r, segments=json.loads((r / "manifest.json").read_text())["segments"] * 2),
    "segment keys out of order": lambda r: _reverse_key_order(r),
    "segment payload not an object": lambda r: _first_payload(r, b"[1]"),
    "segment payload not JSON": lambda r: _first_payload(r, b"{no"),
    "segment index of another kind": _flat_index,
    "WAL payload not an object": lambda r: _rewrite_last_record(r, _list_payload),
    "WAL file misnamed": lambda r: sorted((r / "wal").glob("*.wal"))[-1].rename(
        r / "wal" / "00000000000000000099.wal"),
}


def _altered(snapshot: Path, out: Path, change: Callable[[Path], None], listing: str) -> Path:
    root = out.with_suffix(".d")
    with tarfile.open(snapshot) as tar:
        tar.extractall(root, filter="data")
    change(root)
    listed = root / CONTENTS
    if listing == "unlisted":
        listed.unlink()
    else:  # a consistent list: only the deep checks can tell
        contents = json.loads(listed.read_text())
        contents["files"] = {
            str(p.relative_to(root)): {"size": p.stat().st_size,
                                       "crc32": zlib.crc32(p.read_bytes())}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != CONTENTS}
        listed.write_text(json.dumps(contents))
    with tarfile.open(out, "w") as tar:
        for p in sorted(root.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(root)), recursive=False)
    return out


@pytest.fixture
def store(open_db: Any, tmp_path: Path) -> tuple[peregrine.Database, peregrine.Collection, Path]:
    """40 sealed points and 10 in the WAL tail, and a snapshot of them."""
    db = open_db()
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 16})
    rng = np.random.default_rng(0)
    c.upsert(list(range(40)), rng.standard_normal((40, DIM)), [{"i": i} for i in range(40)])
    c.optimize()
    c.upsert(list(range(40, 50)), rng.standard_normal((10, DIM)))
    return db, c, c.snapshot(tmp_path / "good.snapshot")


@pytest.mark.parametrize("listing", ["listed", "unlisted"])
@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_that_does_not_load_changes_nothing(
        store: tuple[peregrine.Database, peregrine.Collection, Path], open_db: Any,
        tmp_path: Path, case: str, listing: str) -> None:
    db, c, good = store
    before = dump(c)
    bad = _altered(good, tmp_path / "bad.snapshot", CASES[case], listing)
    with pytest.raises(peregrine.InvalidSnapshotError):
        c.restore(bad)
    assert dump(c) == before
    c.upsert([99], [[1.0, 0.0, 0.0, 0.0]])  # still takes writes
    with pytest.raises(peregrine.InvalidSnapshotError):
        db.restore_collection(bad, "n1")
    assert db.list_collections() == ["c"]
    root = db.path / "collections"
    assert sorted(p.name for p in root.iterdir()) == ["c"]  # no staging left behind
    db.close()
    reopened = open_db()
    assert reopened.list_collections() == ["c"]
    assert reopened.collection("c").count() == 51


def test_damaged_file_or_extra_file_is_caught_by_the_list(
        store: tuple[peregrine.Database, peregrine.Collection, Path], tmp_path: Path) -> None:
    _, c, good = store
    with tarfile.open(good) as tar:
        names = tar.getnames()
    assert CONTENTS in names
    root = tmp_path / "x"
    with tarfile.open(good) as tar:
        tar.extractall(root, filter="data")
    (root / "segments" / "stray.bin").write_bytes(b"x")
    with tarfile.open(tmp_path / "extra.snapshot", "w") as tar:
        for p in sorted(root.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(root)), recursive=False)
    with pytest.raises(peregrine.InvalidSnapshotError, match="unexpected"):
        c.restore(tmp_path / "extra.snapshot")


def test_good_snapshot_still_restores_in_place_and_under_a_new_name(
        store: tuple[peregrine.Database, peregrine.Collection, Path]) -> None:
    db, c, good = store
    want = dump(c)
    c.upsert([777], [[0.0, 1.0, 0.0, 0.0]])
    c.restore(good)
    assert dump(c) == want
    copy = db.restore_collection(good, "copy")
    assert dump(copy) == want and copy.name == "copy"


def _link_member(tar: tarfile.TarFile, name: str, target: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = tarfile.SYMTYPE
    member.linkname = target
    tar.addfile(member)


@pytest.mark.parametrize("kind", ["symlink", "absolute", "parent", "device"])
def test_archive_members_must_be_plain_files(
        store: tuple[peregrine.Database, peregrine.Collection, Path], tmp_path: Path,
        kind: str) -> None:
    """Links, absolute or climbing names and special files are refused before anything
    is extracted (older Pythons' extraction filter lets a chain of links escape)."""
    _, c, good = store
    bad = tmp_path / "bad.snapshot"
    with tarfile.open(good) as source, tarfile.open(bad, "w") as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        if kind == "symlink":
            _link_member(tar, "escape", "../../..")
        else:
            member = tarfile.TarInfo({"absolute": "/tmp/evil", "parent": "../evil",
                                      "device": "dev"}[kind])
            if kind == "device":
                member.type = tarfile.CHRTYPE
            tar.addfile(member, io.BytesIO(b""))
    with pytest.raises(peregrine.InvalidSnapshotError, match="not a plain file"):
        c.restore(bad)
    assert not (tmp_path.parent / "evil").exists()
    assert c.count() == 50


def test_optimize_racing_a_restore_never_publishes_into_it(
        open_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """optimize() in one thread, restore() in another: the build made from the old
    contents must not land in the restored directory."""
    from peregrine.vector.collection.holder import SegmentHolder

    db = open_db()
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 16})
    c.upsert(list(range(40)), np.random.default_rng(0).standard_normal((40, DIM)))
    c.optimize()
    snap = c.snapshot(tmp_path / "s.snapshot")
    c.delete(ids=list(range(40)))
    swap = SegmentHolder.swap
    building = threading.Event()

    def slow_swap(self: SegmentHolder, *args: Any) -> None:
        building.set()
        time.sleep(0.5)  # built and opened, about to publish, when the restore runs
        swap(self, *args)

    monkeypatch.setattr(SegmentHolder, "swap", slow_swap)
    errors: list[BaseException] = []

    def optimize() -> None:
        try:
            c.optimize()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=optimize)
    worker.start()
    building.wait(10)
    c.restore(snap)
    worker.join()
    monkeypatch.setattr(SegmentHolder, "swap", swap)
    assert c.count() == 40
    assert all(isinstance(e, peregrine.ClosedError) for e in errors)
    db.close()
    assert open_db().collection("c").count() == 40
