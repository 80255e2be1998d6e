"""Published ports, NAT and isolation on the real kernel, all inside namespaces this module makes.

Topology (one per module; nothing is made in the test process's own namespace)::

    E (outside) 10.201.9.2 ──ext0 10.201.9.1──┐
                                               H ("host": ip_forward on, the berth table)
    br1 10.201.1.1/24: C1 .2 (servers), C2 .3  │
    br2 10.201.2.1/24: C3 .2 (server)          │
    br3 10.201.3.1/24: C4 .2 (internal)  ──────┘

Servers answer with the address they see the client coming from (``peer=IP``) and then echo,
so each test tells a proxied connection (from H's bridge address) from a DNAT-ed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from berth.engine import netns
from berth.engine.firewall import DnatRule, Firewall
from berth.engine.network_hooks import EndpointView, NetworkView, SandboxView
from berth.engine.port_publisher import PortPublisher
from berth.engine.ports import PortAllocator, PublishedPorts, read_ephemeral_range
from berth.errors import Conflict, Unavailable

pytestmark = pytest.mark.root

T = TypeVar("T")
EPHEMERAL = (40000, 40009)
BR1 = NetworkView("n1" * 32, "net1", "br1", "10.201.1.0/24", "10.201.1.1")
BR2 = NetworkView("n2" * 32, "net2", "br2", "10.201.2.0/24", "10.201.2.1")
BR3 = NetworkView("n3" * 32, "net3", "br3", "10.201.3.0/24", "10.201.3.1", internal=True)
DROP_TIMEOUT = 0.6


# --------------------------------------------------------------------------- topology


def _link(host: str, bridge: str | None, inner: str, addr: str, gateway: str) -> None:
    """A veth from H (on ``bridge``, or with ``gateway`` as its own address) into ``inner``."""
    from pyroute2 import IPRoute

    outer = f"v{abs(hash(inner)) % 10**8}"

    def in_host() -> None:
        fd = os.open(inner, os.O_RDONLY)
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=outer, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
                idx = ipr.link_lookup(ifname=outer)[0]
                if bridge is not None:
                    ipr.link("set", index=idx, master=ipr.link_lookup(ifname=bridge)[0])
                else:
                    ipr.addr("add", index=idx, address=gateway, prefixlen=24)
                ipr.link("set", index=idx, state="up")
        finally:
            os.close(fd)

    def in_inner() -> None:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=idx, address=addr, prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)

    netns.run_in(host, in_host)
    netns.run_in(inner, in_inner)


def _make_host(host: str) -> None:
    from pyroute2 import IPRoute

    def work() -> None:
        with IPRoute() as ipr:
            for view in (BR1, BR2, BR3):
                ipr.link("add", ifname=view.bridge, kind="bridge")
                idx = ipr.link_lookup(ifname=view.bridge)[0]
                ipr.addr("add", index=idx, address=view.gateway, prefixlen=24)
                ipr.link("set", index=idx, state="up")
        # /proc/sys/net resolves to the calling thread's namespace: H's, never the host's.
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
            f.write(f"{EPHEMERAL[0]} {EPHEMERAL[1]}")

    netns.run_in(host, work)


class Server:
    """TCP and UDP servers in a namespace: ``peer=IP\\n`` then an echo (TCP); UDP echoes with
    the peer's address prefixed. Threads end when ``close()`` closes the sockets."""

    def __init__(self, ns: str, port: int) -> None:
        self.tcp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", port))
        self.tcp.listen(16)
        self.udp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", port))
        self.threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._udp, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn, peer[0]), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket, peer: str) -> None:
        with conn:
            conn.settimeout(10)
            try:
                conn.sendall(f"peer={peer}\n".encode())
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65536)
                if peer is None:  # shut down
                    return
                self.udp.sendto(f"peer={peer[0]} ".encode() + data, peer)
            except OSError:
                return

    def close(self) -> None:
        for s in (self.tcp, self.udp):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(2)


