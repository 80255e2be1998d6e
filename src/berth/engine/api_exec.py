"""Exec and resize endpoints over ``execs.ExecManager``.

Rules (``shared/docker-cli-contract.md``):
- ``POST /containers/{id}/exec`` answers 201 ``{"Id"}``; 404 unknown container, 409 not
  running, 400 bad body.
- ``POST /exec/{id}/start``: ``Detach`` true → 200 with no body, the process runs in the
  background; otherwise ``101 UPGRADED`` (hijacked, as for attach) and the output streams in
  multiplexed frames unless ``Tty`` (the start body's, else the exec's), only the streams the
  exec attached; the connection closes once the process has exited and its output is sent.
  Stdin sent on it goes to the process when the exec has ``AttachStdin``; a half-close is EOF.
- ``POST /exec/{id}/resize`` and ``POST /containers/{id}/resize`` take ``h`` and ``w``.
- ``GET /exec/{id}/json``: dockerd's exec inspect (its ExitCode once it has ended).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from aiohttp import web

from berth.engine import api
from berth.engine import containers_logs as logs
from berth.engine.api_containers import hijack, relay
from berth.engine.execs import ExecManager
from berth.errors import BerthError, InvalidArgument

log = logging.getLogger(__name__)

EXECS = web.AppKey("execs", ExecManager)


def manager(request: web.Request) -> ExecManager:
    return request.app[EXECS]


def _size(request: web.Request) -> tuple[int, int]:
    out = []
    for name in ("h", "w"):
        text = request.query.get(name, "")
        try:
            value = int(text)
        except ValueError:
            raise InvalidArgument(f"invalid value for {name}: {text!r}") from None
        if value < 0 or value > 0xFFFF:
            raise InvalidArgument(f"invalid value for {name}: {text!r}")
        out.append(value)
    return out[0], out[1]


async def create(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    ex = manager(request).create(request.match_info["id"], body)
    return api.json_response({"Id": ex.id}, status=201)


async def start(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    if not isinstance(body, dict):
        raise InvalidArgument("exec start: the body must be a JSON object")
    m = manager(request)
    exec_id = request.match_info["id"]
    ex = m.get(exec_id)
    if body.get("Detach"):
        await m.start_detached(exec_id)
        return web.Response(status=200)
    tty = bool(body["Tty"]) if "Tty" in body else ex.config.tty
    wanted = {"stdout": ex.config.attach_stdout, "stderr": ex.config.attach_stderr}
    output = await m.run(exec_id)
    response, parser = await hijack(request, tty, ex.config.attach_stdin)
    pump = None
    if ex.config.attach_stdin:
        pump = asyncio.create_task(_pump_stdin(m, exec_id, parser.queue))

    async def framed() -> AsyncGenerator[bytes, None]:
        try:
            async for stream, data in output:
                if wanted.get(stream, True):
                    code = logs.STDERR if stream == "stderr" else logs.STDOUT
                    yield data if tty else logs.frame(code, data)
        finally:
            await output.aclose()

    await relay(response, framed(), pump, f"exec {exec_id}")
    return response


async def _pump_stdin(m: ExecManager, exec_id: str, queue: asyncio.Queue[bytes]) -> None:
    try:
        await m.pump_stdin(exec_id, queue)
    except BerthError as e:  # the exec ended, or its stdin closed: stop quietly
        log.debug("req %s: exec %s stdin ended: %s", api.request_id(), exec_id, e.message)


async def inspect(request: web.Request) -> web.StreamResponse:
    return api.json_response(await manager(request).inspect(request.match_info["id"]))


async def resize(request: web.Request) -> web.StreamResponse:
    height, width = _size(request)
    await manager(request).resize(request.match_info["id"], height, width)
    return web.Response(status=200)


async def resize_container(request: web.Request) -> web.StreamResponse:
    height, width = _size(request)
    await manager(request).resize_container(request.match_info["id"], height, width)
    return web.Response(status=200)


ROUTES: list[api.Route] = [
    ("POST", "/containers/{id}/exec", create),
    ("POST", "/containers/{id}/resize", resize_container),
    ("POST", "/exec/{id}/start", start),
    ("POST", "/exec/{id}/resize", resize),
    ("GET", "/exec/{id}/json", inspect),
]
