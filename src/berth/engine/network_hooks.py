"""The seam between berthd's networks and what rides on them (the embedded DNS, published
ports, NAT and isolation rules): read-only views, and the hooks the networks call.

Rules:
- ``networks`` owns bridges, IPAM, network namespaces and veths; it tells every registered
  ``NetworkHooks`` what it did, in this order: ``network_added`` after a bridge is up (also at
  daemon start, once per existing network, so hooks rebuild their state), ``sandbox_ready``
  after a container's namespace has all its endpoints and before its process starts,
  ``sandbox_gone`` before the namespace is removed, ``network_removed`` before the bridge goes.
  A running container connected to or disconnected from a network gets ``sandbox_ready``
  again with its new endpoints: hooks treat it as "make it so" (idempotent, by container id).
- A hook that raises in ``network_added`` or ``sandbox_ready`` aborts that step: the networks
  code undoes its own part and calls the matching ``*_removed``/``*_gone`` of the hooks that
  already ran, so nothing is left half-made. ``*_removed``/``*_gone`` never raise (they log).
- Views are frozen snapshots; a hook keeps what it needs, never a reference to engine records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class NetworkView:
    id: str
    name: str
    bridge: str  # the bridge interface in berthd's network namespace (berth0, br-<id12>)
    subnet: str  # IPv4 CIDR, e.g. "172.18.0.0/16"
    gateway: str  # the bridge's address, e.g. "172.18.0.1"
    internal: bool = False  # no route out: no NAT, traffic leaving the subnet dropped
    masquerade: bool = True  # com.docker.network.bridge.enable_ip_masquerade
    user_defined: bool = True  # False for the default "bridge" network (no DNS by name)


@dataclass(frozen=True)
class EndpointView:
    network: NetworkView
    ip: str  # e.g. "172.18.0.2"
    prefix_len: int
    mac: str
    aliases: tuple[str, ...] = ()  # DNS names on this network besides the container's name


@dataclass(frozen=True)
class SandboxView:
    container_id: str
    container_name: str  # without the leading "/"
    netns_path: str  # the pinned namespace (engine.netns) it joins; "" if the runtime's own
    endpoints: tuple[EndpointView, ...] = ()
    # The container's create request as dockerd keeps it, for what hooks read from it
    # (ExposedPorts in config; PortBindings, PublishAllPorts, Dns* in host_config).
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    host_config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class NetworkHooks(Protocol):
    async def network_added(self, network: NetworkView) -> None: ...

    async def network_removed(self, network: NetworkView) -> None: ...

    async def sandbox_ready(self, sandbox: SandboxView) -> None: ...

    async def sandbox_gone(self, sandbox: SandboxView) -> None: ...
