"""Collection aliases at the vector face's front door: atomic changes, durability,
and every read and write working through an alias."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from peregrine.core.errors import InvalidInputError, NotFoundError, StorageError
from peregrine.vector import CollectionNotFoundError
from peregrine.vector.service import (
    AliasInfo,
    CreateAlias,
    DeleteAlias,
    NearestQuery,
    PointSelector,
    ReadOptions,
    RecommendQuery,
    RenameAlias,
    VectorService,
    VectorSettings,
)

DIM = 4


def _fill(service: VectorService, name: str, version: int, n: int = 20) -> None:
    rng = np.random.default_rng(version)
    service.create_collection(name, DIM, "cosine")
    service.upsert(name, list(range(n)), rng.standard_normal((n, DIM)),
                   [{"version": version, "i": i} for i in range(n)])


@pytest.fixture
def vector(tmp_path: Path) -> Iterator[VectorService]:
    service = VectorService.open(tmp_path / "data", VectorSettings(max_batch=30))
    _fill(service, "v1", 1)
    _fill(service, "v2", 2, n=10)
    yield service
    service.close()


def _versions(service: VectorService, name: str) -> set[int]:
    hits = service.search(name, [1, 0, 0, 0], ReadOptions(limit=5, with_payload=True))
    return {h.payload["version"] for h in hits if h.payload}


def test_create_rename_delete(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v1"), CreateAlias("other", "v2")])
    assert vector.list_aliases() == [AliasInfo("other", "v2"), AliasInfo("prod", "v1")]
    assert vector.list_aliases("v1") == [AliasInfo("prod", "v1")]
    assert vector.list_aliases("prod") == [AliasInfo("prod", "v1")]  # named by its alias
    vector.update_aliases([RenameAlias("prod", "live")])
    assert vector.list_aliases("v1") == [AliasInfo("live", "v1")]
    assert _versions(vector, "live") == {1}
    with pytest.raises(CollectionNotFoundError):
        vector.count("prod")
    vector.update_aliases([DeleteAlias("live"), DeleteAlias("other")])
    assert vector.list_aliases() == []
    vector.update_aliases([DeleteAlias("never-was")])  # no error, as in Qdrant
    with pytest.raises(CollectionNotFoundError):
        vector.list_aliases("nope")


def test_create_over_an_alias_repoints_it(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v1")])
    assert _versions(vector, "prod") == {1}
    vector.update_aliases([CreateAlias("prod", "v2")])
    assert _versions(vector, "prod") == {2}
    vector.update_aliases([DeleteAlias("prod"), CreateAlias("prod", "v1")])  # the doc's switch
    assert _versions(vector, "prod") == {1}
    assert vector.list_aliases() == [AliasInfo("prod", "v1")]


def test_actions_apply_in_order_and_rename_replaces(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("a", "v1"), RenameAlias("a", "b"),
                           CreateAlias("c", "v2"), RenameAlias("b", "c")])
    assert vector.list_aliases() == [AliasInfo("c", "v1")]


@pytest.mark.parametrize(("actions", "error", "message"), [
    ([CreateAlias("ok", "v1"), CreateAlias("bad", "missing")], CollectionNotFoundError,
     "'missing' does not exist"),
    ([CreateAlias("ok", "v1"), CreateAlias("v2", "v1")], InvalidInputError,
     "taken by a collection"),
    ([CreateAlias("ok", "v1"), RenameAlias("missing", "x")], NotFoundError,
     "alias 'missing' does not exist"),
    ([CreateAlias("ok", "v1"), RenameAlias("ok", "v2")], InvalidInputError,
     "taken by a collection"),
    ([CreateAlias("ok", "v1"), CreateAlias("no/slash", "v1")], InvalidInputError,
     "invalid alias name"),
    ([CreateAlias("ok", "v1"), CreateAlias("x" * 256, "v1")], InvalidInputError,
     "invalid alias name"),
    ([CreateAlias("ok", "v1"), CreateAlias("..", "v1")], InvalidInputError,
     "invalid alias name"),
    ([CreateAlias("ok", "v1"), CreateAlias("prod", "prod")], CollectionNotFoundError,
     "'prod' does not exist"),  # an alias names a collection, not another alias
    ([CreateAlias("ok", "v1"), "create prod"], InvalidInputError, "not an alias action"),
    ([CreateAlias("ok", "v1"), DeleteAlias(3)], InvalidInputError, "a string"),  # type: ignore[arg-type]
    ([DeleteAlias("prod")] * 31, InvalidInputError, "max_batch"),
    (CreateAlias("ok", "v1"), InvalidInputError, "a list of alias actions"),
], ids=["unknown-collection", "alias-is-a-collection", "rename-missing",
        "rename-onto-collection", "bad-name", "long-name", "dot-dot", "alias-of-alias",
        "not-an-action", "not-a-string", "cap", "not-a-list"])
def test_a_failing_action_applies_nothing(vector: VectorService, tmp_path: Path,
                                          actions: object, error: type[Exception],
                                          message: str) -> None:
    vector.update_aliases([CreateAlias("prod", "v1")])
    stored = (tmp_path / "data" / "aliases.json").read_bytes()
    with pytest.raises(error, match=message):
        vector.update_aliases(actions)  # type: ignore[arg-type]
    assert vector.list_aliases() == [AliasInfo("prod", "v1")]
    assert (tmp_path / "data" / "aliases.json").read_bytes() == stored
    assert _versions(vector, "prod") == {1}


def test_aliases_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = VectorService.open(data)
    _fill(service, "v1", 1)
    service.update_aliases([CreateAlias("prod", "v1"), CreateAlias("b", "v1")])
    service.update_aliases([RenameAlias("b", "c")])
    service.close()
    service = VectorService.open(data)
    try:
        assert service.list_aliases() == [AliasInfo("c", "v1"), AliasInfo("prod", "v1")]
        assert _versions(service, "prod") == {1}
    finally:
        service.close()


def test_dropping_a_collection_drops_its_aliases(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = VectorService.open(data)
    _fill(service, "v1", 1)
    _fill(service, "v2", 2)
    service.update_aliases([CreateAlias("a", "v1"), CreateAlias("b", "v1"),
                            CreateAlias("c", "v2")])
    assert service.drop_collection("a") is False  # a drop never follows an alias
    assert service.has_collection("v1")
    assert service.drop_collection("v1") is True
    assert service.list_aliases() == [AliasInfo("c", "v2")]
    with pytest.raises(CollectionNotFoundError):
        service.count("a")
    service.create_collection("v1", DIM, "cosine")  # a new v1 gets no old alias back
    assert service.list_aliases("v1") == []
    service.close()
    service = VectorService.open(data)
    try:
        assert service.list_aliases() == [AliasInfo("c", "v2")]
    finally:
        service.close()


def test_an_alias_name_is_not_free_for_a_collection(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v1")])
    with pytest.raises(InvalidInputError, match="'prod' is an alias"):
        vector.create_collection("prod", DIM, "cosine")
    assert vector.list_collections() == ["v1", "v2"]


def test_existence_and_listing(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v1")])
    assert vector.list_collections() == ["v1", "v2"]
    assert not vector.has_collection("prod")  # the collection of this very name
    assert vector.collection_exists("prod")  # what reads through the name find
    assert vector.collection_exists("v1")
    assert not vector.collection_exists("nope")


def test_reads_and_writes_through_an_alias(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v2")])
    vector.upsert("prod", [100], [[0, 0, 0, 1]], [{"version": 2, "new": True}])
    assert vector.count("v2") == 11
    assert vector.count("prod", {"must": [{"key": "new", "match": {"value": True}}]}) == 1
    assert [r.id for r in vector.retrieve("prod", [100])] == [100]
    page, _ = vector.scroll("prod", limit=100)
    assert len(page) == 11
    assert vector.search("prod", [0, 0, 0, 1], ReadOptions(limit=1))[0].id == 100
    assert vector.query("prod", NearestQuery(np.array([0, 0, 0, 1], np.float32)),
                        ReadOptions(limit=1))[0].id == 100
    assert vector.recommend("prod", RecommendQuery((100,)), ReadOptions(limit=3))
    assert len(vector.search_batch("prod", [([1, 0, 0, 0], ReadOptions(limit=2))] * 2)) == 2
    vector.set_payload("prod", PointSelector(ids=[100]), {"tag": "x"})
    assert vector.retrieve("v2", [100])[0].payload == {"version": 2, "new": True, "tag": "x"}
    vector.delete_payload("prod", PointSelector(ids=[100]), ["tag"])
    vector.clear_payload("prod", PointSelector(ids=[100]))
    assert vector.retrieve("v2", [100])[0].payload == {}
    vector.create_payload_index("prod", "version", "integer")
    info = vector.collection_info("prod")
    assert info.name == "v2"
    assert info.payload_points == {"version": 10}
    vector.delete_payload_index("prod", "version")
    vector.delete("prod", PointSelector(ids=[100]))
    assert vector.count("v2") == 10
    assert vector.count("v1") == 20  # nothing leaked into the other collection


def test_snapshots_through_an_alias_are_the_collections(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v1")])
    snapshot = vector.create_snapshot("prod")
    assert [s.name for s in vector.list_snapshots("v1")] == [snapshot.name]
    assert vector.snapshot_path("prod", snapshot.name) == vector.snapshot_path(
        "v1", snapshot.name)
    vector.upsert("prod", [500], [[1, 1, 1, 1]])
    vector.recover_snapshot("prod", vector.snapshot_path("v1", snapshot.name).as_uri())
    assert vector.count("v1") == 20  # v1 restored; no collection named "prod" appeared
    assert vector.list_collections() == ["v1", "v2"]
    vector.delete_snapshot("prod", snapshot.name)
    assert vector.list_snapshots("v1") == []


def test_the_result_cache_follows_the_alias(vector: VectorService) -> None:
    assert vector.caches_reads
    vector.update_aliases([CreateAlias("prod", "v1")])

    def read() -> tuple[bytes, bool]:
        return vector.cached("prod", b"key", lambda: orjson.dumps(sorted(_versions(
            vector, "prod"))))

    assert read() == (b"[1]", False)
    assert read() == (b"[1]", True)
    vector.update_aliases([CreateAlias("prod", "v2")])
    assert read() == (b"[2]", False)
    vector.update_aliases([CreateAlias("prod", "v1")])
    assert read() == (b"[1]", True)  # v1 unchanged since: its entry is still good


def test_a_reader_sees_the_old_or_the_new_collection(vector: VectorService) -> None:
    vector.update_aliases([CreateAlias("prod", "v1")])
    seen: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                versions = _versions(vector, "prod")
                assert len(versions) == 1, versions
                seen.update(versions)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            target = "v2" if i % 2 == 0 else "v1"
            vector.update_aliases([DeleteAlias("prod"), CreateAlias("prod", target)])
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert seen <= {1, 2}


def test_a_damaged_alias_file_is_a_storage_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    VectorService.open(data).close()
    (data / "aliases.json").write_bytes(b'{"aliases": ["x"]}')
    with pytest.raises(StorageError, match=r"aliases\.json"):
        VectorService.open(data)


def test_aliases_of_a_missing_collection_are_dropped_at_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = VectorService.open(data)
    _fill(service, "v1", 1)
    service.close()
    (data / "aliases.json").write_bytes(orjson.dumps(
        {"aliases": {"ok": "v1", "gone": "v0", "v1": "v1"}}))
    service = VectorService.open(data)
    try:
        assert service.list_aliases() == [AliasInfo("ok", "v1")]
    finally:
        service.close()
