"""Execs in the supervisor: starting one in a running container, and ending those left when
their container goes.

Rules:
- An exec is forked from the supervisor by the runtime library (``execute.spawn``: no
  runtime binary), with pipes or a terminal (``supervisor_io.ChildIO``), only in a container
  whose init runs; it is the supervisor's child, reaped by its loop like an init.
- The supervisor polls the new exec's streams and indexes it by pid; nothing here touches a
  selector or a connection.
- When a container is deleted, its execs still alive are killed and reaped at once: an
  unreaped process still counts in the container's cgroup, which could not be removed. Their
  pid is still theirs while unreaped, so the signal can hit no other process.
"""

from __future__ import annotations

import logging
import os
import signal

from berth.engine import supervisor_protocol as p
from berth.engine.supervisor_io import ChildIO
from berth.engine.supervisor_table import Conn, Entry, ExecEntry
from berth.errors import Conflict
from berth.runtime import container, execute, store
from berth.spec.config import Process
from berth.spec.state import check_operation

log = logging.getLogger("berth.engine.supervisor")  # one name for all the supervisor's modules

KILLED = int(signal.SIGKILL)  # the wait status of a process killed by SIGKILL


def start(st: store.Store, e: Entry, req: p.Exec, conn: Conn) -> ExecEntry:
    """Start ``req.process`` in ``e``'s running container; the exec once it has exec'd."""
    if req.exec_id in e.execs:
        raise Conflict(f"exec {req.exec_id!r} of container {e.id!r} already exists")
    if e.exit is not None:
        raise Conflict(f"container {e.id} is not running")
    loaded = container.load(st, e.id)
    check_operation(e.id, "exec", loaded.status)
    proc = Process.from_json(req.process, "process")
    io = ChildIO(req.stdin, proc.terminal)
    try:
        pid = execute.spawn(loaded, proc, stdio=io.stdio, console_socket=io.console_socket)
    except BaseException:
        io.abort()
        raise
    x = ExecEntry(e.id, req.exec_id, conn if req.attach else None)
    x.pid = pid
    io.started(x)
    log.info("container %s: exec %s started, pid %d", e.id, x.id, pid)
    return x


def kill_and_reap(live: list[ExecEntry]) -> list[tuple[ExecEntry, int]]:
    """Kill ``live`` execs (not reaped yet) and wait for each: (exec, wait status)."""
    ended = []
    for x in live:
        try:
            os.kill(x.pid, signal.SIGKILL)
            _, status = os.waitpid(x.pid, 0)
        except ChildProcessError:  # reaped elsewhere (it was handed over, not our child)
            status = KILLED
        ended.append((x, status))
    return ended
