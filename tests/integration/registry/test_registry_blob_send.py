"""How the registry sends a whole blob (``server_send``: copied by a worker thread, not
sendfile) over real sockets: the bytes and headers under a slow reader, keep-alive and
pipelined requests on one connection, a client that leaves halfway, a blob file that loses
bytes while it is sent, and the requests that stay with ``web.FileResponse`` (HEAD, Range,
conditional).

Rules: one server per module; raw sockets where the test must control reading (a small
receive buffer and pauses longer than ``WAIT_MS``, so the send fills the socket and the event
loop waits for it); every blob is random, so no test sees another's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from registry_server import Server, error_code, make_image, push_blob, push_image, running, sha256

from berth.registry import server_send
from berth.registry.server import ServerConfig

BIG = 6 << 20  # several times what a socket holds: the send meets a full socket many times


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("registry")
    with running(ServerConfig(root=str(root))) as s:
        yield s


class Conn:
    """One HTTP/1.1 connection read by hand (a small receive buffer: the server fills it)."""

    def __init__(self, server: Server) -> None:
        port = int(server.url.rsplit(":", 1)[1])
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.pending = b""

    def get(self, path: str, extra: str = "") -> None:
        self.sock.sendall(self.request(path, extra))

    @staticmethod
    def request(path: str, extra: str = "") -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: registry\r\n{extra}\r\n".encode()

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the headers")
            self.pending += chunk
        raw, _, self.pending = self.pending.partition(b"\r\n\r\n")
        status, *lines = raw.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
        return int(status.split()[1]), headers

    def body(self, length: int, pause_every: int = 0, pause: float = 0.0) -> bytes:
        """Up to ``length`` bytes (fewer if the server closes), pausing as told."""
        data = bytearray(self.pending[:length])
        self.pending = self.pending[length:]
        paused_at = 0
        while len(data) < length:
            if pause_every and len(data) - paused_at >= pause_every:
                time.sleep(pause)
                paused_at = len(data)
            chunk = self.sock.recv(min(65536, length - len(data)))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def _blob(server: Server, repo: str, size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    push_blob(server, repo, data)
    return data, sha256(data)


def test_big_blob_to_a_slow_reader_then_more_on_the_same_connection(server: Server) -> None:
    _, digest = _blob(server, "send/slow", BIG)
    small, small_digest = _blob(server, "send/slow", 3000)
    head = server("HEAD", f"/v2/send/slow/blobs/{digest}")
    conn = Conn(server)
    try:
        conn.get(f"/v2/send/slow/blobs/{digest}")
        status, headers = conn.head()
        assert status == 200
        assert headers["content-length"] == str(BIG)
        assert headers["docker-content-digest"] == digest
        assert headers["content-type"] == "application/octet-stream"
        assert headers["docker-distribution-api-version"] == "registry/2.0"
        # the same validators as FileResponse gives HEAD (and conditional GETs)
        assert headers["etag"] == head.headers["ETag"]
        assert headers["last-modified"] == head.headers["Last-Modified"]
        pause = server_send.WAIT_MS / 1000 * 3  # longer than a send job waits: the loop waits
        body = conn.body(BIG, pause_every=BIG // 5, pause=pause)
        assert hashlib.sha256(body).hexdigest() == digest[7:]
        conn.get(f"/v2/send/slow/blobs/{small_digest}")  # keep-alive: nothing left over
        status, headers = conn.head()
        assert status == 200 and conn.body(3000) == small
    finally:
        conn.close()


def test_pipelined_requests_get_their_bodies_in_order(server: Server) -> None:
    big, big_digest = _blob(server, "send/pipe", BIG)
    small, small_digest = _blob(server, "send/pipe", 10)
    conn = Conn(server)
    try:
        conn.sock.sendall(
            Conn.request(f"/v2/send/pipe/blobs/{big_digest}")
            + Conn.request(f"/v2/send/pipe/blobs/{small_digest}")
            + Conn.request("/v2/")
        )
        assert conn.head()[0] == 200 and conn.body(BIG) == big
        assert conn.head()[0] == 200 and conn.body(10) == small
        status, headers = conn.head()
        assert status == 200 and conn.body(int(headers["content-length"])) == b"{}"
    finally:
        conn.close()


def _fds_of(client_port: int, blob_file: Path) -> list[str]:
    """This process's descriptors (the server is a thread of it) on the blob file or on the
    server's end of the connection from ``client_port`` (a socket and its duplicate)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == client_port:
            inodes.add(f"socket:[{fields[9]}]")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target in inodes or target == str(blob_file):
                found.append(target)
    return found


