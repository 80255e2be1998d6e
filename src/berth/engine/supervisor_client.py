"""Clients of the supervisor: a small sync one (tests, tools) and an asyncio one (berthd).

Both speak ``supervisor_protocol`` over the supervisor's unix socket and return its typed
values; a failed request raises the ``berth.errors`` class the supervisor answered with.
``ensure_started`` / ``ensure_started_async`` start the supervisor when its socket does not
answer: ``python -m berth.engine.supervisor --daemonize`` forks, calls setsid and forks again,
so the supervisor is in its own session and no child of the caller; the launcher exits once
the socket is served (or with the supervisor's error). Rules: one request at a time per
connection; ``wait``, ``subscribe`` and an attached ``exec`` take a connection of their own
(their answers and events come whenever a process exits or prints).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
import time

from berth.engine import supervisor_protocol as p
from berth.errors import BerthError, Unavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Iterator
    from typing import Any

START_TIMEOUT = 30.0


def _launcher(root: str, socket_path: str, log_path: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "berth.engine.supervisor",
        "--daemonize",
        "--root",
        root,
        "--socket",
        socket_path,
        "--log",
        log_path,
    ]


def answers(socket_path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def ensure_started(root: str, socket_path: str, log_path: str) -> bool:
    """Start the supervisor unless its socket answers; True if this call started it."""
    if answers(socket_path):
        return False
    proc = subprocess.run(
        _launcher(root, socket_path, log_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=START_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0 and not answers(socket_path):  # (lost a race to another starter?)
        why = proc.stderr.decode(errors="replace").strip()
        raise Unavailable(f"supervisor for {root} did not start: {why} (see {log_path})")
    return True


async def ensure_started_async(root: str, socket_path: str, log_path: str) -> bool:
    if answers(socket_path):
        return False
    proc = await asyncio.create_subprocess_exec(
        *_launcher(root, socket_path, log_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    if proc.returncode != 0 and not answers(socket_path):
        why = err.decode(errors="replace").strip()
        raise Unavailable(f"supervisor for {root} did not start: {why} (see {log_path})")
    return True


STDIN_CHUNK = 256 * 1024  # base64 makes it 342 KiB: well under the supervisor's line limit


def _stdin_requests(
    container_id: str, data: bytes, eof: bool, exec_id: str = ""
) -> list[p.WriteStdin]:
    chunks = [data[i : i + STDIN_CHUNK] for i in range(0, len(data), STDIN_CHUNK)] or [b""]
    return [
        p.WriteStdin.of(container_id, chunk, eof and i == len(chunks) - 1, exec_id)
        for i, chunk in enumerate(chunks)
    ]


def exec_event(body: dict[str, Any]) -> tuple[str, bytes] | int | None:
    """An attached exec's event line: (stream, data), its exit code, or None (not one)."""
    if body.get("event") == "exec_output":
        return str(body["stream"]), base64.b64decode(body["data"])
    if body.get("event") == "exec_exit":
        return int(body["exit_code"])
    return None


def _info_list(result: dict[str, Any]) -> list[p.Info]:
    return [p.Info.from_json(c) for c in result.get("containers", [])]


# --------------------------------------------------------------------------- sync


