"""The embedded DNS server of user-defined networks at 127.0.0.11, as dockerd's: containers
reach each other by container name and network alias, other names go to upstream resolvers.
Rules:
- Per attached sandbox, a UDP and a TCP listener on 127.0.0.11:53 made in its pinned namespace
  (``netns``) and served from berthd's loop. A sandbox is attached while it has an endpoint on
  a user-defined network (``sandbox_ready`` makes it so, idempotently); ``sandbox_gone`` and
  ``close`` close its sockets and its clients' connections.
- Answered here, as dockerd: A (the IPv4 addresses of ``lookup(container_id, qname)``, qname
  lower-case without the final dot; shuffled for round robin; TTL 600), AAAA (its IPv6 ones; a
  name with IPv4 ones only: NOERROR, no answer), MX of a known name (NOERROR, no answer). A
  name ``lookup`` does not know (None) or knows with no address ([]) is not among dockerd's
  records either: forwarded, as everything else is (PTR too: ``lookup`` maps names only).
- Forwarding, from berthd's namespace (the host's loopback resolvers work): the client's bytes
  under a fresh random id, over UDP; a truncated answer is asked again over TCP for a TCP
  client, relayed to a UDP one (which asks again over TCP). Only an answer with our id and the
  question counts; it goes back as received (over TCP: as dnspython reads it) with the client's
  id. Upstreams in order, ``timeout`` seconds each; SERVFAIL/REFUSED: the next; none left:
  SERVFAIL. At most ``MAX_FORWARDS`` at once (more wait ``timeout``, then REFUSED), as dockerd.
- Upstreams: the container's HostConfig.Dns if set, else the constructor's, else the host's
  resolv.conf nameservers (read at each attach).
- Not a query: dropped (a TCP connection closed); several questions: FORMERR; an opcode other
  than QUERY: NOTIMP. Our answers fit the client's size (UDP: 512 or its EDNS payload) or go
  truncated (TC). The loop never blocks: namespace sockets are made by ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.message import Message

from berth.engine import netns
from berth.engine.network_hooks import NetworkView, SandboxView
from berth.errors import FailedPrecondition

log = logging.getLogger(__name__)

NAMESERVER = "127.0.0.11"
DNS_PORT = 53
ANSWER_TTL = 600  # seconds, as dockerd
UPSTREAM_TIMEOUT = 4.0  # seconds per upstream, as dockerd's extIOTimeout
MAX_FORWARDS = 1024  # forwarded queries in flight, as dockerd's maxConcurrent
MAX_PENDING = 4096  # queries in progress per sandbox past which new UDP ones are dropped
TCP_IDLE = 10.0  # seconds a client's TCP connection may stay silent
UDP_MIN_SIZE, TCP_MAX_SIZE = 512, 65535
UDP_BUFFER = 4 << 20  # receive buffer of a listener: ~5000 queries waiting
_SO_RCVBUFFORCE = 33  # Linux; not in Python 3.11's socket module
_NEXT_UPSTREAM = (dns.rcode.SERVFAIL, dns.rcode.REFUSED)
# Types answered here, with the IP version of their addresses (MX: none, an empty answer).
_LOCAL_TYPES = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6, dns.rdatatype.MX: -1}


def parse_query(wire: bytes) -> Message | None:
    """The query in ``wire``, or None for anything to drop (garbage, a response)."""
    try:
        message = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return None
    return None if message.flags & dns.flags.QR else message


def client_limit(query: Message, tcp: bool) -> int:
    """The largest answer the client takes: 64 KiB over TCP, else its EDNS payload or 512."""
    if tcp:
        return TCP_MAX_SIZE
    return max(UDP_MIN_SIZE, query.payload) if query.edns >= 0 else UDP_MIN_SIZE


def reply(query: Message, rcode: dns.rcode.Rcode) -> Message:
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(rcode)
    return response


def render(response: Message, limit: int) -> bytes:
    """Wire form, truncated (TC set, whole RRsets dropped) to fit ``limit``."""
    return response.to_wire(max_size=limit, prefer_truncation=True)


def lookup_name(name: dns.name.Name) -> str | None:
    """The name as ``lookup`` takes it (lower case, no final dot); None for the root."""
    return None if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def local_answer(query: Message, addresses: list[str] | None) -> Message | None:
    """The answer to ``query`` (one question) from the ``addresses`` berthd knows for its name,
    or None when it is to be forwarded."""
    question = query.question[0]
    version = _LOCAL_TYPES.get(question.rdtype, 0)
    if not addresses or question.rdclass != dns.rdataclass.IN or version == 0:
        return None
    chosen = [a for a in addresses if ipaddress.ip_address(a).version == version]
    random.shuffle(chosen)  # round robin, as dockerd's shuffleAddr
    response = reply(query, dns.rcode.NOERROR)
    if chosen:
        rrset = dns.rrset.from_text_list(question.name, ANSWER_TTL, "IN", question.rdtype, chosen)
        response.answer.append(rrset)
    return response


def with_id(wire: bytes, message_id: int) -> bytes:
    return message_id.to_bytes(2, "big") + wire[2:]


def answers(wire: bytes, query: Message, message_id: int) -> bool:
    """Whether ``wire`` responds to ``query`` sent as ``message_id``: that id, QR set, the same
    question (an error with no question counts too)."""
    try:
        head = dns.message.from_wire(wire, question_only=True)
    except (dns.exception.DNSException, ValueError):
        return False
    same = head.question == query.question or (not head.question and head.rcode() != 0)
    return head.id == message_id and bool(head.flags & dns.flags.QR) and same


def nameservers(resolv_conf_text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf, in order."""
    lines = (line.split() for line in resolv_conf_text.splitlines())
    return [f[1] for f in lines if len(f) >= 2 and f[0] == "nameserver"]


