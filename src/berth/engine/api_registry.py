"""Registry endpoints: ``POST /images/create`` (pull), ``POST /images/{name}/push`` and
``POST /auth``, over ``berth.registry``'s clients.

Rules:
- ``/images/create`` is served here for every request: a pull from a registry host (any domain
  but ``docker.io``) runs the registry client; ``docker.io`` names (the built-in base images,
  or dockerd's "pull access denied" for the rest, since no public registry is reachable) and
  imports (``fromSrc``) are ``api_images.create_image``'s, called as is.
- Credentials come in ``X-Registry-Auth`` (base64url JSON, as the docker CLI and docker-py
  send them); an empty header or ``{}`` is an anonymous pull or push.
- Credentials refused during a pull or push are dockerd's 500 with the registry's words
  ("no basic auth credentials", "unauthorized: authentication required"); only ``/auth``
  answers 401 (the docker CLI meets a 401 from a pull with a login prompt and a retry).
- Streams start lazily, as dockerd's: an error before the first progress line (for a pull:
  the registry unreachable, credentials refused, no such manifest) is a plain HTTP error with
  its status (``api_errors``); after it, the stream ends with an ``errorDetail`` line. A push
  names its repository first, as dockerd's does, so its errors (no such local image,
  credentials refused) end its stream. A client that goes away cancels the pull (its
  partial blobs are dropped).
- Progress lines are dockerd's: ``{"status", "progressDetail", "id"}`` (plus ``progress``,
  the text bar, while bytes move), then ``Digest: …`` and ``Status: Downloaded newer image for
  …`` / ``Image is up to date for …`` for a pull; ``<tag>: digest: … size: N`` and an ``aux``
  ``{"Tag", "Digest", "Size"}`` for a push.
- Pulls and pushes hold ``Engine.image_lock`` shared (a pull writes blobs no image names yet;
  a push reads blobs a removal's gc could drop). The clients never block the loop (their disk
  work runs in threads).
- Registries spoken to over plain http besides loopback ones: ``--insecure-registry`` values,
  kept in the app under ``INSECURE_REGISTRIES`` by the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from berth.engine import api, api_errors, api_images
from berth.errors import BerthError, InvalidArgument, Unauthenticated
from berth.image import digest as digests
from berth.image import reference
from berth.registry import client as registry_client
from berth.registry import client_pull, client_push, credentials
from berth.registry.client import Event, Progress

log = logging.getLogger(__name__)

INSECURE_REGISTRIES = web.AppKey("insecure_registries", tuple)
T = TypeVar("T")
_BAR_WIDTH = 50


def insecure_registries(request: web.Request) -> tuple[str, ...]:
    found: tuple[str, ...] = request.app.get(INSECURE_REGISTRIES, ())
    return found


def _auth(request: web.Request) -> credentials.AuthConfig | None:
    return credentials.decode_header(request.headers.get("X-Registry-Auth"))


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.4g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{size}"


def progress_bar(current: int, total: int | None) -> str:
    """dockerd's text bar: ``[=====>     ]  1.2MB/3.4MB``."""
    if not total:
        return f"{_human(current)}"
    filled = min(_BAR_WIDTH, int(_BAR_WIDTH * current / total))
    arrow = ">" if filled < _BAR_WIDTH else "="
    bar = "=" * max(0, filled - 1) + arrow if filled else ""
    return f"[{bar:<{_BAR_WIDTH}}] {_human(current):>8}/{_human(total)}"


def message_of(event: Event) -> dict[str, Any]:
    """A progress event as dockerd's JSON message."""
    if not event.id and event.current is None:
        return {"status": event.status}
    message: dict[str, Any] = {"status": event.status, "progressDetail": {}}
    if event.current is not None:
        message["progressDetail"] = {"current": event.current, "total": event.total}
        message["progress"] = progress_bar(event.current, event.total)
    if event.id:
        message["id"] = event.id
    return message


@contextlib.contextmanager
def refusals_as_500() -> Iterator[None]:
    """A registry's refusal during a pull or push is dockerd's 500 with the registry's words,
    not a 401: the docker CLI answers a 401 by asking for a login and trying again."""
    try:
        yield
    except Unauthenticated as e:
        raise api_errors.HostToolFailed(e.message) from None


