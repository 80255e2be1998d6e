"""The json-file log the supervisor writes for each container, as dockerd's json-file driver.

Rules:
- One ``{"log","stream","time"}`` object per line, ``time`` in RFC 3339 with nanoseconds; a line
  longer than ``supervisor_protocol.LOG_LINE_MAX`` (16 KiB) is split as dockerd splits it, and a
  partial line waits in ``partial`` until its newline, ``flush`` (at exit) or a hand-over.
- The file is opened O_APPEND and written with whole entries, never read here; ``sync`` is
  called before the exit is recorded, so a reader who sees ``exit.json`` finds every line.
- No selectors, no fds but its own: the supervisor feeds it what it read from the pipes.
"""

from __future__ import annotations

import os

from berth.engine import supervisor_protocol as p
from berth.runtime import store
from berth.spec import jsonio

now = store.now


class JsonFileLog:
    """One container's log in Docker's json-file format."""

    def __init__(self, path: str) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o640)
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def _entry(self, stream: str, chunk: bytes, stamp: str) -> bytes:
        text = chunk.decode("utf-8", "replace")
        return jsonio.dumps({"log": text, "stream": stream, "time": stamp}).encode() + b"\n"

    def feed(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        stamp = now()
        out = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            end = nl + 1 if nl >= 0 else -1
            if end < 0 or end - start > p.LOG_LINE_MAX:
                if len(buf) - start >= p.LOG_LINE_MAX:
                    end = start + p.LOG_LINE_MAX
                else:
                    break
            out.append(self._entry(stream, buf[start:end], stamp))
            start = end
        self.partial[stream] = buf[start:]
        if out:
            self._write(b"".join(out))

    def flush(self, stream: str) -> None:
        if self.partial[stream]:
            self._write(self._entry(stream, self.partial[stream], now()))
            self.partial[stream] = b""

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
