"""Shared documents over HTTP: two servers on one NATS hub (the first one's
embedded server) converge, and a Yjs client (pycrdt) syncs with the sync route."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
from apiutil import ServerProcess

pycrdt = pytest.importorskip("pycrdt")


def _eventually(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_two_servers_share_a_document_and_a_yjs_client_syncs(tmp_path: Path) -> None:
    # Document names are HMACs: nodes that share documents share the secret.
    one = ServerProcess(tmp_path / "one", "--state-secret", "team-secret")
    hub = (tmp_path / "one" / "nats.url").read_text().strip()
    two = ServerProcess(tmp_path / "two", "--nats", hub, "--state-secret", "team-secret")
    try:
        with httpx.Client(timeout=30) as http:
            r = http.patch(f"{one.url}/state/docs/team", json={"locale": "de-DE", "beta": True})
            assert r.status_code == 200, r.text
            assert r.json() == {"data": {"locale": "de-DE", "beta": True}}
            _eventually(lambda: http.get(f"{two.url}/state/docs/team").json()["data"].get(
                "locale") == "de-DE")
            # Both edit at once; the replicas merge.
            http.patch(f"{two.url}/state/docs/team", json={"theme": "dark", "beta": None})
            http.patch(f"{one.url}/state/docs/team", json={"units": "metric"})
            want = {"locale": "de-DE", "theme": "dark", "units": "metric"}
            for server in (one, two):
                _eventually(lambda s=server: http.get(f"{s.url}/state/docs/team").json()[
                    "data"] == want)
            # Another tenant's "team" is another document.
            assert http.get(f"{one.url}/state/docs/team",
                            headers={"x-tenant": "b"}).json() == {"data": {}}
            # A Yjs client: sends its edit, gets what it lacks.
            client = pycrdt.Doc()
            data = client.get("data", type=pycrdt.Map)
            with client.transaction():
                data["from_client"] = "yes"
            r = http.post(f"{one.url}/state/docs/team/sync", json={
                "update": base64.b64encode(client.get_update()).decode(),
                "state_vector": base64.b64encode(client.get_state()).decode()})
            assert r.status_code == 200, r.text
            client.apply_update(base64.b64decode(r.json()["update"]))
            assert data.to_py() == {**want, "from_client": "yes"}
            _eventually(lambda: http.get(f"{two.url}/state/docs/team").json()["data"].get(
                "from_client") == "yes")
            # Bad input: clear 4xx, nothing changed.
            assert http.post(f"{one.url}/state/docs/team/sync",
                             json={"update": "!!"}).status_code == 400
            assert http.post(f"{one.url}/state/docs/team/sync", json={
                "update": base64.b64encode(b"\xff\x00garbage").decode()}).status_code == 400
            assert http.patch(f"{one.url}/state/docs/bad name!",
                              json={"a": 1}).status_code == 400
            assert http.patch(f"{one.url}/state/docs/team", json=[1]).status_code in (400, 422)
            r = http.patch(f"{one.url}/state/docs/team",
                           json={"first": 2, "z": 9223372036854775808})
            assert r.status_code == 400, r.text  # nothing of it is kept
            deep: Any = 1
            for _ in range(300):
                deep = [deep]
            assert http.patch(f"{one.url}/state/docs/team",
                              json={"deep": deep}).status_code == 400
            assert http.put(f"{one.url}/state/results/deep",
                            json={"value": deep}).status_code == 400
            assert http.get(f"{one.url}/state/docs/team").json()["data"] == {
                **want, "from_client": "yes"}
    finally:
        two.stop()
        one.stop()


def test_a_hub_that_is_down_costs_nothing_at_close(tmp_path: Path) -> None:
    from peregrine.state.docs import DocHub

    hub = DocHub(tmp_path / "docs.sqlite3", "nats://127.0.0.1:1", "node")
    assert hub.update("d", {"a": 1}) == {"a": 1.0}  # works offline
    started = time.monotonic()
    hub.close()
    assert time.monotonic() - started < 8
