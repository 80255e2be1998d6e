"""Manifest, tag-list, catalog and referrers endpoints.

Rules:
- Manifests are served as pushed (their digest is that of these bytes), with the media type
  they were pushed with; by tag or by digest; HEAD answers the same headers without a body.
- A PUT checks the document (OCI or Docker manifest or index; schema 1 is refused), that its
  config and layers (MANIFEST_BLOB_UNKNOWN) or an index's manifests (MANIFEST_UNKNOWN) are in
  the repository, and that a digest reference is the body's digest (DIGEST_INVALID). A
  manifest with a ``subject`` is answered with ``OCI-Subject`` (the referrers API is kept).
- Lists page as the spec says: ``n`` (at most ``n`` entries; n=0 gives none) and ``last``
  (entries after it, in lexical order), and a ``Link: <...>; rel="next"`` header when more
  remain. A bad ``n`` is 400.
- ``/referrers/<digest>`` is always an OCI index (empty when nothing refers), filtered by
  ``artifactType`` if asked (then ``OCI-Filters-Applied: artifactType``).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from aiohttp import web

from berth.image import digest as digests
from berth.registry.server_context import Call
from berth.registry.server_errors import RegistryError, errors_as
from berth.registry.storage import MANIFEST_MAX, check_tag, is_tag
from berth.spec import image as spec


def _manifest_headers(digest: str, media_type: str, size: int) -> dict[str, str]:
    return {
        "Docker-Content-Digest": digest,
        "Content-Type": media_type,
        "Content-Length": str(size),
        "ETag": f'"{digest}"',
    }


def _check_reference(reference: str) -> None:
    """A tag (TAG_INVALID) or a digest (DIGEST_INVALID)."""
    if is_tag(reference):
        with errors_as(InvalidArgument="TAG_INVALID"):
            check_tag(reference)
    else:
        with errors_as(InvalidArgument="DIGEST_INVALID"):
            digests.validate(reference)


async def get_manifest(call: Call) -> web.StreamResponse:
    reference = call.parts["reference"]
    _check_reference(reference)
    with errors_as(NotFound="MANIFEST_UNKNOWN"):
        info = call.storage.resolve(call.name, reference)
        headers = _manifest_headers(info.digest, info.media_type, info.size)
        if call.request.method == "HEAD":
            response = web.StreamResponse(headers=headers)
            response.content_length = info.size
            return response
        body = call.storage.manifest_bytes(info)
    del headers["Content-Length"]
    return web.Response(body=body, headers=headers)


async def _read_manifest(request: web.Request) -> bytes:
    """The whole body (it may arrive in many pieces), refused with 413 past MANIFEST_MAX."""
    chunks: list[bytes] = []
    size = request.content_length or 0
    if size <= MANIFEST_MAX:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > MANIFEST_MAX:
                break
            chunks.append(chunk)
    if size > MANIFEST_MAX:
        raise RegistryError(
            "MANIFEST_INVALID",
            f"manifest of {size} bytes or more is larger than {MANIFEST_MAX}",
            status=413,
        )
    return b"".join(chunks)


async def put_manifest(call: Call) -> web.StreamResponse:
    request = call.request
    body = await _read_manifest(request)
    reference = call.parts["reference"]
    _check_reference(reference)
    with errors_as(
        DigestMismatch="DIGEST_INVALID",
        InvalidArgument="MANIFEST_INVALID",
        MissingBlob="MANIFEST_BLOB_UNKNOWN",
        MissingManifest="MANIFEST_UNKNOWN",
    ):
        info, parsed = await asyncio.get_running_loop().run_in_executor(
            None,
            call.storage.put_manifest,
            call.name,
            reference,
            body,
            request.headers.get("Content-Type", ""),
        )
    headers = {
        "Location": f"/v2/{call.name}/manifests/{info.digest}",
        "Docker-Content-Digest": info.digest,
    }
    if parsed.document.subject is not None:
        headers["OCI-Subject"] = parsed.document.subject.digest
    return web.Response(status=201, headers=headers)


async def delete_manifest(call: Call) -> web.StreamResponse:
    reference = call.parts["reference"]
    _check_reference(reference)
    with errors_as(NotFound="MANIFEST_UNKNOWN"):
        call.storage.delete_manifest(call.name, reference)
    return web.Response(status=202)


def _page(call: Call, items: list[str], path: str) -> tuple[list[str], dict[str, str]]:
    """The page of ``items`` (sorted) that ``n`` and ``last`` ask for, and the Link header."""
    query = call.request.query
    last = query.get("last")
    if last:
        items = [item for item in items if item > last]
    raw = query.get("n")
    if raw is None:
        return items, {}
    try:
        n = int(raw)
        if n < 0:
            raise ValueError(raw)
    except ValueError:
        raise RegistryError(
            "PAGINATION_NUMBER_INVALID", f"invalid n={raw!r}: expected a number >= 0"
        ) from None
    page = items[:n]
    headers = {}
    if n and len(items) > n:
        link = f"{path}?{urlencode({'n': n, 'last': page[-1]})}"
        headers["Link"] = f'<{link}>; rel="next"'
    return page, headers


async def list_tags(call: Call) -> web.StreamResponse:
    with errors_as(NotFound="NAME_UNKNOWN"):
        tags = call.storage.tags(call.name)
    page, headers = _page(call, tags, f"/v2/{call.name}/tags/list")
    return web.json_response({"name": call.name, "tags": page}, headers=headers)


async def catalog(call: Call) -> web.StreamResponse:
    page, headers = _page(call, call.storage.catalog(), "/v2/_catalog")
    return web.json_response({"repositories": page}, headers=headers)


async def referrers(call: Call) -> web.StreamResponse:
    artifact_type = call.request.query.get("artifactType", "")
    with errors_as(InvalidArgument="DIGEST_INVALID"):
        found = call.storage.referrers(call.name, call.parts["digest"], artifact_type)
    index = spec.Index(manifests=tuple(info.descriptor() for info in found))
    headers = {"Content-Type": spec.OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(body=json.dumps(index.to_json()).encode(), headers=headers)
