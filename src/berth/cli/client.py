"""A small HTTP/1.1 client for the Docker Engine API over a unix socket.

Rules:
- Stdlib only and light (no http.client, no email parser): ``berth ps`` must start in well
  under 150 ms, and this module is on every command's path.
- One keep-alive connection per ``Client`` for plain calls; a hijacked call (attach, exec
  start) and every streamed call get their own connection, closed when done. A call that
  finds the kept connection closed by the daemon (idle too long, e.g. during a long ``exec``
  session) is sent once more on a new connection, unless its body was a stream.
- The API version is negotiated once per client, as the docker CLI does: ``HEAD /_ping``,
  then every path is ``/v{min(ours, the daemon's)}/...``.
- A daemon that cannot be reached raises ``DaemonUnreachable`` naming the socket URL; an
  error status raises ``ApiError`` with the daemon's ``message`` text and the status.
- With ``debug`` each request and its status is logged on stderr.
- Query values: ``True`` is sent as ``1`` (what the docker CLI sends), ``False`` and ``None``
  are left out, lists repeat the key.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

API_VERSION = "1.43"
DEFAULT_SOCKET = "/run/berth/berth.sock"
USER_AGENT = "Berth-Client/0.1.0 (linux)"

Query = Mapping[str, Any]


class DaemonUnreachable(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Cannot connect to the Berth daemon at {url}. Is berthd running?")
        self.url = url
        self.reason = reason


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def socket_path(host: str) -> str:
    """The socket path of a ``unix://PATH`` host (or a bare path)."""
    if host.startswith("unix://"):
        return host[len("unix://") :]
    if "://" in host:
        scheme = host.split("://", 1)[0]
        raise ValueError(f"unsupported host {host!r}: only unix:// sockets ({scheme}:// is not)")
    return host


def encode_query(query: Query | None) -> str:
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None or value is False:
            continue
        if value is True:
            pairs.append((key, "1"))
        elif isinstance(value, list | tuple):
            pairs.extend((key, str(v)) for v in value)
        elif isinstance(value, dict):
            pairs.append((key, json.dumps(value, separators=(",", ":"))))
        else:
            pairs.append((key, str(value)))
    return "?" + urlencode(pairs) if pairs else ""


