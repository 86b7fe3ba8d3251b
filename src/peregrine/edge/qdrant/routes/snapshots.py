"""Collection snapshots: create, list, download, delete, recover (URL or upload).

As in Qdrant, ``wait`` defaults to true; ``wait=false`` answers 202 at once
and the work goes on (a failure is then only logged).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.types import Message

from peregrine.core.errors import InvalidInputError
from peregrine.edge.http.protocol import Accepted, Access, Call, HttpError, Operation
from peregrine.edge.qdrant import schemas
from peregrine.edge.qdrant.routes.common import collection_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from peregrine.edge.qdrant.protocol import QdrantProtocol

S = "/collections/{collection_name}/snapshots"
_BINARY = {"200": {"description": "the snapshot (a tar archive)", "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


async def _maybe_wait(call: Call, fn: Callable[..., Any], *args: Any) -> Any:
    if call.params.wait is False:
        call.spawn(fn, *args)
        return Accepted()
    return await call.run(fn, *args)


def operations(protocol: QdrantProtocol) -> list[Operation]:
    vector = protocol.vector

    async def create_snapshot(call: Call) -> Any:
        result = await _maybe_wait(call, vector.create_snapshot, collection_name(call))
        return result if isinstance(result, Accepted) else asdict(result)

    async def list_snapshots(call: Call) -> Any:
        return [asdict(i) for i in await call.run(vector.list_snapshots, collection_name(call))]

    async def download_snapshot(call: Call) -> Any:
        path = await call.run(vector.snapshot_path, collection_name(call),
                              call.path["snapshot_name"])
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    async def delete_snapshot(call: Call) -> Any:
        result = await _maybe_wait(call, vector.delete_snapshot, collection_name(call),
                                   call.path["snapshot_name"])
        return result if isinstance(result, Accepted) else True

    async def recover_snapshot(call: Call) -> Any:
        body: schemas.SnapshotRecover = call.body
        result = await _maybe_wait(call, vector.recover_snapshot, collection_name(call),
                                   body.location, body.checksum, body.api_key)
        return result if isinstance(result, Accepted) else True

    async def upload_snapshot(call: Call) -> Any:
        """Multipart upload (field ``snapshot``), as qdrant-client and Qdrant's UI send it."""
        limit = vector.settings.max_snapshot_bytes
        received = 0
        receive = call.receive

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HttpError(413, f"Payload too large: snapshot uploads are limited to "
                                     f"{limit} bytes (vector.max_snapshot_bytes)")
            return message

        request = Request(call.scope, bounded)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except HttpError:
            raise
        except Exception as exc:
            raise InvalidInputError(f"expected a multipart form with a 'snapshot' file: {exc}"
                                    ) from None
        try:
            upload = form.get("snapshot")
            if upload is None or isinstance(upload, str):
                raise InvalidInputError("expected a multipart form with a 'snapshot' file")
            local = vector.upload_path()

            def store() -> None:
                with local.open("wb") as out:
                    upload.file.seek(0)
                    shutil.copyfileobj(upload.file, out)

            try:
                await call.run(store)
            except BaseException:
                vector.discard_upload(local)
                raise
        finally:
            await form.close()
        result = await _maybe_wait(call, vector.recover_uploaded, collection_name(call), local,
                                   call.params.checksum)
        return result if isinstance(result, Accepted) else True

    async def create_full(call: Call) -> Any:
        result = await _maybe_wait(call, vector.create_full_snapshot)
        return result if isinstance(result, Accepted) else asdict(result)

    async def list_full(call: Call) -> Any:
        return [asdict(i) for i in await call.run(vector.list_full_snapshots)]

    async def download_full(call: Call) -> Any:
        path = await call.run(vector.full_snapshot_path, call.path["snapshot_name"])
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    async def delete_full(call: Call) -> Any:
        result = await _maybe_wait(call, vector.delete_full_snapshot,
                                   call.path["snapshot_name"])
        return result if isinstance(result, Accepted) else True

    W = Access.WRITE
    return [
        Operation("POST", "/snapshots", "create_full_snapshot", "snapshots",
                  "Snapshot every collection and the aliases in one archive", create_full, W,
                  params=schemas.SnapshotParams),
        Operation("GET", "/snapshots", "list_full_snapshots", "snapshots",
                  "List storage snapshots", list_full),
        Operation("GET", "/snapshots/{snapshot_name}", "get_full_snapshot", "snapshots",
                  "Download a storage snapshot", download_full, responses=_BINARY),
        Operation("DELETE", "/snapshots/{snapshot_name}", "delete_full_snapshot",
                  "snapshots", "Delete a storage snapshot", delete_full, W,
                  params=schemas.SnapshotParams),
        Operation("POST", S, "create_snapshot", "snapshots",
                  "Create a snapshot of a collection", create_snapshot, W,
                  params=schemas.SnapshotParams),
        Operation("GET", S, "list_snapshots", "snapshots", "List a collection's snapshots",
                  list_snapshots),
        Operation("GET", S + "/{snapshot_name}", "get_snapshot", "snapshots",
                  "Download a snapshot file", download_snapshot, responses=_BINARY),
        Operation("DELETE", S + "/{snapshot_name}", "delete_snapshot", "snapshots",
                  "Delete a snapshot", delete_snapshot, W, params=schemas.SnapshotParams),
        Operation("PUT", S + "/recover", "recover_from_snapshot", "snapshots",
                  "Create or replace the collection from a snapshot at a file:// or http(s) URL",
                  recover_snapshot, W, schemas.SnapshotRecover, schemas.SnapshotParams),
        Operation("POST", S + "/upload", "recover_from_uploaded_snapshot", "snapshots",
                  "Create or replace the collection from an uploaded snapshot (multipart, "
                  "field 'snapshot')", upload_snapshot, W, params=schemas.SnapshotParams),
    ]
