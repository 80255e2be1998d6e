"""The engine's image lock: many writers that add to the image store at once, one collector.

Rules (from ``image.store``): additions (pull, load, import, commit, build, a container's
snapshot and mount) are safe side by side — everything in the store becomes visible by one
atomic rename — but ``gc`` must never run while one of them has written blobs or snapshots
that no image or container names yet. So additions hold the lock ``shared()``, and the calls
that end in ``gc`` (image remove, prune) hold it ``exclusive()``.
- A waiting ``exclusive()`` goes first: new ``shared()`` holders wait behind it, so a stream of
  builds and runs cannot starve an ``rmi``.
- Asyncio only (one event loop); the work under the lock runs in threads, the lock does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ImageLock:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(
                lambda: not self._exclusive and not self._exclusive_waiting
            )
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._changed:
            self._exclusive_waiting += 1
            try:
                await self._changed.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                self._exclusive = False
                self._changed.notify_all()
