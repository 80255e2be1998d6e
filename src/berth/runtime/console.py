"""Terminals for containers: the pseudo-terminal made inside the container, and the
console-socket protocol runc uses to hand its master end to the caller (podman's conmon, or
``berth-runtime run`` itself).

Rules: the pty is opened in the container's own devpts (after pivot_root), so the container
sees /dev/pts/0; the master is sent over the console socket with SCM_RIGHTS (one fd, the
payload is the path "/dev/ptmx"), then closed in the container; the slave becomes the
process's controlling terminal and stdio. This module is imported only when a terminal is asked
for (and then before pivot_root, so that its own imports still resolve).
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import tempfile
import termios
import tty

from berth.errors import InvalidArgument


def connect(path: str) -> int:
    """Connect to a console socket; the returned fd is inherited by the container's init."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise InvalidArgument(
            f"--console-socket: cannot connect to {path}: {exc.strerror}"
        ) from None
    return sock.detach()


def setup_terminal(console_fd: int, height: int, width: int) -> None:
    """In the container: make a pty, send its master away, make the slave our terminal."""
    master, slave = os.openpty()
    try:
        if height and width:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        sock = socket.socket(fileno=console_fd)
        try:
            socket.send_fds(sock, [b"/dev/ptmx"], [master])
        finally:
            sock.close()
    finally:
        os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def listen() -> tuple[str, int]:
    """A console socket of our own, in a fresh temp dir: (path, listening fd)."""
    path = os.path.join(tempfile.mkdtemp(prefix="berth-console-"), "console.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return path, sock.detach()


def discard(path: str, listen_fd: int) -> None:
    """Close a ``listen`` socket and remove it with its temp dir."""
    os.close(listen_fd)
    os.unlink(path)
    os.rmdir(os.path.dirname(path))


def receive_master(path: str, listen_fd: int) -> int:
    """The caller's side of ``listen``: receive the pty master the container sent, and
    remove the socket and its temp dir."""
    listener = socket.socket(fileno=listen_fd)
    try:
        conn, _ = listener.accept()
    finally:
        discard(path, listener.detach())
    try:
        _, fds, _, _ = socket.recv_fds(conn, 64, 1)
    finally:
        conn.close()
    if not fds:
        raise InvalidArgument("console socket: the container sent no terminal")
    return fds[0]


def proxy(master: int) -> None:
    """Copy between our stdio and the container's terminal until the terminal closes."""
    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    try:
        sources = [master, 0]
        while master in sources:
            ready, _, _ = select.select(sources, [], [])
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if fd == master:
                    if not data:
                        sources.remove(master)
                    else:
                        os.write(1, data)
                elif not data:
                    sources.remove(0)
                else:
                    os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
