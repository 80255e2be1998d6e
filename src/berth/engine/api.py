"""The Docker Engine API application: routes, headers, ping, logging, JSON and stream helpers.

Rules (see ``shared/docker-cli-contract.md``):
- Every route is served twice, under ``/v{1.x}`` and unversioned. A version above
  ``API_VERSION`` or below ``MIN_API_VERSION`` is refused with dockerd's 400 message.
- Every response except a hijacked one (101) carries ``Api-Version``, ``Docker-Experimental``,
  ``Ostype`` and ``Server``; ``/_ping`` answers HEAD (empty) and GET (``OK``) with no caching.
- A path with no route is dockerd's 404 ``{"message":"page not found"}``; errors become
  responses only in ``api_errors``.
- Image names contain ``/`` and ``:``: their routes match on the known suffix
  (``/images/{name:.+}/json``), with the fixed paths (``/images/json``) registered first.
- Each request gets an id (``req 1a2b3c4d``) that every log line about it carries.
- Handlers never block the loop: blocking work runs in a thread (``asyncio.to_thread``);
  ``BodyReader`` lets such a thread read the request body, ``ThreadWriter`` lets it stream a
  response.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.streams import StreamReader

import berth
from berth.engine import api_errors
from berth.engine.events import EventBus
from berth.engine.filters import Filters, parse_bool
from berth.engine.image_lock import ImageLock
from berth.engine.paths import Paths
from berth.errors import InvalidArgument
from berth.image.store import ImageStore

log = logging.getLogger(__name__)

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"
SERVER = f"Berth/{berth.__version__} (linux)"
JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]


class ContainerView(Protocol):
    """What /info, /system/df and image removal need to know of the containers."""

    def image_in_use(self, image_id: str) -> bool: ...

    def counts(self) -> dict[str, int]:
        """``Containers``, ``ContainersRunning``, ``ContainersPaused``, ``ContainersStopped``."""
        ...

    def disk_rows(self) -> list[dict[str, Any]]:
        """``/system/df``'s ``Containers``, newest first."""
        ...


class _NoContainers:
    def image_in_use(self, image_id: str) -> bool:
        return False

    def counts(self) -> dict[str, int]:
        keys = ("Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped")
        return dict.fromkeys(keys, 0)

    def disk_rows(self) -> list[dict[str, Any]]:
        return []


NO_CONTAINERS: ContainerView = _NoContainers()


@dataclass
class Engine:
    """What the handlers share: paths, stores, the daemon's identity, the image lock and the
    event bus."""

    paths: Paths
    images: ImageStore
    engine_id: str
    started: float = field(default_factory=time.time)
    debug: bool = False
    # Serialises image writes (pull, load, import, build) against gc, as ImageStore requires.
    image_lock: ImageLock = field(default_factory=ImageLock)
    # The containers as the system and image endpoints see them (the ContainerManager, set by
    # the daemon; none in an app that serves only images).
    containers: ContainerView = field(default_factory=lambda: NO_CONTAINERS)
    # What happened (GET /events); the ContainerManager emits into the same bus.
    events: EventBus = field(default_factory=EventBus)
    # The first build sweeps what a dead daemon's builds left; the others wait for it.
    builds_swept: bool = False
    builds_swept_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


ENGINE = web.AppKey("engine", Engine)
# The id of the request being handled (the middleware sets it in the handler's task; threads
# started with asyncio.to_thread see it too).
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("berth_request_id", default="-")
_ids = itertools.count(1)


def engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def request_id(request: web.Request | None = None) -> str:
    """The id of the request being handled, for log lines."""
    return _request_id.get()


# --------------------------------------------------------------------------- the application


def make_app(state: Engine, extra_routes: Iterable[Route] = ()) -> web.Application:
    """The aiohttp application serving the Docker Engine API over ``state``."""
    from berth.engine import (
        api_build,
        api_containers,
        api_events,
        api_exec,
        api_images,
        api_networks,
        api_registry,
        api_resources,
        api_system,
        api_volumes,
    )

    app = web.Application(middlewares=[_middleware])
    app[ENGINE] = state
    app.on_response_prepare.append(_common_headers)
    app.on_shutdown.append(state.events.close)  # open GET /events streams end
    add_routes(app, [("HEAD", "/_ping", ping_head), ("GET", "/_ping", ping)])
    add_routes(app, api_containers.ROUTES)
    add_routes(app, api_system.ROUTES)
    add_routes(app, api_registry.ROUTES)  # first: its /images/create is the one served
    add_routes(app, api_images.ROUTES)
    add_routes(app, api_build.ROUTES)
    add_routes(app, api_resources.ROUTES)
    add_routes(app, api_events.ROUTES)
    add_routes(app, api_exec.ROUTES)
    add_routes(app, api_volumes.ROUTES)
    add_routes(app, api_networks.ROUTES)
    add_routes(app, extra_routes)
    return app


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/{version:v[0-9.]+}" + path, handler)


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        raise InvalidArgument(f"invalid API version {text!r}") from None


