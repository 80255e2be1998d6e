"""What an in-place restart (``Supervisor.reexec``) hands to the next image of the supervisor,
and how the next image takes it back.

Rules:
- Only fds cross the exec (made inheritable here, close-on-exec again when taken back) and
  ``supervisor.handoff.json`` describes them: per container still our child, its output
  streams (a terminal's master among them, as ``console``), its stdin and what waits to be
  written to it, its log's partial lines, and its execs (fds, pid, exit code if ended).
- Taking back only fills the holders (``Entry``, ``ExecEntry``); the supervisor then polls
  the streams and resumes stdin. Fds of a container gone meanwhile are closed.
- Execs' clients were disconnected by the restart: their output is read and dropped.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

from berth.engine.supervisor_logs import JsonFileLog
from berth.engine.supervisor_table import Entry, ExecEntry, Stdin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def hand_over(e: Stdin) -> dict[str, Any]:
    """``e``'s fds (made inheritable) and pending stdin."""
    for fd in (*e.streams, e.stdin_w):
        if fd >= 0:
            os.set_inheritable(fd, True)
    return {
        "streams": {str(fd): stream for fd, stream in e.streams.items()},
        "console": e.console,  # one of the streams, or -1
        "stdin": e.stdin_w,
        "stdin_buf": base64.b64encode(e.stdin_buf).decode(),
        "stdin_eof": e.stdin_eof,
    }


def hand_over_container(e: Entry) -> dict[str, Any]:
    """A running child container with its execs; its log is closed (reopened by the next)."""
    partial = e.log.partial if e.log is not None else {}
    state = {
        **hand_over(e),
        "partial": {k: base64.b64encode(v).decode() for k, v in partial.items()},
        "execs": {
            x.id: {**hand_over(x), "pid": x.pid, "exit_code": x.exit_code} for x in e.execs.values()
        },
    }
    if e.log is not None:
        e.log.close()
        e.log = None
    return state


def take_fds(e: Stdin, handed: dict[str, Any]) -> None:
    """Fill ``e`` with its handed fds (close-on-exec again); the caller polls them."""
    for fd_text, stream in handed["streams"].items():
        fd = int(fd_text)
        os.set_inheritable(fd, False)
        e.streams[fd] = stream
    e.console = int(handed.get("console", -1))
    e.stdin_w = int(handed["stdin"])
    if e.stdin_w >= 0:
        os.set_inheritable(e.stdin_w, False)
        e.stdin_buf = base64.b64decode(handed["stdin_buf"])
        e.stdin_eof = bool(handed["stdin_eof"])


def take_container(e: Entry, handed: dict[str, Any]) -> list[ExecEntry]:
    """Fill ``e`` (log with its partial lines, fds) and return its execs, filled too."""
    log_path = str(e.meta.get("log_path", ""))
    if log_path:
        e.log = JsonFileLog(log_path)
        for stream, partial in handed["partial"].items():
            e.log.partial[stream] = base64.b64decode(partial)
    take_fds(e, handed)
    execs = []
    for exec_id, x_handed in handed.get("execs", {}).items():
        x = ExecEntry(e.id, exec_id, None)
        x.pid = int(x_handed["pid"])
        x.exit_code = x_handed["exit_code"]
        take_fds(x, x_handed)
        execs.append(x)
    return execs


def handed_fds(handed: dict[str, Any]) -> Iterator[int]:
    """Every fd handed over for one container and its execs (to close them)."""
    for one in (handed, *handed.get("execs", {}).values()):
        for fd in (*map(int, one["streams"]), int(one["stdin"])):
            if fd >= 0:
                yield fd
