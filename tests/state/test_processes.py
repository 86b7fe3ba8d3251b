"""Several processes of one node on one data directory, without Redis: a turn
written through one is in the next read through another (their memory tiers
are kept honest through the shared local store's change feed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from peregrine.state.local import LocalStore
from peregrine.state.service import StateService, StateSettings
from peregrine.state.turns import Turn

SECRET = "node-secret"


def test_two_instances_see_each_others_writes(tmp_path: Path) -> None:
    a = StateService.open(StateSettings(secret=SECRET), tmp_path)
    b = StateService.open(StateSettings(secret=SECRET), tmp_path)
    try:
        a.append_turn("chat", "user", "one")
        assert [t.content for t in b.last_turns("chat", 10)] == ["one"]  # b caches it
        a.append_turn("chat", "assistant", "two")
        assert [t.content for t in b.last_turns("chat", 10)] == ["one", "two"]
        b.append_turn("chat", "user", "three")
        assert [t.content for t in a.last_turns("chat", 10)] == ["one", "two", "three"]
        a.delete_session("chat")
        assert b.last_turns("chat", 10) == []
    finally:
        a.close()
        b.close()


_CHILD = textwrap.dedent("""
    import sys
    from peregrine.state.service import StateService, StateSettings
    state = StateService.open(StateSettings(secret=sys.argv[2]), sys.argv[1])
    for line in sys.stdin:
        cmd, _, text = line.strip().partition(" ")
        if cmd == "append":
            state.append_turn("chat", "user", text)
        elif cmd == "read":
            print("|".join(t.content for t in state.last_turns("chat", 50)), flush=True)
            continue
        print("ok", flush=True)
    state.close()
""")


def test_another_process_reads_what_this_one_wrote(tmp_path: Path) -> None:
    here = StateService.open(StateSettings(secret=SECRET), tmp_path)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), SECRET],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None

    def ask(line: str) -> str:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()
        return child.stdout.readline().strip()

    try:
        expected = []
        for i in range(20):  # alternate writers; each read must see every turn so far
            text = f"turn-{i}"
            if i % 2:
                assert ask(f"append {text}") == "ok"
            else:
                here.append_turn("chat", "user", text)
            expected.append(text)
            assert [t.content for t in here.last_turns("chat", 50)] == expected
            assert ask("read") == "|".join(expected)
    finally:
        child.stdin.close()
        child.wait(30)
        here.close()


def test_change_feed_trim_makes_a_late_reader_forget_everything(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite3"
    writer = LocalStore(path, durable=False, ttl_s=60, max_turns=10, origin="w")
    reader = LocalStore(path, durable=False, ttl_s=60, max_turns=10, origin="r")
    try:
        assert reader.changed_elsewhere() == []
        writer.append("s1", Turn("t0", "user", "x", 1.0))
        assert reader.changed_elsewhere() == ["s1"]
        assert reader.changed_elsewhere() == []
        reader.append("s2", Turn("t1", "user", "x", 2.0))  # its own write is not news
        assert reader.changed_elsewhere() == []
        for i in range(9300):  # past what the feed keeps
            writer.append(f"s{i % 7}", Turn(f"u{i}", "user", "x", 3.0 + i))
        assert reader.changed_elsewhere() is None
        writer.append("s9", Turn("v", "user", "x", 1e6))
        assert reader.changed_elsewhere() == ["s9"]
    finally:
        writer.close()
        reader.close()


def test_own_writes_never_absorb_a_trimmed_foreign_change(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite3"
    a = LocalStore(path, durable=False, ttl_s=600, max_turns=10, origin="A")
    b = LocalStore(path, durable=False, ttl_s=600, max_turns=10, origin="B")
    try:
        b.append("hot", Turn("x", "user", "from B", 1.0))  # A must hear of this
        for i in range(9300):  # A's own writes, past what the feed keeps
            a.append(f"s{i % 5}", Turn(f"u{i}", "user", "x", 2.0 + i))
            a.absorb_own_writes()
        assert a.changed_elsewhere() is None  # B's row was trimmed: forget everything
    finally:
        a.close()
        b.close()


def test_a_stale_fill_racing_an_invalidation_is_dropped(tmp_path: Path) -> None:
    """Thread 1 misses memory and reads the store; another process appends; thread 2's
    memory hit takes that change off the feed; thread 1's (older) read must not then
    be cached."""
    settings = StateSettings(secret=SECRET, durability="relaxed")
    a = StateService.open(settings, tmp_path)
    b = StateService.open(settings, tmp_path)
    try:
        a.append_turn("hot", "user", "one")
        a.append_turn("warm", "user", "w")
        a._sessions.memory.clear()
        a.last_turns("warm", 5)  # only "warm" in a's memory
        read_done, go_on = threading.Event(), threading.Event()
        real_last = a._sessions.local.last

        def slow_last(sid: str, n: int) -> tuple[list[Turn], int]:
            out = real_last(sid, n)
            read_done.set()
            go_on.wait(10)
            return out

        a._sessions.local.last = slow_last  # type: ignore[method-assign]
        reader = threading.Thread(target=lambda: a.last_turns("hot", 10))
        reader.start()
        read_done.wait(10)
        a._sessions.local.last = real_last  # type: ignore[method-assign]
        b.append_turn("hot", "user", "two")
        a.last_turns("warm", 5)  # a memory hit: consumes b's change
        go_on.set()
        reader.join(10)
        assert [t.content for t in a.last_turns("hot", 10)] == ["one", "two"]
    finally:
        a.close()
        b.close()