async def stream_progress(
    request: web.Request,
    work: Callable[[Progress], Awaitable[T]],
    tail: Callable[[api.JsonStream, T], Awaitable[None]],
) -> web.StreamResponse:
    """Run ``work``, stream its progress, then ``tail``'s lines with its result. A failure
    before the first event raises (a plain HTTP error); after it, it is the stream's last line.
    A client that goes away cancels ``work``."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    task = asyncio.ensure_future(work(queue.put_nowait))
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    stream: api.JsonStream | None = None
    try:
        while (event := await queue.get()) is not None:
            if stream is None:
                stream = await api.JsonStream(request).start()
            await stream.send(message_of(event))
        if stream is None:
            result = task.result()  # raises the error as a plain HTTP error
            stream = await api.JsonStream(request).start()
        else:
            try:
                result = task.result()
            except Exception as e:  # the stream has started: the error is its last line
                if not isinstance(e, BerthError):  # a bug, not a refusal: keep its traceback
                    log.exception("req %s: failed after the stream started", api.request_id())
                await stream.fail(e)
                return await stream.finish()
        await tail(stream, result)
        return await stream.finish()
    except ConnectionError as e:
        log.info("req %s: the client went away (%s): stopped", api.request_id(request), e)
        return stream.response if stream is not None else web.Response(status=204)
    finally:
        if not task.done():  # cancelling drops the partial blobs
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def create_image(request: web.Request) -> web.StreamResponse:
    """``POST /images/create``: a pull from a registry, or ``api_images``' own (see above)."""
    from_image = request.query.get("fromImage", "")
    if "fromSrc" in request.query or not from_image:
        return await api_images.create_image(request)
    ref = api_images.pull_reference(from_image, request.query.get("tag", ""))
    if ref.domain == reference.DEFAULT_DOMAIN:
        return await api_images.create_image(request)
    platform = request.query.get("platform", "")
    if platform and platform.split("/")[:2] != list(client_pull.PLATFORM):
        raise InvalidArgument(f"platform {platform!r}: berthd pulls linux/amd64 images only")
    state = api.engine(request)
    auth = _auth(request)
    rid = api.request_id(request)
    log.info("req %s: pulling %s from %s", rid, ref, ref.domain)

    async def work(progress: Progress) -> client_pull.Pulled:
        with refusals_as_500():
            return await client_pull.pull(
                state.images, ref, auth, insecure_registries(request), progress
            )

    async def tail(stream: api.JsonStream, pulled: client_pull.Pulled) -> None:
        await stream.send({"status": f"Digest: {pulled.digest}"})
        shown = ref.familiar()
        verb = "Downloaded newer image for" if pulled.fresh else "Image is up to date for"
        await stream.send({"status": f"Status: {verb} {shown}"})
        state.events.emit("image", "pull", shown, {"name": ref.familiar_name()})
        log.info("req %s: pulled %s as %s", rid, ref, pulled.image.short_id)

    async with state.image_lock.shared():
        return await stream_progress(request, work, tail)


async def push_image(request: web.Request) -> web.StreamResponse:
    """``POST /images/{name}/push?tag=``: one tag, or every tag of the repository."""
    name = request.match_info["name"]
    tag = request.query.get("tag", "")
    text = f"{name}@{tag}" if digests.is_digest(tag) else (f"{name}:{tag}" if tag else name)
    ref = reference.parse_normalized(text)
    state = api.engine(request)
    auth = _auth(request)
    rid = api.request_id(request)

    async def tail(stream: api.JsonStream, pushed: list[client_push.Pushed]) -> None:
        for result in pushed:
            aux = {"Tag": result.tag, "Digest": result.digest, "Size": result.size}
            await stream.send({"progressDetail": {}, "aux": aux})
            shown = ref.with_tag(result.tag).familiar()
            state.events.emit("image", "push", shown, {"name": shown})
        log.info("req %s: push of %s: %s", rid, ref, pushed)

    if ref.digest:
        raise InvalidArgument(f"cannot push a digest reference: {ref.familiar()}")

    async def work(progress: Progress) -> list[client_push.Pushed]:
        with refusals_as_500():
            return await client_push.push(
                state.images, ref, auth, insecure_registries(request), progress
            )

    async with state.image_lock.shared():
        return await stream_progress(request, work, tail)


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /auth``: check the credentials against the registry (nothing is stored)."""
    body = await api.read_json(request)
    auth = credentials.AuthConfig.from_json(body, "auth config")
    server = credentials.normalize_server(auth.server_address or "docker.io")
    await registry_client.login(server, auth, insecure_registries(request))
    log.info("req %s: login to %s as %s succeeded", api.request_id(request), server,
             auth.username)  # fmt: skip
    return api.json_response({"Status": "Login Succeeded", "IdentityToken": ""})


# Served before api_images' routes: this /images/create takes over theirs (and calls it).
ROUTES: list[api.Route] = [
    ("POST", "/images/create", create_image),
    ("POST", "/images/{name:.+}/push", push_image),
    ("POST", "/auth", login),
]
