"""``POST /build``: a tar context in, the legacy builder's JSON progress out (``docker build``
with no BuildKit, as CLI 28 does against an API 1.43 daemon, and docker-py's
``images.build``).

Rules:
- The body is the context tar (plain, gzip, bzip2, xz or zstd), extracted with the layer
  applier's safety (``layers.apply_layer``: no absolute or ``..`` names, nothing written
  through a symlink) into ``<data root>/builds/ctx-*``, removed when the request ends.
- Query: ``dockerfile`` (a path inside the context; ``Dockerfile``, then ``dockerfile``),
  ``t`` (several), ``buildargs`` and ``labels`` (JSON objects), ``target``, ``nocache``,
  ``q``, the steps' limits (``memory``, ``memswap``, ``cpushares``, ``cpusetcpus``,
  ``cpuperiod``, ``cpuquota``, ``shmsize``, ``ulimits``: checked as a create's
  HostConfig is); ``rm``/``forcerm`` change nothing (step containers are always removed), ``pull``,
  ``cachefrom`` and ``extrahosts`` are ignored; ``networkmode`` (``docker build --network``)
  is ``default``/``bridge`` (the default bridge, NAT'ed out), ``none`` (loopback only),
  ``host`` or a user network (``build_runner.StepNetworks``: a sandbox per RUN step);
  ``platform`` only the host's (``linux/amd64`` here), ``remote`` is refused (nothing is
  fetched). A bad value, an unknown network (404), a missing Dockerfile, a Dockerfile that
  does not parse (the message names its line) or an unknown target is an error before the
  stream starts. The build's stream ends once its steps' veths are gone.
- The stream is what dockerd's legacy builder writes: ``Step n/N : …`` (steps numbered over
  the stages the target needs), `` ---> Using cache``, `` ---> Running in <id>``, the RUN
  output, ``Removing intermediate container <id>``, `` ---> <id>``, then ``{"aux":{"ID"}}``,
  ``Successfully built <id>`` and ``Successfully tagged <tag>``. With ``q`` only the image id
  is sent (``{"stream":"sha256:…\\n"}``), or on failure what was held back and the error.
  A failing RUN ends the stream with ``errorDetail`` ``{"code": <status>, "message": "The
  command '…' returned a non-zero code: <status>"}`` (the CLI exits with that code).
- The build runs in a worker thread (``image.build.build`` with ``build_runner.StepRunner``)
  and holds ``Engine.image_lock`` shared from start to end (it writes blobs no image names
  yet, which a ``gc`` would take): builds, runs and pulls go side by side, an ``rmi`` or
  prune waits for them. Events cross to the loop through a queue (the build thread
  waits while more than ``QUEUE_LIMIT`` are unsent); a client that goes away
  (a failed write, or a closed transport seen while a step is silent) cancels the build: the
  step's processes are killed, its mounts removed, and the handler waits for the thread.
  The first build of a daemon first sweeps what a killed daemon's builds left
  (``build_runner.sweep``), before it makes its own context dir; builds that come meanwhile
  wait for that sweep (builds run side by side, so none may be swept by another).
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import gzip
import json
import logging
import lzma
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from aiohttp import web
from multidict import MultiMapping

from berth.engine import api, api_containers, api_errors, oci_config
from berth.engine.build_runner import BuildCancelled, StepNetworks, StepRunner, sweep
from berth.engine.containers import DEFAULT_CGROUP_PARENT
from berth.engine.containers_state import new_id
from berth.engine.filters import parse_bool
from berth.errors import InvalidArgument, Unsupported
from berth.image import build as builder
from berth.image import dockerfile as df
from berth.image import reference
from berth.image.layers import apply_layer, read_head
from berth.image.store import Image

log = logging.getLogger(__name__)

CLIENT_POLL = 0.5  # seconds between looks at the client's connection while a step is silent
QUEUE_LIMIT = 1000  # events waiting for the client before the build thread waits
QUEUE_WAIT = 0.01
ARROW = " ---> "


# --------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class BuildOptions:
    dockerfile: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    quiet: bool = False
    host_config: dict[str, Any] = field(default_factory=dict)  # the steps' resource limits
    network_mode: str = ""  # "": the default bridge

    @staticmethod
    def from_query(q: MultiMapping[str]) -> BuildOptions:
        if q.get("remote"):
            raise Unsupported(
                f"remote={q['remote']!r}: berthd fetches no build context from the network; "
                "send it as the request body"
            )
        platform = q.get("platform", "")
        host = builder.platform_args()["TARGETPLATFORM"]
        if platform and platform.lower() not in (host, host.partition("/")[2]):
            raise InvalidArgument(f"platform={platform!r}: this daemon builds for {host} only")
        tags = tuple(t for t in q.getall("t", []) if t)
        for tag in tags:
            ref = reference.parse(tag)
            if ref.digest:
                raise InvalidArgument(f"t={tag!r}: a build cannot tag with a digest")
        host_config = _limits(q)
        oci_config.CreateRequest.from_json({"Image": "build", "HostConfig": host_config})
        args = {k: v for k, v in _json_map(q, "buildargs").items() if v is not None}
        labels = {k: v or "" for k, v in _json_map(q, "labels").items()}
        return BuildOptions(
            dockerfile=q.get("dockerfile", "") or "Dockerfile",
            tags=tags,
            build_args=args,
            labels=labels,
            target=q.get("target", ""),
            no_cache=parse_bool(q.get("nocache")),
            quiet=parse_bool(q.get("q")),
            host_config=host_config,
            network_mode=q.get("networkmode", ""),
        )


# query parameter -> HostConfig key of the RUN steps' containers
LIMITS = {
    "memory": "Memory",
    "memswap": "MemorySwap",
    "cpushares": "CpuShares",
    "cpuperiod": "CpuPeriod",
    "cpuquota": "CpuQuota",
    "shmsize": "ShmSize",
}


def _limits(q: MultiMapping[str]) -> dict[str, Any]:
    """``docker build --memory/--cpu-*/--shm-size/--ulimit`` as a HostConfig (0 is unset)."""
    out: dict[str, Any] = {}
    for name, key in LIMITS.items():
        text = q.get(name, "")
        try:
            number = int(text) if text else 0
        except ValueError:
            raise InvalidArgument(f"{name}={text!r}: not an integer") from None
        if number:
            out[key] = number
    if q.get("cpusetcpus"):
        out["CpusetCpus"] = q["cpusetcpus"]
    ulimits = q.get("ulimits", "")
    if ulimits:
        try:
            out["Ulimits"] = json.loads(ulimits)
        except ValueError:
            raise InvalidArgument(f"ulimits={ulimits!r}: not JSON") from None
    return out


def _json_map(query: MultiMapping[str], name: str) -> dict[str, str | None]:
    text = query.get(name, "")
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{name}: not a JSON object: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(v, str) or v is None for v in data.values()
    ):
        raise InvalidArgument(f"{name}: expected a JSON object of strings, got {text!r}")
    return cast("dict[str, str | None]", data)


# --------------------------------------------------------------------------- the context


class _Prefixed:
    """``raw`` after its first bytes ``prefix`` (already read to sniff the format)."""

    def __init__(self, prefix: bytes, raw: BinaryIO) -> None:
        self._prefix, self._raw = prefix, raw

    def read(self, n: int = -1, /) -> bytes:
        if not self._prefix:
            return self._raw.read(n)
        if n < 0:
            data, self._prefix = self._prefix + self._raw.read(), b""
            return data
        data, self._prefix = self._prefix[:n], self._prefix[n:]
        return data

    def readable(self) -> bool:
        return True


class _Padded:
    """A tar stream completed at its end: zeros to the next 512-byte block, then the two
    zero blocks that end an archive. The CLI's context with ``-f`` outside the context (or
    from stdin) ends right after the last file's data, which Go's tar reader accepts and
    Python's does not."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._count = 0
        self._tail: bytes | None = None

    def read(self, n: int = -1, /) -> bytes:
        if self._tail is None:
            data = self._raw.read(n)
            if data or n == 0:
                self._count += len(data)
                return data
            self._tail = bytes(-self._count % 512 + 1024)
        size = len(self._tail) if n < 0 else n
        data, self._tail = self._tail[:size], self._tail[size:]
        return data

    def readable(self) -> bool:
        return True


