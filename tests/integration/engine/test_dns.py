"""engine.dns on the real kernel: the embedded DNS server in a container's network namespace.

Two namespaces the test makes stand for berthd's own (where the asyncio loop runs and from
where queries are forwarded, to fake upstream servers on its loopback, port 53) and for the
container's (where clients query 127.0.0.11). Nothing touches the host's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rrset
import pytest

from berth.engine import netns
from berth.engine.dns import EmbeddedDNS
from berth.engine.network_hooks import EndpointView, NetworkView, SandboxView
from berth.errors import FailedPrecondition

pytestmark = pytest.mark.root

T = TypeVar("T")
USER_NET = NetworkView("n1", "appnet", "br-n1", "172.18.0.0/16", "172.18.0.1")
DEFAULT_NET = NetworkView(
    "n0", "bridge", "berth0", "172.17.0.0/16", "172.17.0.1", user_defined=False
)
RECORDS = {
    "web": ["172.18.0.2"],
    "db-alias": ["172.18.0.3"],
    "pool": ["172.18.0.4", "172.18.0.5", "172.18.0.6", "172.18.0.7"],
    "dual": ["172.18.0.8", "fd00::8"],
    "stopped": [],
}
UPSTREAM_RECORDS = {
    "example.test": ["192.0.2.10"],
    "stopped": ["192.0.2.99"],
    "big.test": [f"198.51.100.{i}" for i in range(1, 61)],  # > 512 bytes
}


@dataclass
class Namespaces:
    berthd: str
    container: str
    other: str  # a second container's


@pytest.fixture
def spaces(tmp_path: Path) -> Iterator[Namespaces]:
    made: list[str] = []
    try:
        for name in ("berthd", "container", "other"):
            netns.create(str(tmp_path / name))
            made.append(str(tmp_path / name))
        yield Namespaces(*made)
    finally:
        for path in made:
            netns.remove(path)


def as_berthd(spaces: Namespaces, scenario: Callable[[], Awaitable[T]]) -> T:
    """``scenario()`` on an asyncio loop of a thread inside "berthd's" namespace."""

    async def main() -> T:
        return await scenario()

    return netns.run_in(spaces.berthd, lambda: asyncio.run(main()))


def sandbox(spaces: Namespaces, *nets: NetworkView, **host_config: Any) -> SandboxView:
    endpoints = tuple(
        EndpointView(net, f"{net.subnet.rsplit('.', 2)[0]}.0.2", 16, "02:42:ac:12:00:02")
        for net in nets
    )
    return SandboxView("c1", "web", spaces.container, endpoints, host_config=host_config)


class Lookup:
    """berthd's records as the container c1 sees them; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, container_id: str, name: str) -> list[str] | None:
        self.asked.append((container_id, name))
        if name == "broken":
            raise RuntimeError("records unavailable")
        if name == "me":
            return {"c1": ["172.18.0.2"], "c2": ["172.18.0.9"]}[container_id]
        return RECORDS.get(name)


class FakeUpstream(asyncio.DatagramProtocol):
    """A DNS server on ``host``:53 of berthd's namespace, over UDP and TCP: A records of
    UPSTREAM_RECORDS, NXDOMAIN for other names; truncates UDP answers over the client's size.
    ``rcode`` forces an answer code; ``silent`` never answers; ``delay`` waits first."""

    def __init__(self, rcode: int | None = None, silent: bool = False, delay: float = 0.0):
        self.rcode, self.silent, self.delay = rcode, silent, delay
        self.seen: list[tuple[str, int, str, str]] = []  # (proto, id, qname, source address)
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.server: asyncio.Server | None = None

    async def start(self, host: str) -> FakeUpstream:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 53))
        self.server = await asyncio.start_server(self._serve_tcp, host, 53)
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.server is not None:
            self.server.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        async def later() -> None:
            wire = await self._answer("udp", data, addr[0])
            if wire is not None and self.transport is not None:
                self.transport.sendto(wire, addr)

        task = asyncio.ensure_future(later())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            size = int.from_bytes(await reader.readexactly(2), "big")
            wire = await self._answer("tcp", await reader.readexactly(size), "")
            if wire is not None:
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        writer.close()

    async def _answer(self, proto: str, data: bytes, source: str) -> bytes | None:
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text(omit_final_dot=True).lower()
        self.seen.append((proto, query.id, name, source))
        if self.silent:
            return None
        await asyncio.sleep(self.delay)
        response = dns.message.make_response(query)
        if self.rcode is not None:
            response.set_rcode(dns.rcode.Rcode(self.rcode))
        elif name in UPSTREAM_RECORDS:
            response.answer.append(
                dns.rrset.from_text_list(
                    query.question[0].name, 30, "IN", "A", UPSTREAM_RECORDS[name]
                )
            )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        limit = 65535 if proto == "tcp" else max(512, query.payload)
        return response.to_wire(max_size=limit, prefer_truncation=True)


