"""The userland proxy on loopback (no root, no namespace): half-close, large transfers, an
unreachable container, close() ending live connections, UDP flows and their idle timeout,
and a taken port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from berth.engine import portproxy
from berth.engine.portproxy import Listener, ProxyTarget, open_listener

# Each TCP case runs twice: connections with a thread per direction, and (a budget of 0)
# connections pumped on the event loop, as past THREADED_CONNECTIONS.
both_pumps = pytest.mark.parametrize("threads", [portproxy.THREADED_CONNECTIONS, 0],
                                     ids=["threads", "event-loop"])  # fmt: skip


@pytest.fixture
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    size = int(request.param)
    monkeypatch.setattr(portproxy._THREADED, "size", size)
    return size


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _backend(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _proxy(proto: str, port: int, **kw: float) -> Listener:
    return await open_listener(ProxyTarget(proto, "127.0.0.1", 0, "127.0.0.1", port), **kw)


@contextlib.asynccontextmanager
async def _proxied(handler: Handler) -> AsyncIterator[Listener]:
    """A TCP backend running ``handler`` and a proxy to it; both closed after."""
    server, port = await _backend(handler)
    proxy = await _proxy("tcp", port)
    try:
        yield proxy
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


@both_pumps
def test_tcp_half_close_passes_through_and_the_reply_still_comes(threads: int) -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.read()  # until the client's half-close arrives as EOF
            w.write(b"got " + data)
            await w.drain()
            w.close()

        async with _proxied(handler) as proxy:
            r, w = await asyncio.open_connection(*proxy.address)
            w.write(b"abc")
            w.write_eof()
            assert await r.read() == b"got abc"
            w.close()

    _run(main)


@both_pumps
def test_tcp_large_transfers_both_ways_arrive_whole(threads: int) -> None:
    payload = os.urandom(8 << 20)

    async def main() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
            w.close()

        async with _proxied(echo) as proxy:
            r, w = await asyncio.open_connection(*proxy.address)

            async def send() -> None:
                w.write(payload)
                await w.drain()
                w.write_eof()

            sender = asyncio.ensure_future(send())
            received = await r.read()
            await sender
            assert received == payload
            w.close()

    _run(main)


def test_an_unreachable_container_closes_the_client_connection() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        proxy = await _proxy("tcp", dead_port)
        try:
            r, w = await asyncio.open_connection(*proxy.address)
            assert await r.read() == b""
            w.close()
        finally:
            await proxy.close()

    _run(main)


@both_pumps
def test_close_ends_live_connections_and_frees_the_port(threads: int) -> None:
    async def main() -> None:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read()
            w.close()

        server, port = await _backend(silent)
        before = _open_fds()
        proxy = await _proxy("tcp", port)
        address = proxy.address
        r, w = await asyncio.open_connection(*address)
        w.write(b"x")
        await w.drain()
        await asyncio.sleep(0.05)
        await proxy.close()
        assert await r.read() == b""  # the proxy's side is gone
        w.close()
        await w.wait_closed()
        assert _open_fds() == before
        again = await open_listener(ProxyTarget("tcp", *address, "127.0.0.1", port))
        await again.close()  # the port was free again
        server.close()
        await server.wait_closed()

    _run(main)


def test_a_taken_port_fails_with_eaddrinuse_and_leaves_no_socket() -> None:
    async def main() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            before = _open_fds()
            with pytest.raises(OSError) as e:
                await open_listener(ProxyTarget("tcp", "127.0.0.1", taken, "127.0.0.1", 1))
            assert e.value.errno == errno.EADDRINUSE
            assert _open_fds() == before

    _run(main)


def test_udp_flows_per_client_and_the_idle_timeout() -> None:
    async def main() -> None:
        backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        backend.bind(("127.0.0.1", 0))
        backend.setblocking(False)
        loop = asyncio.get_running_loop()

        async def echo() -> None:
            while True:
                data, peer = await loop.sock_recvfrom(backend, 65536)
                await loop.sock_sendto(backend, b"%d:" % peer[1] + data, peer)

        echoing = asyncio.ensure_future(echo())
        proxy = await _proxy("udp", backend.getsockname()[1], udp_idle=0.3)
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        try:
            replies = []
            for i, c in enumerate(clients):
                c.setblocking(False)
                await loop.sock_sendto(c, b"hi%d" % i, proxy.address)
                replies.append(await asyncio.wait_for(loop.sock_recv(c, 100), 3))
            # each client has its own upstream socket (its own source port at the backend)
            ports = {r.split(b":")[0] for r in replies}
            assert len(ports) == 2
            assert [r.split(b":")[1] for r in replies] == [b"hi0", b"hi1"]
            assert proxy.flow_count == 2  # type: ignore[attr-defined]
            await asyncio.sleep(0.8)
            assert proxy.flow_count == 0  # type: ignore[attr-defined]
        finally:
            await proxy.close()
            echoing.cancel()
            for c in clients:
                c.close()
            backend.close()

    _run(main)


@both_pumps
def test_small_writes_go_on_at_once_both_ways(threads: int) -> None:
    """TCP_NODELAY on both of the proxy's sockets: an exchange of two small writes each way
    does not wait for delayed ACKs (~40 ms under Nagle)."""

    async def main() -> None:
        async def twice(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while await r.readexactly(20):
                w.write(b"a" * 10)
                await w.drain()
                w.write(b"b" * 10)
                await w.drain()

        async with _proxied(twice) as proxy:
            r, w = await asyncio.open_connection(*proxy.address)
            w.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            took = []
            for _ in range(41):
                start = asyncio.get_running_loop().time()
                w.write(b"x" * 10)
                await w.drain()
                w.write(b"y" * 10)
                await w.drain()
                assert await r.readexactly(20) == b"a" * 10 + b"b" * 10
                took.append(asyncio.get_running_loop().time() - start)
            assert sorted(took)[20] < 0.02, sorted(took)[20]
            w.close()

    _run(main)


def test_a_thread_that_cannot_start_fails_its_connection_not_the_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read(100))
            await w.drain()
            w.close()

        async with _proxied(echo) as proxy:
            with monkeypatch.context() as m:

                def refuse(self: object) -> None:
                    raise RuntimeError("can't start new thread")

                m.setattr(portproxy.threading.Thread, "start", refuse)
                r, w = await asyncio.open_connection(*proxy.address)
                assert await r.read() == b""  # closed at once, not left hanging
                w.close()
            for _ in range(200):  # the proxy's side finishes just after the client's EOF
                if portproxy._THREADED.used == 0:
                    break
                await asyncio.sleep(0.01)
            assert portproxy._THREADED.used == 0
            r, w = await asyncio.open_connection(*proxy.address)  # the next one works
            w.write(b"ping")
            assert await r.read() == b"ping"
            w.close()

    _run(main)
