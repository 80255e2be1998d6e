"""What a client waits on or streams from a container, over ``containers.ContainerManager``:
``wait`` conditions, logs (with follow), attach output and stdin.

Rules:
- ``waiter`` checks at once (404, a bad condition: 400) and waits later, so the API can send
  its headers in between; conditions as dockerd's: ``not-running`` (the default: now if it is
  not running, else its next exit), ``next-exit``, ``removed``; a daemon shutting down ends
  every wait with 503.
- Logs read the json-file log (``containers_logs``); follow wakes at each write to it
  (``filewatch``: inotify on its directory; without inotify a poll every ``FOLLOW_POLL``)
  until the exit after the one seen at the start, the removal, the shutdown or the client's
  departure, then returns what was written last. Attach is follow from the end of the log.
- stdin is written through the supervisor once the container runs (the CLI sends it as soon
  as it is attached, before ``start``); an empty chunk is EOF.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING

from berth.engine import containers_logs as clogs
from berth.engine.filewatch import DirWatch
from berth.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from berth.engine.containers import ContainerManager, Live
    from berth.engine.containers_state import Record

FOLLOW_POLL = 0.05  # s, between looks at a followed log when inotify cannot be had
FOLLOW_WATCHED_POLL = 0.5  # s, the same when inotify wakes the follower at each write


def waiter(
    m: ContainerManager, ref: str, condition: str
) -> Callable[[], Awaitable[tuple[int, str]]]:
    """Check now (404, bad condition), wait later: the API sends its headers between."""
    rec = m.get(ref)
    live = m.live_of(rec.id)
    seen = live.exits
    if condition in ("", "not-running"):
        if not rec.running:
            code = int(rec.state["ExitCode"])

            async def now() -> tuple[int, str]:
                return code, ""

            return now

        def pred() -> bool:
            return live.exits > seen or live.removed
    elif condition == "next-exit":

        def pred() -> bool:
            return live.exits > seen or live.removed
    elif condition == "removed":

        def pred() -> bool:
            return live.removed
    else:
        raise InvalidArgument(f"invalid condition: {condition!r}")

    async def wait() -> tuple[int, str]:
        await live.wait_for(lambda: pred() or m.closing.is_set(), None)
        if m.closing.is_set() and not pred():
            raise Unavailable("the daemon is shutting down")
        return live.exit_code, live.error

    return wait


async def logs(
    m: ContainerManager,
    ref: str,
    selection: clogs.Selection,
    follow: bool,
    gone: Callable[[], bool] = lambda: False,
) -> AsyncGenerator[bytes, None]:
    rec = m.get(ref)
    live = m.live_of(rec.id)
    seen = live.exits
    reader = clogs.LogReader(rec.log_path)
    entries = clogs.select(await asyncio.to_thread(reader.read), selection)
    for entry in entries:
        yield selection.render(entry, rec.tty)
    if not follow or not rec.running:
        return
    plain = clogs.Selection(
        selection.stdout,
        selection.stderr,
        selection.since,
        selection.until,
        selection.timestamps,
    )
    async for chunk in _follow(m, rec, live, reader, seen, plain, gone):
        yield chunk


async def _follow(
    m: ContainerManager,
    rec: Record,
    live: Live,
    reader: clogs.LogReader,
    seen: int,
    selection: clogs.Selection,
    gone: Callable[[], bool],
) -> AsyncGenerator[bytes, None]:
    """New entries until the exit after ``seen`` (then the last ones), the container's
    removal, the daemon's shutdown, or ``gone()`` (the client left). The log's directory is
    watched (inotify), so a line reaches the client as it is written; the poll stays as the
    fallback (and to notice a client that left)."""
    exited = asyncio.ensure_future(m.wait_exit(live, seen, None))
    closing = asyncio.ensure_future(m.closing.wait())
    wake = asyncio.Event()
    watch = DirWatch.open(os.path.dirname(rec.log_path), wake.set)
    wake.set()  # a first look at once: a line written before the watch began sends no event
    woken = asyncio.ensure_future(wake.wait())
    poll = FOLLOW_POLL if watch is None else FOLLOW_WATCHED_POLL
    try:
        while True:
            await asyncio.wait(
                (exited, woken, closing), timeout=poll, return_when=asyncio.FIRST_COMPLETED
            )
            if woken.done():  # cleared before the read: a write during it wakes us again
                wake.clear()
                woken = asyncio.ensure_future(wake.wait())
            done = exited.done()
            if m.closing.is_set() or gone():
                return
            if reader.grown():  # one stat per wake-up; a thread only when there is something
                for entry in clogs.select(await asyncio.to_thread(reader.read), selection):
                    yield selection.render(entry, rec.tty)
            if done:
                return
    finally:
        for task in (exited, woken, closing):
            task.cancel()
        if watch is not None:
            watch.close()


async def attach(
    m: ContainerManager, ref: str, gone: Callable[[], bool] = lambda: False
) -> tuple[Record, AsyncGenerator[bytes, None]]:
    """The container's output from now until its next exit (attach comes before start)."""
    rec = m.get(ref)
    live = m.live_of(rec.id)
    reader = clogs.LogReader(rec.log_path, clogs.LogReader.end_of(rec.log_path))
    return rec, _follow(m, rec, live, reader, live.exits, clogs.Selection(), gone)


async def pump_stdin(m: ContainerManager, ref: str, chunks: asyncio.Queue[bytes]) -> None:
    """Write ``chunks`` (``b""`` is EOF) to the container's stdin, once it runs: the
    CLI sends stdin as soon as it is attached, before ``start``."""
    rec = m.get(ref)
    live = m.live_of(rec.id)
    starts, exits = live.starts, live.exits
    if not rec.running:
        await live.wait_for(
            lambda: (
                live.starts > starts or live.exits > exits or live.removed or m.closing.is_set()
            ),
            None,
        )
        if not rec.running:
            return
    while True:
        data = await chunks.get()
        await m.sup.write_stdin(rec.id, data, eof=not data)
        if not data:
            return
