"""A container's networking as berthd keeps it: its mode, its endpoints, and how inspect shows
them. Persisted as ``network.json`` in the container's directory.

Rules:
- The configuration (mode, the networks asked for, their aliases and static addresses) is
  kept while the container exists; the runtime half (address, MAC, veth, endpoint id) is set
  by a start and cleared when the container's networking is released, so a stopped container
  shows empty addresses as dockerd's does.
- ``active`` is saved true only once every endpoint is up, and the runtime fields are saved
  before the veth they name is made, so a daemon that died in between finds what to remove.
- Modes: "bridge" (the default network), a user network's name or id, "none" (a namespace
  with lo only), "host" (berthd's namespace), "container:<id>" (another container's).
- Who makes a namespace of its own: berthd pins one before the start (``pinned``) when it has
  work to do in it (veths, the embedded DNS); a "none" container's is made by the runtime
  (clone flags, lo raised by the init: ``runtime_netns``), so its start does no netlink work
  and leaves no pin. The choice is made at create (the spec names the pin or not) and kept
  (``RuntimeNetns``; a ``network.json`` written before it existed means a pinned one).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from berth.runtime import store as runtime_store

STATE_FILE = "network.json"


def empty_network_settings() -> dict[str, Any]:
    """inspect's ``NetworkSettings`` of a container with no sandbox (dockerd 28's fields)."""
    return {
        "SandboxID": "", "SandboxKey": "", "EndpointID": "", "Gateway": "",
        "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "", "Networks": {},
        "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
    }  # fmt: skip


@dataclass
class Endpoint:
    network_id: str
    network_name: str
    aliases: list[str] = field(default_factory=list)
    static_ip: str = ""  # IPAMConfig.IPv4Address
    # runtime half
    endpoint_id: str = ""
    ip: str = ""
    prefix_len: int = 0
    gateway: str = ""
    mac: str = ""
    host_if: str = ""
    ifname: str = ""

    def clear(self) -> None:
        self.endpoint_id = self.ip = self.gateway = self.mac = self.host_if = self.ifname = ""
        self.prefix_len = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Endpoint:
        return Endpoint(**{k: v for k, v in d.items() if k in Endpoint.__dataclass_fields__})

    def settings(self, dns_names: list[str] | None) -> dict[str, Any]:
        """A row of inspect's ``NetworkSettings.Networks`` (dockerd 28)."""
        ipam = {"IPv4Address": self.static_ip} if self.static_ip else None
        return {
            "IPAMConfig": ipam,
            "Links": None,
            "Aliases": list(self.aliases) or None,
            "MacAddress": self.mac,
            "DriverOpts": None,
            "GwPriority": 0,
            "NetworkID": self.network_id,
            "EndpointID": self.endpoint_id,
            "Gateway": self.gateway,
            "IPAddress": self.ip,
            "IPPrefixLen": self.prefix_len,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DNSNames": dns_names if self.endpoint_id else None,
        }


@dataclass
class Sandbox:
    container_id: str
    mode: str  # bridge | none | host | container:<id> | a user network's name
    endpoints: list[Endpoint] = field(default_factory=list)
    sandbox_id: str = ""
    active: bool = False
    joined: str = ""  # container:<id> mode: the target's full id
    runtime_netns: bool = False  # its namespace is the runtime's (spec without a path)

    @property
    def own_netns(self) -> bool:
        """Whether it has a namespace of its own (not host, not another container's)."""
        return self.mode != "host" and not self.mode.startswith("container:")

    @property
    def pinned(self) -> bool:
        """Whether berthd makes and pins its namespace before each start."""
        return self.own_netns and not self.runtime_netns

    def endpoint(self, network_id: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network_id == network_id), None)

    def new_sandbox_id(self) -> None:
        self.sandbox_id = secrets.token_hex(32)

    def to_json(self) -> dict[str, Any]:
        return {
            "ContainerID": self.container_id,
            "Mode": self.mode,
            "Endpoints": [e.to_json() for e in self.endpoints],
            "SandboxID": self.sandbox_id,
            "Active": self.active,
            "Joined": self.joined,
            "RuntimeNetns": self.runtime_netns,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Sandbox:
        return Sandbox(
            container_id=str(d["ContainerID"]),
            mode=str(d.get("Mode") or "bridge"),
            endpoints=[Endpoint.from_json(e) for e in d.get("Endpoints") or []],
            sandbox_id=str(d.get("SandboxID") or ""),
            active=bool(d.get("Active")),
            joined=str(d.get("Joined") or ""),
            runtime_netns=bool(d.get("RuntimeNetns")),
        )

    def save(self, directory: str, durable: bool = True) -> None:
        """``durable=False`` for the runtime half alone (it means nothing after a reboot)."""
        data = json.dumps(self.to_json(), separators=(",", ":")).encode() + b"\n"
        path = os.path.join(directory, STATE_FILE)
        runtime_store.write_atomically(path, data, 0o600, durable=durable)

    @staticmethod
    def load(directory: str) -> Sandbox | None:
        try:
            with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
                return Sandbox.from_json(json.load(f))
        except FileNotFoundError:
            return None
