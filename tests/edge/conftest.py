"""Fixtures of the REST server tests."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiutil import ServerProcess
from qdrant_client import QdrantClient


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
           ) -> Iterator[ServerProcess]:
    """One `peregrine serve` for a test module; it must stop cleanly, with no 5xx."""
    s = ServerProcess(tmp_path_factory.mktemp(request.module.__name__.rsplit(".")[-1]) / "data")
    yield s
    assert s.stop() == 0
    assert not s.server_errors(), s.server_errors()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[QdrantClient]:
    """The official client on the module's server (a warning from it fails the test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = QdrantClient(url=server.url, prefer_grpc=False, timeout=30)
    yield c
    c.close()
