"""Real NATS servers (JetStream, temp store, free port) for stream tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peregrine.runtime.nats import EmbeddedNats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as server:
        yield server