def valid_upstreams(texts: Sequence[str], origin: str) -> list[str]:
    """The IP addresses among ``texts`` (each asked on port 53); the others are logged."""
    valid = []
    for text in texts:
        try:
            valid.append(str(ipaddress.ip_address(text.strip())))
        except ValueError as e:
            log.warning("embedded DNS: upstream %r from %s skipped: %s", text, origin, e)
    return valid


async def exchange_udp(where: str, wire: bytes, query: Message, message_id: int) -> bytes | None:
    """One UDP round trip (the caller bounds its time); None if the upstream refused it."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in where else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect((where, DNS_PORT))  # only its datagrams reach this socket
            await loop.sock_sendall(sock, wire)
            while not answers(data := await loop.sock_recv(sock, TCP_MAX_SIZE), query, message_id):
                pass  # a stray or forged datagram: wait on
            return data
        except OSError as e:  # ECONNREFUSED (ICMP port unreachable), no route...
            log.debug("embedded DNS: udp to %s: %s", where, e)
            return None


def _listeners() -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on 127.0.0.11:53 of the calling thread's namespace."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Room for bursts (the loop reads one datagram per turn): past rmem_max as root.
        with contextlib.suppress(OSError):
            udp.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, UDP_BUFFER)
        udp.bind((NAMESERVER, DNS_PORT))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAITs
        tcp.bind((NAMESERVER, DNS_PORT))
        tcp.listen(128)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


class _Listener(asyncio.DatagramProtocol):
    """One sandbox's listeners (the UDP protocol and the TCP server), and its queries."""

    def __init__(self, owner: EmbeddedDNS, sandbox: SandboxView, upstreams: list[str]):
        self.owner, self.upstreams = owner, upstreams
        self.container_id, self.netns_path = sandbox.container_id, sandbox.netns_path
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_closed = asyncio.get_running_loop().create_future()
        self.tcp: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections: set[asyncio.StreamWriter] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.udp_closed.done():
            self.udp_closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.tasks) < MAX_PENDING:
            task = asyncio.ensure_future(self._answer_udp(data, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)  # asyncio logs what it raised

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        response = await self.owner._resolve(self, data, False)
        if response is not None and self.udp is not None and not self.udp.is_closing():
            self.udp.sendto(response, addr)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: its queries in turn until it closes or stays silent."""
        task = cast("asyncio.Task[None]", asyncio.current_task())
        self.tasks.add(task)  # cancelled on detach as the UDP ones
        self.connections.add(writer)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    wire = await reader.readexactly(
                        int.from_bytes(await reader.readexactly(2), "big")
                    )
                response = await self.owner._resolve(self, wire, True)
                if response is None:
                    break  # not DNS: hang up
                writer.write(len(response).to_bytes(2, "big") + response)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stayed silent
        finally:
            self.connections.discard(writer)
            writer.close()
            self.tasks.discard(task)

    async def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()  # the listening socket is closed now
        for writer in list(self.connections):
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.udp is not None:
            await self.udp_closed  # the socket is closed on the loop's next turn
        if self.tcp is not None:
            await self.tcp.wait_closed()


class EmbeddedDNS:
    """berthd's DNS server for containers on user-defined networks (a ``NetworkHooks``)."""

    def __init__(
        self,
        lookup: Callable[[str, str], list[str] | None],
        upstreams: Sequence[str] | None = None,
        resolv_conf: str = "/etc/resolv.conf",
        *,
        timeout: float = UPSTREAM_TIMEOUT,
    ) -> None:
        self._lookup = lookup
        self._upstreams = None if upstreams is None else valid_upstreams(upstreams, "berthd")
        self._resolv_conf = resolv_conf
        self._timeout = timeout
        self._attached: dict[str, _Listener] = {}
        self._lock = asyncio.Lock()
        self._forwards = asyncio.Semaphore(MAX_FORWARDS)
        self._closed = False

    def attached(self, container_id: str) -> bool:
        return container_id in self._attached

    async def network_added(self, network: NetworkView) -> None:
        return None  # the DNS server needs nothing per network

    async def network_removed(self, network: NetworkView) -> None:
        return None

    async def sandbox_ready(self, sandbox: SandboxView) -> None:
        async with self._lock:
            if self._closed:
                raise FailedPrecondition("the embedded DNS server is closed")
            current = self._attached.get(sandbox.container_id)
            if not any(e.network.user_defined for e in sandbox.endpoints):
                await self._detach(sandbox.container_id)
                return
            upstreams = await asyncio.to_thread(self._upstreams_for, sandbox)
            if current is not None and current.netns_path == sandbox.netns_path:
                current.upstreams = upstreams
                return
            await self._detach(sandbox.container_id)
            self._attached[sandbox.container_id] = await self._attach(sandbox, upstreams)

    async def sandbox_gone(self, sandbox: SandboxView) -> None:
        async with self._lock:
            await self._detach(sandbox.container_id)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            for container_id in list(self._attached):
                await self._detach(container_id)

    def _upstreams_for(self, sandbox: SandboxView) -> list[str]:
        if own := sandbox.host_config.get("Dns"):
            return valid_upstreams(own, f"container {sandbox.container_id} HostConfig.Dns")
        if self._upstreams is not None:
            return self._upstreams
        try:
            with open(self._resolv_conf) as f:
                return valid_upstreams(nameservers(f.read()), self._resolv_conf)
        except OSError as e:
            log.warning("embedded DNS: no upstreams: %s", e)
            return []

    async def _attach(self, sandbox: SandboxView, upstreams: list[str]) -> _Listener:
        listener, path = _Listener(self, sandbox, upstreams), sandbox.netns_path
        try:
            udp_sock, tcp_sock = await asyncio.to_thread(netns.run_in, path, _listeners)
        except OSError as e:
            where = f"{NAMESERVER}:{DNS_PORT} in {path}: {e.strerror or e}"
            raise FailedPrecondition(f"embedded DNS of {sandbox.container_id}: {where}") from e
        try:
            loop = asyncio.get_running_loop()
            await loop.create_datagram_endpoint(lambda: listener, sock=udp_sock)
            listener.tcp = await asyncio.start_server(listener.serve_tcp, sock=tcp_sock)
        except BaseException:
            await listener.close()
            udp_sock.close()  # if no transport took them
            tcp_sock.close()
            raise
        log.info("embedded DNS: %s attached in %s", sandbox.container_id, sandbox.netns_path)
        return listener

    async def _detach(self, container_id: str) -> None:
        listener = self._attached.pop(container_id, None)
        if listener is None:
            return
        try:
            await listener.close()
        except Exception:  # *_gone never raises: say so and go on
            log.exception("embedded DNS: %s: closing its listeners failed", container_id)
        log.info("embedded DNS: %s detached", container_id)

    async def _resolve(self, listener: _Listener, wire: bytes, tcp: bool) -> bytes | None:
        """The answer to the packet ``wire`` of a client, or None to drop it."""
        query = parse_query(wire)
        if query is None:
            return None
        limit = client_limit(query, tcp)
        if query.opcode() != dns.opcode.QUERY:
            return render(reply(query, dns.rcode.NOTIMP), limit)
        if len(query.question) != 1:
            return render(reply(query, dns.rcode.FORMERR), limit)
        name = lookup_name(query.question[0].name)
        if name is not None:
            try:
                local = local_answer(query, self._lookup(listener.container_id, name))
            except Exception:  # berthd's records failed us: the client hears SERVFAIL
                log.exception("embedded DNS: %s: lookup %r", listener.container_id, name)
                local = reply(query, dns.rcode.SERVFAIL)
            if local is not None:
                return render(local, limit)
        try:
            async with asyncio.timeout(self._timeout):
                await self._forwards.acquire()
        except TimeoutError:
            log.warning("embedded DNS: more than %d queries forwarded at once", MAX_FORWARDS)
            return render(reply(query, dns.rcode.REFUSED), limit)
        try:
            for where in listener.upstreams:
                answer = await self._ask(where, wire, query, tcp)
                if answer is not None and answer[3] & 0x0F not in _NEXT_UPSTREAM:
                    return with_id(answer, query.id)
        finally:
            self._forwards.release()
        return render(reply(query, dns.rcode.SERVFAIL), limit)

    async def _ask(self, where: str, wire: bytes, query: Message, tcp: bool) -> bytes | None:
        """One upstream's answer (UDP, then TCP if truncated for a TCP client), or None."""
        message_id = secrets.randbits(16)
        ours = with_id(wire, message_id)
        answer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                answer = await exchange_udp(where, ours, query, message_id)
        if answer is not None and tcp and answer[2] & 0x02:  # truncated: ask over TCP
            try:  # dnspython's client checks the id and the question
                whole = await dns.asyncquery.tcp(dns.message.from_wire(ours), where, self._timeout)
                answer = whole.to_wire()
            except (dns.exception.DNSException, OSError, EOFError) as e:
                log.debug("embedded DNS: tcp to %s: %s", where, e)  # relay the truncated one
        return answer
