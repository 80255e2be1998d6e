"""``GET /events``: the event bus (``events.EventBus``) as a stream of JSON lines.

Rules (moby's ``getEvents``):
- ``since``/``until`` are unix times (``1700000000`` or ``1700000000.123456789``, what the CLI
  sends; the forms of ``filters.parse_timestamp`` too). ``until`` before ``since`` is 400.
- The 200 headers go out at once; buffered events in [since, until] come first, then new ones
  as they happen. An ``until`` in the past ends the stream after the buffered ones; one in the
  future ends it then. Otherwise the stream lasts until the client leaves or the daemon stops.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from berth.engine import api
from berth.engine.events import Event, EventFilter
from berth.engine.filters import Filters, parse_timestamp
from berth.errors import InvalidArgument

log = logging.getLogger(__name__)

GONE_POLL = 0.5  # how often an idle stream checks that its client is still there


def parse_event_time(text: str | None) -> int:
    """Unix nanoseconds of a ``since``/``until`` value; 0 when absent."""
    if text is None or not text.strip():
        return 0
    value = text.strip()
    seconds, dot, fraction = value.partition(".")
    if seconds.isdigit() and (not dot or fraction.isdigit()):
        return int(seconds) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])
    return int(parse_timestamp(value) * 1_000_000_000)


async def get_events(request: web.Request) -> web.StreamResponse:
    since = parse_event_time(request.query.get("since"))
    until = parse_event_time(request.query.get("until"))
    if until and since and until < since:
        raise InvalidArgument(
            f"`since` time ({request.query['since']}) cannot be after `until` time"
            f" ({request.query['until']})"
        )
    match = EventFilter(Filters.parse(request.query.get("filters")))
    bus = api.engine(request).events
    response = web.StreamResponse(status=200)
    response.content_type = api.JSON
    response.enable_chunked_encoding()
    with bus.subscribe(since, until, match) as (replay, sub):
        await response.prepare(request)
        try:
            for ev in replay:
                await response.write(api.dumps(ev.to_json()))
            if until and until <= time.time_ns():
                await response.write_eof()
                return response
            await _follow(request, response, sub.queue, match, until)
        except (ConnectionError, RuntimeError):
            log.debug("req %s: events: the client went away", api.request_id())
    return response


async def _follow(
    request: web.Request,
    response: web.StreamResponse,
    queue: asyncio.Queue[Event | None],
    match: EventFilter,
    until: int,
) -> None:
    while True:
        wait = GONE_POLL
        if until:
            wait = min(wait, max(until - time.time_ns(), 0) / 1e9)
        try:
            ev = await asyncio.wait_for(queue.get(), wait)
        except TimeoutError:
            if until and time.time_ns() >= until:
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            continue
        if ev is None:  # the daemon stops, or this stream fell too far behind
            break
        if until and ev.time_nano > until:
            break
        if match.matches(ev):
            await response.write(api.dumps(ev.to_json()))
    await response.write_eof()


ROUTES: list[api.Route] = [("GET", "/events", get_events)]
