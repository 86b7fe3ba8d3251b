"""Collection aliases over Qdrant's REST API, driven by the official qdrant-client
(and httpx for the bodies a client would never send)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apiutil import ServerProcess, error, ok
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

DIM = 4


@pytest.fixture
def versions(client: QdrantClient) -> Iterator[None]:
    """Collections v1 (20 points, payload version 1) and v2 (10 points, version 2),
    no aliases."""
    rng = np.random.default_rng(0)
    for version, n in ((1, 20), (2, 10)):
        name = f"v{version}"
        client.create_collection(name, vectors_config=models.VectorParams(
            size=DIM, distance=models.Distance.COSINE))
        client.upsert(name, points=[
            models.PointStruct(id=i, vector=rng.standard_normal(DIM).tolist(),
                               payload={"version": version}) for i in range(n)], wait=True)
    yield
    for alias in client.get_aliases().aliases:
        client.update_collection_aliases(change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(
                alias_name=alias.alias_name))])
    for c in client.get_collections().collections:
        client.delete_collection(c.name)


def create(alias: str, collection: str) -> models.CreateAliasOperation:
    return models.CreateAliasOperation(create_alias=models.CreateAlias(
        collection_name=collection, alias_name=alias))


def delete(alias: str) -> models.DeleteAliasOperation:
    return models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))


def rename(old: str, new: str) -> models.RenameAliasOperation:
    return models.RenameAliasOperation(rename_alias=models.RenameAlias(
        old_alias_name=old, new_alias_name=new))


def pairs(response: models.CollectionsAliasesResponse) -> list[tuple[str, str]]:
    return sorted((a.alias_name, a.collection_name) for a in response.aliases)


def seen_versions(client: QdrantClient, name: str) -> set[int]:
    points = client.query_points(name, query=[1.0, 0.0, 0.0, 0.0], limit=5,
                                 with_payload=True).points
    return {p.payload["version"] for p in points if p.payload}


@pytest.mark.usefixtures("versions")
def test_create_list_rename_delete(client: QdrantClient) -> None:
    assert client.update_collection_aliases(change_aliases_operations=[
        create("prod", "v1"), create("other", "v2")]) is True
    assert pairs(client.get_aliases()) == [("other", "v2"), ("prod", "v1")]
    assert pairs(client.get_collection_aliases("v1")) == [("prod", "v1")]
    assert pairs(client.get_collection_aliases("prod")) == [("prod", "v1")]
    assert client.update_collection_aliases(change_aliases_operations=[
        rename("prod", "live")])
    assert pairs(client.get_collection_aliases("v1")) == [("live", "v1")]
    assert client.update_collection_aliases(change_aliases_operations=[
        delete("live"), delete("other"), delete("never-was")])  # missing: no error (Qdrant)
    assert client.get_aliases().aliases == []


@pytest.mark.usefixtures("versions")
def test_reads_and_writes_through_an_alias(client: QdrantClient) -> None:
    client.update_collection_aliases(change_aliases_operations=[create("prod", "v2")])
    assert seen_versions(client, "prod") == {2}
    client.upsert("prod", points=[models.PointStruct(
        id=100, vector=[0.0, 0.0, 0.0, 1.0], payload={"version": 2, "new": True})], wait=True)
    assert client.count("v2").count == 11
    assert client.count("prod", count_filter=models.Filter(must=[models.FieldCondition(
        key="new", match=models.MatchValue(value=True))])).count == 1
    assert [r.id for r in client.retrieve("prod", ids=[100])] == [100]
    assert len(client.scroll("prod", limit=100)[0]) == 11
    hits = client.query_points("prod", query=[0.0, 0.0, 0.0, 1.0], limit=1).points
    assert hits[0].id == 100
    client.set_payload("prod", payload={"tag": "x"}, points=[100], wait=True)
    assert client.retrieve("v2", ids=[100])[0].payload == {"version": 2, "new": True,
                                                             "tag": "x"}
    client.create_payload_index("prod", "version", models.PayloadSchemaType.INTEGER,
                                wait=True)
    info = client.get_collection("prod")
    assert info.points_count == 11
    assert info.payload_schema["version"].points == 11
    client.delete("prod", points_selector=models.PointIdsList(points=[100]), wait=True)
    assert client.count("v2").count == 10
    assert client.count("v1").count == 20
    assert client.collection_exists("prod")  # as Qdrant answers for an alias
    assert not client.collection_exists("nope")
    assert sorted(c.name for c in client.get_collections().collections) == ["v1", "v2"]


@pytest.mark.usefixtures("versions")
def test_switching_an_alias_never_fails_a_reader(client: QdrantClient,
                                                 server: ServerProcess) -> None:
    client.update_collection_aliases(change_aliases_operations=[create("prod", "v1")])
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    mine = QdrantClient(url=server.url, prefer_grpc=False, timeout=30)

    def reader() -> None:
        while not stop.is_set():
            try:
                versions = seen_versions(mine, "prod")
                assert len(versions) == 1, versions
                seen.extend(versions)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        while not seen and not errors:  # the reader is under way before the first switch
            stop.wait(0.01)
        for i in range(30):
            if i % 2 == 0:  # Qdrant's documented switch: delete + create, one request
                ops: list[Any] = [delete("prod"), create("prod", "v2")]
            else:  # or create over the existing alias
                ops = [create("prod", "v1")]
            assert client.update_collection_aliases(change_aliases_operations=ops)
            if i == 0:
                assert seen_versions(client, "prod") == {2}
    finally:
        stop.set()
        thread.join()
        mine.close()
    assert not errors, errors
    assert len(seen) > 1 and set(seen) <= {1, 2}
    assert seen_versions(client, "prod") == {1}


@pytest.mark.usefixtures("versions")
def test_dropping_the_collection_drops_its_aliases(client: QdrantClient) -> None:
    client.update_collection_aliases(change_aliases_operations=[
        create("a", "v1"), create("b", "v2")])
    assert client.delete_collection("a") is False  # a drop never follows an alias
    assert client.collection_exists("v1")
    assert client.delete_collection("v1") is True
    assert pairs(client.get_aliases()) == [("b", "v2")]
    with pytest.raises(UnexpectedResponse) as exc:
        client.count("a")
    assert exc.value.status_code == 404


def _post(server: ServerProcess, body: Any) -> httpx.Response:
    return httpx.post(server.url + "/collections/aliases", json=body, timeout=30)


def _create_body(alias: str, collection: str) -> dict[str, Any]:
    return {"create_alias": {"alias_name": alias, "collection_name": collection}}


@pytest.mark.usefixtures("versions")
@pytest.mark.parametrize(("action", "status", "message"), [
    (_create_body("bad", "missing"), 404, "collection 'missing' does not exist"),
    (_create_body("v2", "v1"), 400, "taken by a collection"),
    (_create_body("no/slash", "v1"), 400, "invalid alias name"),
    ({"rename_alias": {"old_alias_name": "missing", "new_alias_name": "x"}}, 404,
     "alias 'missing' does not exist"),
    ({"create_alias": {"alias_name": "x"}}, 400, "collection_name"),
    ({"make_alias": {"alias_name": "x"}}, 400, "Format error"),
    ({"delete_alias": {"alias_name": 5}}, 400, "Format error"),
], ids=["unknown-collection", "alias-is-a-collection", "bad-name", "rename-missing",
        "missing-field", "unknown-action", "wrong-type"])
def test_bad_actions_are_4xx_and_change_nothing(server: ServerProcess, client: QdrantClient,
                                                action: dict[str, Any], status: int,
                                                message: str) -> None:
    client.update_collection_aliases(change_aliases_operations=[create("prod", "v1")])
    text = error(_post(server, {"actions": [_create_body("first", "v2"), action]}), status)
    assert message in text
    assert pairs(client.get_aliases()) == [("prod", "v1")]


@pytest.mark.parametrize("body", [None, {}, {"actions": "x"}, {"actions": [1]}, []],
                         ids=["no-body", "no-actions", "actions-not-a-list", "not-an-object",
                              "body-not-an-object"])
def test_malformed_bodies_are_400(server: ServerProcess, body: Any) -> None:
    if body is None:
        response = httpx.post(server.url + "/collections/aliases", timeout=30)
    else:
        response = _post(server, body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["status"]["error"]


@pytest.mark.usefixtures("versions")
def test_raw_rest_shapes(server: ServerProcess, client: QdrantClient) -> None:
    assert ok(_post(server, {"actions": [_create_body("prod", "v1")]})) is True
    assert ok(httpx.get(server.url + "/aliases")) == {
        "aliases": [{"alias_name": "prod", "collection_name": "v1"}]}
    assert ok(httpx.get(server.url + "/collections/v2/aliases")) == {"aliases": []}
    assert "does not exist" in error(httpx.get(server.url + "/collections/nope/aliases"), 404)
    assert ok(httpx.get(server.url + "/collections/prod/exists")) == {"exists": True}
    message = error(httpx.put(server.url + "/collections/prod", json={
        "vectors": {"size": DIM, "distance": "Dot"}}), 400)
    assert "'prod' is an alias" in message
    assert ok(httpx.post(server.url + "/collections/prod/points/search", json={
        "vector": [1, 0, 0, 0], "limit": 3}))
    snapshot = ok(httpx.post(server.url + "/collections/prod/snapshots"))
    listed = ok(httpx.get(server.url + "/collections/v1/snapshots"))
    assert [s["name"] for s in listed] == [snapshot["name"]]
    assert ok(httpx.delete(server.url + f"/collections/prod/snapshots/{snapshot['name']}"))


def test_aliases_survive_a_restart(server_factory: Callable[..., ServerProcess],
                                   tmp_path: Path) -> None:
    data = tmp_path / "restart"
    first = server_factory(data=data)
    c = QdrantClient(url=first.url, prefer_grpc=False, timeout=30)
    c.create_collection("v1", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.DOT))
    c.update_collection_aliases(change_aliases_operations=[create("prod", "v1")])
    c.close()
    assert first.stop() == 0
    second = server_factory(data=data)
    c = QdrantClient(url=second.url, prefer_grpc=False, timeout=30)
    try:
        assert pairs(c.get_aliases()) == [("prod", "v1")]
        assert c.get_collection("prod").points_count == 0
    finally:
        c.close()
