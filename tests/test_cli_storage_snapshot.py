"""``peregrine serve --storage-snapshot PATH [--force-snapshot]``: the composition
root recovers a storage snapshot before anything is served, and a bad archive
stops ``serve`` with one ``error:`` line and a non-zero exit, no traceback.
(What recovery checks and refuses: tests/vector/test_storage_snapshot_recover.py.)"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from peregrine import bootstrap
from peregrine.cli import build_parser
from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import build
from peregrine.vector.service import CreateAlias, VectorService


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peregrine", "serve", "--data", str(data),
         "--http-port", str(_free_port()), "--stream-nats-port", "0", *flags],
        capture_output=True, text=True, timeout=120)


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def test_serve_stops_on_a_missing_archive(tmp_path: Path) -> None:
    proc = _serve(tmp_path / "db", "--storage-snapshot", str(tmp_path / "nowhere.snapshot"))
    _assert_one_line_error(proc, "does not exist")


def test_serve_stops_on_an_archive_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.snapshot"
    bad.write_bytes(b"not a tar" * 200)
    proc = _serve(tmp_path / "db", "--storage-snapshot", str(bad), "--force-snapshot")
    _assert_one_line_error(proc, "not an uncompressed tar archive")


def test_serve_parses_both_flags() -> None:
    args = build_parser().parse_args(["serve", "--storage-snapshot", "a.snapshot",
                                      "--force-snapshot"])
    assert (args.storage_snapshot, args.force_snapshot) == ("a.snapshot", True)
    args = build_parser().parse_args(["serve"])
    assert (args.storage_snapshot, args.force_snapshot) == (None, False)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    source = VectorService.open(tmp_path / "source")
    try:
        source.create_collection("docs", 3, "cosine")
        source.upsert("docs", [1, 2], np.eye(2, 3), [{"n": 1}, {"n": 2}])
        source.update_aliases([CreateAlias("current", "docs")])
        path = source.full_snapshot_path(source.create_full_snapshot().name)
        return Path(shutil.copy(path, tmp_path / "storage.snapshot"))
    finally:
        source.close()


def _settings(data: Path) -> bootstrap.Settings:
    return build(bootstrap.Settings, {"data": str(data), "stream.nats_port": 0,
                                      "llm.enabled": False})


def test_the_composition_root_recovers_before_serving(tmp_path: Path, archive: Path) -> None:
    settings = _settings(tmp_path / "db")
    process = bootstrap.build(settings, recover=bootstrap.StorageRecovery(archive))
    try:
        process.app.runtime.ready = True

        async def ask() -> tuple[httpx.Response, httpx.Response]:
            transport = httpx.ASGITransport(app=process.app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
                return (await http.post("/collections/current/points/count", json={}),
                        await http.get("/aliases"))

        count, aliases = asyncio.run(ask())
        assert count.json()["result"] == {"count": 2}
        assert aliases.json()["result"]["aliases"] == [
            {"alias_name": "current", "collection_name": "docs"}]
    finally:
        process.app.close()
    # The recovered storage stays; recovering it again needs --force-snapshot.
    with pytest.raises(InvalidInputError, match="already exist"):
        bootstrap.build(settings, recover=bootstrap.StorageRecovery(archive))
    process = bootstrap.build(settings, recover=bootstrap.StorageRecovery(archive, force=True))
    process.app.close()
