"""Network namespaces that berthd owns: made, pinned to a file, entered by one thread, removed.

Why: a container's network is set up before the container exists (its veth, address and
routes, its embedded DNS socket), and outlives a restart of its process, so berthd makes the
namespace itself and hands the runtime its path (``linux.namespaces[].path``), as dockerd's
sandboxes do. A namespace berthd has no work in (``--network none``) is the runtime's own,
pinned only if another container joins it (``pin``).

Rules:
- A namespace lives as long as its pin: a bind mount of the namespace file on an empty regular
  file (``create`` makes a new namespace, ``pin`` one a process already has); ``remove``
  detaches the mount and deletes the file. Nothing else keeps it.
- Entering a namespace changes only the calling thread (``setns`` is per task), so code runs in
  one only on a thread made for it (``run_in``): the thread enters, runs, and goes back to the
  namespace it came from before it ends. Sockets (netlink ones too) stay bound to the namespace
  they were made in, so a socket made by ``run_in`` is used from any thread afterwards. A
  library object that opens its own sockets lazily (pyroute2 0.9's ``IPRoute``) must be handed
  a socket made here (``IPRoute(fileno=...)``, as ``network_links`` does), never just built
  inside ``run_in``: it would open its socket later, in the caller's namespace.
- Blocking calls: the caller of ``create``/``remove``/``run_in`` from asyncio uses
  ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from berth.runtime.loopback import bring_up
from berth.runtime.store import process_start_time
from berth.runtime.syscalls import CLONE_NEWNET, MNT_DETACH, MS_BIND, Syscalls

T = TypeVar("T")


@functools.cache
def _syscalls() -> Syscalls:
    return Syscalls()


def _own_netns_file() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def _on_new_thread(work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own (whose namespaces may change); its result or error."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            result.append(work())
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    thread = threading.Thread(target=body, name="netns")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _pinned_by(path: str, bind: Callable[[], None]) -> None:
    """An empty file at ``path`` (which must not exist), then ``bind()`` mounts a namespace
    on it; on failure nothing is left at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        bind()
    except BaseException:
        with contextlib.suppress(OSError):
            _syscalls().umount2(path, MNT_DETACH)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def create(path: str, loopback_up: bool = True) -> None:
    """A new network namespace pinned at ``path`` (which must not exist), ``lo`` up unless
    told otherwise. On failure nothing is left at ``path``."""

    def make() -> None:
        calls = _syscalls()
        calls.unshare(CLONE_NEWNET)  # this thread only; it ends right after
        calls.mount(_own_netns_file(), path, None, MS_BIND, None)
        if loopback_up:
            bring_up()

    _pinned_by(path, lambda: _on_new_thread(make))


def pin(source: str, path: str) -> None:
    """Pin the namespace that exists at ``source`` (a process's ``/proc/<pid>/ns/net``) at
    ``path`` (which must not exist), so it outlives that process; ``remove`` unpins it.
    On failure nothing is left at ``path``."""
    _pinned_by(path, lambda: _syscalls().mount(source, path, None, MS_BIND, None))


def pin_process(pid: int, pid_start: int, path: str) -> None:
    """``pin`` the network namespace of process ``pid``, but only while it is still the
    process that started at ``pid_start`` (field 22 of its stat, as the runtime records its
    init): a pidfd held across the checks makes the process read the process pinned, so a pid
    reused after an exit cannot hand over another process's namespace (ProcessLookupError)."""
    pidfd = os.pidfd_open(pid)
    try:
        namespace = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            exited = bool(select.select([pidfd], [], [], 0)[0])  # a pidfd reads ready at exit
            if exited or process_start_time(pid) != pid_start:
                raise ProcessLookupError(errno.ESRCH, f"process {pid} is not the one expected")
            pin(f"/proc/self/fd/{namespace}", path)
        finally:
            os.close(namespace)
    finally:
        os.close(pidfd)


def remove(path: str) -> None:
    """Unpin and delete; a namespace still used by a process lives on until that one ends.
    A missing pin is not an error (removal is idempotent)."""
    with contextlib.suppress(OSError):
        _syscalls().umount2(path, MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def run_in(path: str, work: Callable[[], T]) -> T:
    """``work()`` inside the namespace pinned at ``path``, on a thread of its own."""

    def entered() -> T:
        calls = _syscalls()
        own = os.open(_own_netns_file(), os.O_RDONLY)
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                calls.setns(target, CLONE_NEWNET)
            finally:
                os.close(target)
            try:
                return work()
            finally:
                calls.setns(own, CLONE_NEWNET)
        finally:
            os.close(own)

    return _on_new_thread(entered)


def socket_in(path: str, family: int, kind: int) -> socket.socket:
    """A socket bound to the namespace at ``path`` (close it as any socket)."""
    return run_in(path, lambda: socket.socket(family, kind))
