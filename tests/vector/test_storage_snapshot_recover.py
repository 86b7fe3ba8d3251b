"""Recovering a whole storage snapshot (every collection and alias) at once.

A source storage with two collections (one with payloads, an alias and an
indexed segment; one without payloads, UUID ids, another metric) is archived
once with ``create_full_snapshot``. Each test recovers that archive, or a
doctored copy, into another storage and compares what it holds against the
source's own reads, never against hard-coded values. A refused recovery,
whatever the reason and even with ``force``, must leave the target exactly as
it was and nothing behind in the snapshot area.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from peregrine.core.errors import InvalidInputError, NotFoundError
from peregrine.vector.service import (
    CreateAlias,
    ReadOptions,
    VectorService,
    VectorSettings,
)

Members = dict[str, bytes]
State = tuple[list[str], list[tuple[str, str]], dict[str, dict[Any, Any]]]


def _dump(service: VectorService, name: str) -> dict[Any, tuple[Any, tuple[float, ...]]]:
    """Every point of a collection: id -> (payload, vector), through scroll."""
    out: dict[Any, tuple[Any, tuple[float, ...]]] = {}
    offset = None
    while True:
        page, offset = service.scroll(name, limit=7, offset=offset, with_vector=True)
        for record in page:
            assert isinstance(record.vector, list)
            out[record.id] = (record.payload, tuple(record.vector))
        if offset is None:
            return out


def _state(service: VectorService) -> State:
    names = service.list_collections()
    aliases = [(a.alias, a.collection) for a in service.list_aliases()]
    return names, aliases, {n: _dump(service, n) for n in names}


def _leftovers(service: VectorService, data: Path) -> list[str]:
    """Anything a recovery left in the snapshot area or beside the collections."""
    incoming = [p.name for p in service._snapshots.incoming.iterdir()]
    stray = [p.name for p in (data / "collections").iterdir()
             if p.name not in service.list_collections()]
    return incoming + stray


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VectorService, Path]]:
    """The source storage, still open (its reads are the expected values), and a
    copy of its storage snapshot outside any data directory."""
    root = tmp_path_factory.mktemp("source")
    service = VectorService.open(root / "data")
    rng = np.random.default_rng(7)
    service.create_collection("docs", 4, "cosine")
    service.upsert("docs", list(range(40)), rng.standard_normal((40, 4)),
                   [{"i": i, "tag": ["a", "b"][i % 2], "nested": {"n": i * 1.5}}
                    for i in range(40)])
    service.optimize("docs")  # some points in a sealed segment, some in the WAL
    service.upsert("docs", list(range(35, 50)), rng.standard_normal((15, 4)),
                   [{"i": i, "late": True} for i in range(35, 50)])
    service.create_collection("plain", 3, "l2")
    ids = [str(uuid.UUID(int=i + 1)) for i in range(12)]
    service.upsert("plain", ids, rng.standard_normal((12, 3)))
    service.update_aliases([CreateAlias("docs_current", "docs")])
    info = service.create_full_snapshot()
    archive = root / "storage.snapshot"
    shutil.copy(service.full_snapshot_path(info.name), archive)
    yield service, archive
    service.close()


@pytest.fixture
def archive(source: tuple[VectorService, Path]) -> Path:
    return source[1]


@pytest.fixture
def expected(source: tuple[VectorService, Path]) -> State:
    return _state(source[0])


@pytest.fixture
def target(tmp_path: Path) -> Iterator[VectorService]:
    service = VectorService.open(tmp_path / "data")
    yield service
    service.close()


def _other_contents(service: VectorService) -> None:
    """Give a target storage contents of its own: a 'docs' unlike the archive's,
    and a collection and alias the archive does not name."""
    rng = np.random.default_rng(99)
    service.create_collection("docs", 2, "dot")
    service.upsert("docs", [1, 2, 3], rng.standard_normal((3, 2)), [{"mine": True}] * 3)
    service.create_collection("other", 2, "dot")
    service.upsert("other", [7], rng.standard_normal((1, 2)), [{"other": 1}])
    service.update_aliases([CreateAlias("keep", "other")])


# -- recovery ---------------------------------------------------------------------------
def test_recovers_every_point_vector_payload_and_alias(
        source: tuple[VectorService, Path], target: VectorService, archive: Path,
        expected: State, tmp_path: Path) -> None:
    assert target.recover_full_snapshot(archive) == ["docs", "plain"]
    assert _state(target) == expected
    for name in ("docs", "plain"):
        assert target.collection_info(name).config == source[0].collection_info(name).config
    assert _leftovers(target, tmp_path / "data") == []
    # Through the recovered alias, a search answers as the source's does.
    options = ReadOptions(limit=5, with_payload=True)
    query = [0.5, -1.0, 0.25, 2.0]
    got = target.search("docs_current", query, options)
    want = source[0].search("docs_current", query, options)
    assert [(h.id, h.payload) for h in got] == [(h.id, h.payload) for h in want]
    # Recovered durably: a reopened storage holds the same.
    target.close()
    reopened = VectorService.open(tmp_path / "data")
    try:
        assert _state(reopened) == expected
    finally:
        reopened.close()


def test_an_existing_collection_is_refused_without_force_and_replaced_with_it(
        target: VectorService, archive: Path, expected: State, tmp_path: Path) -> None:
    _other_contents(target)
    before = _state(target)
    with pytest.raises(InvalidInputError, match=r"'docs' already exist.*force"):
        target.recover_full_snapshot(archive)
    assert _state(target) == before
    assert _leftovers(target, tmp_path / "data") == []

    assert target.recover_full_snapshot(archive, force=True) == ["docs", "plain"]
    names, aliases, points = _state(target)
    assert names == ["docs", "other", "plain"]
    assert aliases == sorted([*expected[1], ("keep", "other")])  # the archive's, and ours
    assert points["docs"] == expected[2]["docs"] and points["plain"] == expected[2]["plain"]
    assert points["other"] == before[2]["other"]  # not in the archive: kept
    assert target.collection_info("docs").config.dim == 4  # the archive's config too
    assert _leftovers(target, tmp_path / "data") == []


def test_an_existing_alias_is_refused_without_force_and_re_pointed_with_it(
        target: VectorService, archive: Path, expected: State) -> None:
    target.create_collection("other", 2, "dot")
    target.update_aliases([CreateAlias("docs_current", "other")])
    before = _state(target)
    with pytest.raises(InvalidInputError, match=r"aliases 'docs_current' already exist"):
        target.recover_full_snapshot(archive)
    assert _state(target) == before
    target.recover_full_snapshot(archive, force=True)
    assert [(a.alias, a.collection) for a in target.list_aliases()] == [("docs_current", "docs")]


def test_an_alias_named_like_an_archive_collection_gives_way_only_with_force(
        target: VectorService, archive: Path, expected: State) -> None:
    target.create_collection("other", 2, "dot")
    target.update_aliases([CreateAlias("plain", "other")])
    before = _state(target)
    with pytest.raises(InvalidInputError, match=r"'plain' already exist"):
        target.recover_full_snapshot(archive)
    assert _state(target) == before
    target.recover_full_snapshot(archive, force=True)
    assert _dump(target, "plain") == expected[2]["plain"]
    assert "plain" not in {a.alias for a in target.list_aliases()}


def test_an_alias_may_not_take_an_existing_collection_name_even_with_force(
        target: VectorService, archive: Path) -> None:
    target.create_collection("docs_current", 2, "dot")
    before = _state(target)
    for force in (False, True):
        with pytest.raises(InvalidInputError, match=r"'docs_current' have the names of existing "
                                                    "collections"):
            target.recover_full_snapshot(archive, force=force)
        assert _state(target) == before


def test_an_alias_whose_collection_is_nowhere_is_skipped(
        target: VectorService, archive: Path, tmp_path: Path, expected: State) -> None:
    members = _members(archive)
    aliases = orjson.loads(members["aliases.json"])
    aliases.append({"alias_name": "ghost", "collection_name": "gone"})
    members["aliases.json"] = orjson.dumps(aliases)
    doctored = _write(tmp_path / "ghost.snapshot", members)
    target.recover_full_snapshot(doctored)
    assert [(a.alias, a.collection) for a in target.list_aliases()] == expected[1]


def test_an_empty_storage_snapshot_recovers_nothing(target: VectorService,
                                                   tmp_path: Path) -> None:
    empty = VectorService.open(tmp_path / "empty")
    try:
        path = empty.full_snapshot_path(empty.create_full_snapshot().name)
        assert target.recover_full_snapshot(path) == []
    finally:
        empty.close()
    assert _state(target) == ([], [], {})


# -- refused archives -------------------------------------------------------------------
def _members(archive: Path) -> Members:
    with tarfile.open(archive) as tar:
        out: Members = {}
        for member in tar:
            data = tar.extractfile(member)
            assert data is not None
            out[member.name] = data.read()
        return out


def _write(path: Path, members: Members, extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def _link(name: str, kind: bytes, target: str = "docs.snapshot") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _with(name: str, data: bytes) -> Callable[[Path, Path], Path]:
    def make(archive: Path, out: Path) -> Path:
        return _write(out, {**_members(archive), name: data})
    return make


def _without(name: str) -> Callable[[Path, Path], Path]:
    def make(archive: Path, out: Path) -> Path:
        members = _members(archive)
        del members[name]
        return _write(out, members)
    return make


def _extra(info: tarfile.TarInfo) -> Callable[[Path, Path], Path]:
    def make(archive: Path, out: Path) -> Path:
        return _write(out, _members(archive), [info])
    return make


def _cut(where: Callable[[Path], int]) -> Callable[[Path, Path], Path]:
    def make(archive: Path, out: Path) -> Path:
        data = archive.read_bytes()
        out.write_bytes(data[:where(archive)])
        return out
    return make


def _end_of_members(archive: Path) -> int:
    """Where the last member's data ends: a cut here leaves a valid-looking tar
    without its end-of-archive blocks."""
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _inside_last_header(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        return tar.getmembers()[-1].offset + 100


def _damaged_collection(archive: Path, out: Path) -> Path:
    """'plain' (recovered after 'docs') flipped in its middle: only the full check of
    every collection snapshot before the first restore can keep 'docs' unchanged."""
    members = _members(archive)
    data = bytearray(members["plain.snapshot"])
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    members["plain.snapshot"] = bytes(data)
    return _write(out, members)


def _gzipped(archive: Path, out: Path) -> Path:
    out.write_bytes(gzip.compress(archive.read_bytes()))
    return out


def _garbage(archive: Path, out: Path) -> Path:
    out.write_bytes(b"this is not a tar archive" * 100)
    return out


_REFUSED: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "path traversal": (_with("../evil.snapshot", b"x"), "top level only"),
    "plain traversal": (_with("../evil", b"x"), "top level only"),
    "subdirectory": (_with("sub/docs2.snapshot", b"x"), "top level only"),
    "absolute path": (_with("/tmp/abs.snapshot", b"x"), "top level only"),
    "symlink": (_extra(_link("link.snapshot", tarfile.SYMTYPE)), "not a plain file"),
    "hard link": (_extra(_link("hard.snapshot", tarfile.LNKTYPE)), "not a plain file"),
    "directory": (_extra(_link("dir.snapshot", tarfile.DIRTYPE, "")), "not a plain file"),
    "stray file": (_with("notes.txt", b"hello"), "only <collection>.snapshot"),
    "invalid collection name": (_with("b@d.snapshot", b"x"), "invalid collection name"),
    "no alias list": (_without("aliases.json"), "no aliases.json"),
    "alias list not JSON": (_with("aliases.json", b"{nope"), "not JSON"),
    "alias list of the wrong shape": (_with("aliases.json", b'{"a": "docs"}'), "must be a list"),
    "alias entry of the wrong shape": (
        _with("aliases.json", b'[{"alias_name": 5, "collection_name": "docs"}]'),
        "invalid alias name"),
    "alias named as an archive collection": (
        _with("aliases.json", b'[{"alias_name": "plain", "collection_name": "docs"}]'),
        "also a collection of the archive"),
    "alias listed twice": (
        _with("aliases.json", b'[{"alias_name": "a", "collection_name": "docs"}, '
              b'{"alias_name": "a", "collection_name": "plain"}]'), "twice"),
    "damaged collection snapshot": (_damaged_collection, "plain.snapshot does not load"),
    "truncated in a member": (_cut(lambda p: p.stat().st_size // 2), "truncated|unexpected end"),
    "truncated between members": (_cut(_end_of_members), "truncated"),
    "truncated in a header": (_cut(_inside_last_header), "truncated"),
    "empty file": (_cut(lambda p: 0), "not an uncompressed tar"),
    "not a tar": (_garbage, "not an uncompressed tar"),
    "compressed": (_gzipped, "not an uncompressed tar"),
}


@pytest.mark.parametrize("case", list(_REFUSED))
def test_a_malformed_archive_is_refused_and_changes_nothing(
        case: str, target: VectorService, archive: Path, tmp_path: Path) -> None:
    make, message = _REFUSED[case]
    bad = make(archive, tmp_path / "bad.snapshot")
    _other_contents(target)
    before = _state(target)
    with pytest.raises(InvalidInputError, match=message) as raised:
        target.recover_full_snapshot(bad, force=True)  # force: only the archive is at fault
    assert "\n" not in str(raised.value)
    assert _state(target) == before
    assert _leftovers(target, tmp_path / "data") == []


def test_the_duplicate_of_a_member_is_refused(target: VectorService, archive: Path,
                                              tmp_path: Path) -> None:
    members = _members(archive)
    bad = tmp_path / "dup.snapshot"
    with tarfile.open(bad, "w") as tar:
        for name, data in [*members.items(), ("plain.snapshot", members["plain.snapshot"])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidInputError, match="twice"):
        target.recover_full_snapshot(bad)
    assert _state(target) == ([], [], {})


def test_an_archive_over_max_snapshot_bytes_is_refused(archive: Path, tmp_path: Path) -> None:
    small = VectorService.open(tmp_path / "data",
                               VectorSettings(max_snapshot_bytes=archive.stat().st_size - 1))
    try:
        with pytest.raises(InvalidInputError, match="max_snapshot_bytes"):
            small.recover_full_snapshot(archive)
        assert _state(small) == ([], [], {})
        assert _leftovers(small, tmp_path / "data") == []
    finally:
        small.close()


def test_a_missing_archive_is_not_found(target: VectorService, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        target.recover_full_snapshot(tmp_path / "nowhere.snapshot")
    assert _leftovers(target, tmp_path / "data") == []
