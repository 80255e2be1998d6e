"""Bridges, veth pairs, addresses and routes, over netlink (pyroute2), in named namespaces.

Rules:
- Every call names the namespace it works in: ``host`` is berthd's own namespace (None: the
  calling thread's, which is berthd's; tests pass a pinned namespace of their own), a
  container's is its pin (``engine.netns``). A netlink socket is made inside the namespace
  (``netns.run_in``) and handed to pyroute2, which otherwise opens its sockets where it likes.
- Every call blocks (callers in asyncio use a thread) and is idempotent where it removes:
  a missing link is not an error. A call that fails half-way removes what it made.
- A veth pair is made with its peer already in the container's namespace (named there at
  once), so no temporary name ever shows in berthd's namespace.
- BIG TCP (a network's ``io.berth.network.big_tcp``): both ends of a veth take IPv4 GSO/GRO
  packets of ``BIG_TCP_SIZE`` instead of 64 KiB, so TCP between containers of the network
  moves a third as many packets through the veths and the bridge. It is per network, off by
  default but for internal networks: a container's TCP sizes its packets by its own
  interface, whatever the destination, so its traffic out through a host interface without
  BIG TCP (this machine's virtio NIC) is cut to MSS-sized packets in software at that
  interface -- twice the CPU per byte. An internal network's traffic never goes out.
  pyroute2 has no names for these two attributes, so they go in a netlink message of our own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterator

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from berth.engine import netns
from berth.errors import BerthError

NETLINK_ROUTE = 0
BIG_TCP_SIZE = 196608  # 192 KiB, as Cilium's BIG TCP; a veth takes up to 512 KiB
_RTM_NEWLINK, _NLMSG_ERROR, _NLM_F_REQUEST_ACK = 16, 2, 0x1 | 0x4
_IFLA_GSO_IPV4_MAX_SIZE, _IFLA_GRO_IPV4_MAX_SIZE = 63, 64  # linux/if_link.h, Linux 6.3


@contextlib.contextmanager
def route_socket(namespace: str | None) -> Iterator[IPRoute]:
    """An ``IPRoute`` bound to ``namespace`` (None: the calling thread's)."""
    if namespace is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    else:
        sock = netns.run_in(
            namespace, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        )
    ipr = IPRoute(fileno=sock.detach())
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _failed(what: str, e: NetlinkError) -> BerthError:
    return BerthError(f"{what}: {os.strerror(e.code) if e.code else e}")


def set_big_tcp(namespace: str | None, index: int, size: int = BIG_TCP_SIZE) -> None:
    """IPv4 GSO and GRO packets of up to ``size`` bytes on link ``index`` of ``namespace``."""
    attrs = b"".join(
        struct.pack("=HHI", 8, kind, size)
        for kind in (_IFLA_GSO_IPV4_MAX_SIZE, _IFLA_GRO_IPV4_MAX_SIZE)
    )
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + attrs
    message = struct.pack("=IHHII", 16 + len(body), _RTM_NEWLINK, _NLM_F_REQUEST_ACK, 1, 0) + body
    if namespace is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    else:
        sock = netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW)
    with sock:
        sock.send(message)
        reply = sock.recv(65536)
    kind, code = struct.unpack_from("=4xH", reply)[0], struct.unpack_from("=i", reply, 16)[0]
    if kind != _NLMSG_ERROR or code != 0:
        raise BerthError(
            f"BIG TCP (io.berth.network.big_tcp) on link {index}: "
            f"{os.strerror(-code) if code < 0 else 'unexpected netlink reply'} "
            "(it needs Linux 6.3 or later)"
        )


def route_destinations(host: str | None) -> list[str]:
    """The IPv4 destinations (``a.b.c.d/n``) of the main routing table of ``host``."""
    out = []
    with route_socket(host) as ipr:
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = route.get_attr("RTA_DST")
            if dst:
                out.append(f"{dst}/{route['dst_len']}")
    return out


def link_names(namespace: str | None) -> list[str]:
    with route_socket(namespace) as ipr:
        return [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]