async def ask(
    spaces: Namespaces,
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    timeout: float = 3.0,
    query: dns.message.Message | None = None,
) -> dns.message.Message:
    """A query to 127.0.0.11 from inside the container's namespace (dnspython's client)."""
    message = query or dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp

    def inside() -> dns.message.Message:
        return send(message, "127.0.0.11", timeout=timeout)

    return await asyncio.to_thread(netns.run_in, spaces.container, inside)


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset]


def port_53_free(spaces: Namespaces) -> bool:
    """Whether UDP and TCP 127.0.0.11:53 can be bound in the container's namespace now."""

    def probe() -> bool:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.11", 53))
                    if kind == socket.SOCK_STREAM:
                        s.listen()
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        return False
                    raise
        return True

    return netns.run_in(spaces.container, probe)


def test_container_names_and_aliases_resolve_from_berthds_records(spaces: Namespaces) -> None:
    lookup = Lookup()

    async def scenario() -> None:
        server = EmbeddedDNS(lookup, upstreams=[])
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))
            web = await ask(spaces, "web")
            assert web.rcode() == dns.rcode.NOERROR and addresses(web) == ["172.18.0.2"]
            assert web.answer[0].ttl == 600 and web.flags & dns.flags.RA
            assert addresses(await ask(spaces, "db-alias")) == ["172.18.0.3"]
            assert addresses(await ask(spaces, "WEB.")) == ["172.18.0.2"]
            assert ("c1", "web") in lookup.asked and ("c1", "WEB") not in lookup.asked
            orders = {tuple(addresses(await ask(spaces, "pool"))) for _ in range(12)}
            assert len(orders) > 1 and all(sorted(o) == RECORDS["pool"] for o in orders)
            v6_none = await ask(spaces, "web", "AAAA")  # IPv4 only: NOERROR, no answer
            assert v6_none.rcode() == dns.rcode.NOERROR and not v6_none.answer
            assert addresses(await ask(spaces, "dual", "AAAA")) == ["fd00::8"]
            mx = await ask(spaces, "web", "MX")
            assert mx.rcode() == dns.rcode.NOERROR and not mx.answer
            over_tcp = await ask(spaces, "web", tcp=True)
            assert addresses(over_tcp) == ["172.18.0.2"]
            failing = await ask(spaces, "broken")  # the lookup raised: SERVFAIL, still serving
            assert failing.rcode() == dns.rcode.SERVFAIL
            assert addresses(await ask(spaces, "web")) == ["172.18.0.2"]
        finally:
            await server.close()

    as_berthd(spaces, scenario)
    assert port_53_free(spaces)


def test_other_names_are_forwarded_from_berthds_namespace(spaces: Namespaces) -> None:
    """Unknown names, known ones without an address and other types go to the upstream (the
    host's resolv.conf names it), from berthd's loopback, under another id; answers come back
    with the client's id."""

    async def scenario() -> None:
        upstream = await FakeUpstream().start("127.0.0.1")
        resolv_conf = Path(spaces.berthd).parent / "resolv.conf"
        resolv_conf.write_text("# host\nsearch example\nnameserver 127.0.0.1\noptions ndots:1\n")
        server = EmbeddedDNS(Lookup(), resolv_conf=str(resolv_conf))
        try:
            await server.sandbox_ready(sandbox(spaces, DEFAULT_NET, USER_NET))
            query = dns.message.make_query("example.test", "A")
            answer = await ask(spaces, "", query=query)
            assert answer.id == query.id and addresses(answer) == ["192.0.2.10"]
            assert answer.answer[0].ttl == 30  # relayed as the upstream said
            proto, _, name, source = upstream.seen[-1]
            assert (proto, name, source) == ("udp", "example.test", "127.0.0.1")
            missing = await ask(spaces, "nowhere.test")
            assert missing.rcode() == dns.rcode.NXDOMAIN
            assert addresses(await ask(spaces, "stopped")) == ["192.0.2.99"]
            txt = await ask(spaces, "web", "TXT")
            assert txt.rcode() == dns.rcode.NXDOMAIN and upstream.seen[-1][2] == "web"
            ids = {seen[1] for seen in upstream.seen}
            assert len(ids) == len(upstream.seen)  # a fresh id each time (1 in 65536 flakes)
        finally:
            await server.close()
            upstream.close()

    as_berthd(spaces, scenario)


