"""Sessions on the local tiers (memory + SQLite), without Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.state.service import StateService, StateSettings


def test_append_read_delete_and_reopen(tmp_path: Path) -> None:
    state = StateService.open(StateSettings(), tmp_path)
    ids = [state.append_turn("chat-1", role, f"turn {i}").turn_id
           for i, role in enumerate(["user", "assistant", "user"])]
    state.append_turn("chat-2", "user", "elsewhere")
    turns = state.last_turns("chat-1", 2)
    assert [t.content for t in turns] == ["turn 1", "turn 2"]  # last N, oldest first
    assert [t.turn_id for t in state.last_turns("chat-1", 10)] == ids
    assert state.last_turns("nobody", 5) == []
    state.close()
    again = StateService.open(StateSettings(), tmp_path)  # the local store kept them
    assert [t.turn_id for t in again.last_turns("chat-1", 10)] == ids
    assert again.delete_session("chat-1") is True
    assert again.last_turns("chat-1", 10) == []
    assert again.delete_session("chat-1") is False
    assert [t.content for t in again.last_turns("chat-2", 10)] == ["elsewhere"]
    again.close()


def test_tenants_are_separate_and_raw_ids_never_stored(tmp_path: Path) -> None:
    state = StateService.open(StateSettings(), tmp_path)
    state.append_turn("alice-session-42", "user", "hello", tenant="acme")
    assert state.last_turns("alice-session-42", 5, tenant="other") == []
    assert len(state.last_turns("alice-session-42", 5, tenant="acme")) == 1
    state.close()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir() if p.is_file())
    assert b"alice-session-42" not in stored and b"acme" not in stored


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    state = StateService.open(StateSettings(max_turn_bytes=100), tmp_path)
    for call in (lambda: state.append_turn("s", "", "x"),
                 lambda: state.append_turn("s", "user", "x" * 101),
                 lambda: state.append_turn("has space", "user", "x"),
                 lambda: state.last_turns("s", 5000)):
        with pytest.raises(InvalidInputError):
            call()
    assert state.last_turns("s", 10) == []
    state.close()


def test_sessions_keep_at_most_max_turns(tmp_path: Path) -> None:
    state = StateService.open(StateSettings(max_turns=5), tmp_path)
    for i in range(8):
        state.append_turn("s", "user", str(i))
        if i == 2:
            state.last_turns("s", 1)  # cached in memory from here on
    assert [t.content for t in state.last_turns("s", 100)] == ["3", "4", "5", "6", "7"]
    state.close()


def test_user_and_device_settings_are_durable(tmp_path: Path) -> None:
    state = StateService.open(StateSettings(), tmp_path)
    assert state.get_settings("user", "u-1") == {}
    state.update_settings("user", "u-1", {"locale": "fr-FR", "quantization": "int8"})
    state.update_settings("user", "u-1", {"quantization": None, "theme": "dark"})
    state.update_settings("device", "phone-9", {"quantization": "q4"})
    with pytest.raises(InvalidInputError):
        state.update_settings("planet", "x", {"a": 1})
    with pytest.raises(InvalidInputError):
        state.update_settings("user", "u-1", {"blob": "x" * 70_000})
    state.close()
    again = StateService.open(StateSettings(), tmp_path)
    assert again.get_settings("user", "u-1") == {"locale": "fr-FR", "theme": "dark"}
    assert again.get_settings("device", "phone-9") == {"quantization": "q4"}
    assert again.get_settings("user", "u-1", tenant="other") == {}
    again.close()
