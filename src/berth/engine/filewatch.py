"""Directories watched with inotify(7), for the event loop: "something was written here".

Rules:
- ``DirWatch.open(path, on_change)`` watches ``path`` (a directory) for files written,
  created or moved in; each batch of kernel events for it calls ``on_change()`` once, on the
  loop. What changed is not told: the caller rereads what it follows (a log that grew or
  rotated).
- One inotify descriptor per event loop, shared by every watch, and one kernel watch per
  directory, shared by its watchers: inotify instances are few and counted per user
  (``fs.inotify.max_user_instances``, 128 by default, shared with every root process on the
  host), so a follower per container must not take one each. The descriptor is closed with
  the loop's last watch.
- It is an optimisation, never a dependency: ``open`` returns None when inotify cannot be had
  (no libc symbol, a limit reached, the directory gone), and callers keep a slower poll.
- ``close()`` is idempotent. libc through ctypes, loaded on first use.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
import struct
from collections.abc import Callable

_IN_MODIFY, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x80, 0x100
_MASK = _IN_MODIFY | _IN_MOVED_TO | _IN_CREATE
_EVENT = struct.Struct("=iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.inotify_init1  # noqa: B018 - an AttributeError here means no inotify
    except (OSError, AttributeError):
        return None
    return libc


class _Inotify:
    """The loop's one inotify descriptor and who waits on each of its kernel watches."""

    def __init__(self, libc: ctypes.CDLL, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.libc, self.fd, self.loop = libc, fd, loop
        self.watchers: dict[int, dict[int, Callable[[], None]]] = {}  # wd -> {id: callback}
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        woken: set[int] = set()
        try:
            while data := os.read(self.fd, 65536):
                offset = 0
                while offset + _EVENT.size <= len(data):
                    wd, _, _, name_len = _EVENT.unpack_from(data, offset)
                    woken.add(wd)
                    offset += _EVENT.size + name_len
        except BlockingIOError:
            pass
        for wd in woken:
            for callback in list(self.watchers.get(wd, {}).values()):
                callback()

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


_shared: dict[asyncio.AbstractEventLoop, _Inotify] = {}


class DirWatch:
    def __init__(self, inotify: _Inotify, wd: int) -> None:
        self._inotify: _Inotify | None = inotify
        self._wd = wd

    @classmethod
    def open(cls, path: str, on_change: Callable[[], None]) -> DirWatch | None:
        """Watch directory ``path``; None when inotify is not available here."""
        libc = _libc()
        if libc is None:
            return None
        loop = asyncio.get_running_loop()
        inotify = _shared.get(loop)
        if inotify is None:
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return None
            inotify = _shared[loop] = _Inotify(libc, fd, loop)
        wd = libc.inotify_add_watch(inotify.fd, os.fsencode(path), _MASK)
        if wd < 0:
            if not inotify.watchers:
                del _shared[loop]
                inotify.close()
            return None
        watch = cls(inotify, wd)
        inotify.watchers.setdefault(wd, {})[id(watch)] = on_change
        return watch

    def close(self) -> None:
        inotify, self._inotify = self._inotify, None
        if inotify is None:
            return
        callbacks = inotify.watchers.get(self._wd, {})
        callbacks.pop(id(self), None)
        if not callbacks:
            inotify.watchers.pop(self._wd, None)
            inotify.libc.inotify_rm_watch(inotify.fd, self._wd)  # gone with its dir: EINVAL
        if not inotify.watchers:
            _shared.pop(inotify.loop, None)
            inotify.close()