@dataclass
class Topo:
    host: str
    c1: str
    c2: str
    c3: str
    c4: str
    outside: str

    def factory(self, family: int, kind: int) -> socket.socket:
        return netns.socket_in(self.host, family, kind)

    def sandbox(self, ns: str, view: NetworkView, ip: str, **host_config: Any) -> SandboxView:
        exposed = host_config.pop("ExposedPorts", {})
        cid = f"{os.path.basename(ns)}{'0' * 62}"[:64]
        return SandboxView(
            container_id=cid,
            container_name=os.path.basename(ns),
            netns_path=ns,
            endpoints=(EndpointView(view, ip, 24, "02:42:0a:c9:01:02"),),
            config={"ExposedPorts": exposed},
            host_config=host_config,
        )


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    base = tempfile.mkdtemp(prefix="berth-ports-", dir="/tmp")
    names = ["h", "c1", "c2", "c3", "c4", "e"]
    made: list[str] = []
    servers: list[Server] = []
    try:
        for n in names:
            path = os.path.join(base, n)
            netns.create(path)
            made.append(path)
        t = Topo(*made)
        _make_host(t.host)
        _link(t.host, "br1", t.c1, "10.201.1.2", "10.201.1.1")
        _link(t.host, "br1", t.c2, "10.201.1.3", "10.201.1.1")
        _link(t.host, "br2", t.c3, "10.201.2.2", "10.201.2.1")
        _link(t.host, "br3", t.c4, "10.201.3.2", "10.201.3.1")
        _link(t.host, None, t.outside, "10.201.9.2", "10.201.9.1")
        servers = [Server(t.c1, 80), Server(t.c3, 80), Server(t.outside, 9000)]
        yield t
    finally:
        for s in servers:
            s.close()
        for path in reversed(made):  # veths go with their namespaces, bridges with H
            netns.remove(path)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- clients


def _tcp(ns: str, ip: str, port: int, payload: bytes = b"hello", timeout: float = 3) -> str:
    """Connect from ``ns``, send, half-close, read all: the server's ``peer=`` and the echo."""

    def work() -> str:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
            return b"".join(chunks).decode()

    return netns.run_in(ns, work)


def _udp(ns: str, ip: str, port: int, payload: bytes = b"ping", timeout: float = 3) -> str:
    def work() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(payload, (ip, port))
            return s.recvfrom(65536)[0].decode()

    return netns.run_in(ns, work)


def _reaches(ns: str, ip: str, port: int) -> bool:
    try:
        _tcp(ns, ip, port, timeout=DROP_TIMEOUT)
    except OSError:
        return False
    return True


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def _ruleset(topo: Topo) -> str:
    return await Firewall(topo.host).run(["list", "ruleset"])


def _publisher(topo: Topo, firewall: Firewall | None = None) -> PortPublisher:
    # without the userland proxy for loopback (berthd --userland-proxy=false): the DNAT paths are
    # what these tests prove; the e2e tests use berthd's default, the proxy
    return PortPublisher(
        firewall or Firewall(topo.host, userland_proxy=False),
        socket_factory=topo.factory,
        allocator=PortAllocator(EPHEMERAL),
        udp_idle=1.0,
    )


# --------------------------------------------------------------------------- tests


def test_the_topology_changed_only_its_own_namespace(topo: Topo) -> None:
    assert netns.run_in(topo.host, read_ephemeral_range) == EPHEMERAL
    assert netns.run_in(topo.host, lambda: Path("/proc/sys/net/ipv4/ip_forward").read_text()) == (
        "1\n"
    )
    assert read_ephemeral_range() != EPHEMERAL  # the test process's own range is untouched


