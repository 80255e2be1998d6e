"""The process around the supervisor's loop: detaching, stdio, signal dispositions, rlimits.

Rules:
- Nothing here knows containers; each helper does one thing to this process or reads one
  fact about it, and ``supervisor.main`` / ``Supervisor.open`` call them in order.
- ``detach`` is ``--daemonize``: fork, setsid, fork; the launcher returns an exit code only
  once the daemon answered ``ok`` on the ready pipe (or wrote why it could not start).
  Without ``--daemonize`` the process still leaves the caller's session.
- Containers must start with default signal dispositions: ``_unignore_signals`` turns every
  ignored signal into a handled no-op, which execve resets.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys

log = logging.getLogger("berth.engine.supervisor")  # one name for all the supervisor's modules


def _raise_nofile() -> None:
    """Four fds per container (two pipes, the log, stdin): take the whole hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("supervisor: open files limit %d -> %d", soft, hard)


def _noop(_signum: int, _frame: object) -> None:
    pass


def _unignore_signals() -> None:
    """Containers must start with default signal dispositions, but ignored ones survive
    clone and execve: Python ignores SIGPIPE and SIGXFSZ, a launcher may ignore more. A
    handled signal is reset by execve, so each ignored one gets a handler that does nothing
    (for us the same as ignoring it: a write to a closed pipe still fails with EPIPE)."""
    for signum in range(1, signal.NSIG):
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:
                signal.signal(signum, _noop)
        except (OSError, ValueError):
            continue  # SIGKILL, SIGSTOP, and the C library's own real-time signals


def _is_child(pid: int) -> bool:
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _readable(fd: int, timeout: float = 0.0) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def _redirect_stdio(log_path: str | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.dup2(fd, 2)
        os.close(fd)
    else:
        os.dup2(null, 2)
    os.close(null)


def detach(daemonize: bool, log_path: str | None) -> tuple[int | None, int]:
    """(the launcher's exit code, -1) in the launcher; (None, the ready pipe or -1) in the
    process that goes on to serve."""
    ready_w = -1
    if daemonize:
        ready_r, ready_w = os.pipe()
        if os.fork() > 0:  # the launcher: exits 0 once the grandchild serves, else 1
            os.close(ready_w)
            with os.fdopen(ready_r, "rb") as f:
                answer = f.read()
            if answer != b"ok":
                sys.stderr.write(answer.decode(errors="replace") or "supervisor did not start\n")
                return 1, -1
            return 0, -1
        os.close(ready_r)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        _redirect_stdio(log_path)
    else:
        try:
            os.setsid()  # out of the caller's session: its end (or ^C) is not ours
        except PermissionError:
            pass  # already a process-group leader
        if log_path:
            _redirect_stdio(log_path)
    return None, ready_w
