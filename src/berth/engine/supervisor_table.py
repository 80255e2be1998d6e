"""What the supervisor holds for one container, and how it reads what it knows of it.

Rules:
- ``Entry`` is one row of the supervisor's table (the runtime record, ``supervisor.json``'s
  meta, the fds it reads and writes, its log, its exit and who waits for it); ``ExecEntry`` is
  one process exec'd in a container (its fds, its pid, the connection its output goes to, its
  exit code); both hold a stdin (``Stdin``: a pipe or a terminal's master, and what waits to be
  written to it). ``Conn`` is one client connection. All are plain mutable holders: the
  supervisor's loop changes them, and nothing here touches a selector.
- An ``Entry`` keeps the runtime record without its OCI config (some 48 KB of Python objects
  per container, a supervisor holds hundreds): hooks and verbs that need the config load the
  record from the store.
- Exit statuses: ``exit_code_of`` reads a wait status as a shell does (128 + the signal);
  ``zombie_wait_status`` reads an adopted init's status from /proc while it is a zombie, and
  None when it cannot know (the caller then reports the exit as unknown).
- ``_read_json`` reads the files beside the record: a missing file is None, a damaged one is
  logged and ignored (None), never an exception.
"""

from __future__ import annotations

import logging
import os
import socket

from berth.engine import supervisor_protocol as p
from berth.engine.supervisor_logs import JsonFileLog
from berth.runtime import container, store
from berth.spec import jsonio
from berth.spec.value import replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


log = logging.getLogger("berth.engine.supervisor")  # one name for all the supervisor's modules


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def zombie_wait_status(pid: int, pid_start: int) -> int | None:
    """The wait status of ``pid`` (started at ``pid_start``) while it is a zombie, from
    /proc/<pid>/stat field 52; None when it is gone, alive or another process."""
    rest = store.proc_stat(pid)
    if rest is None or rest[0] not in (b"Z", b"X") or int(rest[19]) != pid_start or len(rest) < 50:
        return None
    return int(rest[49])


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.subscribed = False
        self.closed = False
        self.paused: list[ExecEntry] = []  # execs not read until this one's outbuf drains


class Stdin:
    """A process's stdin as the supervisor writes it: the fd (-1: none or closed), what waits
    for room in it, whether EOF was asked for, and whether the loop polls it for room. With a
    terminal the fd is a dup of the master (EOF then closes only the dup), and ``console`` is
    the master itself, read as the output and resized."""

    def __init__(self, label: str) -> None:
        self.label = label  # "container <id>" or "exec <id>", for messages
        self.stdin_w = -1
        self.stdin_buf = b""  # written when the pipe has room (the loop never blocks on it)
        self.stdin_eof = False
        self.stdin_polled = False
        self.console = -1
        self.streams: dict[int, str] = {}  # read end -> "stdout" | "stderr"


class Entry(Stdin):
    """One container in the supervisor's table."""

    def __init__(self, cid: str, record: store.Record, meta: dict[str, Any], adopted: bool) -> None:
        super().__init__(f"container {cid}")
        self.id = cid
        self.record = replace(record, config={})
        self.meta = meta
        self.adopted = adopted
        self.pidfd = -1
        self.execs: dict[str, ExecEntry] = {}
        self.log: JsonFileLog | None = None
        self.exit: p.Exit | None = None
        self.waiters: list[tuple[Conn, int]] = []
        self.loaded = container.Loaded(self.record, "")  # its cgroup, opened when needed

    @property
    def pid(self) -> int:
        return self.record.pid

    def info(self, status: str) -> p.Info:
        return p.Info(
            id=self.id,
            status=status,
            pid=self.pid,
            bundle=self.record.bundle,
            log_path=str(self.meta.get("log_path", "")),
            created=self.record.created,
            started_at=str(self.meta.get("started_at", "")),
            stdin=self.stdin_w >= 0,
            adopted=self.adopted,
            exit=self.exit,
        )


class ExecEntry(Stdin):
    """One process exec'd in a container: output goes to ``conn`` (None: dropped)."""

    def __init__(self, container_id: str, exec_id: str, conn: Conn | None) -> None:
        super().__init__(f"exec {exec_id}")
        self.container_id = container_id
        self.id = exec_id
        self.conn = conn
        self.pid = 0
        self.exit_code: int | None = None
        self.paused = False  # its streams are not polled (``Conn.paused``)

    def state(self) -> dict[str, Any]:
        return {"running": self.exit_code is None, "pid": self.pid, "exit_code": self.exit_code}


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = jsonio.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        log.error("%s: damaged, ignored: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None
