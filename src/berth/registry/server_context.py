"""What every registry handler receives: the request, the storage, the path's parts.

Rules: handlers are ``async def handler(call: Call) -> web.StreamResponse``; the dispatcher
in ``server`` has already checked the repository name, the method and the caller's rights.
Upload locations are ``/v2/<name>/blobs/uploads/<uuid>``, blob locations
``/v2/<name>/blobs/<digest>``, both absolute paths as docker-registry writes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from berth.registry.storage import RegistryStorage, Upload


@dataclass
class Call:
    request: web.Request
    storage: RegistryStorage
    name: str  # the repository ("" for the base check and the catalog)
    parts: dict[str, str]  # the other named parts of the path: digest, reference, upload
    user: str | None = None  # who is asking (None: anonymous or no authentication)
    # may this caller pull from another repository (for cross-repository mounts)?
    can_pull: Callable[[str], Awaitable[bool]] | None = None


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def blob_location(name: str, digest: str) -> str:
    return f"/v2/{name}/blobs/{digest}"


def upload_headers(upload: Upload) -> dict[str, str]:
    """Location, Range (docker-registry's ``0-<last byte>``, ``0-0`` when empty) and id."""
    last = max(upload.offset - 1, 0)
    return {
        "Location": f"/v2/{upload.name}/blobs/uploads/{upload.id}",
        "Range": f"0-{last}",
        "Docker-Upload-UUID": upload.id,
    }
