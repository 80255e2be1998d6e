"""berthd's event bus: what happened to containers and images, for ``GET /events``.

Rules:
- One ``EventBus`` per daemon, reachable as ``Engine.events`` (handlers) and
  ``ContainerManager.events``; anyone records an event with one call:
  ``bus.emit("container", "start", cid, {"name": ..., "image": ...})``.
- ``emit`` may be called from the event loop or from a worker thread; subscribers get the
  events on their own loop, in order. A subscriber that falls ``QUEUE_SIZE`` events behind is
  dropped (its stream ends) rather than letting memory grow.
- The last ``RING_SIZE`` events are kept in memory (none survive a daemon restart) and replayed
  for ``since``/``until``, as dockerd does: no replay when neither is given.
- The JSON is Docker's ``events.Message``: ``Type``, ``Action``, ``Actor{ID, Attributes}``,
  ``scope: "local"``, ``time``, ``timeNano``, plus the deprecated ``status``/``id``/``from``
  that API 1.43 still fills for containers and images.
- Filters (``EventFilter``) follow moby's ``daemon/events/filter.go``: ``container`` and the
  like match an id or name prefix, ``event`` an action exactly (a prefix for
  ``exec_create``/``exec_start``/``health_status``), ``image`` an id or name with or without
  its tag, ``label`` the attributes, ``type`` the event type. A filter name it does not know
  is ignored (dockerd 20.10 does not refuse one either).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from berth.engine.filters import Filters

RING_SIZE = 1024
QUEUE_SIZE = 1024
# Actions that carry a suffix (``exec_create: sh -c ...``): an ``event`` filter on the bare
# word matches them all.
_PREFIX_ACTIONS = ("exec_create", "exec_start", "health_status")


@dataclass(frozen=True)
class Event:
    type: str  # container | image | network | volume | daemon …
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_nano: int
    scope: str = "local"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type in ("container", "image"):
            out["status"] = self.action
            out["id"] = self.actor_id
            if self.type == "container" and self.attributes.get("image"):
                out["from"] = self.attributes["image"]
        out.update(
            {
                "Type": self.type,
                "Action": self.action,
                "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
                "scope": self.scope,
                "time": self.time_nano // 1_000_000_000,
                "timeNano": self.time_nano,
            }
        )
        return out


def _strip_tag(ref: str) -> str:
    """``busybox:latest`` -> ``busybox`` (a registry's port is no tag)."""
    name = ref.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


class EventFilter:
    """The ``filters`` of ``GET /events`` as one predicate."""

    def __init__(self, filters: Filters) -> None:
        self.filters = filters  # names it does not know are ignored, as dockerd does

    def _exact(self, name: str, *candidates: str) -> bool:
        wanted = self.filters.get(name)
        return not wanted or any(c in wanted for c in candidates if c)

    def _prefix(self, name: str, *candidates: str) -> bool:
        wanted = self.filters.get(name)
        return not wanted or any(c.startswith(w) for w in wanted for c in candidates if c)

    def _action(self, action: str) -> bool:
        wanted = self.filters.get("event")
        if any(w in _PREFIX_ACTIONS for w in wanted):
            return self._prefix("event", action)
        return self._exact("event", action)

    def _image(self, ev: Event) -> bool:
        name = ev.attributes.get("name" if ev.type == "image" else "image", "")
        return self._exact("image", ev.actor_id, name, _strip_tag(ev.actor_id), _strip_tag(name))

    def _actor(self, kind: str, ev: Event) -> bool:
        """``container=x`` (and network, volume …): an id or name prefix of that kind."""
        if kind not in self.filters:
            return True
        if ev.type != kind:
            return False
        return self._prefix(kind, ev.actor_id, ev.attributes.get("name", ""))

    def matches(self, ev: Event) -> bool:
        return (
            self._exact("type", ev.type)
            and self._exact("scope", ev.scope)
            and self._action(ev.action)
            and self._image(ev)
            and self.filters.match_labels(ev.attributes)
            and all(
                self._actor(kind, ev)
                for kind in ("container", "network", "volume", "plugin", "daemon", "node")
            )
        )


@dataclass
class Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False

    def deliver(self, item: Event | None) -> None:
        """On the subscriber's loop: queue ``item`` (None ends the stream)."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()  # make room for the end
            self.queue.put_nowait(None)


class EventBus:
    def __init__(self, size: int = RING_SIZE) -> None:
        self._ring: deque[Event] = deque(maxlen=size)
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self.closed = False

    def emit(
        self, type_: str, action: str, actor_id: str, attributes: Mapping[str, str] | None = None
    ) -> Event:
        """Record an event and hand it to every subscriber (callable from any thread)."""
        with self._lock:
            # time_ns can repeat or (NTP) step back: keep the ring ordered for since/until
            stamp = time.time_ns()
            if self._ring and stamp <= self._ring[-1].time_nano:
                stamp = self._ring[-1].time_nano + 1
            ev = Event(type_, action, actor_id, dict(attributes or {}), stamp)
            self._ring.append(ev)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            _call_on(sub.loop, sub.deliver, ev)
        return ev

    @contextlib.contextmanager
    def subscribe(
        self, since_nano: int = 0, until_nano: int = 0, match: EventFilter | None = None
    ) -> Iterator[tuple[list[Event], Subscription]]:
        """The buffered events in [since, until] (none when neither is given) and a
        subscription to the new ones, taken atomically: nothing is missed or repeated."""
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            replay: list[Event] = []
            if since_nano or until_nano:
                replay = [
                    ev
                    for ev in self._ring
                    if ev.time_nano >= since_nano
                    and not (until_nano and ev.time_nano > until_nano)
                    and (match is None or match.matches(ev))
                ]
            if self.closed:
                sub.deliver(None)
            else:
                self._subscribers.append(sub)
        try:
            yield replay, sub
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(sub)

    def recent(self) -> list[Event]:
        with self._lock:
            return list(self._ring)

    async def close(self, _app: object = None) -> None:
        """The daemon stops: every stream ends (aiohttp's ``on_shutdown`` calls this)."""
        with self._lock:
            self.closed = True
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            _call_on(sub.loop, sub.deliver, None)


def _call_on(loop: asyncio.AbstractEventLoop, fn: Any, arg: Any) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(arg)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(fn, arg)