def test_truncated_answers_and_tcp(spaces: Namespaces) -> None:
    """A UDP client gets the upstream's truncated answer and asks again over TCP; then berthd
    asks over UDP, sees TC and asks the upstream over TCP. Two queries on one connection."""

    async def scenario() -> None:
        upstream = await FakeUpstream().start("127.0.0.1")
        server = EmbeddedDNS(Lookup(), upstreams=["127.0.0.1"])
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))
            over_udp = await ask(spaces, "big.test")
            assert over_udp.flags & dns.flags.TC
            over_tcp = await ask(spaces, "big.test", tcp=True)
            assert not over_tcp.flags & dns.flags.TC
            assert sorted(addresses(over_tcp)) == sorted(UPSTREAM_RECORDS["big.test"])
            assert [s[0] for s in upstream.seen] == ["udp", "udp", "tcp"]

            def two_on_one_connection() -> list[dns.message.Message]:
                with socket.create_connection(("127.0.0.11", 53), timeout=3) as conn:
                    queries = [dns.message.make_query(n, "A") for n in ("web", "example.test")]
                    for q in queries:
                        dns.query.send_tcp(conn, q)
                    return [dns.query.receive_tcp(conn, time.time() + 3)[0] for _ in queries]

            both = await asyncio.to_thread(netns.run_in, spaces.container, two_on_one_connection)
            assert [addresses(m) for m in both] == [["172.18.0.2"], ["192.0.2.10"]]
        finally:
            await server.close()
            upstream.close()

    as_berthd(spaces, scenario)


def test_upstreams_down_or_failing_give_servfail_within_the_timeout(spaces: Namespaces) -> None:
    async def scenario() -> None:
        silent = await FakeUpstream(silent=True).start("127.0.0.2")
        failing = await FakeUpstream(rcode=dns.rcode.SERVFAIL).start("127.0.0.3")
        good = await FakeUpstream().start("127.0.0.4")
        # 127.0.0.5: nothing listens (ICMP port unreachable)
        server = EmbeddedDNS(Lookup(), upstreams=["127.0.0.5", "127.0.0.2"], timeout=0.5)
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))
            start = time.monotonic()
            answer = await ask(spaces, "example.test")
            took = time.monotonic() - start
            assert answer.rcode() == dns.rcode.SERVFAIL
            assert 0.45 < took < 1.5, (
                took
            )  # the refusing one fails at once, the silent one times out
            # The container's own --dns wins; SERVFAIL moves on to the next upstream.
            own = sandbox(spaces, USER_NET, Dns=["127.0.0.3", "127.0.0.4"])
            await server.sandbox_ready(own)
            assert addresses(await ask(spaces, "example.test")) == ["192.0.2.10"]
            assert failing.seen and good.seen
            # None at all: SERVFAIL at once.
            await server.sandbox_gone(own)
            empty = Path(spaces.berthd).parent / "empty.conf"
            empty.write_text("search example\n")
            nothing = EmbeddedDNS(Lookup(), resolv_conf=str(empty))
            await nothing.sandbox_ready(sandbox(spaces, USER_NET))
            try:
                assert (await ask(spaces, "example.test")).rcode() == dns.rcode.SERVFAIL
                assert addresses(await ask(spaces, "web")) == ["172.18.0.2"]
            finally:
                await nothing.close()
        finally:
            await server.close()
            for upstream in (silent, failing, good):
                upstream.close()

    as_berthd(spaces, scenario)


