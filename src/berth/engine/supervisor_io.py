"""The stdio of the processes the supervisor starts (a container's init, an exec), and the
writing of what clients send to their stdin.

Rules:
- ``ChildIO`` makes a new process's fds before it starts and keeps ours after: pipes (stdin
  only when asked for, else /dev/null; stdout and stderr apart), or with a terminal a console
  socket on which the process sends its pty master (``runtime.console``). Then the master is
  the one output stream ("stdout", as dockerd logs a tty) and stdin is a dup of it, so
  closing stdin at EOF leaves the terminal open. ``abort`` undoes everything; ``started``
  closes the child's ends. Our ends are non-blocking and close-on-exec.
- A pty master reads EIO once every slave is closed: ``read_output`` reports it as the end of
  the stream, like a pipe's EOF.
- Stdin writes never block the loop: what does not fit waits in ``stdin_buf`` and the fd is
  polled for room; a closed reader drops the rest (logged); EOF closes our end once all is
  written. ``MAX_STDIN_BUFFER`` bounds what may wait.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import selectors
import struct
import termios

from berth.engine.supervisor_table import Stdin
from berth.errors import Conflict, Unavailable
from berth.runtime import console

log = logging.getLogger("berth.engine.supervisor")  # one name for all the supervisor's modules

MAX_STDIN_BUFFER = 16 << 20


class ChildIO:
    """The fds of one process about to start: ``stdio`` and ``console_socket`` for it."""

    def __init__(self, stdin: bool, terminal: bool) -> None:
        self.stdin = stdin
        self.terminal = terminal
        self._child_ends: list[int] = []
        self._ours: dict[int, str] = {}  # fd -> "stdin" | "stdout" | "stderr"
        self._listen: tuple[str, int] | None = None
        try:
            if terminal:
                self._listen = console.listen()
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                self._child_ends.append(null)
                self.stdio = (null, null, null)  # the terminal's slave replaces them
                return
            if stdin:
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                self._ours[stdin_w] = "stdin"
            else:
                stdin_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self._child_ends.append(stdin_r)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            self._ours[out_r] = "stdout"
            self._child_ends.append(out_w)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            self._ours[err_r] = "stderr"
            self._child_ends.append(err_w)
            self.stdio = (stdin_r, out_w, err_w)
        except BaseException:
            self.abort()
            raise

    @property
    def console_socket(self) -> str | None:
        return self._listen[0] if self._listen is not None else None

    def abort(self) -> None:
        for fd in (*self._child_ends, *self._ours):
            os.close(fd)
        self._child_ends, self._ours = [], {}
        if self._listen is not None:
            console.discard(*self._listen)
            self._listen = None

    def started(self, holder: Stdin) -> None:
        """The process runs: close its ends, hand ours to ``holder`` (not yet polled)."""
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []
        if self._listen is not None:
            listen, self._listen = self._listen, None
            master = console.receive_master(*listen)
            os.set_blocking(master, False)
            fcntl.fcntl(master, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            holder.console = master
            holder.streams[master] = "stdout"
            if self.stdin:
                holder.stdin_w = os.dup(master)  # close-on-exec, like every dup here
            return
        for fd, stream in self._ours.items():
            os.set_blocking(fd, False)
            if stream == "stdin":
                holder.stdin_w = fd
            else:
                holder.streams[fd] = stream
        self._ours = {}


def read_output(fd: int) -> bytes | None:
    """What the stream has now: b"" if nothing, None at its end (EOF, or EIO on a master)."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        return None
    return data or None


def resize(holder: Stdin, height: int, width: int) -> None:
    if holder.console < 0:
        raise Conflict(f"{holder.label}: has no terminal")
    size = struct.pack("HHHH", height, width, 0, 0)
    fcntl.ioctl(holder.console, termios.TIOCSWINSZ, size)


def write_stdin(sel: selectors.BaseSelector, holder: Stdin, data: bytes, eof: bool) -> None:
    if holder.stdin_w < 0 or holder.stdin_eof:
        raise Conflict(f"{holder.label}: stdin is not open")
    if len(holder.stdin_buf) + len(data) > MAX_STDIN_BUFFER:
        raise Unavailable(
            f"{holder.label}: stdin is not being read: {MAX_STDIN_BUFFER} bytes are waiting already"
        )
    holder.stdin_buf += data
    holder.stdin_eof = eof
    pump_stdin(sel, holder)


def pump_stdin(sel: selectors.BaseSelector, holder: Stdin) -> None:
    try:
        while holder.stdin_buf:
            holder.stdin_buf = holder.stdin_buf[os.write(holder.stdin_w, holder.stdin_buf) :]
    except BlockingIOError:
        pass
    except (BrokenPipeError, OSError) as exc:  # EIO: a terminal whose slave is gone
        log.info(
            "%s: stdin closed by the process (%s); %d bytes dropped",
            holder.label,
            exc.strerror,
            len(holder.stdin_buf),
        )
        holder.stdin_buf, holder.stdin_eof = b"", True
    if holder.stdin_buf and not holder.stdin_polled:
        sel.register(holder.stdin_w, selectors.EVENT_WRITE, lambda _m: pump_stdin(sel, holder))
        holder.stdin_polled = True
    elif not holder.stdin_buf and holder.stdin_polled:
        sel.unregister(holder.stdin_w)
        holder.stdin_polled = False
    if holder.stdin_eof and not holder.stdin_buf:
        close_stdin(sel, holder)


def close_stdin(sel: selectors.BaseSelector, holder: Stdin) -> None:
    if holder.stdin_polled:
        sel.unregister(holder.stdin_w)
        holder.stdin_polled = False
    if holder.stdin_w >= 0:
        os.close(holder.stdin_w)
        holder.stdin_w = -1
