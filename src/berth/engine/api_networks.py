"""Network endpoints over ``networks.NetworkManager``: create, list, inspect, remove, prune,
connect, disconnect.

Rules (dockerd's):
- ``POST /networks/create`` answers 201 ``{"Id", "Warning"}``; a taken name is 409.
- ``GET /networks`` filters ``name`` (substring), ``id`` (prefix), ``driver``, ``label``,
  ``type`` (custom | builtin), ``dangling`` (no running endpoint); rows carry an empty
  ``Containers``. ``GET /networks/{id}`` carries the running endpoints.
- ``DELETE`` is 204; a predefined network or one with active endpoints is 403.
- ``POST /networks/prune`` removes user networks with no running endpoint (``label``,
  ``label!``, ``until`` narrow it): ``{"NetworksDeleted": [names]}``.
- connect and disconnect answer 200 with no body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from berth.engine import api
from berth.engine.api_containers import manager as containers
from berth.engine.filters import parse_timestamp
from berth.engine.network_store import Network
from berth.engine.networks import NetworkManager
from berth.errors import InvalidArgument

LIST_FILTERS = ("name", "id", "driver", "label", "type", "dangling", "scope")
PRUNE_FILTERS = ("label", "label!", "until")


def networks(request: web.Request) -> NetworkManager:
    return containers(request).networks


async def create_network(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid network config: expected a JSON object")
    net = await networks(request).create(body)
    return api.json_response({"Id": net.id, "Warning": ""}, status=201)


def _selected(m: NetworkManager, net: Network, f: Any) -> bool:
    if f.get("name") and not any(n in net.name for n in f.get("name")):
        return False
    if f.get("id") and not any(net.id.startswith(i) for i in f.get("id")):
        return False
    if f.get("driver") and net.driver not in f.get("driver"):
        return False
    if f.get("scope") and "local" not in f.get("scope"):
        return False
    if not f.match_labels(net.labels):
        return False
    for kind in f.get("type"):
        if kind not in ("custom", "builtin"):
            raise InvalidArgument(f"invalid filter: 'type'='{kind}'")
        if (kind == "custom") == net.predefined:
            return False
    dangling = f.bool_value("dangling")
    if dangling is not None:
        unused = not net.predefined and not m.active_endpoints(net)
        if dangling != unused:
            return False
    return True


async def list_networks(request: web.Request) -> web.StreamResponse:
    f = api.query_filters(request, LIST_FILTERS)
    m = networks(request)
    rows = sorted(m.networks.values(), key=lambda n: n.created)
    return api.json_response([n.to_json() for n in rows if _selected(m, n, f)])


async def inspect_network(request: web.Request) -> web.StreamResponse:
    m = networks(request)
    net = m.get(request.match_info["id"])
    return api.json_response(net.to_json(m.containers_of(net)))


async def remove_network(request: web.Request) -> web.StreamResponse:
    await networks(request).remove(request.match_info["id"])
    return web.Response(status=204)


async def prune_networks(request: web.Request) -> web.StreamResponse:
    f = api.query_filters(request, PRUNE_FILTERS)
    until = [parse_timestamp(u) for u in f.get("until")]

    def keep(net: Network) -> bool:
        from berth.engine.containers_state import parse_rfc3339

        if not f.match_labels(net.labels) or f.excluded_by_labels(net.labels):
            return True
        return any(parse_rfc3339(net.created) >= u for u in until)

    gone = await networks(request).prune(keep)
    return api.json_response({"NetworksDeleted": gone or None})


async def connect(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    container = str(body.get("Container") or "")
    config = body.get("EndpointConfig") or {}
    if not isinstance(config, dict):
        raise InvalidArgument("invalid EndpointConfig: expected a JSON object")
    await networks(request).connect(request.match_info["id"], container, config)
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.StreamResponse:
    body = await api.read_json(request)
    container = str(body.get("Container") or "")
    force = bool(body.get("Force"))
    await networks(request).disconnect(request.match_info["id"], container, force)
    return web.Response(status=200)


ROUTES: list[api.Route] = [
    ("POST", "/networks/create", create_network),
    ("GET", "/networks", list_networks),
    ("POST", "/networks/prune", prune_networks),
    ("GET", "/networks/{id}", inspect_network),
    ("DELETE", "/networks/{id}", remove_network),
    ("POST", "/networks/{id}/connect", connect),
    ("POST", "/networks/{id}/disconnect", disconnect),
]