def _check_version(request: web.Request) -> None:
    text = request.match_info.get("version")
    if text is None:
        return
    wanted = _version_tuple(text.removeprefix("v"))
    if wanted > _version_tuple(API_VERSION):
        raise InvalidArgument(
            f"client version {text[1:]} is too new. Maximum supported API version is {API_VERSION}"
        )
    if wanted < _version_tuple(MIN_API_VERSION):
        raise InvalidArgument(
            f"client version {text[1:]} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = f"{next(_ids):06d}"
    _request_id.set(rid)
    started = time.monotonic()
    try:
        _check_version(request)
        response = await handler(request)
    except web.HTTPException as e:
        if e.status in (404, 405) and request.match_info.route.resource is None:
            response = api_errors.not_found_response()
        else:
            raise
    except ConnectionError as e:  # the client went away (reset, broken pipe, lost)
        log.debug("req %s: %s %s: client gone (%s)", rid, request.method, request.path, e)
        raise
    except Exception as e:  # every error becomes a response, in one place
        response = api_errors.error_response(e, rid)
    log.debug(
        "req %s: %s %s -> %d (%.1f ms)",
        rid,
        request.method,
        request.path_qs,
        response.status,
        (time.monotonic() - started) * 1000,
    )
    return response


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    if response.status == 101:
        return
    response.headers["Api-Version"] = API_VERSION
    response.headers["Docker-Experimental"] = "false"
    response.headers["Ostype"] = "linux"
    response.headers["Server"] = SERVER


# --------------------------------------------------------------------------- ping

_PING_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Builder-Version": "1",  # the legacy builder (POST /build); there is no BuildKit
    "Swarm": "inactive",
}


async def ping_head(request: web.Request) -> web.StreamResponse:
    response = web.Response(status=200, headers=_PING_HEADERS)
    response.content_type = "text/plain"
    response.charset = "utf-8"
    return response


async def ping(request: web.Request) -> web.StreamResponse:
    return web.Response(
        text="OK", content_type="text/plain", charset="utf-8", headers=_PING_HEADERS
    )


# --------------------------------------------------------------------------- JSON helpers


def dumps(data: Any) -> bytes:
    """JSON as dockerd writes it: compact, one trailing newline."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(data), content_type=JSON)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; an empty body is ``{}``."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON body: {e}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid JSON body: expected an object")
    return data


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    return parse_bool(request.query.get(name), default)


def query_filters(request: web.Request, accepted: Iterable[str]) -> Filters:
    found = Filters.parse(request.query.get("filters"))
    found.validate(accepted)
    return found


class JsonStream:
    """A chunked ``application/json`` response of JSON lines (progress streams): headers go
    out at once; an error after that is the stream's last line (``api_errors.stream_error``)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(status=200)
        self.response.content_type = JSON
        self.response.enable_chunked_encoding()

    async def start(self) -> JsonStream:
        await self.response.prepare(self.request)
        return self

    async def send(self, message: dict[str, Any]) -> None:
        await self.response.write(dumps(message))

    async def fail(self, exc: BaseException) -> None:
        log.info("req %s: stream ends with an error: %s", request_id(self.request), exc)
        await self.send(api_errors.stream_error(exc))

    async def finish(self) -> web.StreamResponse:
        await self.response.write_eof()
        return self.response


# --------------------------------------------------------------------------- threads <-> streams


class BodyReader:
    """The request body as a blocking file a worker thread reads (``read(n)`` returns ``n``
    bytes, fewer only at the end), fetched from the event loop as the thread asks."""

    def __init__(self, content: StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._loop = loop

    def _call(self, coro: Awaitable[bytes]) -> bytes:
        async def run() -> bytes:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def read(self, n: int | None = -1, /) -> bytes:
        if n is None or n < 0:
            return self._call(self._content.read())
        out = bytearray()
        while len(out) < n:
            chunk = self._call(self._content.read(n - len(out)))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def readable(self) -> bool:
        return True


class ThreadWriter:
    """A blocking file a worker thread writes; ``pump`` sends what it wrote to the response.

    Writes are gathered into chunks of ``chunk`` bytes and handed over through a small queue,
    so a slow client slows the writer down instead of filling memory. If the client goes
    away, the writer's next ``write`` raises ``BrokenPipeError``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chunk: int = 256 << 10) -> None:
        self._loop = loop
        self._chunk = chunk
        self._buffer = bytearray()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
        self._gone = False
        self._told = False

    def _put(self, item: bytes | None) -> None:
        asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop).result()

    def write(self, data: bytes) -> int:
        if self._gone:  # raise once to stop the writer; later writes (its cleanup) go nowhere
            if not self._told:
                self._told = True
                raise BrokenPipeError("the client closed the connection")
            return len(data)
        self._buffer += data
        if len(self._buffer) >= self._chunk:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close_from_thread(self) -> None:
        """End of data: called by the thread, last, whatever happened."""
        if self._buffer and not self._gone:
            self._put(bytes(self._buffer))
        self._buffer.clear()
        self._put(None)

    async def pump(self, response: web.StreamResponse) -> None:
        """Send the chunks until the thread closes; keep draining if the client goes."""
        while (chunk := await self._queue.get()) is not None:
            if self._gone:
                continue
            try:
                await response.write(chunk)
            except (ConnectionError, RuntimeError):  # reset, broken pipe, "Connection lost"
                self._gone = True


async def stream_from_thread(
    request: web.Request,
    response: web.StreamResponse,
    work: Callable[[ThreadWriter], None],
) -> web.StreamResponse:
    """Prepare ``response`` and stream what ``work`` (run in a thread) writes into it. An error
    in ``work`` after the headers went out aborts the connection (a tar cannot carry it)."""
    loop = asyncio.get_running_loop()
    writer = ThreadWriter(loop)

    def run() -> None:
        try:
            work(writer)
        finally:
            writer.close_from_thread()

    await response.prepare(request)
    task = asyncio.ensure_future(asyncio.to_thread(run))
    await writer.pump(response)
    try:
        await task
    except BrokenPipeError:
        if not writer._gone:
            raise
        log.info("req %s: the client went away; stream stopped", request_id(request))
        return response
    except Exception:
        log.exception("req %s: stream failed after it started", request_id(request))
        if request.transport is not None:
            request.transport.close()
        return response
    with_eof = not writer._gone
    if with_eof:
        await response.write_eof()
    return response


def hostname() -> str:
    return os.uname().nodename
