"""The network hooks of published ports, NAT and isolation: what ties ``ports`` (what a container
asks for, which host ports it gets), ``portproxy`` (listeners that hold the ports and serve
loopback) and ``firewall`` (the nftables table) to the lifecycle of networks and sandboxes.

Rules (on top of ``network_hooks``'s):
- ``network_added``/``network_removed``: the network's NAT and isolation rules.
- ``sandbox_ready``: the container's bindings are published on its first endpoint that has an
  address on a non-internal network (dockerd publishes no port on an internal network): host
  ports booked, a proxy listening per binding, then the DNAT rules applied. Any failure (a
  taken port, nft) undoes what this call made and raises: no listener, booking or rule is left.
  Called again for the same container (connect/disconnect), it keeps what is unchanged and
  otherwise republishes.
- ``sandbox_gone``: listeners closed, rules removed, ports given back; never raises (logs).
- ``ports_of(container_id)``: what the renderers show (``PublishedPorts``); empty without a
  sandbox. ``restore(container_id, ports)`` before a re-announced ``sandbox_ready`` makes its
  "any port" requests take the ports the container had (if still free), so a daemon restart
  does not move a running container's ports.
- Daemon restarts: containers outlive berthd, so at shutdown ``detach()`` closes the listeners
  and leaves the table (NAT, isolation and DNAT keep working meanwhile). The next berthd
  re-announces its networks and sandboxes; each change re-renders the whole table, so what is
  stale goes with the first one, and ``start()`` (called after the re-announcements) removes a
  stale table when nothing was announced. ``close()`` ends every listener and removes the
  table (a full teardown).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass

from berth.engine.firewall import DnatRule, Firewall
from berth.engine.network_hooks import EndpointView, NetworkView, SandboxView
from berth.engine.portproxy import UDP_IDLE, Listener, ProxyTarget, SocketFactory, open_listener
from berth.engine.ports import (
    Binding,
    PortAllocator,
    PortRequest,
    Publication,
    PublishedPorts,
    already_allocated,
    bind_failed,
    publication,
)
from berth.errors import Conflict

log = logging.getLogger(__name__)


@dataclass
class _Published:
    endpoint: EndpointView | None
    publication: Publication
    bindings: tuple[Binding, ...]
    listeners: list[Listener]


class PortPublisher:
    """Implements ``NetworkHooks`` for published ports, NAT and isolation."""

    def __init__(
        self,
        firewall: Firewall,
        socket_factory: SocketFactory = socket.socket,
        allocator: PortAllocator | None = None,
        udp_idle: float = UDP_IDLE,
    ) -> None:
        self.firewall = firewall
        self.allocator = allocator or PortAllocator()
        self._socket_factory = socket_factory
        self._udp_idle = udp_idle
        self._published: dict[str, _Published] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._preferred: dict[str, PublishedPorts] = {}

    async def start(self) -> None:
        await self.firewall.sync()

    async def detach(self) -> None:
        """Close every listener and forget the bookings; the kernel's table stays."""
        for container_id, published in self._published.items():
            for listener in published.listeners:
                await listener.close()
            self.allocator.release(container_id)
        self._published.clear()
        self._locks.clear()

    async def close(self) -> None:
        for container_id in list(self._published):
            await self._unpublish(container_id)
        await self.firewall.close()

    # ----------------------------------------------------------------- networks

    async def network_added(self, network: NetworkView) -> None:
        await self.firewall.set_network(network)

    async def network_removed(self, network: NetworkView) -> None:
        try:
            await self.firewall.remove_network(network.id)
        except Exception:
            log.exception("network %s: removing its rules failed", network.id)

    # ----------------------------------------------------------------- sandboxes

    def ports_of(self, container_id: str) -> PublishedPorts:
        published = self._published.get(container_id)
        if published is None:
            return PublishedPorts()
        return PublishedPorts(published.publication.exposed, published.bindings)

    def restore(self, container_id: str, ports: PublishedPorts) -> None:
        """The host ports a container had (e.g. from its record, after a daemon restart)."""
        self._preferred[container_id] = ports

    async def sandbox_ready(self, sandbox: SandboxView) -> None:
        wanted = publication(sandbox.config, sandbox.host_config)
        endpoint = next((e for e in sandbox.endpoints if e.ip and not e.network.internal), None)
        async with self._lock_of(sandbox.container_id):
            current = self._published.get(sandbox.container_id)
            if current is not None:
                if current.endpoint == endpoint and current.publication == wanted:
                    return
                await self._unpublish(sandbox.container_id)
            self._published[sandbox.container_id] = await self._publish(sandbox, endpoint, wanted)

    async def sandbox_gone(self, sandbox: SandboxView) -> None:
        async with self._lock_of(sandbox.container_id):
            await self._unpublish(sandbox.container_id)
        self._locks.pop(sandbox.container_id, None)
        self._preferred.pop(sandbox.container_id, None)

    def _lock_of(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    async def _publish(
        self, sandbox: SandboxView, endpoint: EndpointView | None, wanted: Publication
    ) -> _Published:
        published = _Published(endpoint, wanted, (), [])
        if endpoint is None or not wanted.requests:
            return published
        owner = sandbox.container_id
        try:
            bindings = []
            for request in wanted.requests:
                binding, listener = await self._bind(sandbox, endpoint, request)
                bindings.append(binding)
                published.listeners.append(listener)
            published.bindings = tuple(bindings)
            rules = tuple(
                DnatRule(b.target.proto, b.host_ip, b.host_port, endpoint.ip, b.target.port)
                for b in bindings
            )
            await self.firewall.set_dnat(owner, rules)
        except BaseException:
            for listener in published.listeners:
                await listener.close()
            self.allocator.release(owner)
            raise
        return published

    async def _bind(
        self, sandbox: SandboxView, endpoint: EndpointView, request: PortRequest
    ) -> tuple[Binding, Listener]:
        """Book a host port for one request and listen on it (the listener holds it)."""
        owner, name = sandbox.container_id, sandbox.container_name
        proto, host_ip = request.target.proto, request.host_ip
        had = self._preferred.get(owner, PublishedPorts()).bindings
        preferred = next(
            (b.host_port for b in had if (b.target, b.host_ip) == (request.target, host_ip)), 0
        )
        tried: set[int] = set()
        for port in self.allocator.candidates(request, preferred):
            if port in tried:
                continue
            tried.add(port)
            binding = Binding(request.target, host_ip, port)
            if not self.allocator.take(owner, proto, host_ip, port):
                if request.dynamic:
                    continue
                raise already_allocated(name, owner, binding)
            target = ProxyTarget(proto, host_ip, port, endpoint.ip, request.target.port)
            try:
                listener = await open_listener(target, self._socket_factory, self._udp_idle)
            except OSError as e:
                self.allocator.give_back(owner, proto, host_ip, port)
                if request.dynamic and e.errno == errno.EADDRINUSE:
                    continue
                reason = e.strerror or str(e)
                raise bind_failed(name, owner, binding, endpoint.ip, reason.lower()) from None
            return binding, listener
        raise Conflict(
            f"driver failed programming external connectivity on endpoint {name} ({owner}): "
            f"Bind for {host_ip}:{request.host_port_start} failed: all ports are allocated"
        )

    async def _unpublish(self, container_id: str) -> None:
        published = self._published.pop(container_id, None)
        if published is None:
            return
        for listener in published.listeners:
            try:
                await listener.close()
            except Exception:
                log.exception("container %s: closing proxy %s", container_id, listener.target)
        try:
            await self.firewall.remove_dnat(container_id)
        except Exception:
            log.exception("container %s: removing its DNAT rules failed", container_id)
        self.allocator.release(container_id)
