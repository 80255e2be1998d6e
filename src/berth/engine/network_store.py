"""Network records as dockerd keeps them, persisted one file per network, and their IPAM.

Rules:
- One JSON file per network, ``<data_root>/networks/<id>.json``, written atomically; a file
  that cannot be read is logged and skipped, never fatal.
- The predefined networks are records too (so their ids stay stable across restarts):
  "bridge" (driver bridge, interface ``berth0``, a subnet picked once from Docker's default
  pools), "host" (driver host) and "none" (driver null). They are never removed.
- IPAM is IPv4 only, Docker's rules: a subnet given by the user must not overlap another
  network's ("Pool overlaps with other one on this address space"); one picked for the user
  comes from the default pools (172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/16 in /20s)
  and avoids other networks and the routes of berthd's namespace; the gateway is the first
  host address unless given; container addresses come from IPRange (or the subnet), never the
  network or broadcast address, the gateway or an auxiliary address.
- Which addresses are taken is not stored here: the networks manager rebuilds it from the
  endpoints of running containers, so no second list can drift.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from berth.engine.api_errors import Forbidden
from berth.errors import Conflict, InvalidArgument
from berth.runtime import store as runtime_store

log = logging.getLogger(__name__)

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
MTU_OPTION = "com.docker.network.driver.mtu"  # the veths' MTU (0 or unset: the kernel's 1500)
BIG_TCP_OPTION = "io.berth.network.big_tcp"  # true: BIG TCP on the veths (network_links)
DEFAULT_BRIDGE = "berth0"
PREDEFINED = ("bridge", "host", "none")
DRIVER_OF_PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}


def default_pools() -> list[ipaddress.IPv4Network]:
    """dockerd's default address pools, in the order it takes them."""
    pools = [ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    pools += list(ipaddress.IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    return pools


@dataclass
class Network:
    id: str
    name: str
    driver: str  # bridge | host | null
    created: str
    subnet: str = ""  # "" for host and none
    gateway: str = ""
    ip_range: str = ""
    aux_addresses: dict[str, str] = field(default_factory=dict)
    user_subnet: bool = False  # the IPAM config came from the user (shown as given)
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    @property
    def is_bridge(self) -> bool:
        return self.driver == "bridge"

    @property
    def user_defined(self) -> bool:
        return not self.predefined

    @property
    def bridge(self) -> str:
        if not self.is_bridge:
            return ""
        if self.name == "bridge":
            return DEFAULT_BRIDGE
        return self.options.get(BRIDGE_NAME_OPTION) or f"br-{self.id[:12]}"

    @property
    def masquerade(self) -> bool:
        return self.options.get(MASQUERADE_OPTION, "true").lower() not in ("false", "0")

    @property
    def mtu(self) -> int:
        return mtu_of(self.options)

    @property
    def big_tcp(self) -> bool:
        """The option when given; else on for an internal network, whose traffic never
        leaves through a host interface (the only place BIG TCP costs: network_links)."""
        return big_tcp_of(self.options, default=self.internal)

    @property
    def prefix_len(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen if self.subnet else 0

    def to_record(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": self.name,
            "Driver": self.driver,
            "Created": self.created,
            "Subnet": self.subnet,
            "Gateway": self.gateway,
            "IPRange": self.ip_range,
            "AuxiliaryAddresses": self.aux_addresses,
            "UserSubnet": self.user_subnet,
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Labels": self.labels,
            "Options": self.options,
        }

    @staticmethod
    def from_record(d: dict[str, Any]) -> Network:
        return Network(
            id=str(d["Id"]),
            name=str(d["Name"]),
            driver=str(d["Driver"]),
            created=str(d["Created"]),
            subnet=str(d.get("Subnet") or ""),
            gateway=str(d.get("Gateway") or ""),
            ip_range=str(d.get("IPRange") or ""),
            aux_addresses=dict(d.get("AuxiliaryAddresses") or {}),
            user_subnet=bool(d.get("UserSubnet")),
            internal=bool(d.get("Internal")),
            attachable=bool(d.get("Attachable")),
            labels=dict(d.get("Labels") or {}),
            options=dict(d.get("Options") or {}),
        )

    def to_json(self, containers: dict[str, Any] | None = None) -> dict[str, Any]:
        """dockerd's network document (``GET /networks/{id}``)."""
        config: list[dict[str, Any]] = []
        if self.subnet:
            row: dict[str, Any] = {"Subnet": self.subnet, "Gateway": self.gateway}
            if self.ip_range:
                row["IPRange"] = self.ip_range
            if self.aux_addresses:
                row["AuxiliaryAddresses"] = dict(self.aux_addresses)
            config.append(row)
        options = dict(self.options)
        if self.name == "bridge":
            options.setdefault(BRIDGE_NAME_OPTION, DEFAULT_BRIDGE)
            options.setdefault(MASQUERADE_OPTION, "true")
        return {
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": "local",
            "Driver": self.driver,
            "EnableIPv4": True,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None if self.predefined else {},
                     "Config": config},
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers or {},
            "Options": options,
            "Labels": dict(self.labels),
        }  # fmt: skip


def new_id() -> str:
    return secrets.token_hex(32)


class NetworkStore:
    """The records on disk (blocking: callers use a thread when it matters)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, network_id: str) -> str:
        return os.path.join(self.directory, f"{network_id}.json")

    def load(self) -> list[Network]:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        out = []
        for entry in sorted(os.listdir(self.directory)):
            if not entry.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.directory, entry), encoding="utf-8") as f:
                    out.append(Network.from_record(json.load(f)))
            except (OSError, ValueError, KeyError) as e:
                log.error("network record %s unreadable, skipped: %s", entry, e)
        return out

    def save(self, network: Network) -> None:
        data = json.dumps(network.to_record(), separators=(",", ":")).encode() + b"\n"
        runtime_store.write_atomically(self._path(network.id), data, 0o600)

    def delete(self, network_id: str) -> None:
        try:
            os.unlink(self._path(network_id))
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- IPAM


def _network(text: str, what: str) -> ipaddress.IPv4Network:
    try:
        parsed = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text!r}") from None
    if parsed.version != 4:
        raise InvalidArgument(f"invalid {what} {text}: only IPv4 is supported")
    if parsed.network_address != ipaddress.ip_interface(text).ip:
        raise InvalidArgument(
            f"invalid pool request: Pool {text} is not a network address (did you mean {parsed}?)"
        )
    return parsed


def _address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text!r}") from None
    if parsed.version != 4:
        raise InvalidArgument(f"invalid {what} {text}: only IPv4 is supported")
    return parsed


def parse_ipam(
    config: list[dict[str, Any]],
) -> tuple[str, str, str, dict[str, str]]:
    """The IPAM ``Config`` of a create request: (subnet, gateway, ip_range, aux), validated
    alone (overlaps are checked against the other networks by ``check_overlap``)."""
    if len(config) > 1:
        raise InvalidArgument("only one IPv4 IPAM config is supported")
    if not config:
        return "", "", "", {}
    row = config[0]
    subnet_text = str(row.get("Subnet") or "")
    if not subnet_text:
        if row.get("Gateway") or row.get("IPRange"):
            raise InvalidArgument("invalid pool request: a gateway or ip-range needs a subnet")
        return "", "", "", {}
    subnet = _network(subnet_text, "subnet")
    if subnet.prefixlen > 30:
        raise InvalidArgument(f"invalid pool request: subnet {subnet} is too small")
    ip_range = ""
    if row.get("IPRange"):
        rng = _network(str(row["IPRange"]), "ip-range")
        if not rng.subnet_of(subnet):
            raise InvalidArgument(
                f"invalid pool request: ip-range {rng} is not within subnet {subnet}"
            )
        ip_range = str(rng)
    gateway = ""
    if row.get("Gateway"):
        gw = _address(str(row["Gateway"]), "gateway")
        if gw not in subnet:
            raise InvalidArgument(f"no matching subnet for gateway {gw}")
        gateway = str(gw)
    aux: dict[str, str] = {}
    for host, addr_text in dict(row.get("AuxiliaryAddresses") or {}).items():
        addr = _address(str(addr_text), f"auxiliary address {host}")
        if addr not in subnet:
            raise InvalidArgument(f"no matching subnet for aux-address {addr}")
        aux[str(host)] = str(addr)
    return str(subnet), gateway, ip_range, aux


def check_overlap(subnet: str, others: Iterable[Network]) -> None:
    net = ipaddress.IPv4Network(subnet)
    for other in others:
        if other.subnet and net.overlaps(ipaddress.IPv4Network(other.subnet)):
            raise Forbidden(
                "invalid pool request: Pool overlaps with other one on this address space"
            )


def pick_subnet(others: Iterable[Network], routes: Iterable[str]) -> str:
    """The first default pool that overlaps no network and no route of berthd's namespace."""
    taken = [ipaddress.IPv4Network(n.subnet) for n in others if n.subnet]
    for text in routes:
        net = ipaddress.ip_network(text, strict=False)
        if net.version == 4 and net.prefixlen > 0:  # the default route overlaps everything
            taken.append(ipaddress.IPv4Network(net))
    for pool in default_pools():
        if not any(pool.overlaps(t) for t in taken):
            return str(pool)
    raise Conflict(
        "could not find an available, non-overlapping IPv4 address pool among the defaults"
        " to assign to the network"
    )


def first_host(subnet: str) -> str:
    return str(ipaddress.IPv4Network(subnet).network_address + 1)


def reserved(network: Network) -> set[str]:
    """Addresses no container gets: network, broadcast, gateway, auxiliary addresses."""
    net = ipaddress.IPv4Network(network.subnet)
    out = {str(net.network_address), str(net.broadcast_address), network.gateway}
    out.update(network.aux_addresses.values())
    return out


def allocate(network: Network, taken: set[str]) -> str:
    """The lowest free address of the network's IPRange (or subnet)."""
    pool = ipaddress.IPv4Network(network.ip_range or network.subnet)
    blocked = taken | reserved(network)
    for host in pool.hosts() if pool.prefixlen < 31 else pool:
        text = str(host)
        if text not in blocked:
            return text
    raise Conflict(f"no available IPv4 addresses on this network's address pools: {network.name}")


def check_static(network: Network, ip: str, taken: set[str]) -> str:
    """A user's ``--ip`` on ``network``: inside a subnet of it, and free."""
    addr = _address(ip, "IPv4 address")
    if not network.subnet or addr not in ipaddress.IPv4Network(network.subnet):
        raise InvalidArgument(f"no configured subnet or ip-range contain the IP address {addr}")
    text = str(addr)
    if text in taken or text in reserved(network):
        raise Conflict(f"Address already in use: {text}")
    return text


def mac_of(ip: str) -> str:
    """Docker's MAC for an IPv4 address: 02:42 and the address's four bytes."""
    parts = [int(x) for x in ip.split(".")]
    return "02:42:" + ":".join(f"{b:02x}" for b in parts)


def mtu_of(options: dict[str, str]) -> int:
    """The ``com.docker.network.driver.mtu`` option, checked (68 to 65535; 0: the default)."""
    text = options.get(MTU_OPTION, "0").strip() or "0"
    try:
        mtu = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid MTU number: {text!r}") from None
    if mtu and not 68 <= mtu <= 65535:
        raise InvalidArgument(f"invalid MTU number: {mtu} (68 to 65535)")
    return mtu


def big_tcp_of(options: dict[str, str], default: bool = False) -> bool:
    """The ``io.berth.network.big_tcp`` option, checked (true or false; unset: ``default``)."""
    text = options.get(BIG_TCP_OPTION, str(default)).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"invalid value for {BIG_TCP_OPTION}: {text!r} (true or false)")
    return text in ("true", "1")