def extract_context(body: BinaryIO, dest: str) -> None:
    """The context tar into the empty dir ``dest``; an empty body is an empty context.
    gzip, bzip2 and xz are decompressed here (so that the tar can be completed, ``_Padded``);
    ``apply_layer`` reads a zstd one itself."""
    head = read_head(body, 6)
    if not head:
        return
    stream = cast("BinaryIO", _Prefixed(head, body))
    if head.startswith(b"\x1f\x8b"):
        stream = cast("BinaryIO", gzip.GzipFile(fileobj=stream, mode="rb"))
    elif head.startswith(b"BZh"):
        stream = cast("BinaryIO", bz2.BZ2File(stream))
    elif head.startswith(b"\xfd7zXZ"):
        stream = cast("BinaryIO", lzma.LZMAFile(stream))  # noqa: SIM115  (read to the end)
    if not head.startswith(b"\x28\xb5\x2f\xfd"):  # zstd
        stream = cast("BinaryIO", _Padded(stream))
    try:
        apply_layer(stream, dest, whiteouts="delete")
    except InvalidArgument as e:
        raise InvalidArgument(f"build context: {e.message}") from e
    except (lzma.LZMAError, EOFError, gzip.BadGzipFile) as e:
        raise InvalidArgument(f"build context: not a valid compressed tar: {e}") from e


