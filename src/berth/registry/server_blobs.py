"""Blob endpoints: fetch (with Range), delete, and uploads (monolithic, POST-PUT, chunked,
streamed), upload status and cancel, cross-repository mounts.

Rules:
- Bodies stream to the content store in batches of ``BATCH`` bytes, hashed and written in a
  worker thread while the next batch arrives; nothing buffers a whole blob. A plain GET of a
  whole blob is sent by ``server_send`` (copied by a worker thread); HEAD, Range (206 by
  aiohttp) and conditional GETs are ``web.FileResponse``.
- A chunk's ``Content-Range: <start>-<end>`` must start where the upload stands, else 416
  with the upload's current Range; a PATCH without it appends (a streamed upload).
- The final PUT needs ``?digest=``; the bytes are verified against it before anything is
  visible: a mismatch is DIGEST_INVALID and the upload is gone with its ingest file. A
  monolithic upload (``POST ?digest=``, or a PUT carrying the body) that fails or is cut off
  leaves nothing either.
- A mount (``POST ?mount=<digest>&from=<repo>``) links the blob if ``from`` has it and the
  caller may pull from ``from``; otherwise it falls back to a new upload session (202).
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from berth.image import digest as digests
from berth.registry.server_context import Call, blob_location, upload_headers
from berth.registry.server_errors import RegistryError, errors_as
from berth.registry.server_send import BlobResponse, is_plain_get
from berth.registry.storage import Upload

BATCH = 1 << 20  # bytes handed to the worker thread at a time
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")


def _digest_param(call: Call, key: str = "digest") -> str | None:
    value = call.request.query.get(key)
    if value is None:
        return None
    with errors_as(InvalidArgument="DIGEST_INVALID"):
        return digests.validate(value)


def _path_digest(call: Call) -> str:
    with errors_as(InvalidArgument="DIGEST_INVALID"):
        return digests.validate(call.parts["digest"])


async def get_blob(call: Call) -> web.StreamResponse:
    digest = _path_digest(call)
    with errors_as(NotFound="BLOB_UNKNOWN"):
        path = call.storage.blob_path(call.name, digest)
    headers = {
        "Docker-Content-Digest": digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    if not is_plain_get(call.request):
        return web.FileResponse(path, headers=headers)
    try:
        return BlobResponse(path, headers)
    except FileNotFoundError:  # collected since it was looked up
        raise RegistryError(
            "BLOB_UNKNOWN", f"blob {digest} is not in repository {call.name}"
        ) from None


async def delete_blob(call: Call) -> web.StreamResponse:
    digest = _path_digest(call)
    with errors_as(NotFound="BLOB_UNKNOWN"):
        call.storage.delete_blob(call.name, digest)
    return web.Response(status=202, headers={"Docker-Content-Digest": digest})


def _write_batch(upload: Upload, batch: list[bytes]) -> None:
    for chunk in batch:
        upload.write(chunk)


async def _stream_body(call: Call, upload: Upload) -> int:
    """Append the request body to ``upload``; the number of bytes it had."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    batched = received = 0
    upload.busy = True
    try:
        async for chunk in call.request.content.iter_any():
            batch.append(chunk)
            batched += len(chunk)
            received += len(chunk)
            if batched >= BATCH:
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, _write_batch, upload, batch)
                batch, batched = [], 0
        if pending is not None:
            await pending
            pending = None
        _write_batch(upload, batch)
    finally:
        if pending is not None:  # cut off: let the thread finish before the writer is touched
            await asyncio.shield(pending)
        upload.busy = False
    return received


def _find_upload(call: Call) -> Upload:
    with errors_as(NotFound="BLOB_UPLOAD_UNKNOWN"):
        return call.storage.upload(call.name, call.parts["upload"])


def _upload(call: Call) -> Upload:
    """The upload, if no other request is writing it."""
    upload = _find_upload(call)
    if upload.busy:
        raise RegistryError(
            "RANGE_INVALID",
            f"upload {upload.id} is being written by another request: chunks go in order",
            status=416,
            headers=upload_headers(upload),
        )
    return upload


async def _finish(call: Call, upload: Upload, digest: str) -> web.StreamResponse:
    with errors_as(InvalidArgument="DIGEST_INVALID"):
        committed = await asyncio.get_running_loop().run_in_executor(
            None, call.storage.finish_upload, upload, digest
        )
    return web.Response(
        status=201,
        headers={"Location": blob_location(call.name, committed), "Docker-Content-Digest": digest},
    )


async def _monolithic(call: Call, upload: Upload, digest: str) -> web.StreamResponse:
    """The body is the whole blob (or its last part): stream it, then verify and commit."""
    try:
        await _stream_body(call, upload)
    except BaseException:
        call.storage.cancel_upload(upload)
        raise
    return await _finish(call, upload, digest)


async def start_upload(call: Call) -> web.StreamResponse:
    storage = call.storage
    storage.reap_uploads()
    mount = _digest_param(call, "mount")
    source = call.request.query.get("from")
    if mount is not None and source:
        allowed = call.can_pull is None or await call.can_pull(source)
        with errors_as(InvalidArgument="NAME_INVALID"):
            if allowed and storage.mount_blob(call.name, mount, source):
                return web.Response(
                    status=201,
                    headers={
                        "Location": blob_location(call.name, mount),
                        "Docker-Content-Digest": mount,
                    },
                )
    digest = _digest_param(call)
    upload = storage.start_upload(call.name, digest)
    if digest is not None:
        return await _monolithic(call, upload, digest)
    return web.Response(status=202, headers=upload_headers(upload))


async def upload_status(call: Call) -> web.StreamResponse:
    return web.Response(status=204, headers=upload_headers(_find_upload(call)))


def _check_range(call: Call, upload: Upload) -> int | None:
    """The chunk's length from Content-Range, after checking it starts at the offset."""
    text = call.request.headers.get("Content-Range")
    if text is None:
        return None
    match = _CONTENT_RANGE.fullmatch(text.strip())
    if match is None:
        raise RegistryError(
            "BLOB_UPLOAD_INVALID", f"invalid Content-Range {text!r}: expected <start>-<end>"
        )
    start, end = int(match.group(1)), int(match.group(2))
    if start != upload.offset or end < start:
        raise RegistryError(
            "RANGE_INVALID",
            f"chunk {start}-{end} does not continue the upload, which has "
            f"{upload.offset} bytes: send from byte {upload.offset}",
            status=416,
            headers=upload_headers(upload),
        )
    return end - start + 1


async def patch_upload(call: Call) -> web.StreamResponse:
    upload = _upload(call)
    length = _check_range(call, upload)
    before = upload.offset
    with errors_as(InvalidArgument="BLOB_UPLOAD_INVALID"):
        received = await _stream_body(call, upload)
    if length is not None and received != length:
        raise RegistryError(
            "SIZE_INVALID",
            f"Content-Range announced {length} bytes, the body had {received} "
            f"(the upload now has {upload.offset})",
            detail={"offset": before},
            headers=upload_headers(upload),
        )
    return web.Response(status=202, headers=upload_headers(upload))


async def put_upload(call: Call) -> web.StreamResponse:
    upload = _upload(call)
    try:
        digest = _digest_param(call)
        if digest is None:
            raise RegistryError("DIGEST_INVALID", "the final PUT of an upload needs ?digest=")
    except RegistryError:
        call.storage.cancel_upload(upload)  # a failed upload leaves nothing behind
        raise
    _check_range(call, upload)
    return await _monolithic(call, upload, digest)


async def cancel_upload(call: Call) -> web.StreamResponse:
    call.storage.cancel_upload(_upload(call))
    return web.Response(status=204)
