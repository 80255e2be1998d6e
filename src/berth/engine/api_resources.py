"""Resource endpoints of containers: ``stats``, ``top`` and ``update``.

Rules (``shared/docker-cli-contract.md``, dockerd's behaviour):
- ``GET /containers/{id}/stats``: ``stream`` (default true) sends one frame at once and then
  one per second until the client goes, the container is removed or the daemon stops;
  ``stream=false`` samples twice, one second apart, so that ``precpu_stats`` is filled (the
  CLI's CPU % needs it), unless ``one-shot`` asks for a single sample. A container that is
  not running gets a zero frame (every second when streamed). ``stream`` and ``one-shot``
  together are a 400.
- ``GET /containers/{id}/top?ps_args=``: 409 when the container is not running, 500 with
  ps's error for arguments ps refuses (``containers_resources.top``).
- ``POST /containers/{id}/update``: 200 ``{"Warnings": [...]}``; dockerd's 400 for bad values
  and 409 ("Cannot update container <id>: ...") for conflicts with the container's settings.
- Sampling, ps and cgroup writes run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from berth.engine import api
from berth.engine import containers_resources as resources
from berth.engine.api_containers import manager
from berth.engine.containers import ContainerManager
from berth.engine.containers_state import Record
from berth.engine.stats import Sampler
from berth.errors import InvalidArgument
from berth.runtime.cgroups import Cgroup

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0


def _sampler(m: ContainerManager, rec: Record) -> Sampler:
    def cgroup() -> Cgroup | None:
        if not rec.has_process:
            return None
        return resources.live_cgroup(m.supervisor_root, rec.id)

    def pid() -> int:
        return int(rec.state.get("Pid") or 0) if rec.has_process else 0

    return Sampler(rec.name, rec.id, cgroup, pid=pid)


async def stats(request: web.Request) -> web.StreamResponse:
    m = manager(request)
    rec = m.get(request.match_info["id"])
    stream = api.query_bool(request, "stream", True)
    one_shot = api.query_bool(request, "one-shot")
    if stream and one_shot:
        raise InvalidArgument("cannot have stream=true and one-shot=true")
    sampler = _sampler(m, rec)
    if not stream:
        frame = await asyncio.to_thread(sampler.frame)
        if rec.has_process and not one_shot:
            await asyncio.sleep(STATS_INTERVAL)
            frame = await asyncio.to_thread(sampler.frame)
        return api.json_response(frame)
    out = await api.JsonStream(request).start()
    transport = request.transport
    while (
        rec.id in m.records  # removed: the stream ends
        and not m.closing.is_set()
        and transport is not None
        and not transport.is_closing()
    ):
        try:
            await out.send(await asyncio.to_thread(sampler.frame))
        except ConnectionError:
            break
        try:
            await asyncio.wait_for(m.closing.wait(), STATS_INTERVAL)
        except TimeoutError:
            pass
    log.debug("req %s: stats of %s end", api.request_id(request), rec.id)
    with contextlib.suppress(ConnectionError):
        await out.finish()
    return out.response


async def top(request: web.Request) -> web.StreamResponse:
    m = manager(request)
    rec = m.get(request.match_info["id"])
    ps_args = request.query.get("ps_args", "")
    resources.check_ps_args(ps_args)
    if not rec.has_process:
        raise resources.not_running(rec.id)

    def run() -> dict[str, object]:
        cgroup = resources.live_cgroup(m.supervisor_root, rec.id)
        if cgroup is None:
            raise resources.not_running(rec.id)
        return resources.top(cgroup.pids(), ps_args)

    answer = await asyncio.to_thread(run)
    m.emit(rec, "top")
    return api.json_response(answer)


async def update(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    m = manager(request)
    warnings = await resources.update(m, request.match_info["id"], body)
    m.emit(m.get(request.match_info["id"]), "update")
    return api.json_response({"Warnings": warnings})


ROUTES: list[api.Route] = [
    ("GET", "/containers/{id}/stats", stats),
    ("GET", "/containers/{id}/top", top),
    ("POST", "/containers/{id}/update", update),
]