def test_a_published_tcp_port_answers_by_proxy_and_by_dnat(topo: Topo) -> None:
    async def main() -> None:
        pub = _publisher(topo)
        sb = topo.sandbox(
            topo.c1, BR1, "10.201.1.2", PortBindings={"80/tcp": [{"HostPort": "18080"}]}
        )
        try:
            for view in (BR1, BR2):
                await pub.network_added(view)
            await pub.sandbox_ready(sb)
            # loopback of H: output DNAT, masqueraded to H's br1 address (route_localnet)
            assert await _in_thread(_tcp, topo.host, "127.0.0.1", 18080) == "peer=10.201.1.1\nhello"
            # another local address of H, from H: output DNAT, the source kept
            assert (
                await _in_thread(_tcp, topo.host, "10.201.9.1", 18080) == "peer=10.201.9.1\nhello"
            )
            # from outside, to H's outer address: prerouting DNAT
            assert await _in_thread(_tcp, topo.outside, "10.201.9.1", 18080) == (
                "peer=10.201.9.2\nhello"
            )
            # hairpin: a container of the same bridge through the host's address, masqueraded
            assert await _in_thread(_tcp, topo.c2, "10.201.1.1", 18080) == "peer=10.201.1.1\nhello"
            # the container itself through the host's address: by the proxy
            assert await _in_thread(_tcp, topo.c1, "10.201.1.1", 18080) == "peer=10.201.1.1\nhello"
            # a container of another network reaches the published port (not the container);
            # it leaves its subnet by another bridge, so its network's masquerade applies
            assert await _in_thread(_tcp, topo.c3, "10.201.2.1", 18080) == "peer=10.201.1.1\nhello"
            assert not await _in_thread(_reaches, topo.c3, "10.201.1.2", 80)
            big = os.urandom(1 << 20)
            echoed = await _in_thread(_tcp, topo.host, "127.0.0.1", 18080, big.hex().encode())
            assert echoed == "peer=10.201.1.1\n" + big.hex()
            ports = pub.ports_of(sb.container_id)
            assert ports.inspect_json() == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}]}
            assert "dnat to 10.201.1.2:80" in await _ruleset(topo)

            await pub.sandbox_gone(sb)
            assert pub.ports_of(sb.container_id).inspect_json() == {}
            with pytest.raises(ConnectionRefusedError):
                await _in_thread(_tcp, topo.host, "127.0.0.1", 18080)
            assert "dnat to" not in await _ruleset(topo)
        finally:
            await pub.close()
        assert await _ruleset(topo) == ""

    asyncio.run(main())


