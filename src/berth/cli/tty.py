"""The local side of an interactive session: raw terminal, stdin pump, resize, detach keys.

Rules:
- ``raw_terminal`` puts stdin in raw mode only when it is a terminal, and always restores the
  saved settings on the way out (also on errors and Ctrl-C).
- ``StdinPump`` copies our stdin to the hijacked socket in a daemon thread and half-closes the
  socket's write side at EOF (the daemon then closes the container's stdin). On a terminal it
  watches for the detach keys (default ctrl-p ctrl-q, held back until the sequence is known
  not to match) and then shuts the socket so the output copy ends: the container keeps
  running.
- ``on_resize`` calls back on SIGWINCH, in the main thread; the size is (height, width) of our
  terminal, None when stdout is not one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q


def parse_detach_keys(text: str) -> bytes:
    """``ctrl-p,ctrl-q`` → b"\\x10\\x11" (docker's --detach-keys syntax)."""
    keys = bytearray()
    for raw in text.split(","):
        part = raw.strip()
        if part.startswith("ctrl-") and len(part) == 6:
            c = part[5].lower()
            code = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(c)
            keys.append(code if code is not None else ord(c) - ord("a") + 1)
        elif len(part) == 1:
            keys.append(ord(part))
        else:
            raise ValueError(f"Invalid detach keys ({part}) provided")
    return bytes(keys)


def terminal_size() -> tuple[int, int] | None:
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
        except OSError:
            continue
    return None


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled or not os.isatty(0):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def on_resize(callback: Callable[[], None]) -> Iterator[None]:
    previous = signal.signal(signal.SIGWINCH, lambda _signum, _frame: callback())
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


class StdinPump:
    def __init__(self, sock: socket.socket, detach_keys: bytes | None) -> None:
        self.sock = sock
        self.detach_keys = detach_keys
        self.detached = False
        self.thread = threading.Thread(target=self._run, name="stdin", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        held = b""
        try:
            while True:
                data = os.read(0, 4096)
                if not data:
                    break
                if self.detach_keys:
                    data, held = self._scan(held + data)
                    if self.detached:
                        self.sock.shutdown(socket.SHUT_RDWR)
                        return
                if data:
                    self.sock.sendall(data)
            if held:
                self.sock.sendall(held)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the session ended under us

    def _scan(self, data: bytes) -> tuple[bytes, bytes]:
        """(bytes to send now, bytes held as a possible start of the detach sequence)."""
        keys = self.detach_keys or b""
        at = data.find(keys)
        if at >= 0:
            self.detached = True
            return data[:at], b""
        for n in range(min(len(keys) - 1, len(data)), 0, -1):
            if data.endswith(keys[:n]):
                return data[:-n], data[-n:]
        return data, b""


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and os.isatty(0)
