"""A recording stand-in for the Docker Engine API on a unix socket, for CLI tests.

It answers ``/_ping`` with an ``Api-Version`` (1.43 unless told), records every request
(method, path without the version prefix, query, JSON body) and answers each from a table of
canned replies the test fills: ``replies[(method, path)] = (status, document)``. Anything not
in the table is ``404 {"message": "page not found"}``. It lets the docker CLI and ``berth``
be run against the same daemon so that what each sends, and what each prints from the same
answers, can be compared byte for byte, with no root and no real daemon.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeDaemon:
    socket_path: Path
    api_version: str = "1.43"
    replies: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _server: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.socket_path))
        server.listen(16)
        self._server = server
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def _accept(self) -> None:
        assert self._server is not None
        server = self._server
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = reader.read(int(headers.get("content-length", "0")))
                url = urlsplit(target)
                path = url.path
                if path.startswith("/v1."):
                    path = "/" + path.split("/", 2)[2]
                if path == "/_ping":
                    body = b"OK" if method == "GET" else b""
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nApi-Version: " + self.api_version.encode()
                        + b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n" + body
                    )  # fmt: skip
                    continue
                self.requests.append(
                    Request(method, path, parse_qs(url.query), json.loads(raw) if raw else None)
                )
                status, doc = self.replies.get((method, path), (404, {"message": "page not found"}))
                data = b"" if status == 204 else json.dumps(doc).encode()
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