class Response:
    """Status, headers (lower-case names) and a body read on demand from the connection."""

    def __init__(self, status: int, reason: str, headers: dict[str, str], conn: Connection):
        self.status = status
        self.reason = reason
        self.headers = headers
        self._conn = conn
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._remaining = int(length) if length is not None else -1
        self._chunk_left = 0
        self.done = status in (101, 204, 304) or self._remaining == 0

    def read_some(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        if self.done:
            return b""
        reader = self._conn.reader
        if self._chunked:
            if self._chunk_left == 0:
                size_line = reader.readline()
                if not size_line:
                    self.done = True
                    return b""
                self._chunk_left = int(size_line.split(b";")[0].strip() or b"0", 16)
                if self._chunk_left == 0:
                    while reader.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.done = True
                    return b""
            data = reader.read1(self._chunk_left)
            if not data:
                self.done = True
                return b""
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                reader.readline()
            return data
        if self._remaining >= 0:
            data = reader.read1(min(self._remaining, 65536)) if self._remaining else b""
            self._remaining -= len(data)
            if not data or self._remaining == 0:
                self.done = True
            return data
        data = reader.read1(65536)  # until the server closes
        if not data:
            self.done = True
        return data

    def read(self) -> bytes:
        parts = []
        while piece := self.read_some():
            parts.append(piece)
        return b"".join(parts)

    def json(self) -> Any:
        body = self.read()
        return json.loads(body) if body else None

    def json_lines(self) -> Iterator[Any]:
        """The objects of a streamed JSON body (newline-delimited or just concatenated)."""
        decoder = json.JSONDecoder()
        buffer = ""
        while piece := self.read_some():
            buffer += piece.decode("utf-8", "replace")
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    obj, end = decoder.raw_decode(buffer)
                except ValueError:
                    break  # incomplete: wait for more
                buffer = buffer[end:]
                yield obj
        if buffer.strip():
            yield json.loads(buffer)


class Connection:
    def __init__(self, path: str, url: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise DaemonUnreachable(url, str(e)) from e
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: berth", f"User-Agent: {USER_AGENT}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        chunks: Iterator[bytes] | None = None
        payload = b""
        if isinstance(body, bytes):
            payload = body
            lines.append(f"Content-Length: {len(payload)}")
        elif body is not None and not isinstance(body, dict | list) and hasattr(body, "__iter__"):
            chunks = iter(body)
            lines.append("Transfer-Encoding: chunked")
        elif body is not None:
            payload = json.dumps(body).encode()
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(payload)}")
        elif method in ("POST", "PUT"):
            lines.append("Content-Length: 0")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        if chunks is not None:
            for chunk in chunks:
                if chunk:
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.sock.sendall(b"0\r\n\r\n")

    def response(self) -> Response:
        status_line = self.reader.readline()
        if not status_line:
            raise ConnectionError("the daemon closed the connection")
        parts = status_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        reason = parts[2].strip() if len(parts) > 2 else ""
        return Response(int(parts[1]), reason, headers, self)


class Client:
    def __init__(self, host: str | None = None, debug: bool = False) -> None:
        self.debug = debug
        self.url = host or f"unix://{DEFAULT_SOCKET}"
        if "://" not in self.url:
            self.url = "unix://" + self.url
        self.path = socket_path(self.url)
        self._conn: Connection | None = None
        self._version: str | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ plumbing

    def connect(self) -> Connection:
        return Connection(self.path, self.url)

    def ping(self) -> Response:
        conn = self._shared()
        conn.send("HEAD", "/_ping", {}, None)
        response = conn.response()
        response.done = True  # a HEAD response has no body, whatever its Content-Length says
        return response

    @property
    def version(self) -> str:
        if self._version is None:
            theirs = self.ping().headers.get("api-version", "1.24")
            try:
                older = tuple(map(int, theirs.split("."))) < tuple(map(int, API_VERSION.split(".")))
            except ValueError:
                older = False
            self._version = theirs if older else API_VERSION
        return self._version

    def _log(self, method: str, target: str, status: int) -> None:
        if self.debug:
            sys.stderr.write(f"DEBU[berth] {method} {self.url}{target} -> {status}\n")

    def _shared(self) -> Connection:
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def url_path(self, path: str, query: Query | None = None) -> str:
        return f"/v{self.version}{quote(path, safe='/:@')}{encode_query(query)}"

    def open(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        own_connection: bool = False,
    ) -> Response:
        """Send a request and return its response with the body unread; errors raise."""
        target = self.url_path(path, query)
        resendable = body is None or isinstance(body, bytes | dict | list)
        for attempt in (1, 2):
            reused = not own_connection and self._conn is not None
            conn = self.connect() if own_connection else self._shared()
            try:
                conn.send(method, target, headers or {}, body)
                response = conn.response()
                break
            except (ConnectionError, BrokenPipeError) as e:
                conn.close()
                if not own_connection:
                    self._conn = None
                if not (reused and resendable and attempt == 1):
                    raise DaemonUnreachable(self.url, str(e)) from e
                # the daemon closed our idle keep-alive connection: once more on a new one
        self._log(method, target, response.status)
        if response.status >= 400:
            raise ApiError(response.status, error_message(response))
        return response

    # ------------------------------------------------------------------ helpers

    def call(self, method: str, path: str, query: Query | None = None, body: Any = None) -> Any:
        """A plain call: the decoded JSON body (None when empty)."""
        response = self.open(method, path, query, body)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        data = response.read()
        try:
            return json.loads(data) if data else None
        except ValueError:
            return data.decode("utf-8", "replace")

    def get(self, path: str, query: Query | None = None) -> Any:
        return self.call("GET", path, query)

    def post(self, path: str, query: Query | None = None, body: Any = None) -> Any:
        return self.call("POST", path, query, body)

    def stream(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A call on its own connection whose body the caller reads as it arrives."""
        return self.open(method, path, query, body, headers, own_connection=True)

    def hijack(self, path: str, query: Query | None = None, body: Any = None) -> Connection:
        """Upgrade a call to a raw stream (attach, exec start): the connection, after the 101."""
        conn = self.connect()
        headers = {"Connection": "Upgrade", "Upgrade": "tcp"}
        target = self.url_path(path, query)
        conn.send("POST", target, headers, body)
        response = conn.response()
        self._log("POST", target, response.status)
        if response.status >= 400:
            message = error_message(response)
            conn.close()
            raise ApiError(response.status, message)
        if response.status != 101:
            conn.close()
            raise ApiError(response.status, f"unable to upgrade to tcp, received {response.status}")
        return conn


def error_message(response: Response) -> str:
    body = response.read()
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip() or f"{response.status} {response.reason}"
    if isinstance(doc, dict) and "message" in doc:
        return str(doc["message"])
    return body.decode("utf-8", "replace").strip()


def host_from_environment(flag: str | None) -> str | None:
    """``-H`` first, then ``BERTH_HOST``, then ``DOCKER_HOST`` (when it names a unix socket)."""
    if flag:
        return flag
    if host := os.environ.get("BERTH_HOST"):
        return host
    docker_host = os.environ.get("DOCKER_HOST", "")
    return docker_host if docker_host.startswith("unix://") else None
