"""Collection snapshots: create, list, download, delete, recover (URL or upload)."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.types import Message

from peregrine.api import schemas
from peregrine.api.errors import ApiError
from peregrine.api.operation import Access, Call, Operation
from peregrine.core.errors import InvalidInputError


def _name(call: Call) -> str:
    return call.path["collection_name"]


async def create_snapshot(call: Call) -> Any:
    info = await call.run(call.ctx.service.create_snapshot, _name(call))
    return asdict(info)


async def list_snapshots(call: Call) -> Any:
    return [asdict(i) for i in await call.run(call.ctx.service.list_snapshots, _name(call))]


async def download_snapshot(call: Call) -> Any:
    service = call.ctx.service
    path = await call.run(service.snapshots.path, _name(call), call.path["snapshot_name"])
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


async def delete_snapshot(call: Call) -> Any:
    service = call.ctx.service
    await call.run(service.snapshots.delete, _name(call), call.path["snapshot_name"])
    return True


def _recover(call: Call, local: Path) -> None:
    service = call.ctx.service
    try:
        service.recover_snapshot(_name(call), local)
    finally:
        service.snapshots.discard(local)


async def recover_snapshot(call: Call) -> Any:
    body: schemas.SnapshotRecover = call.body
    service = call.ctx.service
    config = call.ctx.config

    def work() -> None:
        local = service.snapshots.fetch(body.location, body.checksum,
                                        max_bytes=config.max_snapshot_bytes,
                                        api_key=body.api_key)
        _recover(call, local)

    await call.run(work)
    return True


async def upload_snapshot(call: Call) -> Any:
    """Multipart upload (field ``snapshot``), as qdrant-client and Qdrant's UI send it."""
    limit = call.ctx.config.max_snapshot_bytes
    received = 0
    receive = call.receive

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise ApiError(413, f"Payload too large: snapshot uploads are limited to {limit} "
                                "bytes (max_snapshot_bytes)")
        return message

    request = Request(call.scope, bounded)
    try:
        form = await request.form(max_files=1, max_fields=4)
    except ApiError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"expected a multipart form with a 'snapshot' file: {exc}"
                                ) from None
    upload = form.get("snapshot")
    if upload is None or isinstance(upload, str):
        raise InvalidInputError("expected a multipart form with a 'snapshot' file")
    service = call.ctx.service
    checksum = call.params.checksum

    def work() -> None:
        local = service.snapshots.temp_path()
        try:
            with local.open("wb") as out:
                upload.file.seek(0)
                shutil.copyfileobj(upload.file, out)
            service.snapshots.verify(local, checksum)
        except BaseException:
            service.snapshots.discard(local)
            raise
        _recover(call, local)

    try:
        await call.run(work)
    finally:
        await form.close()
    return True


S = "/collections/{collection_name}/snapshots"
OPERATIONS = [
    Operation("POST", S, "create_snapshot", "snapshots", "Create a snapshot of a collection",
              create_snapshot, Access.WRITE, params=schemas.SnapshotParams),
    Operation("GET", S, "list_snapshots", "snapshots", "List a collection's snapshots",
              list_snapshots),
    Operation("GET", S + "/{snapshot_name}", "get_snapshot", "snapshots",
              "Download a snapshot file", download_snapshot,
              responses={"200": {"description": "the snapshot (a tar archive)", "content": {
                  "application/octet-stream": {"schema": {"type": "string",
                                                          "format": "binary"}}}}}),
    Operation("DELETE", S + "/{snapshot_name}", "delete_snapshot", "snapshots",
              "Delete a snapshot", delete_snapshot, Access.WRITE, params=schemas.SnapshotParams),
    Operation("PUT", S + "/recover", "recover_from_snapshot", "snapshots",
              "Create or replace the collection from a snapshot at a file:// or http(s) URL",
              recover_snapshot, Access.WRITE, schemas.SnapshotRecover, schemas.SnapshotParams),
    Operation("POST", S + "/upload", "recover_from_uploaded_snapshot", "snapshots",
              "Create or replace the collection from an uploaded snapshot (multipart, "
              "field 'snapshot')", upload_snapshot, Access.WRITE,
              params=schemas.SnapshotParams),
]
