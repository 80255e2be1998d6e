"""Helpers shared by the cross-runtime suites (imported, not a conftest).

Rules: nothing here starts a container by itself; the ``runtime`` fixture of conftest.py stays
the only owner of container ids, so its teardown force-deletes and leak-checks every one. What
these helpers make besides containers (console sockets, background runtime commands) is
closed or reaped by the context manager or function that made it, even on failure.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"


def ok(proc: Any) -> str:
    """A runtime command's stdout, after checking it exited 0 (its output in the message)."""
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return str(proc.stdout)


def sections(text: str) -> dict[str, str]:
    """Split probe output written as ``@@name`` header lines followed by content."""
    parts: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("@@"):
            name = line[2:].strip()
            parts[name] = ""
        else:
            parts[name] = parts.get(name, "") + line + "\n"
    return parts


def wait_for(predicate: Callable[[], Any], timeout: float = 3.0, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last verdict."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(step)
    return True


def writable(config: dict[str, Any]) -> None:
    config["root"]["readonly"] = False


def ns(pid: int | str, kind: str) -> str:
    """The namespace link of ``pid`` (or "self"), e.g. ``pid:[4026531836]``."""
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def proc_cgroup(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        out[key] = val.strip()
    return out


def alive(pid: int) -> bool:
    """Live and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def runtime_cmd(runtime: Any, *args: str) -> list[str]:
    """The argv of ``<runtime> --root <root> args...`` (for Popen and pty-driven calls)."""
    return [runtime.binary, "--root", str(runtime.root), *args]


# --------------------------------------------------------------------------- console socket


class ConsoleSocket:
    """A listening unix socket for ``--console-socket``; ``master()`` accepts the runtime's
    connection and returns the pty master it sent with SCM_RIGHTS (owned by this object,
    closed on exit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.fds: list[int] = []

    def master(self, timeout: float = 5.0) -> int:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(timeout)
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
        self.fds.extend(fds)
        assert len(fds) == 1, f"expected one fd over the console socket, got {fds}"
        return fds[0]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@contextlib.contextmanager
def console_socket(path: Path) -> Iterator[ConsoleSocket]:
    cs = ConsoleSocket(path)
    try:
        yield cs
    finally:
        cs.close()


def read_until(fd: int, wanted: bytes, timeout: float = 3.0) -> bytes:
    """Read from ``fd`` until ``wanted`` appears, EOF/EIO (a closed pty), or the timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every slave end is closed
            break
        if not chunk:
            break
        data += chunk
    return data


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """Kill (whole process group) and reap a background command on the way out."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def detached(runtime: Any, *args: str, name: str = "detached") -> subprocess.CompletedProcess[str]:
    """``<runtime> args...`` whose stdio goes to files in the runtime's io dir, never pipes: a
    process it leaves behind (``exec -d``, ``run -d``) would hold a pipe open forever."""
    stem = Path(runtime.io_dir) / f"{name}-{time.monotonic_ns()}"
    out, err = stem.with_suffix(".out"), stem.with_suffix(".err")
    with out.open("wb") as fout, err.open("wb") as ferr:
        done = subprocess.run(
            runtime_cmd(runtime, *args),
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            timeout=30,
        )
    return subprocess.CompletedProcess(
        done.args, done.returncode, out.read_text(errors="replace"), err.read_text(errors="replace")
    )


def processes_of(cid: str, rootfs: Path) -> list[int]:
    """Live host processes that belong to container ``cid``: in a cgroup named after it, or
    with ``rootfs`` as their root directory (a process the runtime never moved to a cgroup)."""
    found = []
    root = os.path.realpath(rootfs)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            proc_root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        mine = any(line.rsplit("/", 1)[-1] == cid for line in cgroups.splitlines())
        if (mine or proc_root == root) and alive(pid):
            found.append(pid)
    return found
