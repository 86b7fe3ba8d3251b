"""A real NATS server (JetStream, temp store, free port) per mq test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peregrine.runtime.nats import EmbeddedNats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # examples/ (the service)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as server:
        yield server
