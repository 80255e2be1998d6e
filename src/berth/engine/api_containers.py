"""Container endpoints over ``containers.ContainerManager``: create, start, wait, stop, kill,
restart, pause, unpause, rename, remove, list, inspect, logs, attach (hijacked), prune.

Rules (``shared/docker-cli-contract.md``):
- ``/wait`` sends its 200 headers at once (chunked) and the JSON body only when the condition
  is met: the CLI does not send ``start`` before it has the headers.
- ``/attach`` answers ``101 UPGRADED`` (the CLI requires 101) and then streams the output from
  the container's log, multiplexed frames unless the container has a TTY, until the container
  exits; the connection is closed after it. Stdin sent on it is written to the container when
  it has ``OpenStdin``; a half-close is its EOF.
- ``/logs`` is a chunked 200 in the same framing.
- Ids are full ids, names or unique prefixes (12-character ones included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web

from berth.engine import api, containers_admin
from berth.engine import containers_logs as logs
from berth.engine import containers_streams as streams
from berth.engine.containers import ContainerManager
from berth.engine.containers_state import Record, parse_rfc3339
from berth.engine.filters import parse_timestamp
from berth.errors import BerthError, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

CONTAINERS = web.AppKey("containers", ContainerManager)
LIST_FILTERS = (
    "status", "name", "id", "label", "ancestor", "exited", "before", "since", "health", "network"
)  # fmt: skip
HEALTH_STATES = ("starting", "healthy", "unhealthy", "none")
PRUNE_FILTERS = ("until", "label", "label!")
WAIT_POLL = 0.5  # how often a waiting /wait checks that its client is still there
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def manager(request: web.Request) -> ContainerManager:
    return request.app[CONTAINERS]


def _gone(request: web.Request) -> Callable[[], bool]:
    """Whether the client has closed the connection (the CLI drops ``wait`` after ``run -d``)."""

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return gone


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _int_query(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {text!r}") from None


# --------------------------------------------------------------------------- lifecycle


async def create(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    rec, warnings = await manager(request).create(body, request.query.get("name") or None)
    return api.json_response({"Id": rec.id, "Warnings": warnings}, status=201)


async def start(request: web.Request) -> web.StreamResponse:
    await manager(request).start(_id(request))
    return web.Response(status=204)


async def stop(request: web.Request) -> web.StreamResponse:
    await manager(request).stop(
        _id(request), _int_query(request, "t"), request.query.get("signal") or None
    )
    return web.Response(status=204)


async def kill(request: web.Request) -> web.StreamResponse:
    await manager(request).kill(_id(request), request.query.get("signal") or None)
    return web.Response(status=204)


async def restart(request: web.Request) -> web.StreamResponse:
    await manager(request).restart(_id(request), _int_query(request, "t"))
    return web.Response(status=204)


async def pause(request: web.Request) -> web.StreamResponse:
    await containers_admin.pause(manager(request), _id(request))
    return web.Response(status=204)


async def unpause(request: web.Request) -> web.StreamResponse:
    await containers_admin.unpause(manager(request), _id(request))
    return web.Response(status=204)


async def rename(request: web.Request) -> web.StreamResponse:
    await containers_admin.rename(manager(request), _id(request), request.query.get("name", ""))
    return web.Response(status=204)


async def remove(request: web.Request) -> web.StreamResponse:
    await manager(request).remove(
        _id(request), force=api.query_bool(request, "force"), volumes=api.query_bool(request, "v")
    )
    return web.Response(status=204)


async def wait(request: web.Request) -> web.StreamResponse:
    waiter = streams.waiter(manager(request), _id(request), request.query.get("condition", ""))
    response = web.StreamResponse(status=200)
    response.content_type = api.JSON
    response.enable_chunked_encoding()
    await response.prepare(request)
    task = asyncio.ensure_future(waiter())
    gone = _gone(request)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=WAIT_POLL)
            if gone():
                log.debug("req %s: wait: the client went away", api.request_id())
                return response
        code, error = task.result()
    except Unavailable:  # the daemon is stopping: the connection just closes
        return response
    finally:
        task.cancel()
    body: dict[str, Any] = {"Error": {"Message": error} if error else None, "StatusCode": code}
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(api.dumps(body))
        await response.write_eof()
    return response


async def prune(request: web.Request) -> web.StreamResponse:
    f = api.query_filters(request, PRUNE_FILTERS)
    until = [parse_timestamp(v) for v in f.get("until")]

    def keep(rec: Record) -> bool:
        if not f.match_labels(rec.labels) or f.excluded_by_labels(rec.labels):
            return True
        created = parse_rfc3339(rec.created)
        return any(created >= u for u in until)

    gone = await manager(request).prune(keep)
    return api.json_response({"ContainersDeleted": gone or None, "SpaceReclaimed": 0})


# --------------------------------------------------------------------------- reading


def select(rows: list[Record], f: Any, all_: bool) -> list[Record]:
    for status in f.get("status"):
        if status not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={status}'")
    for health in f.get("health"):
        if health not in HEALTH_STATES:
            raise InvalidArgument(f"Unrecognised filter value for health: {health}")
    out = []
    for rec in rows:
        if not all_ and not rec.running and not f.get("status"):
            continue
        if f.get("status") and rec.status not in f.get("status"):
            continue
        if f.get("name") and not any(n.lstrip("/") in rec.name for n in f.get("name")):
            continue
        if f.get("id") and not any(rec.id.startswith(i) for i in f.get("id")):
            continue
        if not f.match_labels(rec.labels):
            continue
        health = (rec.state.get("Health") or {}).get("Status", "none")
        if f.get("health") and health not in f.get("health"):
            continue
        if f.get("exited") and (rec.running or str(rec.state["ExitCode"]) not in f.get("exited")):
            continue
        if f.get("ancestor") and not any(
            a in (rec.image_ref, rec.image_id) or rec.image_id.removeprefix("sha256:").startswith(a)
            for a in f.get("ancestor")
        ):
            continue
        out.append(rec)
    return out


async def list_containers(request: web.Request) -> web.StreamResponse:
    f = api.query_filters(request, LIST_FILTERS)
    m = manager(request)
    rows = sorted(m.records.values(), key=lambda r: r.created, reverse=True)
    rows = select(rows, f, api.query_bool(request, "all"))
    if f.get("network"):
        wanted = [m.networks.get(n) for n in f.get("network") if _network_known(m, n)]
        rows = [r for r in rows if any(m.networks.connected_to(r, n) for n in wanted)]
    limit = _int_query(request, "limit")
    if limit is not None and limit > 0:
        rows = rows[:limit]
    out = []
    for rec in rows:
        row = rec.summary()
        row["NetworkSettings"] = {"Networks": m.networks.summary(rec)}
        row["Ports"] = m.networks.port_rows(rec)
        out.append(row)
    return api.json_response(out)


def _network_known(m: ContainerManager, ref: str) -> bool:
    try:
        m.networks.get(ref)
    except BerthError:
        return False
    return True


async def inspect(request: web.Request) -> web.StreamResponse:
    m = manager(request)
    rec = m.get(_id(request))
    driver = "overlay2" if m.images.snapshots.mode == "overlay" else "vfs"
    doc = rec.inspect(driver)
    doc["NetworkSettings"].update(m.networks.settings(rec))
    doc.update(m.networks.file_paths(rec))
    return api.json_response(doc)


def _selection(request: web.Request) -> logs.Selection:
    tail_text = request.query.get("tail", "all")
    tail = -1
    if tail_text not in ("", "all"):
        try:
            tail = max(int(tail_text), 0)
        except ValueError:
            tail = -1
    since = request.query.get("since", "")
    until = request.query.get("until", "")
    return logs.Selection(
        stdout=api.query_bool(request, "stdout"),
        stderr=api.query_bool(request, "stderr"),
        since=parse_timestamp(since) if since not in ("", "0") else 0.0,
        until=parse_timestamp(until) if until not in ("", "0") else 0.0,
        timestamps=api.query_bool(request, "timestamps"),
        tail=tail,
    )


async def container_logs(request: web.Request) -> web.StreamResponse:
    m = manager(request)
    selection = _selection(request)
    if not (selection.stdout or selection.stderr):
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    chunks = streams.logs(
        m, _id(request), selection, api.query_bool(request, "follow"), _gone(request)
    )
    first = await anext(aiter(chunks), None)  # a 404 before the headers
    response = web.StreamResponse(status=200)
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        log.debug("req %s: logs: the client went away", api.request_id())
    finally:
        await chunks.aclose()
    return response


async def attach(request: web.Request) -> web.StreamResponse:
    m = manager(request)
    rec, output = await streams.attach(m, _id(request), _gone(request))
    m.emit(rec, "attach")
    stdin = api.query_bool(request, "stdin") and bool(rec.config.get("OpenStdin"))
    response, parser = await hijack(request, rec.tty, stdin)
    pump = asyncio.create_task(_pump_stdin(parser, m, rec.id)) if stdin else None
    await relay(response, output, pump, "attach")
    return response


async def relay(
    response: web.StreamResponse,
    output: AsyncGenerator[bytes, None],
    pump: asyncio.Task[None] | None,
    what: str,
) -> None:
    """Write ``output`` to a hijacked connection until it ends or the client goes; then
    close ``output`` and stop ``pump`` (the stdin task)."""
    try:
        async for chunk in output:
            await response.write(chunk)
    except (ConnectionError, RuntimeError):
        log.debug("req %s: %s: the client went away", api.request_id(), what)
    except BerthError as e:  # the supervisor went away mid-stream
        log.warning("req %s: %s: output lost: %s", api.request_id(), what, e.message)
    finally:
        await output.aclose()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def hijack(
    request: web.Request, tty: bool, stdin: bool
) -> tuple[web.StreamResponse, _StdinParser]:
    """Answer ``101 UPGRADED`` (raw stream with a TTY, multiplexed frames without) and take
    the connection over: what the client sends from now on is queued in the parser (dropped
    unless ``stdin``); its half-close is EOF and does not end the output."""
    response = web.StreamResponse(status=101, reason="UPGRADED")
    response.headers["Content-Type"] = logs.RAW if tty else logs.MULTIPLEXED
    response.headers["Connection"] = "Upgrade"
    response.headers["Upgrade"] = "tcp"
    response._length_check = False  # a raw stream: no chunking, no length
    response.force_close()
    await response.prepare(request)
    return response, _take_stdin(request, stdin)


class _StdinParser:
    """What the client sends after the 101. The hijacked transport is handed to
    ``_HijackedProtocol``, which feeds this and keeps the connection open at a half-close."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep  # False: what the client sends is dropped (no stdin to write it to)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.ended = False

    def feed_data(self, data: bytes) -> None:
        if self.keep and data and not self.ended:
            self.queue.put_nowait(bytes(data))

    def feed_eof(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(b"")


class _HijackedProtocol(asyncio.Protocol):
    """The transport's protocol once hijacked: bytes in go to the stdin parser, a half-close
    is stdin's EOF and leaves the transport open for the output (aiohttp's own protocol would
    close it); flow control and the connection's loss still reach aiohttp."""

    def __init__(self, inner: asyncio.Protocol, parser: _StdinParser) -> None:
        self.inner = inner
        self.parser = parser

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def eof_received(self) -> bool:
        self.parser.feed_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.parser.feed_eof()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _take_stdin(request: web.Request, keep: bool) -> _StdinParser:
    parser = _StdinParser(keep)
    transport = request.transport
    protocol = request.protocol
    if transport is None:
        parser.feed_eof()
        return parser
    early = getattr(protocol, "_message_tail", b"")  # sent right after the request
    if early:
        parser.feed_data(early)
    transport.set_protocol(_HijackedProtocol(protocol, parser))
    return parser


async def _pump_stdin(parser: _StdinParser, m: ContainerManager, cid: str) -> None:
    """The client's bytes to the container's stdin; EOF at half-close."""
    try:
        await streams.pump_stdin(m, cid, parser.queue)
    except BerthError as e:  # the container is gone, or its stdin closed: stop quietly
        log.debug("req %s: attach stdin for %s ended: %s", api.request_id(), cid, e.message)


# --------------------------------------------------------------------------- /info, /system/df
# api_system answers these with no containers (it predates them); these wrappers, registered
# before it (api.make_app), add the container counts and rows and delegate the rest.


ROUTES: list[api.Route] = [
    ("POST", "/containers/create", create),
    ("GET", "/containers/json", list_containers),
    ("POST", "/containers/prune", prune),
    ("GET", "/containers/{id}/json", inspect),
    ("POST", "/containers/{id}/start", start),
    ("POST", "/containers/{id}/wait", wait),
    ("POST", "/containers/{id}/stop", stop),
    ("POST", "/containers/{id}/kill", kill),
    ("POST", "/containers/{id}/restart", restart),
    ("POST", "/containers/{id}/pause", pause),
    ("POST", "/containers/{id}/unpause", unpause),
    ("POST", "/containers/{id}/rename", rename),
    ("POST", "/containers/{id}/attach", attach),
    ("GET", "/containers/{id}/logs", container_logs),
    ("DELETE", "/containers/{id}", remove),
]
