"""Server settings: defaults < TOML file < PEREGRINE_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from peregrine.config import ServerConfig, load_config
from peregrine.core.errors import InvalidInputError


def test_defaults_document_the_embedded_setup() -> None:
    config = load_config(env={})
    assert config == ServerConfig()
    assert (config.host, config.port, config.data) == ("127.0.0.1", 6333, "./data")
    assert config.snapshot_dir() == Path("./data/snapshots")


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('port = 7000\nhost = "0.0.0.0"\napi_key = "from-file"\naccess_log = false\n')
    config = load_config(file, env={"PEREGRINE_PORT": "7001", "PEREGRINE_MAX_BATCH": "50"},
                         overrides={"port": 7002, "host": None})
    assert config.port == 7002  # flag beats env beats file
    assert config.host == "0.0.0.0"  # an unset flag does not override
    assert config.max_batch == 50
    assert config.api_key == "from-file"
    assert config.access_log is False
    via_env = load_config(env={"PEREGRINE_CONFIG": str(file)})
    assert via_env.port == 7000


def test_idle_poll_is_off_unless_asked_for(tmp_path: Path) -> None:
    """It keeps every idle CPU at 100%: never a default (core/idle_poll.py)."""
    assert load_config(env={}).idle_poll is False
    assert load_config(env={"PEREGRINE_IDLE_POLL": "true"}).idle_poll is True
    file = tmp_path / "p.toml"
    file.write_text("idle_poll = true\n")
    assert load_config(file, env={}).idle_poll is True
    assert load_config(env={}, overrides={"idle_poll": True}).idle_poll is True


@pytest.mark.parametrize(("text", "env", "message"), [
    ("prot = 1\n", {}, "unknown setting"),
    ("port = [\n", {}, "cannot read"),
    ("", {"PEREGRINE_PORT": "sixty"}, "PEREGRINE_PORT"),
    ("", {"PEREGRINE_ACCESS_LOG": "maybe"}, "access_log"),
    ('fsync = "sometimes"\n', {}, "fsync"),
    ('tls_cert = "c.pem"\n', {}, "TLS"),
    ('api_key = "k"\nread_only_api_key = "k"\n', {}, "differ"),
    ("max_batch = 0\n", {}, "max_batch"),
])
def test_bad_settings_are_rejected_with_a_reason(tmp_path: Path, text: str,
                                                 env: dict[str, str], message: str) -> None:
    file = tmp_path / "p.toml"
    file.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        load_config(file, env=env)
