"""engine.networks on the real kernel, with "berthd's namespace" a pinned namespace the test
made (``NetworkManager(host_netns=...)``), so no host interface or sysctl is touched.

Containers are records only: a sandbox is attached as a start would, and traffic is made
from sockets created inside the containers' namespaces (``netns.socket_in``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.engine import netns
from berth.engine import network_links as links
from berth.engine.api_errors import Forbidden
from berth.engine.containers_state import Record, new_id, now_rfc3339
from berth.engine.network_hooks import NetworkView, SandboxView
from berth.engine.networks import NetworkManager
from berth.engine.paths import Paths
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound
from berth.runtime.store import process_start_time

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


class Containers:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.starts: dict[str, int] = {}  # what the runtime would record of each init

    def init_start(self, cid: str) -> int | None:
        return self.starts.get(cid)

    def get(self, ref: str) -> Record:
        for rec in self.records.values():
            if ref in (rec.id, rec.name.lstrip("/")):
                return rec
        raise NotFound(f"No such container: {ref}")

    def lock_of(self, cid: str) -> asyncio.Lock:
        return self.locks.setdefault(cid, asyncio.Lock())


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_ready = False

    async def network_added(self, network: NetworkView) -> None:
        self.calls.append(("network_added", network.name))

    async def network_removed(self, network: NetworkView) -> None:
        self.calls.append(("network_removed", network.name))

    async def sandbox_ready(self, sandbox: SandboxView) -> None:
        self.calls.append(("sandbox_ready", sandbox.container_name))
        if self.fail_ready:
            raise BerthError("hook refused")

    async def sandbox_gone(self, sandbox: SandboxView) -> None:
        self.calls.append(("sandbox_gone", sandbox.container_name))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "berthd-ns")
    netns.create(path)
    try:
        yield path
    finally:
        netns.remove(path)


class World:
    def __init__(self, root: Path, host: str, ip_forward: bool = False) -> None:
        self.paths = Paths(str(root / "data"))
        self.paths.make()
        self.host = host
        self.containers = Containers()
        self.hooks = Hooks()
        self.m = NetworkManager(self.paths, host_netns=host, ip_forward=ip_forward)
        self.m.containers = self.containers
        self.m.hooks.append(self.hooks)

    def container(self, name: str, network: str = "default", ip: str = "") -> Record:
        cid = new_id()
        os.makedirs(self.paths.container(cid))
        body: dict[str, Any] = {"HostConfig": {"NetworkMode": network}}
        if ip:
            body["NetworkingConfig"] = {"EndpointsConfig": {network: {"IPAMConfig": {
                "IPv4Address": ip}}}}  # fmt: skip
        sandbox = self.m.plan(cid, body)
        rec = Record(cid, "/" + name, now_rfc3339(), "sha256:x", "busybox",
                     {"Hostname": cid[:12]}, body["HostConfig"])  # fmt: skip
        self.containers.records[cid] = rec
        self.m.write_files(sandbox, self.paths.container(cid), rec.to_json())
        self.m.register(sandbox)
        return rec

    async def start(self, rec: Record) -> None:
        await self.m.attach(rec)
        rec.state.update(Running=True, Status="running")

    async def stop(self, rec: Record) -> None:
        rec.state.update(Running=False, Status="exited")
        await self.m.release(rec.id)
        await self.m.retired(container=rec.id)  # its veths are deleted in the background

    def ip(self, rec: Record, network: str) -> str:
        return str(self.m.settings(rec)["Networks"][network]["IPAddress"])

    async def veths(self) -> list[str]:
        return [n for n in await _names(self.host) if n.startswith("veth")]


async def _names(namespace: str) -> list[str]:
    """pyroute2's sync API runs a loop of its own: never on the test's loop thread."""
    return await asyncio.to_thread(links.link_names, namespace)


def _reaches(src: str, dst: str, ip: str) -> bool:
    """A TCP connection from the namespace ``src`` to ``ip`` in ``dst``."""
    server = netns.socket_in(dst, socket.AF_INET, socket.SOCK_STREAM)
    client = netns.socket_in(src, socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind((ip, 0))
        server.listen(1)
        client.settimeout(1.0)
        try:
            client.connect((ip, server.getsockname()[1]))
        except OSError:
            return False
        return True
    finally:
        client.close()
        server.close()


def test_containers_on_a_user_network_reach_each_other_and_leave_nothing(
    tmp_path: Path, host: str
) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        assert "berth0" not in await _names(host)  # made for the first container on it
        assert w.hooks.calls == []
        net = await w.m.create({"Name": "n1", "IPAM": {"Config": [{"Subnet": "10.55.0.0/24"}]}})
        a, b = w.container("aa", "n1"), w.container("bb", "n1", ip="10.55.0.9")
        await w.start(a)
        await w.start(b)
        assert w.ip(a, "n1") == "10.55.0.2" and w.ip(b, "n1") == "10.55.0.9"
        assert await asyncio.to_thread(_reaches, w.m.pin(a.id), w.m.pin(b.id), "10.55.0.9")
        assert w.m.lookup(a.id, "bb") == ["10.55.0.9"]
        assert w.m.lookup(a.id, b.id[:12]) == ["10.55.0.9"]
        assert w.m.lookup(a.id, "bb.n1") == ["10.55.0.9"]
        assert w.m.lookup(a.id, "example.com") is None
        inside = await _names(w.m.pin(a.id))
        assert sorted(inside) == ["eth0", "lo"]
        assert w.hooks.calls[:3] == [
            ("network_added", "n1"), ("sandbox_ready", "aa"), ("sandbox_ready", "bb")
        ]  # fmt: skip
        default = w.container("df")
        await w.start(default)
        assert "berth0" in await _names(host) and ("network_added", "bridge") in w.hooks.calls
        await w.stop(default)
        hosts = (Path(w.paths.container(a.id)) / "hosts").read_text()
        assert f"10.55.0.2\t{a.id[:12]}" in hosts
        resolv = (Path(w.paths.container(a.id)) / "resolv.conf").read_text()
        assert "nameserver 127.0.0.11" in resolv and "ndots:0" in resolv
        with pytest.raises(Forbidden, match="has active endpoints"):
            await w.m.remove("n1")
        assert len(await w.veths()) == 2
        await w.stop(a)
        await w.stop(b)
        assert await w.veths() == [] and os.listdir(w.m.netns_dir) == []
        assert ("sandbox_gone", "aa") in w.hooks.calls
        await w.m.remove(net.id)
        assert net.bridge not in await _names(host)

    asyncio.run(main())


def test_bad_input_and_failed_attaches_leave_nothing(tmp_path: Path, host: str) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        await w.m.create({"Name": "n2", "IPAM": {"Config": [{"Subnet": "10.56.0.0/16"}]}})
        with pytest.raises(Forbidden, match="Pool overlaps with other one"):
            await w.m.create({"Name": "n3", "IPAM": {"Config": [{"Subnet": "10.56.3.0/24"}]}})
        with pytest.raises(NotFound, match="network nosuch not found"):
            w.container("cc", "nosuch")
        with pytest.raises(InvalidArgument, match="no configured subnet or ip-range contain"):
            w.container("cc", "n2", ip="10.57.0.1")
        first = w.container("dd", "n2", ip="10.56.0.5")
        await w.start(first)
        second = w.container("ee", "n2", ip="10.56.0.5")
        with pytest.raises(Conflict, match="Address already in use"):
            await w.start(second)
        assert len(await w.veths()) == 1 and os.listdir(w.m.netns_dir) == [first.id]
        w.hooks.fail_ready = True
        third = w.container("ff", "n2")
        with pytest.raises(BerthError, match="hook refused"):
            await w.start(third)
        assert len(await w.veths()) == 1 and os.listdir(w.m.netns_dir) == [first.id]
        w.hooks.fail_ready = False
        await w.stop(first)
        assert await w.veths() == [] and os.listdir(w.m.netns_dir) == []

    asyncio.run(main())


def test_a_restart_releases_the_stopped_and_keeps_the_running(tmp_path: Path, host: str) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        await w.m.create({"Name": "n4"})
        keep, gone = w.container("keep", "n4"), w.container("gone", "n4")
        await w.start(keep)
        await w.start(gone)
        gone.state.update(Running=False, Status="exited")  # it exited while berthd was down
        again = NetworkManager(w.paths, host_netns=host, ip_forward=False)
        again.containers = w.containers
        await again.open()
        await again.reconcile()
        assert len(await w.veths()) == 1 and os.listdir(again.netns_dir) == [keep.id]
        assert again.lookup(keep.id, "keep") == [w.ip(keep, "n4")]
        keep.state.update(Running=False, Status="exited")
        await again.release(keep.id)
        await again.retired()  # its veth is deleted in the background
        assert await w.veths() == [] and os.listdir(again.netns_dir) == []

    asyncio.run(main())


def test_two_bridges_forward_to_each_other_by_routing_alone(tmp_path: Path, host: str) -> None:
    """Without isolation rules (engine.firewall's), ip_forward=1 lets two networks talk: the
    networks module alone does not isolate them."""

    async def main() -> None:
        w = World(tmp_path, host, ip_forward=True)
        await w.m.open()
        await w.m.create({"Name": "left"})
        await w.m.create({"Name": "right"})
        a, b = w.container("la", "left"), w.container("rb", "right")
        await w.start(a)
        await w.start(b)
        forwarding = netns.run_in(host, lambda: Path("/proc/sys/net/ipv4/ip_forward").read_text())
        assert forwarding.strip() == "1"
        assert await asyncio.to_thread(_reaches, w.m.pin(a.id), w.m.pin(b.id), w.ip(b, "right"))
        await w.stop(a)
        await w.stop(b)

    asyncio.run(main())


def _has_default_route(pin: str) -> bool:
    text = netns.run_in(pin, lambda: Path("/proc/thread-self/net/route").read_text())
    return any(line.split()[1] == "00000000" for line in text.splitlines()[1:])


def test_internal_network_has_no_default_route_and_a_bridge_name_option(
    tmp_path: Path, host: str
) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        opts = {"com.docker.network.bridge.name": "brinternal"}
        await w.m.create({"Name": "int", "Internal": True, "Options": opts})
        await w.m.create({"Name": "out", "IPAM": {"Config": [{"Subnet": "10.60.0.0/24",
                          "IPRange": "10.60.0.128/25", "Gateway": "10.60.0.254"}]}})  # fmt: skip
        assert "brinternal" in await _names(host)
        a, b = w.container("ia", "int"), w.container("ob", "out")
        await w.start(a)
        await w.start(b)
        assert not await asyncio.to_thread(_has_default_route, w.m.pin(a.id))
        assert await asyncio.to_thread(_has_default_route, w.m.pin(b.id))
        assert w.ip(b, "out") == "10.60.0.129"
        assert w.m.settings(b)["Networks"]["out"]["Gateway"] == "10.60.0.254"
        await w.m.connect("int", "ob", {"Aliases": ["second"]})
        assert sorted(await _names(w.m.pin(b.id))) == ["eth0", "eth1", "lo"]
        assert w.m.lookup(a.id, "second") == [w.ip(b, "int")]
        with pytest.raises(Forbidden, match="already exists in network int"):
            await w.m.connect("int", "ob", {})
        await w.m.disconnect("out", "ob")  # the default route goes with it: int is internal
        assert sorted(await _names(w.m.pin(b.id))) == ["eth1", "lo"]
        assert not await asyncio.to_thread(_has_default_route, w.m.pin(b.id))
        await w.stop(a)
        await w.stop(b)
        assert await w.veths() == []

    asyncio.run(main())


def _gso_ipv4_max_size(namespace: str, ifname: str) -> int:
    """IFLA_GSO_IPV4_MAX_SIZE of ``ifname``, read by RTM_GETLINK (pyroute2 has no name for it)."""
    sock = netns.socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW)
    with sock:
        index = netns.run_in(namespace, lambda: socket.if_nametoindex(ifname))
        body = struct.pack("=BxHiII", 0, 0, index, 0, 0)
        sock.send(struct.pack("=IHHII", 16 + len(body), 18, 1, 1, 0) + body)  # RTM_GETLINK
        reply = sock.recv(65536)
    offset = 16 + 16  # nlmsghdr, ifinfomsg
    while offset + 4 <= len(reply):
        length, kind = struct.unpack_from("=HH", reply, offset)
        if kind == 63:
            return int(struct.unpack_from("=I", reply, offset + 4)[0])
        offset += (length + 3) & ~3
    raise AssertionError(f"no IFLA_GSO_IPV4_MAX_SIZE for {ifname}")


def test_big_tcp_sizes_both_veth_ends_of_an_opted_in_or_internal_network_only(
    tmp_path: Path, host: str
) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        with pytest.raises(InvalidArgument, match=r"io\.berth\.network\.big_tcp: 'yes'"):
            await w.m.create({"Name": "bad", "Options": {"io.berth.network.big_tcp": "yes"}})
        await w.m.create({"Name": "big", "Options": {"io.berth.network.big_tcp": "true"}})
        await w.m.create({"Name": "plain"})
        await w.m.create({"Name": "inner", "Internal": True})  # on by default: nothing leaves
        off = {"io.berth.network.big_tcp": "false"}
        await w.m.create({"Name": "inner-off", "Internal": True, "Options": off})
        a, b = w.container("ba", "big"), w.container("pb", "plain")
        c, d = w.container("ic", "inner"), w.container("id", "inner-off")
        for rec in (a, b, c, d):
            await w.start(rec)
        size = await asyncio.to_thread(_gso_ipv4_max_size, w.m.pin(a.id), "eth0")
        assert size == links.BIG_TCP_SIZE
        ends = {n: await asyncio.to_thread(_gso_ipv4_max_size, host, n) for n in await w.veths()}
        assert sorted(ends.values()) == [65536, 65536, links.BIG_TCP_SIZE, links.BIG_TCP_SIZE]
        assert await asyncio.to_thread(_gso_ipv4_max_size, w.m.pin(b.id), "eth0") == 65536
        inner = await asyncio.to_thread(_gso_ipv4_max_size, w.m.pin(c.id), "eth0")
        assert inner == links.BIG_TCP_SIZE
        assert await asyncio.to_thread(_gso_ipv4_max_size, w.m.pin(d.id), "eth0") == 65536
        for rec in (a, b, c, d):
            await w.stop(rec)
        assert await w.veths() == []

    asyncio.run(main())


def test_a_stopped_container_connected_gets_both_endpoints_at_start(
    tmp_path: Path, host: str
) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        await w.m.create({"Name": "n5"})
        rec = w.container("st", "n5")
        await w.m.connect("bridge", "st", {})
        assert w.m.settings(rec)["Networks"]["bridge"]["IPAddress"] == ""  # not started
        await w.start(rec)
        assert sorted(await _names(w.m.pin(rec.id))) == ["eth0", "eth1", "lo"]
        assert w.ip(rec, "bridge").startswith("172.17.0.")
        assert w.m.settings(rec)["IPAddress"] == w.ip(rec, "bridge")  # the default bridge's
        await w.stop(rec)
        await w.m.disconnect("bridge", "st")
        with pytest.raises(Forbidden, match="is not connected to network bridge"):
            await w.m.disconnect("bridge", "st")
        await w.m.forget(rec.id)
        assert await w.veths() == [] and os.listdir(w.m.netns_dir) == []

    asyncio.run(main())


def _init_in_new_netns() -> subprocess.Popen[bytes]:
    """A stand-in for a "none" container's init: a process in a namespace of its own."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    deadline = time.monotonic() + 5
    while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
        assert time.monotonic() < deadline, "unshare --net did not happen"
        time.sleep(0.005)
    return proc


def test_a_none_container_gets_no_pin_unless_a_container_joins_it(
    tmp_path: Path, host: str
) -> None:
    async def main() -> None:
        w = World(tmp_path, host)
        await w.m.open()
        quiet = w.container("quiet", "none")
        assert w.m.spec_namespace(w.m.sandboxes[quiet.id]) is None  # the runtime makes it
        Path(w.m.pin(quiet.id)).touch()  # a stale pin (a crash) goes at its start
        init = _init_in_new_netns()
        try:
            await w.start(quiet)
            quiet.state["Pid"] = init.pid
            start = process_start_time(init.pid)
            assert start is not None
            w.containers.starts[quiet.id] = start + 1  # another process than the one recorded
            early = w.container("ea", "container:quiet")
            with pytest.raises(Conflict, match="non running container"):
                await w.start(early)  # a reused pid never hands over its namespace
            assert os.listdir(w.m.netns_dir) == []
            w.containers.starts[quiet.id] = start
            assert os.listdir(w.m.netns_dir) == [] and await w.veths() == []
            settings = w.m.settings(quiet)
            assert settings["SandboxKey"] == f"/proc/{init.pid}/ns/net" and settings["SandboxID"]
            assert list(settings["Networks"]) == ["none"]
            assert ("sandbox_ready", "quiet") in w.hooks.calls
            with pytest.raises(InvalidArgument, match=r"private \(none\) mode"):
                await w.m.connect("bridge", "quiet", {})
            with pytest.raises(Forbidden, match="quiet already exists in network none"):
                await w.m.connect("none", "quiet", {})
            joiner = w.container("jn", "container:quiet")
            second = w.container("sc", f"container:{quiet.id}")
            assert w.m.spec_namespace(w.m.sandboxes[joiner.id]) == w.m.pin(quiet.id)
            await w.start(joiner)
            await w.start(second)
            assert os.listdir(w.m.netns_dir) == [quiet.id]
            assert os.stat(w.m.pin(quiet.id)).st_ino == os.stat(f"/proc/{init.pid}/ns/net").st_ino
            again = NetworkManager(w.paths, host_netns=host, ip_forward=False)
            again.containers = w.containers
            await again.open()
            await again.reconcile()  # berthd restarted: the running target's pin is kept
            assert os.listdir(again.netns_dir) == [quiet.id]
            await w.stop(joiner)
            await w.stop(second)
            assert os.listdir(w.m.netns_dir) == [quiet.id]  # the target's, not theirs
        finally:
            init.kill()
            init.wait()
        await w.stop(quiet)
        assert os.listdir(w.m.netns_dir) == []
        with pytest.raises(Conflict, match="non running container"):
            await w.start(joiner)
        quiet.state.update(Running=True, Pid=init.pid)  # its init is gone: nothing to pin
        with pytest.raises(Conflict, match="non running container"):
            await w.start(joiner)
        quiet.state.update(Running=False, Pid=0)
        assert os.listdir(w.m.netns_dir) == []
        for rec in (joiner, second, quiet):
            await w.m.forget(rec.id)

    asyncio.run(main())
