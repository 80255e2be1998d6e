"""Image endpoints over ``image.store.ImageStore``: list, inspect, history, tag, remove, prune,
save (``/images/get``), load, and ``/images/create`` (pull of a built-in base image, or import).

Rules:
- Store calls block, so each runs in a worker thread. Writes that add blobs (pull, load,
  import, commit) hold ``Engine.image_lock`` shared, those that end in ``gc`` (remove,
  prune) exclusive, as the store requires (``image_lock``).
- No registry is reachable from these machines: a pull of ``busybox`` (or ``debian:bookworm``,
  when ``image.base`` can make it) makes the image locally and answers with docker's JSON
  progress; any other name is the 404 dockerd gives for a repository it cannot pull
  ("pull access denied for …"), which is what ``docker run``'s auto-pull reports.
- Errors found before a stream starts get their HTTP status (``api_errors``); after, the stream
  ends with an ``errorDetail`` line, as dockerd's do. ``/images/get`` resolves every name before
  the first byte, so a missing image is a 404, not a broken tar.
- Names in paths contain ``/`` and ``:``: routes match on the suffix (``/images/{name:.+}/json``).
- ``rmi``'s ``noprune`` changes nothing: Berth's images have no parent images to keep; what
  the removed image alone used goes at once (``gc``), so ``system df`` shows it gone.
- Each pull, tag, untag, delete, load, import and save is an image event (``Engine.events``)
  with dockerd's actor: the image id (the reference for a pull) and its ``name``.
- ``import``'s ``changes`` are the Dockerfile instructions dockerd allows for
  ``--change``; a URL as ``fromSrc`` is refused (nothing is fetched from the network).
- ``/commit``: the container's active snapshot's upper dir as a new layer on its image
  (``ImageStore.commit_container``, overlay snapshots only), under ``image_lock`` shared. The new
  config is the image's, with the container's ``Config`` over it, then the request body's
  (a ``Config``, as docker-py's ``conf``), then ``changes``; history's ``created_by`` is the
  container's command. ``pause`` is not honoured: a running container is committed as it
  runs (pausing belongs to the container lifecycle, not here).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, BinaryIO, cast

from aiohttp import web

from berth.engine import api, api_containers
from berth.engine.filters import Filters, parse_timestamp, reference_matches
from berth.errors import InvalidArgument, NotFound, Unsupported
from berth.image import archive, base, reference
from berth.image import digest as digests
from berth.image import dockerfile as df
from berth.image.store import ImageSummary
from berth.spec import image as spec
from berth.spec.value import replace

log = logging.getLogger(__name__)

LIST_FILTERS = ("dangling", "label", "reference", "before", "since", "until")
PRUNE_FILTERS = ("dangling", "label", "label!", "until")
BUILT_IN = (base.BUSYBOX_REF, base.DEBIAN_REF)


def _name(request: web.Request) -> str:
    return request.match_info["name"]


# --------------------------------------------------------------------------- reading


def select(rows: list[ImageSummary], f: Filters, now: float | None = None) -> list[ImageSummary]:
    """The rows the list filters keep (``dangling`` is applied by the store)."""
    by_ref: dict[str, ImageSummary] = {}
    for row in rows:
        by_ref[row.id] = row
        for tag in row.repo_tags:
            by_ref[tag] = row

    def created_of(text: str) -> int:
        found = by_ref.get(text) or by_ref.get(_familiar(text))
        if found is None:
            matches = [r for r in rows if r.id.removeprefix("sha256:").startswith(text)]
            if len(matches) != 1:
                raise NotFound(f"No such image: {text}")
            found = matches[0]
        return found.created

    before = [created_of(v) for v in f.get("before")]
    since = [created_of(v) for v in f.get("since")]
    until = [parse_timestamp(v, now) for v in f.get("until")]
    patterns = f.get("reference")
    out = []
    for row in rows:
        if not f.match_labels(row.labels):
            continue
        if any(row.created >= b for b in before) or any(row.created <= s for s in since):
            continue
        if any(row.created >= u for u in until):
            continue
        if patterns:
            refs = (*row.repo_tags, *row.repo_digests)
            if not any(reference_matches(p, r) for p in patterns for r in refs):
                continue
        out.append(row)
    return out


def _event(request: web.Request, action: str, actor_id: str, name: str = "") -> None:
    api.engine(request).events.emit("image", action, actor_id, {"name": name or actor_id})


def _removal_events(request: web.Request, image_id: str, entries: list[dict[str, str]]) -> None:
    """untag and delete events of an ``rmi`` or a prune (by ref when the id is unknown)."""
    for entry in entries:
        if "Untagged" in entry:
            _event(request, "untag", image_id or entry["Untagged"], image_id)
        elif "Deleted" in entry:
            _event(request, "delete", entry["Deleted"])


def _familiar(text: str) -> str:
    try:
        return reference.parse(text).familiar()
    except InvalidArgument:
        return text


async def list_images(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    f = api.query_filters(request, LIST_FILTERS)
    dangling = f.bool_value("dangling")
    rows = await asyncio.to_thread(state.images.list, dangling)
    shared = api.query_bool(request, "shared-size")
    out = []
    for row in select(rows, f):
        doc = row.to_json()
        if not shared:
            doc["SharedSize"] = -1
        out.append(doc)
    return api.json_response(out)


async def inspect_image(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    return api.json_response(await asyncio.to_thread(state.images.inspect, _name(request)))


async def image_history(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    rows = await asyncio.to_thread(state.images.history, _name(request))
    return api.json_response([r.to_json() for r in rows])


# --------------------------------------------------------------------------- naming, removing


async def tag_image(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    repo = request.query.get("repo", "")
    tag = request.query.get("tag", "")
    if not repo:
        raise InvalidArgument("repository name must have at least one component")
    target = f"{repo}:{tag}" if tag else repo
    image = await asyncio.to_thread(state.images.tag, _name(request), target)
    _event(request, "tag", image.id, _familiar(target))
    log.info("req %s: tagged %s as %s", api.request_id(request), image.short_id, target)
    return web.Response(status=201)


async def remove_image(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    force = api.query_bool(request, "force")
    name = _name(request)

    image_id = ""

    def remove() -> list[dict[str, str]]:
        nonlocal image_id
        image_id = state.images.resolve(name).id
        out = state.images.remove(name, force=force, in_use=state.containers.image_in_use)
        if any("Deleted" in entry for entry in out):
            state.images.gc()
        return out

    async with state.image_lock.exclusive():
        result = await asyncio.to_thread(remove)
    _removal_events(request, image_id, result)
    log.info("req %s: rmi %s: %s", api.request_id(request), name, result)
    return api.json_response(result)


async def prune_images(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    f = api.query_filters(request, PRUNE_FILTERS)
    dangling_only = f.bool_value("dangling", True)
    assert dangling_only is not None
    until = [parse_timestamp(v) for v in f.get("until")]

    def prune() -> dict[str, Any]:
        rows = {r.id: r for r in state.images.list()}

        def keep(image_id: str) -> bool:
            row = rows.get(image_id)
            if row is None or state.containers.image_in_use(image_id):
                return True
            if not f.match_labels(row.labels) or f.excluded_by_labels(row.labels):
                return True
            return any(row.created >= u for u in until)

        report = state.images.prune(dangling_only=dangling_only, in_use=keep)
        deleted: list[dict[str, str]] = [{"Untagged": r} for r in report.untagged]
        deleted.extend({"Deleted": d} for d in report.deleted)
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": report.reclaimed}

    async with state.image_lock.exclusive():
        result = await asyncio.to_thread(prune)
    _removal_events(request, "", result["ImagesDeleted"] or [])
    return api.json_response(result)


# --------------------------------------------------------------------------- save and load


async def save_images(request: web.Request) -> web.StreamResponse:
    names = request.query.getall("names", [])
    return await _save(request, names)


async def save_image(request: web.Request) -> web.StreamResponse:
    return await _save(request, [_name(request)])


async def _save(request: web.Request, names: list[str]) -> web.StreamResponse:
    state = api.engine(request)
    if not names:
        raise InvalidArgument("save: no images named (names=…)")

    def check() -> list[str]:
        return [state.images.resolve(name).id for name in names]

    for image_id in await asyncio.to_thread(check):
        _event(request, "save", image_id)
    response = web.StreamResponse(status=200)
    response.content_type = "application/x-tar"
    response.enable_chunked_encoding()
    log.info("req %s: saving %s", api.request_id(request), names)
    return await api.stream_from_thread(
        request, response, lambda out: archive.save(state.images, names, cast("BinaryIO", out))
    )


async def load_images(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    reader = cast("BinaryIO", api.BodyReader(request.content, asyncio.get_running_loop()))
    async with state.image_lock.shared():
        loaded = await asyncio.to_thread(archive.load, state.images, reader)
        ids = await asyncio.to_thread(lambda: [state.images.resolve(n).id for n in loaded])
    for image_id in dict.fromkeys(ids):
        _event(request, "load", image_id)
    stream = await api.JsonStream(request).start()
    for name in loaded:
        if digests.is_digest(name):
            await stream.send({"stream": f"Loaded image ID: {name}\n"})
        else:
            await stream.send({"stream": f"Loaded image: {name}\n"})
    log.info("req %s: loaded %s", api.request_id(request), loaded)
    return await stream.finish()


# --------------------------------------------------------------------------- create: pull, import


def pull_reference(from_image: str, tag: str) -> reference.Reference:
    text = from_image
    if tag:
        text = f"{from_image}@{tag}" if tag.startswith("sha256:") else f"{from_image}:{tag}"
    return reference.parse(text)


def pull_refused(ref: reference.Reference) -> NotFound:
    return NotFound(
        f"pull access denied for {ref.familiar_name()}, repository does not exist or may "
        "require 'docker login': berthd reaches no registry; the images it makes locally are "
        "busybox and debian:bookworm (or docker load a saved image)"
    )


async def create_image(request: web.Request) -> web.StreamResponse:
    if "fromSrc" in request.query:
        return await _import(request)
    from_image = request.query.get("fromImage", "")
    if not from_image:
        raise InvalidArgument("fromImage or fromSrc is required")
    ref = pull_reference(from_image, request.query.get("tag", ""))
    if str(ref) not in BUILT_IN:
        raise pull_refused(ref)
    state = api.engine(request)
    rid = api.request_id(request)
    async with state.image_lock.shared():
        before = await asyncio.to_thread(state.images.get, str(ref))
        stream = await api.JsonStream(request).start()
        await stream.send({"status": f"Pulling from {ref.path}", "id": ref.tag})
        try:
            image = await asyncio.to_thread(base.base_image, state.images, str(ref))
        except Exception as e:  # the stream has started: the error goes in it
            log.info("req %s: pull %s failed: %s", rid, ref, e)
            await stream.fail(e)
            return await stream.finish()
    for layer in image.manifest.layers:
        short = digests.parse(layer.digest).hex[:12]
        await stream.send(
            {"status": "Made locally (built-in base image)", "progressDetail": {}, "id": short}
        )
        await stream.send({"status": "Pull complete", "progressDetail": {}, "id": short})
    await stream.send({"status": f"Digest: {image.manifest_digest}"})
    fresh = before is None or before.id != image.id
    verb = "Downloaded newer image for" if fresh else "Image is up to date for"
    await stream.send({"status": f"Status: {verb} {ref.familiar()}"})
    _event(request, "pull", ref.familiar(), ref.familiar_name())
    log.info("req %s: pulled %s as %s (built-in)", rid, ref, image.short_id)
    return await stream.finish()


async def _import(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    query = request.query
    if query["fromSrc"] != "-":
        raise Unsupported(
            f"import from {query['fromSrc']!r}: berthd fetches nothing from the network; "
            "send the archive as the request body (fromSrc=-, docker import FILE)"
        )
    config = config_from_changes(query.getall("changes", []))
    repo = query.get("repo", "")
    tag = query.get("tag", "")
    ref = (f"{repo}:{tag}" if tag else repo) or None
    if ref is not None:
        reference.parse(ref)
    reader = cast("BinaryIO", api.BodyReader(request.content, asyncio.get_running_loop()))
    async with state.image_lock.shared():
        image = await asyncio.to_thread(
            state.images.import_rootfs, reader, ref, config, query.get("message", "")
        )
    _event(request, "import", image.id)
    log.info("req %s: imported %s as %s", api.request_id(request), image.short_id, ref)
    stream = await api.JsonStream(request).start()
    await stream.send({"status": image.id})
    return await stream.finish()


COMMIT_CHANGES = (
    df.Cmd, df.Entrypoint, df.Env, df.Expose, df.Label, df.Onbuild, df.StopSignal, df.User,
    df.Volume, df.Workdir, df.Healthcheck,
)  # fmt: skip
DEFAULT_SHELL = ("/bin/sh", "-c")


def config_from_changes(
    changes: list[str], base: spec.ContainerConfig | None = None
) -> spec.ContainerConfig | None:
    """``docker import/commit --change``: Dockerfile instructions (CMD, ENTRYPOINT, ENV, EXPOSE,
    LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR, HEALTHCHECK, as dockerd allows) applied
    in order to ``base`` (ENV and LABEL merge by key; EXPOSE and VOLUME add); with no base and
    no changes, None. Words are taken as written."""
    lines = [c for c in changes if c.strip()]
    if not lines:
        return base
    parsed = df.parse("FROM scratch\n" + "\n".join(lines), filename="--change")
    config = base or spec.ContainerConfig()
    env: dict[str, str] = dict(e.partition("=")[::2] for e in config.env)
    for ins in parsed.stages[-1].instructions:
        if not isinstance(ins, COMMIT_CHANGES):
            word = ins.source.text.split(None, 1)[0].upper()
            raise InvalidArgument(f"{word} is not a valid change command")
        if isinstance(ins, df.Cmd):
            config = replace(config, cmd=_command(ins.command))
        elif isinstance(ins, df.Entrypoint):
            config = replace(config, entrypoint=_command(ins.command))
        elif isinstance(ins, df.Env):
            env.update((kv.key, kv.value) for kv in ins.pairs)
            config = replace(config, env=tuple(f"{k}={v}" for k, v in env.items()))
        elif isinstance(ins, df.Expose):
            ports = [p if "/" in p else f"{p}/tcp" for w in ins.ports for p in w.split()]
            ports = [p for p in ports if p not in config.exposed_ports]
            config = replace(config, exposed_ports=(*config.exposed_ports, *ports))
        elif isinstance(ins, df.Label):
            labels = {**config.labels, **{kv.key: kv.value for kv in ins.pairs}}
            config = replace(config, labels=labels)
        elif isinstance(ins, df.Onbuild):
            config = replace(config, on_build=(*config.on_build, ins.trigger))
        elif isinstance(ins, df.StopSignal):
            config = replace(config, stop_signal=ins.signal)
        elif isinstance(ins, df.User):
            config = replace(config, user=ins.user)
        elif isinstance(ins, df.Volume):
            volumes = [v for v in ins.paths if v not in config.volumes]
            config = replace(config, volumes=(*config.volumes, *volumes))
        elif isinstance(ins, df.Workdir):
            config = replace(config, working_dir=ins.path)
        else:
            config = replace(config, healthcheck=ins.config())
    return config


def _command(cmd: df.Command) -> tuple[str, ...]:
    return cmd.args if cmd.exec_form else (*DEFAULT_SHELL, cmd.args[0])


# --------------------------------------------------------------------------- commit

# The keys of a container's Config that become its image's (the rest, Hostname, Tty, …, are
# the container's own).
COMMITTED_KEYS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal", "Healthcheck", "OnBuild", "Shell",
)  # fmt: skip


def committed_config(
    image: spec.ContainerConfig, *overlays: dict[str, Any] | None
) -> spec.ContainerConfig:
    """The image's config with each overlay's (a Docker ``Config``) non-null keys over it."""
    merged = image.to_json()
    for overlay in overlays:
        for key in COMMITTED_KEYS:
            found = (overlay or {}).get(key)
            if found is not None:
                merged[key] = found
    return spec.ContainerConfig.from_json(merged, "Config")


async def _commit_body(request: web.Request) -> dict[str, Any]:
    """The request's ``Config`` (the CLI sends ``null``, docker-py ``{}``)."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON body: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise InvalidArgument("invalid JSON body: expected a container Config object")
    return data or {}