class Client:
    """One connection to the supervisor; not thread-safe."""

    def __init__(self, socket_path: str, timeout: float | None = None) -> None:
        self.socket_path = socket_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(socket_path)
        except OSError as exc:
            self.sock.close()
            raise Unavailable(f"supervisor at {socket_path}: {exc.strerror or exc}") from None
        self.sock.settimeout(timeout)
        self._file = self.sock.makefile("rb")
        self._seq = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def _line(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise Unavailable(f"supervisor at {self.socket_path} closed the connection")
        return p.decode_reply(line)

    def request(self, req: p.Request) -> dict[str, Any]:
        self._seq += 1
        self.sock.sendall(p.encode_request(req, self._seq))
        while True:
            body = self._line()
            if body.get("seq") == self._seq:
                result: dict[str, Any] = body.get("result") or {}
                return result

    def create(
        self,
        container_id: str,
        bundle: str,
        log_path: str,
        *,
        start: bool = True,
        stdin: bool = False,
    ) -> p.Info:
        req = p.Create(container_id, bundle, log_path, start=start, stdin=stdin)
        return p.Info.from_json(self.request(req))

    def start(self, container_id: str) -> p.Info:
        return p.Info.from_json(self.request(p.Start(container_id)))

    def kill(
        self, container_id: str, signal: int = 15, all: bool = False, exec_id: str = ""
    ) -> None:
        self.request(p.Kill(container_id, signal, all, exec_id))

    def delete(self, container_id: str, force: bool = False) -> None:
        self.request(p.Delete(container_id, force))

    def state(self, container_id: str) -> p.Info:
        return p.Info.from_json(self.request(p.StateOf(container_id)))

    def list(self) -> list[p.Info]:
        return _info_list(self.request(p.List()))

    def wait(self, container_id: str) -> p.Exit:
        """The container's exit, once it has exited (at once if it has)."""
        return p.Exit.from_json(self.request(p.Wait(container_id)))

    def write_stdin(
        self, container_id: str, data: bytes, eof: bool = False, exec_id: str = ""
    ) -> None:
        for req in _stdin_requests(container_id, data, eof, exec_id):
            self.request(req)

    def resize(self, container_id: str, height: int, width: int, exec_id: str = "") -> None:
        self.request(p.Resize(container_id, height, width, exec_id))

    def exec(
        self,
        container_id: str,
        exec_id: str,
        process: dict[str, Any],
        *,
        stdin: bool = False,
        attach: bool = False,
    ) -> int:
        """Start an exec; its pid. With ``attach`` read its events with ``exec_events``."""
        req = p.Exec(container_id, exec_id, process, stdin, attach)
        return int(self.request(req)["pid"])

    def exec_events(self) -> Iterator[tuple[str, bytes] | int]:
        """The attached exec's output, then its exit code (and the iteration ends)."""
        while True:
            event = exec_event(self._line())
            if event is not None:
                yield event
                if isinstance(event, int):
                    return

    def exec_state(self, container_id: str, exec_id: str) -> dict[str, Any]:
        return self.request(p.ExecState(container_id, exec_id))

    def shutdown(self) -> None:
        """Stop the supervisor (its containers keep running) and wait until it is gone."""
        self.request(p.Shutdown())
        deadline = time.monotonic() + START_TIMEOUT
        while answers(self.socket_path):
            if time.monotonic() > deadline:
                raise BerthError(f"supervisor at {self.socket_path} did not stop")
            time.sleep(0.01)

    def restart(self) -> None:
        """Restart the supervisor in place (same pid: containers stay its children); this
        connection is closed by it."""
        self.request(p.Restart())
        self.close()

    def subscribe(self) -> Iterator[p.Exit]:
        """Every container exit from now on, as it happens (this connection is used up)."""
        self.request(p.Subscribe())
        while True:
            body = self._line()
            if body.get("event") == "exit":
                yield p.Exit.from_json(body["exit"])


# --------------------------------------------------------------------------- asyncio


class AsyncClient:
    """For berthd: one shared connection for quick requests, serialised by a lock; ``wait``
    and ``subscribe`` open their own."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._seq = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(self.socket_path, limit=p.LOG_LINE_MAX * 64)
        except OSError as exc:
            raise Unavailable(f"supervisor at {self.socket_path}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        if self._conn is not None:
            _, writer = self._conn
            self._conn = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: p.Request
    ) -> dict[str, Any]:
        self._seq += 1
        seq = self._seq
        writer.write(p.encode_request(req, seq))
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise Unavailable(f"supervisor at {self.socket_path} closed the connection")
            body = p.decode_reply(line, seq)  # answers to abandoned requests are skipped
            if body.get("seq") == seq:
                result: dict[str, Any] = body.get("result") or {}
                return result

    async def request(self, req: p.Request) -> dict[str, Any]:
        async with self._lock:
            if self._conn is None:
                self._conn = await self._open()
            try:
                return await self._exchange(*self._conn, req)
            except BerthError as e:
                if isinstance(e, Unavailable):
                    self._drop()
                raise
            except BaseException:  # OSError, or cancelled mid-exchange: its answer is pending
                self._drop()
                raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()

    async def create(
        self,
        container_id: str,
        bundle: str,
        log_path: str,
        *,
        start: bool = True,
        stdin: bool = False,
    ) -> p.Info:
        req = p.Create(container_id, bundle, log_path, start=start, stdin=stdin)
        return p.Info.from_json(await self.request(req))

    async def start(self, container_id: str) -> p.Info:
        return p.Info.from_json(await self.request(p.Start(container_id)))

    async def kill(
        self, container_id: str, signal: int = 15, all: bool = False, exec_id: str = ""
    ) -> None:
        await self.request(p.Kill(container_id, signal, all, exec_id))

    async def delete(self, container_id: str, force: bool = False) -> None:
        await self.request(p.Delete(container_id, force))

    async def state(self, container_id: str) -> p.Info:
        return p.Info.from_json(await self.request(p.StateOf(container_id)))

    async def list(self) -> list[p.Info]:
        return _info_list(await self.request(p.List()))

    async def write_stdin(
        self, container_id: str, data: bytes, eof: bool = False, exec_id: str = ""
    ) -> None:
        for req in _stdin_requests(container_id, data, eof, exec_id):
            await self.request(req)

    async def resize(self, container_id: str, height: int, width: int, exec_id: str = "") -> None:
        await self.request(p.Resize(container_id, height, width, exec_id))

    async def exec_state(self, container_id: str, exec_id: str) -> dict[str, Any]:
        return await self.request(p.ExecState(container_id, exec_id))

    async def exec_detached(
        self, container_id: str, exec_id: str, process: dict[str, Any], stdin: bool = False
    ) -> int:
        """Start an exec whose output nobody reads; its pid."""
        req = p.Exec(container_id, exec_id, process, stdin, attach=False)
        return int((await self.request(req))["pid"])

    async def exec_attached(
        self, container_id: str, exec_id: str, process: dict[str, Any], stdin: bool = False
    ) -> AsyncGenerator[tuple[str, bytes] | int, None]:
        """Start an exec on a connection of its own; yields ``{"pid"}``'s pid first (an int
        is also how the exit code comes, last), then (stream, data) as it prints, then its
        exit code. A failed start raises before anything is yielded."""
        reader, writer = await self._open()
        try:
            req = p.Exec(container_id, exec_id, process, stdin, attach=True)
            result = await self._exchange(reader, writer, req)
            yield int(result["pid"])
            while True:
                line = await reader.readline()
                if not line:
                    raise Unavailable(f"supervisor at {self.socket_path} closed the connection")
                event = exec_event(p.decode_reply(line))
                if event is not None:
                    yield event
                    if isinstance(event, int):
                        return
        finally:
            writer.close()

    async def wait(self, container_id: str) -> p.Exit:
        reader, writer = await self._open()
        try:
            return p.Exit.from_json(await self._exchange(reader, writer, p.Wait(container_id)))
        finally:
            writer.close()

    async def subscribe(self) -> AsyncIterator[p.Exit]:
        reader, writer = await self._open()
        try:
            await self._exchange(reader, writer, p.Subscribe())
            while True:
                line = await reader.readline()
                if not line:
                    raise Unavailable(f"supervisor at {self.socket_path} closed the connection")
                body = p.decode_reply(line)
                if body.get("event") == "exit":
                    yield p.Exit.from_json(body["exit"])
        finally:
            writer.close()
