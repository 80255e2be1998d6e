"""The userland proxy of published ports: a listener per binding in berthd, forwarding to the
container's address. It serves what DNAT cannot (connections to the host's loopback: DNAT of
127.0.0.1 needs ``route_localnet``, a sysctl berthd leaves alone) and, by listening, holds the
host port in the kernel, so another process cannot take a published port.

Rules:
- Every socket (listener and upstream) comes from one ``SocketFactory(family, kind)``: berthd
  passes ``socket.socket``; tests pass one that makes sockets in a network namespace
  (``netns.socket_in``), and the sockets stay in it.
- ``open_listener`` binds and listens before it returns, or raises ``OSError`` with nothing left
  open (the caller words the taken-port error).
- TCP: each accepted connection gets its own upstream connection; each direction is a thread
  moving bytes with splice(2) through a pipe (zero-copy in the kernel; blocking, so
  backpressure is the sockets' own); an EOF on one side is passed on as a half-close
  (``shutdown(SHUT_WR)``) and the pair closes when both directions ended or either side
  fails. Two threads per open connection is the price: the event loop is never woken per
  chunk (through loopback: 1.3-1.9x the throughput of an asyncio stream copy, lower latency).
- UDP: one upstream socket per client address (a "flow"); replies go back from the listener to
  that client; a flow idle for ``udp_idle`` seconds is closed.
- ``close()`` stops the listener and every connection or flow it made, and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger(__name__)

SocketFactory = Callable[[int, int], socket.socket]
PIPE_SIZE = 1 << 20  # bytes a splice(2) call moves at most (the pipe between two sockets)
F_SETPIPE_SZ = 1031  # linux/fcntl.h
SPLICE_F_MOVE = 1
UDP_IDLE = 90.0  # seconds: dockerd's proxy's UDP flow timeout
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProxyTarget:
    proto: str  # "tcp" | "udp"
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int


def _family(ip: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def _listening_socket(factory: SocketFactory, target: ProxyTarget) -> socket.socket:
    family = _family(target.host_ip)
    kind = socket.SOCK_STREAM if target.proto == "tcp" else socket.SOCK_DGRAM
    sock = factory(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((target.host_ip, target.host_port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """One binding being served; ``close()`` ends it and everything it made."""

    def __init__(self, target: ProxyTarget, sock: socket.socket) -> None:
        self.target = target
        self.address: tuple[str, int] = sock.getsockname()[:2]  # where it listens
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_listening()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._end_flows()

    async def _stop_listening(self) -> None:
        raise NotImplementedError

    def _end_flows(self) -> None:
        pass


class _TcpListener(Listener):
    def __init__(self, target: ProxyTarget, sock: socket.socket, factory: SocketFactory) -> None:
        super().__init__(target, sock)
        self._sock = sock
        self._factory = factory
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(self._sock)
            except OSError as e:
                if self._closed:
                    return
                log.warning("proxy %s: accept failed: %s", self.target, e)
                await asyncio.sleep(0.1)
                continue
            self._track(self._serve(client))

    async def _serve(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        t = self.target
        upstream: socket.socket | None = None
        try:
            upstream = self._factory(_family(t.container_ip), socket.SOCK_STREAM)
            upstream.setblocking(False)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(upstream, (t.container_ip, t.container_port))
        except (OSError, TimeoutError) as e:
            log.info("proxy %s: upstream %s:%d: %s", t, t.container_ip, t.container_port, e)
            client.close()
            if upstream is not None:
                upstream.close()
            return
        await _splice(client, upstream)

    async def _stop_listening(self) -> None:
        self._accepting.cancel()
        await asyncio.gather(self._accepting, return_exceptions=True)
        self._sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Move ``src``'s bytes to ``dst`` through a pipe with splice(2), in the kernel, until
    EOF (passed on as a half-close); blocking calls, on a thread of its own."""
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a smaller pipe only means more calls
            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, PIPE_SIZE)
        while moved := os.splice(src.fileno(), pipe_w, PIPE_SIZE, flags=SPLICE_F_MOVE):
            while moved:
                moved -= os.splice(pipe_r, dst.fileno(), moved, flags=SPLICE_F_MOVE)
        dst.shutdown(socket.SHUT_WR)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


