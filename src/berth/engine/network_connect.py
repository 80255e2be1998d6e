"""``docker network connect`` and ``disconnect``: an endpoint added to or taken from a
container, at once in its namespace when it runs (the networks manager's rules hold: the
manager's lock, hooks told with ``sandbox_ready``, files rewritten in place).

Rules (dockerd's):
- host and container: modes cannot be connected to another network (403); a "none" container
  cannot be either, nor any container to the "none" network (400, "private (none) mode"),
  except a "none" one to its own (403, "endpoint with name X already exists").
- A second endpoint on one network is 403 "endpoint with name X already exists in network Y";
  disconnecting one that is not there is 403 "container X is not connected to network Y".
- A stopped container only has its plan changed (its endpoint is made at its next start).
- The default route follows the first endpoint; when that one goes, it moves to the next one
  (none if it is internal).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from berth.engine import network_links as links
from berth.engine.api_errors import Forbidden
from berth.engine.containers_state import Record
from berth.engine.network_sandbox import Endpoint, Sandbox
from berth.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from berth.engine.network_store import Network
    from berth.engine.networks import NetworkManager


def _sandbox_of(m: NetworkManager, rec: Record, net: Network) -> Sandbox:
    sandbox = m.sandboxes.get(rec.id)
    if sandbox is None or not sandbox.own_netns:
        raise Forbidden(
            "container sharing network namespace with another container or host cannot be"
            " connected to any other network"
        )
    if sandbox.mode == "none" and net.driver == "null":
        raise Forbidden(f"endpoint with name {rec.name.lstrip('/')} already exists in network none")
    if sandbox.mode == "none" or net.driver == "null":
        raise InvalidArgument(
            "container cannot be connected to multiple networks with one of the networks in"
            " private (none) mode"
        )
    return sandbox


async def connect(
    m: NetworkManager, net_ref: str, container_ref: str, config: dict[str, Any]
) -> None:
    """``docker network connect``: a new endpoint, made at once if the container runs."""
    if m.containers is None:
        raise NotFound(f"No such container: {container_ref}")
    net = m.get(net_ref)
    rec = m.containers.get(container_ref)
    if not net.is_bridge and net.driver != "null":
        raise Forbidden(f"container cannot be connected to the {net.name} network")
    async with m.containers.lock_of(rec.id):
        sandbox = _sandbox_of(m, rec, net)
        if sandbox.endpoint(net.id) is not None:
            raise Forbidden(
                f"endpoint with name {rec.name.lstrip('/')} already exists in network {net.name}"
            )
        ep = m._endpoint(net, config)
        directory = m.paths.container(rec.id)
        async with m.lock:
            sandbox.endpoints.append(ep)
            if not (rec.running and sandbox.active):
                await asyncio.to_thread(sandbox.save, directory)
                return
            try:
                first = not any(e.endpoint_id for e in sandbox.endpoints)
                await m._add_endpoint(sandbox, ep, first, directory)
                await changed(m, sandbox, rec, directory)
            except BaseException:
                await drop_endpoint(m, sandbox, ep)
                await asyncio.to_thread(sandbox.save, directory)
                raise
    m._emit("connect", net, container=rec.id)


async def disconnect(
    m: NetworkManager, net_ref: str, container_ref: str, force: bool = False
) -> None:
    if m.containers is None:
        raise NotFound(f"No such container: {container_ref}")
    net = m.get(net_ref)
    try:
        rec = m.containers.get(container_ref)
    except NotFound:
        if force:
            return
        raise
    async with m.containers.lock_of(rec.id):
        sandbox = m.sandboxes.get(rec.id)
        ep = sandbox.endpoint(net.id) if sandbox is not None else None
        if sandbox is None or ep is None:
            raise Forbidden(f"container {rec.id} is not connected to network {net.name}")
        directory = m.paths.container(rec.id)
        async with m.lock:
            was_up = bool(ep.endpoint_id)
            await drop_endpoint(m, sandbox, ep)
            if was_up and sandbox.active:
                await changed(m, sandbox, rec, directory)
            else:
                await asyncio.to_thread(sandbox.save, directory)
    if was_up:
        m._emit("disconnect", net, container=rec.id)


async def drop_endpoint(m: NetworkManager, sandbox: Sandbox, ep: Endpoint) -> None:
    """Remove ``ep`` from ``sandbox`` (its veth and address too); the default route moves
    to the next network that has a gateway."""
    had_route = bool(ep.endpoint_id) and ep is next(
        (e for e in sandbox.endpoints if e.endpoint_id), None
    )
    if ep.host_if:
        await asyncio.to_thread(links.remove_link, m.host_netns, ep.host_if)
    if ep.ip:
        m.taken.get(ep.network_id, set()).discard(ep.ip)
    sandbox.endpoints.remove(ep)
    if had_route:
        nxt = next((e for e in sandbox.endpoints if e.endpoint_id), None)
        net = m.networks.get(nxt.network_id) if nxt else None
        gateway = net.gateway if net is not None and not net.internal else None
        await asyncio.to_thread(links.set_default_route, m.pin(sandbox.container_id), gateway)


async def changed(m: NetworkManager, sandbox: Sandbox, rec: Record, directory: str) -> None:
    """A running container's endpoints changed: files, state and hooks follow."""
    await asyncio.to_thread(m.write_files, sandbox, directory, rec.to_json())
    await asyncio.to_thread(sandbox.save, directory)
    view = m.sandbox_view(sandbox)
    for hook in m.hooks:
        await hook.sandbox_ready(view)
