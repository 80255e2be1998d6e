"""The ONE place the Docker API maps errors to HTTP.

Status codes as dockerd gives them (moby's ``errdefs`` -> ``httpstatus``):

    NotFound                      404   "No such image: busybox:latest"
    AlreadyExists, Conflict       409   a name in use, removing an image a container uses
    FailedPrecondition            409   (``NotModified``, a kind of it, is 304: starting a
                                         running container, stopping a stopped one)
    InvalidArgument               400   a bad value or parameter
    Forbidden                     403   removing a network with endpoints, a pool overlap
    Unavailable                   503
    Unsupported                   501   (moby's NotImplemented)
    Unauthenticated               401   a registry refused the credentials (``/auth``)
    HostToolFailed                500   a host tool's own error (``ps`` for top): no traceback
    anything else                 500   (the only status logged with its traceback)

The body is ``{"message": ...}``; the messages are Berth's own, which use Docker's wording where
people grep for it. A stream that has already started cannot change its status: it ends with
``stream_error``'s ``{"errorDetail": {"message": ...}, "error": ...}`` line instead, as dockerd's
JSON progress streams do.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from berth.errors import (
    AlreadyExists,
    BerthError,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    Unsupported,
)

log = logging.getLogger(__name__)

PAGE_NOT_FOUND = "page not found"


class NotModified(FailedPrecondition):
    """The request asks for the state the object is already in (dockerd answers 304)."""

    kind = "not_modified"


class Forbidden(BerthError):
    """The request is valid but the object's state forbids it (dockerd's 403: removing a
    predefined network or one with endpoints, an overlapping pool)."""

    kind = "forbidden"


class HostToolFailed(BerthError):
    """A host tool the daemon runs refused the request (dockerd's 500 with the tool's error);
    not a bug in Berth, so it is logged without a traceback."""

    kind = "host_tool_failed"


_STATUS: tuple[tuple[type[BerthError], int], ...] = (
    (NotModified, 304),
    (NotFound, 404),
    (Forbidden, 403),
    (AlreadyExists, 409),
    (Conflict, 409),
    (FailedPrecondition, 409),
    (InvalidArgument, 400),
    (Unavailable, 503),
    (Unsupported, 501),
    (Unauthenticated, 401),
)


def status_of(exc: BaseException) -> int:
    """The HTTP status dockerd gives for this kind of error."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def message_of(exc: BaseException) -> str:
    if isinstance(exc, BerthError):
        return exc.message
    return str(exc) or type(exc).__name__


def body(message: str) -> bytes:
    return json.dumps({"message": message}).encode() + b"\n"


def error_response(exc: BaseException, request_id: str = "-") -> web.Response:
    """The response for an error raised before anything was sent."""
    status = status_of(exc)
    message = message_of(exc)
    if status == 500 and not isinstance(exc, HostToolFailed):
        log.error("req %s: %s", request_id, message, exc_info=exc)
    else:
        log.info("req %s: %d %s", request_id, status, message)
    if status == 304:
        return web.Response(status=304)
    return web.Response(status=status, body=body(message), content_type="application/json")


def not_found_response() -> web.Response:
    """What dockerd answers for a path it has no route for."""
    return web.Response(status=404, body=body(PAGE_NOT_FOUND), content_type="application/json")


def stream_error(exc: BaseException) -> dict[str, Any]:
    """The last line of a JSON progress stream that failed after it started."""
    message = message_of(exc)
    return {"errorDetail": {"message": message}, "error": message}
