"""The output of the supervisor's containers and execs: their streams read off its selector,
a container's into its log, an exec's to the connection that started it, with backpressure.

Rules:
- A container's output is fed to its json-file log as it is read; a terminal's output is not
  in lines (a shell's prompt), so it is flushed to the log as it is read, partial lines too.
- An exec's output goes only to its connection (``ExecEntry.conn``), through the
  supervisor's ``send`` (buffered, never blocking); with no connection left it is read and
  dropped, so the exec never blocks on a full pipe.
- Backpressure: once a connection holds more than ``EXEC_OUTPUT_HIGH`` unsent bytes, the
  streams of the exec whose output put it there leave the selector (``pause``); they come
  back (``sent``) once it holds half of that or less, or (``resume``) once it is closed.
- A stream ends at EOF (or a terminal's EIO, ``read_output``): its partial line is flushed to
  the log, it leaves the selector (unless paused: then it is not there) and its fd is closed.
- ``drain`` reads what is there now before an exit is told (so the exit comes after the last
  line), at most 64 MiB a stream; the rest is read when the loop comes back.
"""

from __future__ import annotations

import os
import selectors
from collections.abc import Callable

from berth.engine import supervisor_protocol as p
from berth.engine.supervisor_io import read_output
from berth.engine.supervisor_table import Conn, Entry, ExecEntry, Stdin

EXEC_OUTPUT_HIGH = 1 << 20  # unsent bytes to one connection above which its execs wait


class OutputPump:
    """Reads the streams of every holder (``Stdin``: a container or an exec) it watches."""

    def __init__(self, sel: selectors.BaseSelector, send: Callable[[Conn, bytes], None]) -> None:
        self.sel = sel
        self.send = send

    def _callback(self, e: Stdin, fd: int) -> Callable[[int], None]:
        def on_readable(_mask: int) -> None:
            self.read(e, fd)

        return on_readable

    def watch(self, e: Stdin) -> None:
        for fd in e.streams:
            self.sel.register(fd, selectors.EVENT_READ, self._callback(e, fd))

    def read(self, e: Stdin, fd: int) -> int:
        """Read what is there: the byte count, 0 if nothing now, -1 once the pipe is closed
        (then it is closed here too, its partial line flushed). A container's output goes to
        its log, an exec's to the connection that started it (if it is still there)."""
        stream = e.streams[fd]
        data = read_output(fd)
        if data:
            if isinstance(e, ExecEntry):
                if e.conn is not None:
                    self.send(e.conn, p.encode_exec_output(e.id, stream, data))
                    if len(e.conn.outbuf) > EXEC_OUTPUT_HIGH and not e.paused:
                        self.pause(e)
            elif isinstance(e, Entry) and e.log is not None:
                e.log.feed(stream, data)
                if fd == e.console:  # a terminal's output is not in lines (a prompt): as is
                    e.log.flush(stream)
            return len(data)
        if data is not None:
            return 0
        if isinstance(e, Entry) and e.log is not None:
            e.log.flush(stream)
        self.unwatch(e, fd)
        os.close(fd)
        del e.streams[fd]
        if fd == e.console:
            e.console = -1
        return -1

    def drain(self, e: Stdin) -> None:
        for fd in list(e.streams):
            for _ in range(1024):  # at most 64 MiB now; the rest when the loop comes back
                if self.read(e, fd) <= 0:
                    break

    def unwatch(self, e: Stdin, fd: int) -> None:
        if not (isinstance(e, ExecEntry) and e.paused):
            self.sel.unregister(fd)

    def pause(self, x: ExecEntry) -> None:
        """Stop reading an exec's output until its connection has sent what it holds."""
        assert x.conn is not None
        for fd in x.streams:
            self.sel.unregister(fd)
        x.paused = True
        x.conn.paused.append(x)

    def resume(self, conn: Conn) -> None:
        for x in conn.paused:
            if x.paused:
                x.paused = False
                self.watch(x)
        conn.paused = []

    def sent(self, conn: Conn) -> None:
        """``conn`` sent what it could: its paused execs read again once it holds half of
        ``EXEC_OUTPUT_HIGH`` or less."""
        if conn.paused and len(conn.outbuf) <= EXEC_OUTPUT_HIGH // 2:
            self.resume(conn)
