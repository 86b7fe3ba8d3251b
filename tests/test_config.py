"""Settings: defaults < TOML file < PEREGRINE_* environment < flags, one section per face."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peregrine.bootstrap import Settings
from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import load_settings, settings_of


def load(file: Path | None = None, env: dict[str, str] | None = None,
         overrides: dict[str, object] | None = None) -> Settings:
    return load_settings(Settings, file, env=env or {}, overrides=overrides)


def test_defaults_document_the_embedded_setup() -> None:
    settings = load()
    assert settings == Settings()
    assert (settings.http.host, settings.http.port, settings.data) == ("127.0.0.1", 6333,
                                                                         "./data")
    assert settings.vector.snapshots == ""  # <data>/snapshots


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('data = "/srv/p"\n[http]\nport = 7000\nhost = "0.0.0.0"\n'
                    'api_key = "from-file"\naccess_log = false\n[vector]\nmax_batch = 20\n')
    settings = load(file, env={"PEREGRINE_HTTP_PORT": "7001", "PEREGRINE_VECTOR_MAX_BATCH": "50"},
                    overrides={"http.port": 7002, "http.host": None})
    assert settings.http.port == 7002  # flag beats env beats file
    assert settings.http.host == "0.0.0.0"  # an unset flag does not override
    assert settings.vector.max_batch == 50
    assert settings.http.api_key == "from-file"
    assert settings.http.access_log is False
    assert settings.data == "/srv/p"
    via_env = load(env={"PEREGRINE_CONFIG": str(file)})
    assert via_env.http.port == 7000


def test_every_setting_has_one_name_in_every_layer() -> None:
    names = {s.key: (s.env, s.flag) for s in settings_of(Settings)}
    assert names["http.port"] == ("PEREGRINE_HTTP_PORT", "--http-port")
    assert names["vector.max_ef"] == ("PEREGRINE_VECTOR_MAX_EF", "--vector-max-ef")
    assert names["runtime.idle_poll"] == ("PEREGRINE_RUNTIME_IDLE_POLL", "--runtime-idle-poll")
    assert names["data"] == ("PEREGRINE_DATA", "--data")
    assert len({env for env, _ in names.values()}) == len(names)
    assert all(s.help for s in settings_of(Settings))  # documented in --help
    out = subprocess.run([sys.executable, "-m", "peregrine", "serve", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert all(flag in out for _, flag in names.values())


def test_list_settings_read_from_the_environment_as_comma_separated() -> None:
    settings = load(env={"PEREGRINE_VECTOR_SNAPSHOT_URL_HOSTS": "a.example, b.example:8080"})
    assert settings.vector.snapshot_url_hosts == ("a.example", "b.example:8080")


def test_idle_poll_is_off_unless_asked_for(tmp_path: Path) -> None:
    """It keeps every idle CPU at 100%: never a default (runtime/idle_poll.py)."""
    assert load().runtime.idle_poll is False
    assert load(env={"PEREGRINE_RUNTIME_IDLE_POLL": "true"}).runtime.idle_poll is True
    file = tmp_path / "p.toml"
    file.write_text("[runtime]\nidle_poll = true\n")
    assert load(file).runtime.idle_poll is True
    assert load(overrides={"runtime.idle_poll": True}).runtime.idle_poll is True


@pytest.mark.parametrize(("text", "env", "message"), [
    ("prot = 1\n", {}, "unknown setting"),
    ("[http]\nprot = 1\n", {}, "unknown setting 'http.prot'"),
    ("port = 1\n", {}, "unknown setting 'port'"),  # it lives in [http]
    ("[http]\nport = [\n", {}, "cannot read"),
    ("", {"PEREGRINE_HTTP_PORT": "sixty"}, "PEREGRINE_HTTP_PORT"),
    ("", {"PEREGRINE_HTTP_ACCESS_LOG": "maybe"}, "access_log"),
    ('[vector]\nfsync = "sometimes"\n', {}, "fsync"),
    ('[http]\ntls_cert = "c.pem"\n', {}, "TLS"),
    ('[http]\napi_key = "k"\nread_only_api_key = "k"\n', {}, "differ"),
    ("[vector]\nmax_batch = 0\n", {}, "max_batch"),
    ("[vector]\nmax_ef = 100000\n", {}, "max_ef"),
    ('log_level = "loud"\n', {}, "log_level"),
])
def test_bad_settings_are_rejected_with_a_reason(tmp_path: Path, text: str,
                                                 env: dict[str, str], message: str) -> None:
    file = tmp_path / "p.toml"
    file.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        load(file, env=env)


def test_docs_list_every_setting() -> None:
    """docs/server.md's table names every setting of every section."""
    text = (Path(__file__).parent.parent / "docs" / "server.md").read_text()
    table = text[text.index("| setting | default | meaning |"):text.index("## Qdrant REST")]
    for setting in settings_of(Settings):
        if setting.section:
            assert f"`[{setting.section}]`" in table, setting.section
        assert f"`{setting.name}`" in table, setting.key


@pytest.mark.parametrize(("env", "message"), [
    ({"PEREGRINE_API_KEY": "secret"}, "did you mean PEREGRINE_HTTP_API_KEY"),
    ({"PEREGRINE_HTTP_APIKEY": "secret"}, "unknown setting in the environment"),
    ({"PEREGRINE_HTTP_REQUEST_TIMEOUT_S": "nan"}, "request_timeout_s"),
])
def test_unknown_or_impossible_environment_settings_stop_the_start(
        env: dict[str, str], message: str) -> None:
    """A mistyped key variable must not start a server without its key."""
    with pytest.raises(InvalidInputError, match=message):
        load(env=env)