def test_client_leaving_halfway_leaves_no_descriptor_and_the_server_serves_on(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    data, digest = _blob(server, "send/gone", BIG)
    blob_file = Path(server.config.root, "content", "blobs", *digest.split(":"))
    conn = Conn(server)
    conn.get(f"/v2/send/gone/blobs/{digest}")
    assert conn.head()[0] == 200
    assert len(conn.body(BIG // 4)) == BIG // 4
    port = conn.sock.getsockname()[1]
    held = _fds_of(port, blob_file)
    assert str(blob_file) in held and len(held) >= 3  # file, socket, its duplicate
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
    deadline = time.monotonic() + 10
    try:
        conn.close()
        while _fds_of(port, blob_file) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _fds_of(port, blob_file) == []
    finally:
        conn.close()
    # a client leaving is no server error: aiohttp logs nothing (no "Error handling request")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    again = server("GET", f"/v2/send/gone/blobs/{digest}")
    assert again.status_code == 200 and again.content == data


def test_blob_file_that_loses_bytes_while_sent_drops_the_connection(server: Server) -> None:
    data, digest = _blob(server, "send/short", BIG)
    blob_file = Path(server.config.root, "content", "blobs", *digest.split(":"))
    conn = Conn(server)
    try:
        conn.get(f"/v2/send/short/blobs/{digest}")
        status, headers = conn.head()
        assert status == 200 and headers["content-length"] == str(BIG)
        os.truncate(blob_file, BIG // 2)  # the socket is full: the send has not got there yet
        received = conn.body(BIG)
        assert len(received) < BIG  # the end comes early instead of made-up or missing bytes
        assert received == data[: len(received)]
    finally:
        conn.close()
    assert server("GET", "/v2/").status_code == 200


def test_blob_whose_file_is_gone_is_blob_unknown(server: Server) -> None:
    """A manifest fetched as a blob, its content file gone (what gc racing a GET would leave):
    the open fails before anything is sent, so the answer is the spec's 404."""
    image = make_image("gone-file")
    push_image(server, "send/gone-file", image, "v1")
    Path(server.config.root, "content", "blobs", *image.digest.split(":")).unlink()
    response = server("GET", f"/v2/send/gone-file/blobs/{image.digest}")
    assert response.status_code == 404 and error_code(response) == "BLOB_UNKNOWN"


def test_head_range_and_conditional_requests_keep_their_http_answers(server: Server) -> None:
    data, digest = _blob(server, "send/http", 100_000)
    path = f"/v2/send/http/blobs/{digest}"
    full = server("GET", path)
    assert full.status_code == 200 and full.content == data
    etag = full.headers["ETag"]
    head = server("HEAD", path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == "100000" and head.headers["ETag"] == etag
    assert server("GET", path, headers={"If-None-Match": etag}).status_code == 304
    tail = server("GET", path, headers={"Range": "bytes=99000-"})
    assert tail.status_code == 206 and tail.content == data[99000:]
    assert tail.headers["Content-Range"] == "bytes 99000-99999/100000"
    old = "Thu, 01 Jan 1970 00:00:00 GMT"  # the blob changed since: the whole of it
    stale = server("GET", path, headers={"If-Range": old, "Range": "bytes=0-9"})
    assert stale.status_code == 200 and stale.content == data


def test_more_concurrent_sends_than_worker_threads(server: Server) -> None:
    """Each send job gives its thread back within a slice: twelve readers, slow ones among
    them, all get their bytes while the default executor has fewer threads."""
    _, digest = _blob(server, "send/many", BIG)

    def read(i: int) -> str:
        conn = Conn(server)
        try:
            conn.get(f"/v2/send/many/blobs/{digest}")
            assert conn.head()[0] == 200
            pause = server_send.WAIT_MS / 1000 * 2 if i % 2 else 0.0
            return hashlib.sha256(conn.body(BIG, BIG // 4, pause)).hexdigest()
        finally:
            conn.close()

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(read, range(12))) == {digest[7:]}
