"""Volume endpoints over ``volumes.VolumeStore``: create, list, inspect, remove, prune.

Rules (dockerd's):
- ``POST /volumes/create`` answers 201 with the volume; an existing name returns it unchanged.
- ``GET /volumes`` filters ``name`` (substring), ``label``, ``dangling`` (no container uses
  it), ``driver``; the answer is ``{"Volumes": [...], "Warnings": null}``.
- ``DELETE /volumes/{name}`` is 409 ``volume is in use - [ids]`` while a container uses it;
  ``force`` makes a missing volume a success.
- ``POST /volumes/prune`` removes unused anonymous volumes, or every unused one with the
  ``all`` filter; ``label`` / ``label!`` narrow it.
- Each create and destroy is a ``volume`` event. Store calls block, so they run in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from berth.engine import api
from berth.engine.volumes import DRIVER, VolumeStore
from berth.errors import InvalidArgument

LIST_FILTERS = ("name", "label", "dangling", "driver")
PRUNE_FILTERS = ("label", "label!", "all")


def store(request: web.Request) -> VolumeStore:
    return VolumeStore.under(api.engine(request).paths)


def _event(request: web.Request, action: str, name: str) -> None:
    api.engine(request).events.emit("volume", action, name, {"driver": DRIVER})


def _str_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"invalid {key}: expected a map of strings")
    return {str(k): v for k, v in value.items()}


async def create_volume(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    name = body.get("Name") or None
    if name is not None and not isinstance(name, str):
        raise InvalidArgument(f"invalid Name: {name!r}")
    labels = _str_map(body, "Labels")
    options = _str_map(body, "DriverOpts")
    vols = store(request)
    volume, made = await asyncio.to_thread(vols.create, name, body.get("Driver"), labels, options)
    if made:
        _event(request, "create", volume.name)
    return api.json_response(volume.to_json(), status=201)


async def list_volumes(request: web.Request) -> web.StreamResponse:
    f = api.query_filters(request, LIST_FILTERS)
    dangling = f.bool_value("dangling")
    vols = store(request)

    def select() -> list[dict[str, Any]]:
        users = vols.users()
        out = []
        for v in vols.volumes():
            if f.get("name") and not any(n in v.name for n in f.get("name")):
                continue
            if f.get("driver") and DRIVER not in f.get("driver"):
                continue
            if not f.match_labels(v.labels):
                continue
            if dangling is not None and dangling == bool(users.get(v.name)):
                continue
            out.append(v.to_json())
        return out

    return api.json_response({"Volumes": await asyncio.to_thread(select), "Warnings": None})


async def inspect_volume(request: web.Request) -> web.StreamResponse:
    volume = await asyncio.to_thread(store(request).get, request.match_info["name"])
    return api.json_response(volume.to_json())


async def remove_volume(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if await asyncio.to_thread(store(request).remove, name, api.query_bool(request, "force")):
        _event(request, "destroy", name)
    return web.Response(status=204)


async def prune_volumes(request: web.Request) -> web.StreamResponse:
    f = api.query_filters(request, PRUNE_FILTERS)
    every = f.bool_value("all", False)
    vols = store(request)

    def prune() -> dict[str, Any]:
        users = vols.users()
        deleted: list[str] = []
        reclaimed = 0
        for v in vols.volumes():
            if users.get(v.name) or not (every or v.anonymous):
                continue
            if not f.match_labels(v.labels) or f.excluded_by_labels(v.labels):
                continue
            size = v.to_json(0)["UsageData"]["Size"]
            if vols.remove_if_unused(v.name):
                deleted.append(v.name)
                reclaimed += size
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    result = await asyncio.to_thread(prune)
    for name in result["VolumesDeleted"] or []:
        _event(request, "destroy", name)
    return api.json_response(result)


def disk_rows(request: web.Request) -> list[dict[str, Any]]:
    """``/system/df``'s ``Volumes`` (blocking: call it in a thread)."""
    vols = store(request)
    users = vols.users()
    return [v.to_json(len(users.get(v.name, []))) for v in vols.volumes()]


ROUTES: list[api.Route] = [
    ("POST", "/volumes/create", create_volume),
    ("GET", "/volumes", list_volumes),
    ("POST", "/volumes/prune", prune_volumes),
    ("GET", "/volumes/{name}", inspect_volume),
    ("DELETE", "/volumes/{name}", remove_volume),
]
