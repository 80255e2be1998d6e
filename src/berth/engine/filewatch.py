"""A directory watched with inotify(7), for the event loop: "something was written here".

Rules:
- ``DirWatch.open(path, on_change)`` watches ``path`` (a directory) for files written,
  created or moved in; each batch of kernel events calls ``on_change()`` once, on the loop.
  What changed is not told: the caller rereads what it follows (a log that grew or rotated).
- It is an optimisation, never a dependency: ``open`` returns None when inotify cannot be had
  (no libc symbol, the per-user watch limit reached), and callers keep a slower poll as well.
- ``close()`` removes the reader from the loop and closes the descriptor (idempotent).
- libc through ctypes, loaded on first use, so nothing is paid by code that never watches.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

_IN_MODIFY, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x80, 0x100
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


@functools.cache
def _inotify() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.inotify_init1  # noqa: B018 - an AttributeError here means no inotify
    except (OSError, AttributeError):
        return None
    return libc


class DirWatch:
    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._loop = loop

    @classmethod
    def open(cls, path: str, on_change: Callable[[], None]) -> DirWatch | None:
        """Watch directory ``path``; None when inotify is not available here."""
        libc = _inotify()
        if libc is None:
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None
        mask = _IN_MODIFY | _IN_MOVED_TO | _IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            os.close(fd)
            return None
        watch = cls(fd, asyncio.get_running_loop())

        def readable() -> None:
            try:
                while os.read(fd, 65536):
                    pass
            except BlockingIOError:
                pass
            on_change()

        watch._loop.add_reader(fd, readable)
        return watch

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