async def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways and pass half-closes on; closes both sockets. Each direction is a
    blocking splice loop on a thread of its own (the bytes never enter Python, and the event
    loop is not woken per chunk); an error on either direction, or cancellation, shuts both
    sockets down, which wakes the other thread."""
    loop = asyncio.get_running_loop()
    ends: list[asyncio.Future[None]] = []

    def run(src: socket.socket, dst: socket.socket, end: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            _pump(src, dst)
        except OSError as e:
            error = e
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(_settle, end, error)

    for sock in (a, b):
        sock.setblocking(True)
    try:
        for src, dst in ((a, b), (b, a)):
            end = loop.create_future()
            ends.append(end)
            threading.Thread(target=run, args=(src, dst, end), daemon=True,
                             name="berth-proxy").start()  # fmt: skip
        await asyncio.wait(ends)  # (unlike gather, a cancellation leaves the futures be)
    finally:
        if not all(end.done() for end in ends):  # cancelled: wake the threads, wait for them
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            await asyncio.shield(asyncio.wait(ends))
        for end in ends:
            if end.done() and not end.cancelled():
                end.exception()  # retrieved: a reset connection is not worth a log line
        a.close()
        b.close()


def _settle(end: asyncio.Future[None], error: BaseException | None) -> None:
    if end.done():
        return
    if error is None:
        end.set_result(None)
    else:
        end.set_exception(error)


class _UdpFlow(asyncio.DatagramProtocol):
    """The upstream side of one client's UDP flow."""

    def __init__(self, listener: _UdpListener, client: tuple[str, int]) -> None:
        self.listener = listener
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        self.listener.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        log.debug("proxy %s: flow %s: %s", self.listener.target, self.client, exc)

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is not None:
            self.transport.sendto(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpListener(Listener, asyncio.DatagramProtocol):
    def __init__(
        self,
        target: ProxyTarget,
        sock: socket.socket,
        factory: SocketFactory,
        idle: float = UDP_IDLE,
    ) -> None:
        Listener.__init__(self, target, sock)
        self._factory = factory
        self._idle = idle
        self._flows: dict[tuple[str, int], _UdpFlow] = {}
        self._opening: dict[tuple[str, int], list[bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._track(self._reap_idle())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        client = (addr[0], addr[1])
        flow = self._flows.get(client)
        if flow is not None:
            flow.send(data)
        elif client in self._opening:
            self._opening[client].append(data)
        elif not self._closed:
            self._opening[client] = [data]
            self._track(self._open_flow(client))

    def error_received(self, exc: Exception) -> None:
        log.debug("proxy %s: %s", self.target, exc)

    async def _open_flow(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        t = self.target
        sock = self._factory(_family(t.container_ip), socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((t.container_ip, t.container_port))
            _, flow = await loop.create_datagram_endpoint(lambda: _UdpFlow(self, client), sock=sock)
        except BaseException as e:
            sock.close()
            self._opening.pop(client, None)
            if not isinstance(e, OSError):
                raise
            log.info("proxy %s: upstream for %s: %s", t, client, e)
            return
        if self._closed:
            flow.close()
            return
        self._flows[client] = flow
        for data in self._opening.pop(client, []):
            flow.send(data)

    def reply(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(self._idle, 5.0) / 2)
            now = time.monotonic()
            for client, flow in list(self._flows.items()):
                if now - flow.last >= self._idle:
                    del self._flows[client]
                    flow.close()

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    async def _stop_listening(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _end_flows(self) -> None:
        for flow in self._flows.values():
            flow.close()
        self._flows.clear()
        self._opening.clear()


async def open_listener(
    target: ProxyTarget,
    factory: SocketFactory = socket.socket,
    udp_idle: float = UDP_IDLE,
) -> Listener:
    """Listen on ``host_ip:host_port`` and forward to the container; ``OSError`` if the bind
    fails (nothing left open)."""
    if target.proto not in ("tcp", "udp"):
        raise ValueError(f"unsupported protocol {target.proto}")
    sock = _listening_socket(factory, target)
    if target.proto == "tcp":
        return _TcpListener(target, sock, factory)
    udp = _UdpListener(target, sock, factory, udp_idle)
    try:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: udp, sock=sock)
    except BaseException:
        sock.close()
        await udp.close()
        raise
    return udp