def test_attach_only_with_a_user_defined_network_and_detach_frees_the_port(
    spaces: Namespaces,
) -> None:
    async def scenario() -> None:
        server = EmbeddedDNS(Lookup(), upstreams=[])
        try:
            await server.sandbox_ready(sandbox(spaces, DEFAULT_NET))
            assert not server.attached("c1") and port_53_free(spaces)
            await server.sandbox_ready(sandbox(spaces, DEFAULT_NET, USER_NET))
            assert server.attached("c1") and not port_53_free(spaces)
            await server.sandbox_ready(sandbox(spaces, DEFAULT_NET, USER_NET))  # idempotent
            assert addresses(await ask(spaces, "web")) == ["172.18.0.2"]
            await server.sandbox_ready(sandbox(spaces, DEFAULT_NET))  # disconnected from it
            assert not server.attached("c1") and port_53_free(spaces)

            # Detach while a client holds a TCP connection: the connection is closed too.
            await server.sandbox_ready(sandbox(spaces, USER_NET))
            conn = await asyncio.to_thread(
                netns.run_in, spaces.container, lambda: socket.create_connection(("127.0.0.11", 53))
            )
            with conn:
                conn.settimeout(3)
                await asyncio.sleep(0.05)  # the server has accepted it
                await server.sandbox_gone(sandbox(spaces, USER_NET))
                assert await asyncio.to_thread(conn.recv, 1) == b""
            assert not server.attached("c1") and port_53_free(spaces)
            await server.sandbox_gone(sandbox(spaces, USER_NET))  # twice: nothing to do
        finally:
            await server.close()
        with pytest.raises(Exception, match="closed"):
            await server.sandbox_ready(sandbox(spaces, USER_NET))

    as_berthd(spaces, scenario)
    assert port_53_free(spaces)


def test_each_container_its_own_view_and_a_taken_port_fails_cleanly(spaces: Namespaces) -> None:
    async def scenario() -> None:
        server = EmbeddedDNS(Lookup(), upstreams=[])
        second = SandboxView("c2", "db", spaces.other, sandbox(spaces, USER_NET).endpoints)
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))
            await server.sandbox_ready(second)
            assert addresses(await ask(spaces, "me")) == ["172.18.0.2"]

            def from_other() -> dns.message.Message:
                return dns.query.udp(dns.message.make_query("me", "A"), "127.0.0.11", timeout=3)

            other = await asyncio.to_thread(netns.run_in, spaces.other, from_other)
            assert addresses(other) == ["172.18.0.9"]
            await server.sandbox_gone(second)
            assert server.attached("c1") and not server.attached("c2")

            # Something else holds 127.0.0.11:53/tcp there: the attach fails, leaves nothing.
            def hold() -> socket.socket:
                taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                taken.bind(("127.0.0.11", 53))
                taken.listen()
                return taken

            taken = await asyncio.to_thread(netns.run_in, spaces.other, hold)
            with taken, pytest.raises(FailedPrecondition, match=r"c2: 127.0.0.11:53 in .*other"):
                await server.sandbox_ready(second)
            assert not server.attached("c2")
            await server.sandbox_ready(second)  # the UDP socket of the failed try was closed
            assert addresses(await asyncio.to_thread(netns.run_in, spaces.other, from_other)) == [
                "172.18.0.9"
            ]
        finally:
            await server.close()

    as_berthd(spaces, scenario)


