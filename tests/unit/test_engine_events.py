"""The event bus, its filters and ``GET /events`` in-process (no root): Docker's JSON with the
legacy fields, replay by since/until, live streaming, filters as moby applies them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from berth.engine import api
from berth.engine.api_events import parse_event_time
from berth.engine.events import Event, EventBus, EventFilter
from berth.engine.filters import Filters
from berth.engine.paths import Paths
from berth.errors import InvalidArgument
from berth.image.store import ImageStore

CID = "4fab20003648cdd13c44e503a5cd0ec360e2d019ef9a82cf0ab75f6556245141"
OTHER = "ead7ae45fa7b53c5fa8c2ce12c16df047b3b9e6bf8a72028dadffa95f8d29583"
IMAGE = "sha256:" + "ab" * 32


def _ev(type_: str, action: str, actor: str, **attributes: str) -> Event:
    return Event(type_, action, actor, attributes, 1_700_000_000_123_456_789)


def _match(filters: dict[str, list[str]], ev: Event) -> bool:
    return EventFilter(Filters(filters)).matches(ev)


# --------------------------------------------------------------------------- JSON


def test_container_event_json_has_the_legacy_fields() -> None:
    ev = _ev("container", "die", CID, image="busybox", name="web", exitCode="3")
    assert ev.to_json() == {
        "status": "die",
        "id": CID,
        "from": "busybox",
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": CID, "Attributes": {"image": "busybox", "name": "web", "exitCode": "3"}},
        "scope": "local",
        "time": 1_700_000_000,
        "timeNano": 1_700_000_000_123_456_789,
    }
    image = _ev("image", "tag", IMAGE, name="mine:1").to_json()
    assert image["status"] == "tag" and image["id"] == IMAGE and "from" not in image
    network = _ev("network", "create", "n" * 64, name="net").to_json()
    assert "status" not in network and "id" not in network and network["Type"] == "network"


# --------------------------------------------------------------------------- filters


def test_filter_container_matches_an_id_or_name_prefix_of_containers_only() -> None:
    ev = _ev("container", "start", CID, name="web-1", image="busybox")
    assert _match({}, ev)
    assert _match({"container": [CID[:12]]}, ev)
    assert _match({"container": ["web"]}, ev)
    assert not _match({"container": [OTHER[:12]]}, ev)
    assert not _match({"container": [IMAGE[:10]]}, _ev("image", "pull", IMAGE, name="web"))


def test_filter_event_is_exact_except_for_exec_and_health_actions() -> None:
    die = _ev("container", "die", CID)
    assert _match({"event": ["die", "stop"]}, die)
    assert not _match({"event": ["di"]}, die)
    exec_ = _ev("container", "exec_create: sh -c true", CID)
    assert _match({"event": ["exec_create"]}, exec_)
    assert not _match({"event": ["exec_start"]}, exec_)


def test_filter_image_type_label_scope() -> None:
    ctr = _ev("container", "start", CID, image="busybox:latest", name="web", tier="front")
    assert _match({"image": ["busybox"]}, ctr)
    assert _match({"image": ["busybox:latest"]}, ctr)
    assert not _match({"image": ["debian"]}, ctr)
    img = _ev("image", "tag", IMAGE, name="localhost:5000/mine:1")
    assert _match({"image": ["localhost:5000/mine"]}, img)
    assert _match({"image": [IMAGE]}, img)
    assert _match({"type": ["container"]}, ctr) and not _match({"type": ["image"]}, ctr)
    assert _match({"label": ["tier"]}, ctr) and _match({"label": ["tier=front"]}, ctr)
    assert not _match({"label": ["tier=back"]}, ctr)
    assert not _match({"label": ["tier", "zone"]}, ctr)  # every label filter must match
    assert _match({"scope": ["local"]}, ctr) and not _match({"scope": ["swarm"]}, ctr)


def test_filter_unknown_name_is_ignored_as_dockerd_does() -> None:
    assert _match({"colour": ["red"]}, _ev("container", "start", CID))


def test_parse_event_time() -> None:
    assert parse_event_time(None) == 0 and parse_event_time("") == 0
    assert parse_event_time("1700000000") == 1_700_000_000_000_000_000
    assert parse_event_time("1700000000.5") == 1_700_000_000_500_000_000
    assert parse_event_time("1700000000.000000001") == 1_700_000_000_000_000_001
    assert parse_event_time("2023-11-14T22:13:20Z") == 1_700_000_000_000_000_000
    with pytest.raises(InvalidArgument):
        parse_event_time("yesterday")


# --------------------------------------------------------------------------- the bus


def test_bus_replays_by_time_and_delivers_new_events_in_order() -> None:
    async def main() -> None:
        bus = EventBus(size=3)
        first = bus.emit("container", "create", CID)
        for action in ("start", "die", "destroy"):
            bus.emit("container", action, CID)
        assert [e.action for e in bus.recent()] == ["start", "die", "destroy"]  # bounded
        stamps = [e.time_nano for e in bus.recent()]
        assert stamps == sorted(set(stamps)) and stamps[0] > first.time_nano
        with bus.subscribe() as (replay, _sub):
            assert replay == []  # neither since nor until: no replay
        with bus.subscribe(1, stamps[1], EventFilter(Filters({"event": ["start"]}))) as (r, _):
            assert [e.action for e in r] == ["start"]
        with bus.subscribe(since_nano=stamps[1]) as (replay, sub):
            assert [e.action for e in replay] == ["die", "destroy"]
            bus.emit("image", "pull", "busybox:latest")
            threading.Thread(target=bus.emit, args=("image", "tag", IMAGE)).start()
            got = [await asyncio.wait_for(sub.queue.get(), 5) for _ in range(2)]
            assert [e.action for e in got if e is not None] == ["pull", "tag"]
        with bus.subscribe() as (_replay, sub):
            await bus.close()
            assert await asyncio.wait_for(sub.queue.get(), 5) is None
        with bus.subscribe() as (_replay, sub):  # after close: ends at once
            assert sub.queue.get_nowait() is None

    asyncio.run(main())


def test_a_subscriber_too_far_behind_is_ended_not_grown() -> None:
    async def main() -> None:
        bus = EventBus()
        with bus.subscribe() as (_replay, sub):
            for _ in range(sub.queue.maxsize + 10):
                bus.emit("container", "start", CID)
            assert sub.dropped and sub.queue.qsize() == sub.queue.maxsize
            items = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
            assert items[-1] is None

    asyncio.run(main())


# --------------------------------------------------------------------------- GET /events

Client = TestClient[web.Request, web.Application]


def _run(tmp_path: Path, body: Callable[[Client, EventBus], Awaitable[None]]) -> None:
    async def main() -> None:
        paths = Paths(str(tmp_path / "root"))
        paths.make()
        images = ImageStore(paths.images, snapshot_mode="copy")
        state = api.Engine(paths=paths, images=images, engine_id="e1")
        async with TestClient(TestServer(api.make_app(state))) as client:
            await body(client, state.events)

    asyncio.run(main())


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_events_since_until_replays_then_ends(tmp_path: Path) -> None:
    async def body(client: Client, bus: EventBus) -> None:
        start = time.time()
        bus.emit("container", "create", CID, {"name": "web", "image": "busybox"})
        bus.emit("container", "start", CID, {"name": "web", "image": "busybox"})
        bus.emit("image", "tag", IMAGE, {"name": "mine:1"})
        until = f"{time.time():.9f}"
        response = await client.get(f"/v1.43/events?since={int(start)}&until={until}")
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        rows = _lines(await asyncio.wait_for(response.text(), 5))
        assert [r["Action"] for r in rows] == ["create", "start", "tag"]
        filters = json.dumps({"type": {"container": True}, "event": {"start": True}})
        response = await client.get(
            "/v1.43/events", params={"since": str(int(start)), "until": until, "filters": filters}
        )
        rows = _lines(await asyncio.wait_for(response.text(), 5))
        assert [(r["Type"], r["Action"], r["id"]) for r in rows] == [("container", "start", CID)]
        bad = await client.get(f"/v1.43/events?since={int(start) + 10}&until={int(start)}")
        assert bad.status == 400
        assert "cannot be after `until` time" in (await bad.json())["message"]
        malformed = await client.get("/v1.43/events", params={"filters": '{"type":"x"}'})
        assert malformed.status == 400

    _run(tmp_path, body)


def test_events_stream_live_until_a_future_until(tmp_path: Path) -> None:
    async def body(client: Client, bus: EventBus) -> None:
        until = f"{time.time() + 1.0:.9f}"
        response = await client.get(f"/v1.43/events?until={until}")
        assert response.status == 200  # the headers come before any event
        bus.emit("container", "die", CID, {"name": "web", "exitCode": "0"})
        line = await asyncio.wait_for(response.content.readline(), 5)
        assert json.loads(line)["Actor"]["Attributes"]["exitCode"] == "0"
        began = time.monotonic()
        assert await asyncio.wait_for(response.content.read(), 5) == b""  # ends at until
        assert time.monotonic() - began < 3

    _run(tmp_path, body)


def test_events_streams_end_when_the_daemon_stops(tmp_path: Path) -> None:
    async def main() -> None:
        paths = Paths(str(tmp_path / "root"))
        paths.make()
        images = ImageStore(paths.images, snapshot_mode="copy")
        state = api.Engine(paths=paths, images=images, engine_id="e1")
        client = TestClient(TestServer(api.make_app(state)))
        await client.start_server()
        try:
            response = await client.get("/v1.43/events")
            assert response.status == 200
            state.events.emit("container", "start", CID)
            assert json.loads(await response.content.readline())["Action"] == "start"
            reading = asyncio.ensure_future(response.content.read())
            await asyncio.sleep(0.1)
            assert not reading.done()  # no until: the stream stays open
            await client.app.shutdown()  # aiohttp's on_shutdown, as at SIGTERM
            assert await asyncio.wait_for(reading, 5) == b""
        finally:
            await client.close()

    asyncio.run(main())
