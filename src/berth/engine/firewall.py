"""berthd's packet rules (NAT of networks and published ports, isolation of networks), in one
nftables table that berthd owns wholly.

Rules:
- The table (``table ip berth``) is rendered from the desired state alone (the networks, and
  the DNAT rules of each container) and replaced in one ``nft -f -`` transaction (add, delete,
  add: atomic, and the add of a missing table first makes the delete never fail). So a new
  ``Firewall`` with the same desired state removes every stale rule by construction, and a
  desired state with nothing in it removes the table (``close()`` too).
- What is in it: per network, outbound masquerade of its subnet leaving by another interface
  (when masquerade is on and it is not internal) and hairpin masquerade (a container reaching
  a published port through the host); forwarding between two berth bridges dropped, but for
  connections to published ports (``ct status dnat``); an internal network's traffic never
  leaves its bridge. Per published binding: DNAT to the container for traffic to the host's
  addresses, in prerouting (``fib daddr type local``) and output (locally made connections).
  Connections to the host's loopback are the userland proxy's (``portproxy``) by default, as
  dockerd's ``--userland-proxy``; with ``userland_proxy=False`` they are DNAT-ed too: each berth
  bridge gets ``route_localnet=1`` (a setting of that interface alone, as dockerd's and
  podman's proxy-less bridges) and what leaves a bridge from 127.0.0.0/8 is masqueraded to
  the bridge's address, so loopback traffic moves at the bridge's speed. Either way the proxy
  holds the ports and serves what DNAT cannot: a container reaching its own published port,
  and IPv6.
- ``nft`` runs as an asyncio subprocess, never blocking the loop; with ``netns_path`` it runs
  under ``nsenter --net=PATH`` (tests). Changes are serialized by a lock. A failed change
  raises ``Unavailable`` with nft's words and leaves the desired state as it was, so the
  kernel keeps the previous table (the transaction is all or nothing).
- Names and addresses are checked before they are written into a rule (no injection).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import shutil
from dataclasses import dataclass

from berth.engine import netns
from berth.engine.network_hooks import NetworkView
from berth.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

TABLE = "berth"
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


@dataclass(frozen=True)
class DnatRule:
    """A published binding as the kernel sees it: host address (0.0.0.0 = every local one)
    and port, to the container's address and port."""

    proto: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise InvalidArgument(f"invalid interface name: {name!r}")
    return f'"{name}"'


def _ipv4(text: str) -> str:
    addr = ipaddress.ip_address(text)
    if addr.version != 4:
        raise InvalidArgument(f"not an IPv4 address: {text}")
    return str(addr)


def _subnet(text: str) -> str:
    return str(ipaddress.IPv4Network(text, strict=False))


def _port(n: int) -> int:
    if not 0 < int(n) <= 65535:
        raise InvalidArgument(f"invalid port: {n}")
    return int(n)


def _proto(p: str) -> str:
    if p not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid proto: {p}")
    return p


def dnat_applies(rule: DnatRule, loopback: bool = False) -> bool:
    """Whether a binding gets a DNAT rule: IPv4 host addresses, loopback ones only when
    ``loopback`` (else they are the proxy's, as IPv6 ones always are)."""
    try:
        addr = ipaddress.ip_address(rule.host_ip)
    except ValueError:
        return False
    return addr.version == 4 and (loopback or not addr.is_loopback)


def render(
    networks: list[NetworkView],
    dnat: list[DnatRule],
    table: str = TABLE,
    userland_proxy: bool = True,
) -> str:
    """The whole table for a desired state ("" when there is nothing to hold); without the
    userland proxy, loopback connections are DNAT-ed too."""
    loopback = not userland_proxy
    if not networks and not dnat:
        return ""
    nets = sorted(networks, key=lambda n: n.bridge)
    bridges = [_ifname(n.bridge) for n in nets]
    publish: list[str] = []
    for r in sorted(dnat, key=lambda r: (r.proto, r.host_port, r.host_ip)):
        if not dnat_applies(r, loopback):
            continue
        match = "" if r.host_ip == "0.0.0.0" else f"ip daddr {_ipv4(r.host_ip)} "
        container = _ipv4(r.container_ip)
        # The container reaching its own published port is the proxy's: the kernel does not
        # route a packet DNAT-ed back to its own source address.
        publish.append(
            f"ip saddr != {container} {match}{_proto(r.proto)} dport {_port(r.host_port)} "
            f"dnat to {container}:{_port(r.container_port)}"
        )
    postrouting: list[str] = []
    forward_internal: list[str] = []
    forward_isolation: list[str] = []
    for n, br in zip(nets, bridges, strict=True):
        subnet = _subnet(n.subnet)
        if n.internal:
            forward_internal.append(f"iifname {br} oifname != {br} drop")
            forward_internal.append(f"oifname {br} iifname != {br} drop")
        elif n.masquerade:
            postrouting.append(f"ip saddr {subnet} oifname != {br} masquerade")
        postrouting.append(f"ct status dnat ip saddr {subnet} oifname {br} masquerade")
        if loopback:
            postrouting.append(f"ip saddr 127.0.0.0/8 oifname {br} masquerade")
        others = [b for b in bridges if b != br]
        if others:
            forward_isolation.append(f"iifname {br} oifname {{ {', '.join(others)} }} drop")
    forward = [*forward_internal]
    if forward_isolation:
        forward += ["ct status dnat accept", *forward_isolation]

    def chain(name: str, head: str, body: list[str]) -> str:
        lines = [f"\tchain {name} {{"]
        if head:
            lines.append(f"\t\t{head}")
        lines += [f"\t\t{rule}" for rule in body]
        lines.append("\t}")
        return "\n".join(lines)

    nat = "type nat hook {} priority {}; policy accept;"
    chains = [
        chain("publish", "", publish),
        chain(
            "prerouting", nat.format("prerouting", "dstnat"), ["fib daddr type local jump publish"]
        ),
        chain(
            "output",
            nat.format("output", "-100"),
            [f"{'' if loopback else 'ip daddr != 127.0.0.0/8 '}fib daddr type local jump publish"],
        ),
        chain("postrouting", nat.format("postrouting", "srcnat"), postrouting),
        chain("forward", "type filter hook forward priority filter; policy accept;", forward),
    ]
    return f"table ip {table} {{\n" + "\n".join(chains) + "\n}\n"


