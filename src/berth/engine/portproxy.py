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
- TCP: each accepted connection gets its own upstream connection (both with TCP_NODELAY:
  bytes go on as they came, as Go's proxy sends them); each direction moves bytes with
  splice(2) through a pipe of its own, zero-copy in the kernel, never through Python
  (through loopback 1.3-1.9x the throughput of an asyncio stream copy). The first
  ``THREADED_CONNECTIONS`` connections at a time get a thread per direction doing blocking
  splices (~50 us per round trip); past that a connection's pumps run on the event loop with
  non-blocking splices (~120 us), so idle connections cannot use up a pids limit. An EOF on
  one side is passed on as a half-close (``shutdown(SHUT_WR)``) and the pair closes when both
  directions ended or either side fails; a thread that cannot be started fails its
  connection, not the listener.
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
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger(__name__)

SocketFactory = Callable[[int, int], socket.socket]
PIPE_SIZE = 1 << 20  # bytes a splice(2) call moves at most (the pipe between two sockets)
F_SETPIPE_SZ = 1031  # linux/fcntl.h
_SPLICE_MOVE, _SPLICE_NONBLOCK = 1, 2
_SPLICE_FLAGS = _SPLICE_MOVE | _SPLICE_NONBLOCK
THREADED_CONNECTIONS = 64  # proxied connections at a time with two threads each (see _splice)
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


@contextlib.contextmanager
def _pipe(flags: int = 0) -> Iterator[tuple[int, int]]:
    """A pipe of ``PIPE_SIZE`` (where the kernel allows) between two splices; closed after."""
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC | flags)
    try:
        with contextlib.suppress(OSError):  # a smaller pipe only means more calls
            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, PIPE_SIZE)
        yield pipe_r, pipe_w
    finally:
        os.close(pipe_r)
        os.close(pipe_w)


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, write: bool) -> None:
    """Until ``sock`` can be read (or written, with ``write``)."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    (loop.add_writer if write else loop.add_reader)(fd, _settle, ready, None)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Move ``src``'s bytes to ``dst`` through a pipe with non-blocking splice(2) -- in the
    kernel, never through Python -- until EOF, passed on as a half-close."""
    loop = asyncio.get_running_loop()
    with _pipe(os.O_NONBLOCK) as (pipe_r, pipe_w):
        while True:
            try:
                moved = os.splice(src.fileno(), pipe_w, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await _ready(loop, src, write=False)
                continue
            if moved == 0:
                break
            while moved:  # the pipe is emptied before the next read: it never fills
                try:
                    moved -= os.splice(pipe_r, dst.fileno(), moved, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await _ready(loop, dst, write=True)
        dst.shutdown(socket.SHUT_WR)


def _pump_blocking(src: socket.socket, dst: socket.socket) -> None:
    """``_pump`` with blocking splice calls, for a thread of its own."""
    with _pipe() as (pipe_r, pipe_w):
        while moved := os.splice(src.fileno(), pipe_w, PIPE_SIZE, flags=_SPLICE_MOVE):
            while moved:
                moved -= os.splice(pipe_r, dst.fileno(), moved, flags=_SPLICE_MOVE)
        dst.shutdown(socket.SHUT_WR)


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _pump_on_thread(a: socket.socket, b: socket.socket, src: socket.socket) -> asyncio.Future[None]:
    """``_pump_blocking`` from ``src`` to the other socket on a new thread; its end (an error
    shuts both sockets down, which wakes the other direction's thread)."""
    loop = asyncio.get_running_loop()
    end: asyncio.Future[None] = loop.create_future()
    dst = b if src is a else a

    def run() -> None:
        error: BaseException | None = None
        try:
            _pump_blocking(src, dst)
        except OSError as e:
            error = e
            _shut(a, b)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(_settle, end, error)

    try:
        threading.Thread(target=run, daemon=True, name="berth-proxy").start()
    except RuntimeError as e:  # no thread to be had (a pids limit): this direction failed
        _shut(a, b)
        _settle(end, e)
    return end


async def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways with backpressure and half-close; closes both sockets. The first
    ``THREADED_CONNECTIONS`` at a time get a thread per direction (blocking splice: the lowest
    latency); past that, both directions run on the event loop (no thread per connection)."""
    for sock in (a, b):
        with contextlib.suppress(OSError):  # each write goes on as it came, as Go's proxy
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threaded = _THREADED.take()
    if threaded:
        for sock in (a, b):
            sock.setblocking(True)
        ends = [_pump_on_thread(a, b, a), _pump_on_thread(a, b, b)]
    else:
        for sock in (a, b):
            sock.setblocking(False)
        ends = [asyncio.ensure_future(_pump(a, b)), asyncio.ensure_future(_pump(b, a))]
    try:
        try:
            # One direction ending with EOF leaves the other running (half-close); an error
            # on either ends both. (asyncio.wait, unlike gather, leaves the futures be when
            # cancelled: a thread's future must stay until its thread is out.)
            done, pending = await asyncio.wait(ends, return_when=asyncio.FIRST_EXCEPTION)
            if pending and any(f.exception() is not None for f in done):
                _shut(a, b)
            await asyncio.wait(ends)
        finally:
            if not all(f.done() for f in ends):  # cancelled: wake the pumps, wait for them
                _shut(a, b)
                for f in ends:
                    if not threaded:
                        f.cancel()
                await asyncio.shield(asyncio.wait(ends))
            for f in ends:
                if not f.cancelled():
                    f.exception()  # retrieved: a reset connection is not worth a log line
    finally:
        if threaded:
            _THREADED.give()
        a.close()
        b.close()


class _Budget:
    """Proxied connections with threads now (changed on the event loop's thread alone)."""

    def __init__(self, size: int) -> None:
        self.size, self.used = size, 0

    def take(self) -> bool:
        if self.used >= self.size:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1


_THREADED = _Budget(THREADED_CONNECTIONS)


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
