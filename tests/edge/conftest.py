"""Fixtures of the REST server tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiutil import ServerProcess


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start `peregrine serve` processes; every one is stopped at teardown and must
    not have answered any request with a 5xx."""
    started: list[ServerProcess] = []

    def _start(*args: str, data: Path | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(data or tmp_path / f"data{len(started)}", *args, **kwargs)
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()
        assert not server.server_errors(), "\n".join(server.server_errors())