class Firewall:
    """The desired state and the one table that mirrors it."""

    def __init__(
        self,
        netns_path: str | None = None,
        table: str = TABLE,
        nft: str = "nft",
        userland_proxy: bool = True,
    ) -> None:
        self.netns_path = netns_path
        self.userland_proxy = userland_proxy
        self.table = table
        self.nft = nft
        self._networks: dict[str, NetworkView] = {}
        self._dnat: dict[str, tuple[DnatRule, ...]] = {}
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------- desired state

    def render(self) -> str:
        rules = [r for rs in self._dnat.values() for r in rs]
        return render(list(self._networks.values()), rules, self.table, self.userland_proxy)

    async def set_network(self, network: NetworkView) -> None:
        if not self.userland_proxy:
            await asyncio.to_thread(self._route_localnet, network.bridge)
        async with self._lock:
            before = self._networks.get(network.id)
            self._networks[network.id] = network
            try:
                await self._apply()
            except BaseException:
                if before is None:
                    self._networks.pop(network.id, None)
                else:
                    self._networks[network.id] = before
                raise

    def _route_localnet(self, bridge: str) -> None:
        """Let DNAT-ed loopback traffic leave by this bridge (its own setting, no other's)."""
        _ifname(bridge)  # checked: it goes into a path
        path = f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"

        def write() -> None:
            with open(path, "w", encoding="ascii") as f:
                f.write("1\n")

        try:
            if self.netns_path is None:
                write()
            else:
                netns.run_in(self.netns_path, write)
        except OSError as e:
            log.warning(
                "bridge %s: route_localnet: %s (loopback goes through the proxy)", bridge, e
            )

    async def remove_network(self, network_id: str) -> None:
        """Forget a network; the state changes even when nft fails (the next change applies)."""
        async with self._lock:
            if self._networks.pop(network_id, None) is not None:
                await self._apply()

    async def set_dnat(self, owner: str, rules: tuple[DnatRule, ...]) -> None:
        async with self._lock:
            before = self._dnat.get(owner)
            self._dnat[owner] = rules
            try:
                await self._apply()
            except BaseException:
                if before is None:
                    self._dnat.pop(owner, None)
                else:
                    self._dnat[owner] = before
                raise

    async def remove_dnat(self, owner: str) -> None:
        async with self._lock:
            if self._dnat.pop(owner, None) is not None:
                await self._apply()

    async def sync(self) -> None:
        """Make the kernel's table match the desired state (at start: removes a stale one)."""
        async with self._lock:
            await self._apply()

    async def close(self) -> None:
        """Remove the table and forget the desired state."""
        async with self._lock:
            self._networks.clear()
            self._dnat.clear()
            await self._apply()

    # ----------------------------------------------------------------- the kernel

    async def _apply(self) -> None:
        body = self.render()
        script = f"table ip {self.table}\ndelete table ip {self.table}\n{body}"
        await self.run(["-f", "-"], script)

    async def run(self, args: list[str], stdin: str = "") -> str:
        """``nft ARGS`` (in the namespace, if one was given); its stdout, or ``Unavailable``."""
        nft = shutil.which(self.nft) or self.nft
        argv = [nft, *args]
        if self.netns_path is not None:
            argv = ["nsenter", f"--net={self.netns_path}", "--", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as e:
            raise Unavailable(f"nft is not installed (Debian's nftables): {e}") from None
        out, err = await proc.communicate(stdin.encode())
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip()
            log.error("nft %s failed: %s\n%s", " ".join(args), text, stdin)
            raise Unavailable(f"nft failed: {text}")
        return out.decode(errors="replace")

    async def list_table(self) -> str:
        """The table as the kernel holds it ("" when there is none)."""
        ruleset = await self.run(["list", "ruleset"])
        return ruleset if f"table ip {self.table} " in ruleset else ""