def veths_on(namespace: str | None, bridges: set[str]) -> list[tuple[str, str]]:
    """(veth, bridge) for each veth of ``namespace`` enslaved to one of ``bridges``."""
    with route_socket(namespace) as ipr:
        all_links = list(ipr.get_links())
        names = {link["index"]: str(link.get_attr("IFLA_IFNAME")) for link in all_links}
        out = []
        for link in all_links:
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            master = names.get(link.get_attr("IFLA_MASTER") or 0, "")
            if kind == "veth" and master in bridges:
                out.append((names[link["index"]], master))
        return out


def ensure_bridge(host: str | None, name: str, gateway: str, prefix_len: int) -> bool:
    """Make bridge ``name`` with ``gateway/prefix_len`` and up; whether it was made now."""
    with route_socket(host) as ipr:
        made = False
        index = _index(ipr, name)
        try:
            if index is None:
                ipr.link("add", ifname=name, kind="bridge")
                made = True
                index = _index(ipr, name)
                assert index is not None
            addresses = {
                (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in ipr.get_addr(family=socket.AF_INET, index=index)
            }
            if (gateway, prefix_len) not in addresses:
                ipr.addr("add", index=index, address=gateway, prefixlen=prefix_len)
            ipr.link("set", index=index, state="up")
        except NetlinkError as e:
            if made:
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", ifname=name)
            raise _failed(f"bridge {name}", e) from None
        return made


def remove_link(namespace: str | None, name: str) -> bool:
    """Delete link ``name`` (a veth takes its peer along); whether there was one."""
    with route_socket(namespace) as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise _failed(f"link {name}", e) from None
        return True


def add_endpoint(
    host: str | None,
    pin: str,
    *,
    host_if: str,
    bridge: str,
    ifname: str,
    ip: str,
    prefix_len: int,
    mac: str,
    gateway: str | None,
    mtu: int = 0,
    big_tcp: bool = False,
) -> None:
    """A veth pair: ``host_if`` on ``bridge`` in ``host``, ``ifname`` (``mac``, ``ip``) in
    the namespace pinned at ``pin``, with a default route via ``gateway`` when given; both
    ends with ``mtu`` when given (the bridge follows its ports' smallest) and BIG TCP when
    ``big_tcp``."""
    fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with route_socket(host) as ipr:
            master = _index(ipr, bridge)
            if master is None:
                raise BerthError(f"bridge {bridge} does not exist")
            try:
                inside: dict[str, object] = {"ifname": ifname, "net_ns_fd": fd, "address": mac}
                sized: dict[str, int] = {}
                if mtu:
                    inside["mtu"] = sized["mtu"] = mtu
                ipr.link("add", ifname=host_if, kind="veth", peer=inside, **sized)
            except NetlinkError as e:
                raise _failed(f"veth {host_if}", e) from None
            try:
                index = _index(ipr, host_if)
                assert index is not None
                if big_tcp:
                    set_big_tcp(host, index)
                ipr.link("set", index=index, master=master, state="up")
                with route_socket(pin) as inner:
                    peer = _index(inner, ifname)
                    assert peer is not None
                    if big_tcp:
                        set_big_tcp(pin, peer)
                    inner.addr("add", index=peer, address=ip, prefixlen=prefix_len)
                    inner.link("set", index=peer, state="up")
                    if gateway:
                        inner.route("add", dst="0.0.0.0/0", gateway=gateway, oif=peer)
            except (NetlinkError, BerthError, OSError, AssertionError) as e:
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", ifname=host_if)
                if isinstance(e, NetlinkError):
                    raise _failed(f"endpoint {ifname}", e) from None
                raise
    finally:
        os.close(fd)


def set_default_route(pin: str, gateway: str | None) -> None:
    """The container's default route via ``gateway`` (None: none), replacing any other."""
    with route_socket(pin) as inner:
        with contextlib.suppress(NetlinkError):
            inner.route("del", dst="0.0.0.0/0")
        if gateway:
            inner.route("replace", dst="0.0.0.0/0", gateway=gateway)


def enable_forwarding(host: str | None) -> None:
    """``net.ipv4.ip_forward=1`` in ``host`` (a per-namespace sysctl)."""

    def write() -> None:
        with open("/proc/sys/net/ipv4/ip_forward", "w", encoding="ascii") as f:
            f.write("1\n")

    if host is None:
        write()
    else:
        netns.run_in(host, write)
