"""Three edge nodes edit one shared document concurrently, at random, with one node
partitioned from the hub for a while; after the heal every replica is the same."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import nats
import pytest

from peregrine.runtime.nats import EmbeddedNats
from peregrine.state.service import SharedDoc, UpdateLog

pycrdt = pytest.importorskip("pycrdt")


def _state(node: SharedDoc) -> Any:
    return {"prefs": node.doc.get("prefs", type=pycrdt.Map).to_py(),
            "notes": str(node.doc.get("notes", type=pycrdt.Text))}


def test_three_nodes_converge_after_a_partition(tmp_path: Path) -> None:
    rng = random.Random(11)

    async def main() -> None:
        with EmbeddedNats(tmp_path / "hub") as hub:
            logs = [UpdateLog(tmp_path / f"node{i}" / "crdt.sqlite3") for i in range(3)]
            nodes = [SharedDoc("team-notes", logs[i], f"node{i}") for i in range(3)]
            conns = []
            for node in nodes:
                nc = await nats.connect(hub.url)
                conns.append(nc)
                await node.connect(nc.jetstream())

            def edit(i: int, step: int) -> None:
                doc = nodes[i].doc
                prefs = doc.get("prefs", type=pycrdt.Map)
                notes = doc.get("notes", type=pycrdt.Text)
                with doc.transaction():
                    prefs[f"k{rng.randrange(8)}"] = f"node{i}-{step}"
                    at = rng.randrange(len(notes) + 1)
                    notes.insert(at, f"[{i}:{step}]")

            for step in range(30):  # everyone online
                edit(rng.randrange(3), step)
                await asyncio.sleep(0)
            # Partition node 2: it leaves the hub, and everyone keeps editing.
            await nodes[2].disconnect()
            await conns[2].close()
            for step in range(30, 90):
                edit(rng.randrange(3), step)
                await asyncio.sleep(0)
            assert logs[2].pending("team-notes")  # its offline edits wait
            # Heal: a new connection, pending edits published, missed ones read.
            nc = await nats.connect(hub.url)
            conns[2] = nc
            await nodes[2].connect(nc.jetstream())
            for step in range(90, 100):
                edit(rng.randrange(3), step)
                await asyncio.sleep(0)
            for _ in range(200):
                states = [_state(n) for n in nodes]
                if states[0] == states[1] == states[2]:
                    break
                await asyncio.sleep(0.05)
            assert states[0] == states[1] == states[2]
            assert len(states[0]["notes"]) > 0 and states[0]["prefs"]
            assert all(f"[{i}:" in states[0]["notes"] for i in range(3))
            assert not logs[2].pending("team-notes")
            # A node restarted from its own store alone has the same document.
            restarted = SharedDoc("team-notes", logs[0], "node0")
            assert _state(restarted) == states[0]
            for node, nc in zip(nodes, conns, strict=True):
                await node.disconnect()
                await nc.close()
            for log in logs:
                log.close()

    asyncio.run(main())