def read_dockerfile(context: str, name: str) -> str:
    """The text of the Dockerfile ``name`` (a path inside the context)."""
    rel = os.path.normpath(name.lstrip("/"))
    if rel.startswith(".."):
        raise InvalidArgument(f"dockerfile={name!r}: the Dockerfile must be inside the context")
    candidates = [rel] + (["dockerfile"] if name == "Dockerfile" else [])
    for candidate in candidates:
        path = os.path.join(context, candidate)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
    raise InvalidArgument(f"Cannot locate specified Dockerfile: {name}")


# --------------------------------------------------------------------------- progress


class Progress:
    """``BuildEvent``s (and each RUN's container id) as the legacy builder's stream lines."""

    def __init__(self, stages: list[df.Stage], target: df.Stage) -> None:
        self.total = sum(1 + len(s.instructions) for s in stages)
        self.target = target.name or str(target.index)
        self.number = 0
        self.running = ""
        self.final = False

    def started(self, cid: str) -> list[dict[str, Any]]:
        self.running = cid[:12]
        return [{"stream": f"{ARROW}Running in {self.running}\n"}]

    def event(self, ev: builder.BuildEvent) -> list[dict[str, Any]]:
        if ev.kind == "step":
            self.number += 1
            self.total = max(self.total, self.number)  # ONBUILD triggers add steps
            text = ev.text.partition("] ")[2] or ev.text
            return [{"stream": f"Step {self.number}/{self.total} : {text}"}, {"stream": "\n"}]
        if ev.kind == "output":
            return [{"stream": ev.text + "\n"}]
        if ev.kind != "done":
            return []
        out: list[dict[str, Any]] = []
        if ev.cached and ev.step > 1:
            out.append({"stream": f"{ARROW}Using cache\n"})
        if self.running:
            out.append({"stream": f"Removing intermediate container {self.running}\n"})
            self.running = ""
        self.final = ev.stage == self.target and ev.step == ev.total
        if not self.final:  # the last step's id is the image's, sent by ``built``
            out.append({"stream": f"{ARROW}{_short(ev.key)}\n"})
        return out

    def built(
        self, image: Image, tags: tuple[str, ...], unused: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The end of a build that succeeded (with Docker's warning about ``unused`` args)."""
        out: list[dict[str, Any]] = [{"stream": f"{ARROW}{image.short_id}\n"}]
        if unused:
            names = " ".join(unused)
            out.append(
                {"stream": f"[Warning] One or more build-args [{names}] were not consumed\n"}
            )
        out.append({"aux": {"ID": image.id}})
        out.append({"stream": f"Successfully built {image.short_id}\n"})
        for tag in tags:
            out.append({"stream": f"Successfully tagged {reference.parse(tag).familiar()}\n"})
        return out


def unused_args(
    parsed: df.Dockerfile, stages: list[df.Stage], build_args: dict[str, str]
) -> list[str]:
    """The build args no ARG of the built stages (or before the first FROM) declares, and
    that are not predefined (proxies, platform), sorted: Docker warns about them."""
    declared = {a.name for arg in parsed.args for a in arg.args}
    for stage in stages:
        for ins in stage.instructions:
            if isinstance(ins, df.Arg):
                declared.update(a.name for a in ins.args)
    known = declared | builder.PROXY_ARGS | builder.platform_args().keys()
    return sorted(set(build_args) - known)


def _short(key: str) -> str:
    return key.removeprefix("sha256:")[:12]


def error_line(exc: BaseException) -> dict[str, Any]:
    """The stream's last line for a failed build (Docker's text and code for a RUN)."""
    if isinstance(exc, builder.BuildError) and exc.status is not None:
        message = f"The command '{' '.join(exc.command)}' returned a non-zero code: {exc.status}"
        return {"errorDetail": {"code": exc.status, "message": message}, "error": message}
    return api_errors.stream_error(exc)


# --------------------------------------------------------------------------- the handler


_DONE = object()


async def build_image(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    rid = api.request_id(request)
    opts = BuildOptions.from_query(request.query)
    manager = request.app.get(api_containers.CONTAINERS)
    if manager is not None:
        manager.networks.plan_build(new_id(), opts.network_mode)  # checked: nothing is made
    os.makedirs(state.paths.builds, mode=0o700, exist_ok=True)
    async with state.builds_swept_lock:  # before any dir of ours is made: every build waits
        if not state.builds_swept:  # the first build of this daemon
            await asyncio.to_thread(sweep, state.paths, state.started)
            state.builds_swept = True
    work = tempfile.mkdtemp(dir=state.paths.builds, prefix="ctx-")
    try:
        context = os.path.join(work, "context")
        os.mkdir(context, 0o755)
        body = cast("BinaryIO", api.BodyReader(request.content, asyncio.get_running_loop()))
        await asyncio.to_thread(extract_context, body, context)
        text = await asyncio.to_thread(read_dockerfile, context, opts.dockerfile)
        parsed = df.parse(text, build_args=opts.build_args)
        stages = builder.plan(parsed, opts.build_args, opts.target)
        progress = Progress(stages, parsed.stage(opts.target))
        unused = unused_args(parsed, stages, opts.build_args)
        log.info("req %s: build of %s (%d stages) tagged %s", rid, opts.dockerfile,
                 len(stages), list(opts.tags))  # fmt: skip
        stream = await api.JsonStream(request).start()
        await _run(request, state, opts, context, text, progress, stream, unused)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await stream.finish()
    return stream.response


async def _run(
    request: web.Request,
    state: api.Engine,
    opts: BuildOptions,
    context: str,
    text: str,
    progress: Progress,
    stream: api.JsonStream,
    unused: list[str],
) -> None:
    """Build in a thread, streaming its events, until it ends (cancelled if the client goes)."""
    rid = api.request_id(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    manager = request.app.get(api_containers.CONTAINERS)
    parent = manager.cgroup_parent if manager is not None else DEFAULT_CGROUP_PARENT

    def post(item: object) -> None:
        # A client that reads slowly slows the build down instead of filling memory.
        while queue.qsize() > QUEUE_LIMIT and not runner.cancelled.is_set():
            time.sleep(QUEUE_WAIT)
        loop.call_soon_threadsafe(queue.put_nowait, item)

    networks = (
        StepNetworks(manager.networks, opts.network_mode, loop) if manager is not None else None
    )
    runner = StepRunner(
        state.paths,
        parent,
        started=lambda cid: post(("started", cid)),
        limits=opts.host_config,
        networks=networks,
    )

    def work() -> Image:
        try:
            return builder.build(
                state.images,
                context,
                text,
                runner=runner,
                events=post,
                tags=opts.tags,
                build_args=opts.build_args,
                target=opts.target,
                no_cache=opts.no_cache,
                labels=opts.labels,
            )
        finally:
            post(_DONE)

    held: list[dict[str, Any]] = []  # with q: sent only if the build fails
    gone = False

    async def send(messages: list[dict[str, Any]]) -> None:
        if opts.quiet:
            held.extend(messages)
            return
        try:
            for message in messages:
                await stream.send(message)
        except (ConnectionError, RuntimeError):
            _cancel("write failed")

    def _cancel(why: str) -> None:
        nonlocal gone
        if not gone:
            gone = True
            log.info("req %s: the client went away (%s); cancelling the build", rid, why)
            runner.cancel()

    # The cgroup parent stays while the steps make cgroups under it.
    hold = manager.cgroup_parent_held() if manager is not None else contextlib.nullcontext()
    with hold:
        async with state.image_lock.shared():
            task = asyncio.ensure_future(asyncio.to_thread(work))
            try:
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), CLIENT_POLL)
                    except TimeoutError:
                        if request.transport is None or request.transport.is_closing():
                            _cancel("connection closed")
                        continue
                    if item is _DONE:
                        break
                    if isinstance(item, tuple):
                        await send(progress.started(item[1]))
                    elif isinstance(item, builder.BuildEvent) and not gone:
                        await send(progress.event(item))
            finally:
                if not task.done():
                    runner.cancel()
                    await asyncio.wait([task])
                if networks is not None:
                    await networks.settled()
        try:
            image = task.result()
        except Exception as e:  # the stream has started: the error is its last line
            if gone or isinstance(e, BuildCancelled):
                log.info("req %s: build stopped: %s", rid, e)
                return
            if not isinstance(e, builder.BuildError):
                log.exception("req %s: build failed", rid)
            else:
                log.info("req %s: build failed: %s", rid, e)
            if opts.quiet:
                await _send_all(stream, held)
            await _send_all(stream, [error_line(e)])
            return
    log.info("req %s: built %s tagged %s", rid, image.short_id, list(opts.tags))
    if opts.quiet:
        await _send_all(stream, [{"stream": image.id + "\n"}])
    else:
        await send(progress.built(image, opts.tags, unused))


async def _send_all(stream: api.JsonStream, messages: list[dict[str, Any]]) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        for message in messages:
            await stream.send(message)


ROUTES: list[api.Route] = [("POST", "/build", build_image)]
