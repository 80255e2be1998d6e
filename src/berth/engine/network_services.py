"""What rides on berthd's networks, put together: published ports with NAT and isolation
(``port_publisher``) and the embedded DNS (``dns``), registered as the networks' hooks.

Rules:
- Hook order: ports first (a taken port fails a start before any name is served), then the
  record of the ports, then the DNS; teardown runs in reverse (``network_hooks``).
- A running container's published ports are kept in ``<container dir>/ports.json`` (inspect's
  ``NetworkSettings.Ports`` form; no file when it publishes none), written when its sandbox is
  ready and deleted when it goes:
  at daemon start ``restore`` hands them to the publisher before the networks re-announce the
  running sandboxes, so a restart of berthd does not move a container's "any port" bindings.
- ``start`` once the containers are open (a stale table from a dead daemon is dropped there);
  ``shutdown`` at daemon stop leaves the kernel's rules in place for the containers that keep
  running (the listeners of the userland proxy close with the daemon) and stops the DNS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from berth.engine import dns as embedded_dns
from berth.engine.firewall import Firewall
from berth.engine.network_hooks import NetworkView, SandboxView
from berth.engine.networks import NetworkManager
from berth.engine.port_publisher import PortPublisher
from berth.engine.ports import PublishedPorts

log = logging.getLogger(__name__)

PORTS_FILE = "ports.json"


class _PortsFile:
    """A hook that keeps each running container's published ports in its directory."""

    def __init__(self, containers_dir: str, publisher: PortPublisher) -> None:
        self.containers_dir = containers_dir
        self.publisher = publisher

    def _path(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid, PORTS_FILE)

    async def network_added(self, network: NetworkView) -> None:
        return None

    async def network_removed(self, network: NetworkView) -> None:
        return None

    async def sandbox_ready(self, sandbox: SandboxView) -> None:
        from berth.runtime import store as runtime_store

        published = self.publisher.ports_of(sandbox.container_id)
        if not published.bindings:  # most containers: no file to write on their start path
            await self.sandbox_gone(sandbox)  # connect/disconnect may have taken the last one
            return
        if not os.path.isdir(os.path.dirname(self._path(sandbox.container_id))):
            return  # a build step's sandbox (``network_build``): no container, no ports
        data = json.dumps(published.inspect_json(), separators=(",", ":")).encode() + b"\n"
        runtime_store.write_atomically(self._path(sandbox.container_id), data, 0o600, durable=False)

    async def sandbox_gone(self, sandbox: SandboxView) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(sandbox.container_id))

    def restore(self) -> None:
        try:
            cids = os.listdir(self.containers_dir)
        except FileNotFoundError:
            return
        for cid in cids:
            try:
                with open(self._path(cid), encoding="utf-8") as f:
                    self.publisher.restore(cid, PublishedPorts.from_inspect_json(json.load(f)))
            except (OSError, ValueError):
                continue


class NetworkServices:
    def __init__(
        self,
        networks: NetworkManager,
        containers_dir: str,
        firewall: Firewall | None = None,
        userland_proxy: bool = True,
    ) -> None:
        self.publisher = PortPublisher(firewall or Firewall(userland_proxy=userland_proxy))
        self.dns = embedded_dns.EmbeddedDNS(networks.lookup)
        self._ports_file = _PortsFile(containers_dir, self.publisher)
        networks.hooks.extend([self.publisher, self._ports_file, self.dns])
        networks.ports = self.publisher
        self._ports_file.restore()

    async def start(self) -> None:
        await self.publisher.start()

    async def shutdown(self) -> None:
        await self.publisher.detach()
        await self.dns.close()