def test_udp_and_publish_all_take_ephemeral_ports(topo: Topo) -> None:
    async def main() -> None:
        pub = _publisher(topo)
        sb = topo.sandbox(
            topo.c1,
            BR1,
            "10.201.1.2",
            ExposedPorts={"80/tcp": {}, "80/udp": {}},
            PortBindings={"81/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            PublishAllPorts=True,
        )
        try:
            await pub.network_added(BR1)
            await pub.sandbox_ready(sb)
            ports = pub.ports_of(sb.container_id)
            by_key = {str(b.target): b for b in ports.bindings}
            assert sorted(by_key) == ["80/tcp", "80/udp", "81/tcp"]
            assert all(EPHEMERAL[0] <= b.host_port <= EPHEMERAL[1] for b in ports.bindings)
            assert len({(b.host_port, b.target.proto) for b in ports.bindings}) == 3
            assert by_key["81/tcp"].host_ip == "127.0.0.1"
            udp_port = by_key["80/udp"].host_port
            assert await _in_thread(_udp, topo.host, "127.0.0.1", udp_port) == (
                "peer=10.201.1.1 ping"
            )
            assert await _in_thread(_udp, topo.outside, "10.201.9.1", udp_port) == (
                "peer=10.201.9.2 ping"
            )
            rows = ports.list_json()
            assert {
                "IP": "127.0.0.1",
                "PrivatePort": 81,
                "PublicPort": by_key["81/tcp"].host_port,
                "Type": "tcp",
            } in rows
            # a loopback-only binding's DNAT rule matches that address alone
            table = await _ruleset(topo)
            loopback_rule = f"ip daddr 127.0.0.1 tcp dport {by_key['81/tcp'].host_port} dnat"
            assert loopback_rule in table
            assert f"udp dport {udp_port} dnat to 10.201.1.2:80" in table
            # the container itself through the host's address: the proxy's UDP flow, closed
            # once idle past udp_idle
            assert await _in_thread(_udp, topo.c1, "10.201.1.1", udp_port) == (
                "peer=10.201.1.1 ping"
            )
            listener = next(
                x for x in pub._published[sb.container_id].listeners if x.target.proto == "udp"
            )
            assert listener.flow_count == 1  # type: ignore[attr-defined]
            await asyncio.sleep(1.6)
            assert listener.flow_count == 0  # type: ignore[attr-defined]
        finally:
            await pub.close()
        assert await _ruleset(topo) == ""

    asyncio.run(main())


def test_a_taken_port_is_refused_and_leaves_nothing(topo: Topo) -> None:
    async def main() -> None:
        pub = _publisher(topo)
        other = topo.factory(socket.AF_INET, socket.SOCK_STREAM)  # another process's port
        other.bind(("0.0.0.0", 18081))
        other.listen()
        first = topo.sandbox(
            topo.c1, BR1, "10.201.1.2", PortBindings={"80/tcp": [{"HostPort": "18082"}]}
        )
        second = topo.sandbox(
            topo.c3,
            BR2,
            "10.201.2.2",
            PortBindings={"80/tcp": [{"HostPort": "18083"}, {"HostPort": "18082"}]},
        )
        third = topo.sandbox(
            topo.c3, BR2, "10.201.2.2", PortBindings={"80/tcp": [{"HostPort": "18081"}]}
        )
        try:
            await pub.network_added(BR1)
            await pub.network_added(BR2)
            await pub.sandbox_ready(first)
            with pytest.raises(Conflict) as taken:
                await pub.sandbox_ready(second)
            assert str(taken.value) == (
                f"driver failed programming external connectivity on endpoint c3 "
                f"({second.container_id}): Bind for 0.0.0.0:18082 failed: "
                "port is already allocated"
            )
            with pytest.raises(Conflict) as busy:
                await pub.sandbox_ready(third)
            assert str(busy.value).endswith(
                "failed to bind host port for 0.0.0.0:18081:10.201.2.2:80/tcp: "
                "address already in use"
            )
            # nothing of the failed ones: 18083 was listening before 18082 failed
            with pytest.raises(ConnectionRefusedError):
                await _in_thread(_tcp, topo.host, "127.0.0.1", 18083)
            assert pub.ports_of(second.container_id).bindings == ()
            table = await _ruleset(topo)
            assert "10.201.2.2" not in table and "dnat to 10.201.1.2:80" in table
            assert pub.allocator.is_free("tcp", "0.0.0.0", 18083)
            # the first one still serves
            assert (await _in_thread(_tcp, topo.host, "127.0.0.1", 18082)).startswith("peer=")
        finally:
            other.close()
            await pub.close()
        assert await _ruleset(topo) == ""

    asyncio.run(main())


def test_a_failed_rule_change_leaves_no_listener(topo: Topo) -> None:
    async def main() -> None:
        broken = Firewall(topo.host, nft="false")
        pub = _publisher(topo, broken)
        sb = topo.sandbox(
            topo.c1, BR1, "10.201.1.2", PortBindings={"80/tcp": [{"HostPort": "18084"}]}
        )
        with pytest.raises(Unavailable):
            await pub.sandbox_ready(sb)
        with pytest.raises(ConnectionRefusedError):
            await _in_thread(_tcp, topo.host, "127.0.0.1", 18084)
        assert pub.allocator.is_free("tcp", "0.0.0.0", 18084)
        assert pub.ports_of(sb.container_id).bindings == ()

    asyncio.run(main())


def test_networks_are_isolated_and_internal_ones_stay_inside(topo: Topo) -> None:
    async def main() -> None:
        fw = Firewall(topo.host)
        # without berth's rules everything routes (so the checks below can fail)
        assert await _in_thread(_reaches, topo.c3, "10.201.1.2", 80)
        assert await _in_thread(_reaches, topo.c4, "10.201.9.2", 9000)
        try:
            for view in (BR1, BR2, BR3):
                await fw.set_network(view)
            assert not await _in_thread(_reaches, topo.c3, "10.201.1.2", 80)
            assert not await _in_thread(_reaches, topo.c1, "10.201.2.2", 80)
            assert not await _in_thread(_reaches, topo.c4, "10.201.9.2", 9000)
            assert not await _in_thread(_reaches, topo.c4, "10.201.1.2", 80)
            # the outside is still reachable from a normal network, masqueraded
            assert (await _in_thread(_tcp, topo.c1, "10.201.9.2", 9000)).startswith(
                "peer=10.201.9.1\n"
            )
            await fw.remove_network(BR2.id)
            assert await _in_thread(_reaches, topo.c3, "10.201.1.2", 80)
        finally:
            await fw.close()
        assert await _ruleset(topo) == ""

    asyncio.run(main())


def test_masquerade_follows_the_network_option(topo: Topo) -> None:
    async def main() -> None:
        fw = Firewall(topo.host)
        try:
            await fw.set_network(BR1)
            seen = await _in_thread(_tcp, topo.c1, "10.201.9.2", 9000)
            assert seen.startswith("peer=10.201.9.1\n")
            assert 'ip saddr 10.201.1.0/24 oifname != "br1" masquerade' in await _ruleset(topo)
            no_masq = NetworkView(**{**BR1.__dict__, "masquerade": False})
            await fw.set_network(no_masq)
            seen = await _in_thread(_tcp, topo.c1, "10.201.9.2", 9000)
            assert seen.startswith("peer=10.201.1.2\n")
            assert 'oifname != "br1" masquerade' not in await _ruleset(topo)
        finally:
            await fw.close()

    asyncio.run(main())


def test_a_new_firewall_with_the_same_desired_state_drops_stale_rules(topo: Topo) -> None:
    async def main() -> None:
        old = Firewall(topo.host)
        await old.set_network(BR1)
        await old.set_dnat("gone", (DnatRule("tcp", "0.0.0.0", 18090, "10.201.1.9", 80),))
        assert "dnat to 10.201.1.9:80" in await _ruleset(topo)
        # a daemon restart: a new object, rebuilt from what still exists
        new = Firewall(topo.host)
        try:
            await new.sync()
            assert await _ruleset(topo) == ""  # nothing desired yet: the stale table is gone
            await new.set_network(BR1)
            await new.set_dnat("live", (DnatRule("tcp", "0.0.0.0", 18091, "10.201.1.2", 80),))
            table = await _ruleset(topo)
            assert "10.201.1.9" not in table and "dnat to 10.201.1.2:80" in table
            assert (await _in_thread(_tcp, topo.outside, "10.201.9.1", 18091)).startswith(
                "peer=10.201.9.2\n"
            )
            await new.remove_dnat("live")
            await new.remove_network(BR1.id)
            assert await _ruleset(topo) == ""
        finally:
            await new.close()

    asyncio.run(main())


def test_a_daemon_restart_keeps_the_rules_until_the_new_one_takes_over(topo: Topo) -> None:
    async def main() -> None:
        old = _publisher(topo)
        sb = topo.sandbox(
            topo.c1,
            BR1,
            "10.201.1.2",
            PortBindings={"80/tcp": [{"HostPort": "18085"}], "81/tcp": [{"HostPort": ""}]},
        )
        await old.network_added(BR1)
        await old.sandbox_ready(sb)
        record = old.ports_of(sb.container_id).inspect_json()  # what the container's record keeps
        await old.detach()  # berthd stops; the container runs on
        # the proxy went with berthd, but DNAT still holds (not probed from H's loopback here:
        # a client there takes a source port from the range the ports below are booked from)
        seen = await _in_thread(_tcp, topo.outside, "10.201.9.1", 18085)
        assert seen == "peer=10.201.9.2\nhello"

        new = _publisher(topo)  # the next berthd re-announces, with the port now taken by 18086
        moved = topo.sandbox(
            topo.c1,
            BR1,
            "10.201.1.2",
            PortBindings={"80/tcp": [{"HostPort": "18086"}], "81/tcp": [{"HostPort": ""}]},
        )
        try:
            await new.network_added(BR1)
            new.restore(moved.container_id, PublishedPorts.from_inspect_json(record))
            await new.sandbox_ready(moved)
            assert new.ports_of(moved.container_id).inspect_json()["81/tcp"] == record["81/tcp"]
            await new.start()
            table = await _ruleset(topo)
            assert "dport 18086 dnat" in table and "18085" not in table
            seen = await _in_thread(_tcp, topo.host, "127.0.0.1", 18086)
            assert seen == "peer=10.201.1.1\nhello"
            await new.sandbox_gone(moved)
            await new.network_removed(BR1)
            assert await _ruleset(topo) == ""
        finally:
            await new.close()

    asyncio.run(main())