async def commit_container(request: web.Request) -> web.StreamResponse:
    """``docker commit``: the container's changes as a new layer on its image (see the
    module docstring); 201 ``{"Id": …}``."""
    state = api.engine(request)
    query = request.query
    name = query.get("container", "")
    manager = request.app.get(api_containers.CONTAINERS)
    if manager is None:  # an app without containers (tests of the image endpoints)
        raise NotFound(f"No such container: {name}")
    rec = manager.get(name)
    body = await _commit_body(request)
    repo, tag = query.get("repo", ""), query.get("tag", "")
    if tag and not repo:
        raise InvalidArgument(f"tag={tag!r}: a tag needs a repository (repo=)")
    ref = (f"{repo}:{tag}" if tag else repo) or None
    if ref is not None and reference.parse(ref).digest:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {ref}")
    changes = query.getall("changes", [])
    created_by = " ".join([rec.path, *rec.args]).strip()

    def commit() -> str:
        parent = state.images.resolve(rec.image_id)
        base = committed_config(parent.config.config, rec.config, body)
        config = config_from_changes(changes, base)
        image = state.images.commit_container(
            rec.id,
            parent,
            ref,
            config,
            comment=query.get("comment", ""),
            author=query.get("author", ""),
            created_by=created_by,
        )
        return image.id

    async with state.image_lock.shared():
        image_id = await asyncio.to_thread(commit)
    manager.emit(rec, "commit", comment=query.get("comment", ""))
    log.info("req %s: committed container %s as %s (%s)", api.request_id(request),
             rec.id[:12], image_id, ref)  # fmt: skip
    return api.json_response({"Id": image_id}, status=201)


ROUTES: list[api.Route] = [
    ("GET", "/images/json", list_images),
    ("POST", "/images/create", create_image),
    ("POST", "/commit", commit_container),
    ("POST", "/images/load", load_images),
    ("POST", "/images/prune", prune_images),
    ("GET", "/images/get", save_images),
    ("GET", "/images/{name:.+}/json", inspect_image),
    ("GET", "/images/{name:.+}/history", image_history),
    ("GET", "/images/{name:.+}/get", save_image),
    ("POST", "/images/{name:.+}/tag", tag_image),
    ("DELETE", "/images/{name:.+}", remove_image),
]
