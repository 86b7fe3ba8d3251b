"""Shared fixtures for the Peregrine test suite.

Helpers that test modules import live in ``tests/vector/vutil.py`` (pytest puts
``tests/vector`` on ``sys.path``); this file only holds fixtures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import peregrine


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db"


@pytest.fixture
def open_db(db_path: Path) -> Iterator[Callable[..., peregrine.Database]]:
    """Factory: ``open_db(**kwargs)`` opens ``db_path`` (background=False unless
    given) and every database it opened is closed at teardown."""
    opened: list[peregrine.Database] = []

    def _open(path: Path | None = None, **kwargs: Any) -> peregrine.Database:
        kwargs.setdefault("background", False)
        db = peregrine.open(path or db_path, **kwargs)
        opened.append(db)
        return db

    yield _open
    for db in opened:
        with contextlib.suppress(Exception):
            db.close()


@pytest.fixture
def db(open_db: Callable[..., peregrine.Database]) -> peregrine.Database:
    """A fresh database, no background optimizer (deterministic segment layout)."""
    return open_db()

