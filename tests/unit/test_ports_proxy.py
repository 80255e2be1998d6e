"""The userland proxy on loopback (no root, no namespace): half-close, large transfers, an
unreachable container, close() ending live connections, UDP flows and their idle timeout,
and a taken port."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Awaitable, Callable

import pytest

from berth.engine.portproxy import Listener, ProxyTarget, open_listener


def _run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _backend(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                   ) -> tuple[asyncio.Server, int]:  # fmt: skip
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _proxy(proto: str, port: int, **kw: float) -> Listener:
    return await open_listener(ProxyTarget(proto, "127.0.0.1", 0, "127.0.0.1", port), **kw)


def test_tcp_half_close_passes_through_and_the_reply_still_comes() -> None:
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.read()  # until the client's half-close arrives as EOF
            w.write(b"got " + data)
            await w.drain()
            w.close()

        server, port = await _backend(handler)
        proxy = await _proxy("tcp", port)
        try:
            r, w = await asyncio.open_connection(*proxy.address)
            w.write(b"abc")
            w.write_eof()
            assert await r.read() == b"got abc"
            w.close()
        finally:
            await proxy.close()
            server.close()
            await server.wait_closed()

    _run(main)


def test_tcp_large_transfers_both_ways_arrive_whole() -> None:
    payload = os.urandom(8 << 20)

    async def main() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
            w.close()

        server, port = await _backend(echo)
        proxy = await _proxy("tcp", port)
        try:
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
        finally:
            await proxy.close()
            server.close()
            await server.wait_closed()

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


def test_close_ends_live_connections_and_frees_the_port() -> None:
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