def test_bad_packets_are_dropped_and_odd_queries_answered(spaces: Namespaces) -> None:
    async def scenario() -> None:
        server = EmbeddedDNS(Lookup(), upstreams=[])
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))

            def garbage_then_query() -> tuple[bytes | None, bytes]:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect(("127.0.0.11", 53))
                    s.settimeout(0.3)
                    s.send(b"\x12\x34garbage")
                    try:
                        dropped: bytes | None = s.recv(512)
                    except TimeoutError:
                        dropped = None
                    s.settimeout(3)
                    s.send(dns.message.make_query("web", "A").to_wire())
                    return dropped, s.recv(512)

            dropped, answer = await asyncio.to_thread(
                netns.run_in, spaces.container, garbage_then_query
            )
            assert dropped is None
            assert addresses(dns.message.from_wire(answer)) == ["172.18.0.2"]

            def garbage_over_tcp() -> bytes:
                with socket.create_connection(("127.0.0.11", 53), timeout=3) as conn:
                    conn.sendall(b"\x00\x05abcde")
                    return conn.recv(10)

            assert await asyncio.to_thread(netns.run_in, spaces.container, garbage_over_tcp) == b""

            two = dns.message.make_query("web", "A")
            two.question.append(dns.message.make_query("db-alias", "A").question[0])
            assert (await ask(spaces, "", query=two)).rcode() == dns.rcode.FORMERR
            notify = dns.message.make_query("web", "SOA")
            notify.set_opcode(dns.opcode.NOTIFY)
            assert (await ask(spaces, "", query=notify)).rcode() == dns.rcode.NOTIMP

            # Many addresses: truncated to 512 bytes for a plain UDP client, whole over TCP.
            many = [f"172.18.1.{i}" for i in range(1, 80)]
            RECORDS["many"] = many
            try:
                assert (await ask(spaces, "many")).flags & dns.flags.TC
                with_edns = dns.message.make_query("many", "A", use_edns=0, payload=4096)
                assert len(addresses(await ask(spaces, "", query=with_edns))) == 79
                assert sorted(addresses(await ask(spaces, "many", tcp=True))) == sorted(many)
            finally:
                del RECORDS["many"]
        finally:
            await server.close()

    as_berthd(spaces, scenario)


def test_many_clients_at_once(spaces: Namespaces) -> None:
    """300 UDP queries sent together, half forwarded to an upstream that takes 0.2 s each:
    answered in about one upstream delay, not in 150 of them."""

    async def scenario() -> float:
        upstream = await FakeUpstream(delay=0.2).start("127.0.0.1")
        server = EmbeddedDNS(Lookup(), upstreams=["127.0.0.1"])
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))

            def burst() -> list[list[str]]:
                import selectors

                socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]
                try:
                    for i, s in enumerate(socks):
                        s.connect(("127.0.0.11", 53))
                        name = "web" if i % 2 else "example.test"
                        s.send(dns.message.make_query(name, "A").to_wire())
                    got: dict[int, list[str]] = {}
                    with selectors.DefaultSelector() as sel:
                        for i, s in enumerate(socks):
                            sel.register(s, selectors.EVENT_READ, i)
                        deadline = time.monotonic() + 5
                        while len(got) < len(socks) and time.monotonic() < deadline:
                            for key, _ in sel.select(0.5):
                                reply = dns.message.from_wire(key.fileobj.recv(512))  # type: ignore[union-attr]
                                got[key.data] = addresses(reply)
                                sel.unregister(key.fileobj)
                    return [got.get(i, []) for i in range(len(socks))]
                finally:
                    for s in socks:
                        s.close()

            start = time.monotonic()
            answers = await asyncio.to_thread(netns.run_in, spaces.container, burst)
            took = time.monotonic() - start
            for i, got in enumerate(answers):
                assert got == (["172.18.0.2"] if i % 2 else ["192.0.2.10"]), (i, got)
            return took
        finally:
            await server.close()
            upstream.close()

    took = as_berthd(spaces, scenario)
    assert took < 2.0, took


def test_busybox_nslookup_in_the_container(spaces: Namespaces) -> None:
    """A real client: busybox's nslookup (A and AAAA) run inside the container's namespace."""

    async def scenario() -> tuple[str, str]:
        upstream = await FakeUpstream().start("127.0.0.1")
        server = EmbeddedDNS(Lookup(), upstreams=["127.0.0.1"])
        try:
            await server.sandbox_ready(sandbox(spaces, USER_NET))

            def nslookup(name: str) -> str:
                done = subprocess.run(
                    [
                        "nsenter",
                        f"--net={spaces.container}",
                        "busybox",
                        "nslookup",
                        name,
                        "127.0.0.11",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )
                return done.stdout + done.stderr

            return (
                await asyncio.to_thread(nslookup, "db-alias"),
                await asyncio.to_thread(nslookup, "example.test"),
            )
        finally:
            await server.close()
            upstream.close()

    alias, forwarded = as_berthd(spaces, scenario)
    assert "Address: 172.18.0.3" in alias, alias
    assert "Address: 192.0.2.10" in forwarded, forwarded
