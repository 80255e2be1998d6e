"""The distribution spec's error codes, and the one place registry errors become HTTP.

Rules: handlers raise ``RegistryError(code, message)``; each code has the status the spec (and
docker-registry, where the spec leaves it open) gives it, overridable for the cases the spec
names (416 for an out-of-order chunk). The body is always
``{"errors": [{"code", "message", "detail"}]}``. ``errors_as`` turns the ``berth.errors`` kinds
the storage raises into the code that fits the request at hand, so a bad digest is a 400
DIGEST_INVALID and never a 500.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping

from aiohttp import web

from berth.errors import BerthError

STATUS: dict[str, int] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "TAG_INVALID": 400,
    "PAGINATION_NUMBER_INVALID": 400,
    "RANGE_INVALID": 416,
    "SCOPE_INVALID": 400,  # the token endpoint: a scope it cannot read
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
}
API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


class RegistryError(BerthError):
    kind = "registry"

    def __init__(
        self,
        code: str,
        message: str,
        detail: object = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.status = status or STATUS[code]
        self.headers = dict(headers or {})

    def response(self, head_only: bool = False) -> web.Response:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        headers = {**API_VERSION_HEADER, **self.headers}
        if head_only:  # HEAD: the status and headers say it all
            return web.Response(status=self.status, headers=headers)
        return web.Response(
            status=self.status,
            body=json.dumps({"errors": [error]}).encode(),
            content_type="application/json",
            headers=headers,
        )


@contextlib.contextmanager
def errors_as(**codes: str) -> Iterator[None]:
    """``with errors_as(NotFound="BLOB_UNKNOWN", InvalidArgument="DIGEST_INVALID"):`` maps
    the berth error kinds named (by class name, or a base class's) to registry codes; others
    pass through."""
    try:
        yield
    except RegistryError:
        raise
    except BerthError as e:
        for cls in type(e).__mro__:  # the most specific kind named wins
            code = codes.get(cls.__name__)
            if code is not None:
                raise RegistryError(code, e.message) from None
        raise
