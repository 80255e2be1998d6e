"""The image builder: a Dockerfile, a context directory and a store in, an ``Image`` out.

``build(store, context_dir, dockerfile_text, runner=..., events=...)`` builds the target stage
(the last one unless ``target`` names another) and the stages it needs, in order (``plan``
says which, for progress output); ``labels`` are added to the image's config at the end.

Rules:
- ``image/`` does not import the runtime: RUN steps go through a ``Runner`` the caller hands
  in (the engine's runs ``berth.runtime``); it gets the mounts of a writable snapshot on the
  step's parent and a ``RunProcess`` (args through the stage's SHELL, env, user, workdir, and
  an output callback that becomes ``BuildEvent`` output) and returns the exit status.
- FROM takes an image of the store (``busybox`` is made by ``base`` when missing),
  ``scratch`` or an earlier stage; an image's ONBUILD triggers run right after its FROM and
  are not inherited. Words of ``dockerfile.EXPANDING`` instructions are expanded with the
  stage's scope: its ARG values, overridden by its ENV. A stage sees a global ARG only when it
  declares it again; build args override defaults; the proxy args are passed to RUN without a
  declaration (and kept out of the cache key, as BuildKit does); ``TARGETOS`` and friends have
  their automatic values.
- Every step has a cache key (``build_cache``); a hit does no work, a miss runs the step and
  records it. COPY/ADD/RUN (and a WORKDIR that creates its directory) make a layer unless the
  step changed nothing; every other instruction adds a history entry with ``empty_layer``.
  Each step keeps its creation time in the cache, so a fully cached rebuild gives the same
  image id.
- Failure leaves no image: nothing is written to the store's images until the last step of
  the target succeeded, and a step's working snapshot and staging dir are removed whatever
  happens. Layers of the steps that did succeed stay as cache. Errors are ``BuildError`` (an
  ``InvalidArgument``) whose message starts with ``Dockerfile:<line>:``.
- stdlib only; imports ``berth.errors``, ``berth.spec`` and this package, never the runtime.
"""

from __future__ import annotations

import logging
import os
import platform
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from berth.errors import BerthError, InvalidArgument, NotFound
from berth.image import base, reference
from berth.image import dockerfile as df
from berth.image.build_cache import (
    BuildCache,
    Layer,
    cache_key,
    commit_layer,
    make_layer,
    staging,
    tree_diff,
)
from berth.image.build_context import (
    ChainView,
    Context,
    Owner,
    content_hash,
    copy_from_view,
    copy_tree,
    extract,
    is_archive,
    parse_dockerignore,
    resolve_owner,
)
from berth.image.snapshots import Mount
from berth.image.store import Image, ImageStore, now_rfc3339
from berth.spec import image as spec
from berth.spec.value import replace, value

if TYPE_CHECKING:
    from berth.image.build_context import IgnorePattern, SourceEntry

log = logging.getLogger(__name__)

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = frozenset(
    f(name)
    for name in ("http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
    for f in (str.lower, str.upper)
)


class BuildError(InvalidArgument):
    """A build that failed; ``line`` is the Dockerfile line, ``status`` a RUN's exit code and
    ``command`` its args (Docker reports "The command '…' returned a non-zero code: N")."""

    def __init__(
        self,
        message: str,
        line: int = 0,
        status: int | None = None,
        command: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.line = line
        self.status = status
        self.command = command


@value
class BuildEvent:
    """Progress: ``kind`` is "step" (started, ``text`` like ``[2/5] RUN …``), "output" (a
    line of a RUN, ``stream`` stdout/stderr), "done" (``cached``, ``duration`` in seconds,
    ``key`` the step's cache key, or the base image's id for a FROM) or "error" (``text`` the
    message)."""

    kind: str
    stage: str
    step: int
    total: int
    text: str
    line: int = 0
    cached: bool = False
    duration: float = 0.0
    stream: str = ""
    key: str = ""


@value
class RunProcess:
    """What a RUN step runs: ``output(stream, line)`` receives its output line by line."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    user: str
    workdir: str
    output: Callable[[str, str], None]


class Runner(Protocol):
    def run(self, mounts: list[Mount], process: RunProcess) -> int:
        """Run ``process`` on a root filesystem made of ``mounts``; its exit status."""
        ...


def _arch() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
    return "linux", arch.get(machine, machine)


def platform_args() -> dict[str, str]:
    os_name, arch = _arch()
    plat = f"{os_name}/{arch}"
    values: dict[str, str] = {}
    for prefix in ("TARGET", "BUILD"):
        values |= {
            f"{prefix}PLATFORM": plat,
            f"{prefix}OS": os_name,
            f"{prefix}ARCH": arch,
            f"{prefix}VARIANT": "",
        }
    return values


class _Stage:
    """The state of a stage being built."""

    def __init__(
        self,
        name: str,
        config: spec.ImageConfig,
        layers: list[spec.Descriptor],
        chain: str | None,
        key: str,
    ) -> None:
        self.name = name
        self.config = config
        self.layers = layers
        self.chain = chain
        self.key = key
        self.args: dict[str, str | None] = {}
        self.cmd_set = False

    @property
    def container(self) -> spec.ContainerConfig:
        return self.config.config

    def set(self, **changes: object) -> None:
        self.config = replace(self.config, config=replace(self.config.config, **changes))

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.container.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def scope(self) -> dict[str, str]:
        return {**{k: v for k, v in self.args.items() if v is not None}, **self.env()}

    def history(self, created: str, created_by: str, empty: bool) -> None:
        entry = spec.History(created=created, created_by=created_by, empty_layer=empty)
        self.config = replace(self.config, history=(*self.config.history, entry), created=created)


def build(
    store: ImageStore,
    context_dir: str,
    dockerfile_text: str,
    *,
    runner: Runner,
    events: Callable[[BuildEvent], None],
    tags: Sequence[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str = "",
    no_cache: bool = False,
    labels: Mapping[str, str] | None = None,
) -> Image:
    """Build ``dockerfile_text`` in ``context_dir``; the image, tagged ``tags``, with
    ``labels`` added to its config (``docker build --label``)."""
    for tag in tags:
        reference.parse(tag)
    args = dict(build_args or {})
    dockerfile = df.parse(dockerfile_text, build_args=args)
    want = dockerfile.stage(target)
    builder = _Builder(store, Context(context_dir), dockerfile, args, runner, events, no_cache)
    try:
        for stage in plan(dockerfile, args, target):
            builder.run_stage(stage)
    finally:
        builder.save_cache()
    final = builder.done[want.index]
    if labels:
        final.set(labels={**final.container.labels, **labels})
    image = store.write_image(final.config, final.layers, tags[0] if tags else None)
    for tag in tags[1:]:
        store.tag(image.id, tag)
    log.info("build: image %s (%d layers) tagged %s", image.short_id, len(final.layers), tags)
    return image


def plan(
    dockerfile: df.Dockerfile, build_args: Mapping[str, str] | None = None, target: str = ""
) -> list[df.Stage]:
    """The stages ``build`` runs for ``target``, in order (the target last)."""
    want = dockerfile.stage(target)
    needed = _needed(dockerfile, want.index, _global_args(dockerfile, dict(build_args or {})))
    return [dockerfile.stages[i] for i in sorted(needed)]


def _global_args(dockerfile: df.Dockerfile, build_args: Mapping[str, str]) -> dict[str, str]:
    """The values of the ARGs before the first FROM (with the automatic platform ones)."""
    values = platform_args()
    for arg in dockerfile.args:
        for a in arg.args:
            if a.name in build_args:
                values[a.name] = build_args[a.name]
            elif a.default is not None:
                values[a.name] = df.expand(a.default, values, escape=dockerfile.escape)
    return values


def _stage_index(dockerfile: df.Dockerfile, name: str) -> int | None:
    for st in dockerfile.stages:
        if st.name and st.name == name.lower():
            return st.index
    if name.isdigit() and int(name) < len(dockerfile.stages):
        return int(name)
    return None


def _needed(dockerfile: df.Dockerfile, index: int, globals_: Mapping[str, str]) -> set[int]:
    """``index`` and the stages it builds on or copies from."""
    out: set[int] = set()
    todo = [index]
    while todo:
        i = todo.pop()
        if i in out:
            continue
        out.add(i)
        st = dockerfile.stages[i]
        if st.base_stage is not None:
            todo.append(st.base_stage)
        for ins in st.instructions:
            if isinstance(ins, df.Copy) and ins.copy_from:
                name = df.expand(ins.copy_from, globals_, escape=dockerfile.escape)
                dep = _stage_index(dockerfile, name)
                if dep is not None and dep < i:
                    todo.append(dep)
    return out


class _Builder:
    def __init__(
        self,
        store: ImageStore,
        context: Context,
        dockerfile: df.Dockerfile,
        build_args: dict[str, str],
        runner: Runner,
        events: Callable[[BuildEvent], None],
        no_cache: bool,
    ) -> None:
        self.store = store
        self.context = context
        self.dockerfile = dockerfile
        self.build_args = build_args
        self.runner = runner
        self.emit = events
        self.no_cache = no_cache
        self.cache = BuildCache(os.path.join(store.root, "build"))
        self.pending: dict[str, Layer] = {}
        self.done: dict[int, _Stage] = {}
        self.globals = _global_args(dockerfile, build_args)

    # -- helpers

    def expand(self, word: str, scope: Mapping[str, str]) -> str:
        return df.expand(word, scope, escape=self.dockerfile.escape)

    def save_cache(self) -> None:
        if self.pending:
            self.cache.put_many(self.pending)
            self.pending = {}

    def lookup(self, key: str) -> Layer | None:
        if self.no_cache:
            return None
        made = self.pending.get(key) or self.cache.get(key)
        if made is None or made.layer is None:
            return made
        return made if self.store.content.exists(made.layer.digest) else None

    def view(self, st: _Stage) -> ChainView:
        return ChainView(self.store.snapshots.lowers(st.chain) if st.chain else [])

    def base(self, name: str) -> tuple[Image, bool]:
        """The image ``name`` and whether it was already in the store."""
        image = self.store.get(name)
        if image is not None:
            return image, True
        try:
            return base.base_image(self.store, name), False
        except NotFound as e:
            raise NotFound(f"{name}: no such image in the store ({e})") from e

    # -- stages

    def run_stage(self, stage: df.Stage) -> None:
        label = stage.name or str(stage.index)
        started = time.monotonic()
        source = stage.from_instruction.source
        if stage.base_stage is not None:
            prev = self.done[stage.base_stage]
            st = _Stage(label, prev.config, list(prev.layers), prev.chain, prev.key)
            present = True
        elif stage.base == "scratch":
            os_name, arch = _arch()
            config = spec.ImageConfig(
                architecture=arch,
                os=os_name,
                config=spec.ContainerConfig(env=(f"PATH={DEFAULT_PATH}",)),
            )
            st = _Stage(label, config, [], None, cache_key("scratch"))
            present = True
        else:
            try:
                image, present = self.base(stage.base)
            except BerthError as e:
                raise self.fail(label, source, e) from e
            chain = self.store.unpack(image)
            st = _Stage(label, image.config, list(image.manifest.layers), chain, image.id)
        triggers: list[df.Instruction] = []
        if stage.base_stage is None:
            for trigger in st.container.on_build:
                parsed = df.parse(f"FROM scratch\n{trigger}\n").stages[0].instructions
                triggers.extend(parsed)
        st.set(on_build=())
        if not any(e.startswith("PATH=") for e in st.container.env):
            st.set(env=(f"PATH={DEFAULT_PATH}", *st.container.env))
        steps = [*triggers, *stage.instructions]
        total = 1 + len(steps)
        self.emit(BuildEvent("step", label, 1, total, f"[1/{total}] {source.text}", source.line))
        self.emit(
            BuildEvent(
                "done",
                label,
                1,
                total,
                f"FROM {stage.base}",
                source.line,
                cached=present,
                duration=time.monotonic() - started,
                key=st.key,
            )
        )
        for n, ins in enumerate(steps, start=2):
            self.step(st, ins, n, total)
        self.done[stage.index] = st

    def fail(self, label: str, source: df.Source, e: BaseException) -> BuildError:
        text = str(e)
        if not text.startswith("Dockerfile:"):
            text = f"Dockerfile:{source.line}: {text}"
        self.emit(BuildEvent("error", label, 0, 0, text, source.line))
        if isinstance(e, BuildError):
            return BuildError(text, source.line, e.status, e.command)
        return BuildError(text, source.line)

    def step(self, st: _Stage, ins: df.Instruction, n: int, total: int) -> None:
        source = ins.source
        self.emit(
            BuildEvent("step", st.name, n, total, f"[{n}/{total}] {source.text}", source.line)
        )
        started = time.monotonic()
        try:
            cached = self.execute(st, ins)
        except (BerthError, OSError) as e:
            raise self.fail(st.name, source, e) from e
        self.emit(
            BuildEvent(
                "done",
                st.name,
                n,
                total,
                source.text,
                source.line,
                cached=cached,
                duration=time.monotonic() - started,
                key=st.key,
            )
        )

    # -- instructions

    def execute(self, st: _Stage, ins: df.Instruction) -> bool:
        """Apply one instruction to the stage; whether the cache answered."""
        if isinstance(ins, df.Run):
            return self.run(st, ins)
        if isinstance(ins, (df.Copy, df.Add)):
            return self.copy(st, ins)
        if isinstance(ins, df.Workdir):
            return self.workdir(st, ins)
        scope = st.scope()

        def x(word: str) -> str:
            return self.expand(word, scope)

        text = ins.source.text
        if isinstance(ins, df.Env):
            env = st.env()
            for kv in ins.pairs:
                env[x(kv.key)] = x(kv.value)
            st.set(env=tuple(f"{k}={v}" for k, v in env.items()))
            text = "ENV " + " ".join(f"{x(kv.key)}={x(kv.value)}" for kv in ins.pairs)
        elif isinstance(ins, df.Arg):
            for a in ins.args:
                st.args[a.name] = self.arg_value(a, scope)
            shown = [f"{a.name}={st.args[a.name]}" for a in ins.args if st.args[a.name] is not None]
            text = "ARG " + " ".join(shown or [a.name for a in ins.args])
        elif isinstance(ins, df.Label):
            labels = dict(st.container.labels)
            labels.update({x(kv.key): x(kv.value) for kv in ins.pairs})
            st.set(labels=labels)
        elif isinstance(ins, df.User):
            st.set(user=x(ins.user))
        elif isinstance(ins, df.Expose):
            ports = list(st.container.exposed_ports)
            for word in ins.ports:
                for raw in x(word).split():
                    port = raw if "/" in raw else f"{raw}/tcp"
                    if port not in ports:
                        ports.append(port)
            st.set(exposed_ports=tuple(ports))
        elif isinstance(ins, df.Volume):
            vols = list(st.container.volumes)
            vols += [v for v in (x(p) for p in ins.paths) if v not in vols]
            st.set(volumes=tuple(vols))
        elif isinstance(ins, df.StopSignal):
            st.set(stop_signal=x(ins.signal))
        elif isinstance(ins, df.Cmd):
            st.set(cmd=self.command(st, ins.command))
            st.cmd_set = True
        elif isinstance(ins, df.Entrypoint):
            st.set(entrypoint=self.command(st, ins.command))
            if not st.cmd_set:
                st.set(cmd=None)
        elif isinstance(ins, df.Shell):
            st.set(shell=ins.shell)
        elif isinstance(ins, df.Healthcheck):
            st.set(healthcheck=ins.config())
        elif isinstance(ins, df.Maintainer):
            st.config = replace(st.config, author=ins.name)
        elif isinstance(ins, df.Onbuild):
            st.set(on_build=(*st.container.on_build, ins.trigger))
        else:
            raise InvalidArgument(f"{type(ins).__name__} is not supported inside a stage")
        return self.finish(st, cache_key(st.key, text), text, None)

    def arg_value(self, a: df.ArgDef, scope: Mapping[str, str]) -> str | None:
        if a.name in self.build_args:
            return self.build_args[a.name]
        if a.default is not None:
            return self.expand(a.default, scope)
        if a.name in self.globals:
            return self.globals[a.name]
        return None

    def command(self, st: _Stage, cmd: df.Command) -> tuple[str, ...]:
        if cmd.exec_form:
            return cmd.args
        return (*(st.container.shell or DEFAULT_SHELL), cmd.args[0])

    def finish(
        self, st: _Stage, key: str, created_by: str, run: Callable[[], Layer] | None
    ) -> bool:
        """Take the step's result from the cache or from ``run``; record it in the stage."""
        made = self.lookup(key)
        cached = made is not None
        if made is None:
            made = run() if run is not None else Layer(None)
            made = replace(made, created=now_rfc3339())
            self.pending[key] = made
        if made.layer is not None:
            diff_ids = (*st.config.rootfs.diff_ids, made.diff_id)
            st.chain = commit_layer(self.store, st.chain, diff_ids, made)
            st.layers.append(made.layer)
            st.config = replace(st.config, rootfs=spec.RootFS(diff_ids=diff_ids))
        st.history(made.created, created_by, made.layer is None)
        st.key = key
        return cached

    # -- RUN

    def run(self, st: _Stage, ins: df.Run) -> bool:
        args = self.run_args(st, ins)
        env = st.env()
        for name, val in st.args.items():
            if val is not None and name not in env:
                env[name] = val
        for name in PROXY_ARGS & self.build_args.keys():
            env.setdefault(name, self.build_args[name])
        process_env = tuple(f"{k}={v}" for k, v in env.items())
        declared = {k: v for k, v in st.args.items() if v is not None}
        created_by = "RUN " + " ".join(args) + " # buildkit"
        key = cache_key(st.key, "RUN", args, declared)

        def execute() -> Layer:
            return self.run_container(
                st,
                ins,
                RunProcess(
                    args=args,
                    env=process_env,
                    user=st.container.user or "root",
                    workdir=st.container.working_dir or "/",
                    output=lambda stream, line: self.emit(
                        BuildEvent("output", st.name, 0, 0, line, ins.source.line, stream=stream)
                    ),
                ),
            )

        return self.finish(st, key, created_by, execute)

    def run_args(self, st: _Stage, ins: df.Run) -> tuple[str, ...]:
        cmd = ins.command
        if cmd.exec_form:
            return cmd.args
        text = cmd.args[0]
        shell = st.container.shell or DEFAULT_SHELL
        if ins.heredocs:
            sole = ins.heredocs[0]
            if len(ins.heredocs) == 1 and text.strip().lstrip("<-").strip("'\"") == sole.name:
                return (*shell, sole.content)
            text += "\n" + "".join(h.content + h.name + "\n" for h in ins.heredocs)
        return (*shell, text)

    def run_container(self, st: _Stage, ins: df.Run, process: RunProcess) -> Layer:
        snaps = self.store.snapshots
        key = f"build-{uuid.uuid4().hex[:16]}"
        mounts = snaps.active(key, st.chain)
        try:
            status = self.runner.run(mounts, process)
            if status != 0:
                raise BuildError(
                    f"Dockerfile:{ins.source.line}: RUN exited with status {status}",
                    ins.source.line,
                    status,
                    process.args,
                )
            upper = snaps.stat(key).path
            lowers = snaps.lowers(st.chain) if st.chain else []
            if snaps.mode == "overlay":
                return make_layer(self.store, upper, lowers)
            with staging(self.store) as diff:
                tree_diff(lowers[0] if lowers else None, upper, diff)
                return make_layer(self.store, diff, [])
        finally:
            snaps.remove(key)

    # -- COPY / ADD / WORKDIR

    def copy(self, st: _Stage, ins: df.Copy | df.Add) -> bool:
        scope = st.scope()

        def x(word: str) -> str:
            return self.expand(word, scope)

        word = "COPY" if isinstance(ins, df.Copy) else "ADD"
        sources = [x(s) for s in ins.sources]
        if isinstance(ins, df.Add) and any(_is_url(s) for s in sources):
            raise InvalidArgument("ADD from a URL is not supported here")
        dest = _absolute(x(ins.dest), st.container.working_dir)
        dest_dir = x(ins.dest).endswith("/") or len(sources) > 1
        from_name = x(ins.copy_from) if isinstance(ins, df.Copy) else ""
        view = self.view(st)
        owner = Owner()
        chown, chmod = x(ins.chown), x(ins.chmod)
        if chown:
            uid, gid = resolve_owner(chown, view)
            owner = replace(owner, uid=uid, gid=gid)
        elif not from_name:
            owner = replace(owner, uid=0, gid=0)
        if chmod:
            try:
                owner = replace(owner, mode=int(chmod, 8))
            except ValueError as e:
                raise InvalidArgument(f"--chmod={chmod}: not an octal mode") from e
        exclude = parse_dockerignore("\n".join(x(e) for e in ins.exclude))
        heredocs = {s: ins.heredoc_for(s) for s in ins.sources}
        if from_name:
            src_view, src_key = self.source_stage(from_name)
            digest = cache_key(src_key, sources)
        else:
            entries = {
                s: self.context.resolve(s, exclude) for s in sources if heredocs.get(s) is None
            }
            digest = content_hash(self.context, [e for es in entries.values() for e in es], exclude)
            digest = cache_key(digest, [(h.name, h.content) for h in heredocs.values() if h])
        text = f"{word} {' '.join(sources)} {dest}"
        key = cache_key(st.key, word, sources, dest, dest_dir, chown, chmod, from_name, digest)

        def execute() -> Layer:
            with staging(self.store) as up:
                target = _resolve(view, dest)
                is_dir = dest_dir or _is_dir(view, target)
                for raw, src in zip(ins.sources, sources, strict=True):
                    doc = heredocs.get(raw)
                    if from_name:
                        self.copy_from_stage(src_view, src, up, target, is_dir, owner)
                    elif doc is not None:
                        path = _inside(up, target, doc.name if is_dir else "")
                        _parents(up, path, view)
                        with open(path, "w", encoding="utf-8") as f:
                            f.write(doc.content)
                        os.chmod(path, owner.mode if owner.mode is not None else 0o644)
                    else:
                        for entry in entries[src]:
                            self.copy_entry(
                                entry,
                                up,
                                target,
                                is_dir,
                                owner,
                                exclude,
                                isinstance(ins, df.Add),
                                view,
                            )
                return make_layer(self.store, up, [])

        return self.finish(st, key, text + " # buildkit", execute)

    def copy_entry(
        self,
        entry: SourceEntry,
        up: str,
        target: str,
        is_dir: bool,
        owner: Owner,
        exclude: Sequence[IgnorePattern],
        add: bool,
        view: ChainView,
    ) -> None:
        is_tree = os.path.isdir(entry.path) and not os.path.islink(entry.path)
        if is_tree:
            dst = _inside(up, target, "")
            _parents(up, dst, view)
            copy_tree(self.context.root, list(self.context.walk(entry, exclude)), dst, owner)
        elif add and is_archive(entry.path):
            dst = _inside(up, target, "")
            _parents(up, dst, view)
            os.makedirs(dst, exist_ok=True)
            extract(entry.path, dst)
        else:
            dst = _inside(up, target, os.path.basename(entry.rel) if is_dir else "")
            _parents(up, dst, view)
            copy_tree(self.context.root, [entry.rel], dst, owner)

    def source_stage(self, name: str) -> tuple[ChainView, str]:
        index = _stage_index(self.dockerfile, name)
        if index is not None:
            if index not in self.done:
                raise InvalidArgument(f"--from={name}: stage {name!r} is not built before this")
            prev = self.done[index]
            return self.view(prev), prev.key
        image, _ = self.base(name)
        chain = self.store.unpack(image)
        return ChainView(self.store.snapshots.lowers(chain) if chain else []), image.id

    def copy_from_stage(
        self, src_view: ChainView, src: str, up: str, target: str, is_dir: bool, owner: Owner
    ) -> None:
        path = _resolve(src_view, "/" + src.lstrip("/"))
        found = src_view.lookup(path)
        if found is None:
            raise InvalidArgument(f"{src}: not found in the source stage")
        if os.path.isdir(found) and not os.path.islink(found):
            dst = _inside(up, target, "")
        else:
            dst = _inside(up, target, os.path.basename(path) if is_dir else "")
        _parents(up, dst, ChainView([]))
        copy_from_view(src_view, path, dst, owner)

    def workdir(self, st: _Stage, ins: df.Workdir) -> bool:
        path = _absolute(self.expand(ins.path, st.scope()), st.container.working_dir)
        st.set(working_dir=path)
        view = self.view(st)
        exists = view.lookup(_resolve(view, path)) is not None
        key = cache_key(st.key, "WORKDIR", path, exists)

        def execute() -> Layer:
            if exists:
                return Layer(None)
            with staging(self.store) as up:
                dst = _inside(up, _resolve(view, path), "")
                _parents(up, dst, view)
                os.makedirs(dst, mode=0o755, exist_ok=True)
                return make_layer(self.store, up, [])

        return self.finish(st, key, f"WORKDIR {path}", execute)


# --------------------------------------------------------------------------- paths


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "git@")) or source.endswith(".git")


def _absolute(path: str, workdir: str) -> str:
    if not path.startswith("/"):
        path = os.path.join(workdir or "/", path)
    return os.path.normpath(path) if path != "/" else "/"


def _resolve(view: ChainView, path: str) -> str:
    """``path`` with the symlinks of its parent directories in the stage resolved."""
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            done = done[:-1]
            continue
        found = view.lookup("/".join([*done, name]))
        if parts and found is not None and os.path.islink(found) and hops < 40:
            hops += 1
            link = os.readlink(found)
            parts = [p for p in link.split("/") if p and p != "."] + parts
            if link.startswith("/"):
                done = []
            continue
        done.append(name)
    return "/" + "/".join(done)


def _is_dir(view: ChainView, path: str) -> bool:
    found = view.lookup(path)
    return found is not None and os.path.isdir(found) and not os.path.islink(found)


def _inside(up: str, target: str, name: str) -> str:
    return (
        os.path.join(up, target.lstrip("/"), name) if name else os.path.join(up, target.lstrip("/"))
    )


def _parents(up: str, path: str, view: ChainView) -> None:
    """Create the parent directories of ``path`` in the staging dir ``up``, with the owner,
    mode and time they have in the stage (0755 root for new ones)."""
    rel = os.path.relpath(os.path.dirname(path.rstrip("/")), up)
    if rel in (".", ""):
        return
    current = up
    for name in rel.split("/"):
        current = os.path.join(current, name)
        if os.path.isdir(current):
            continue
        os.mkdir(current, 0o755)
        below = view.lookup(os.path.relpath(current, up))
        if below is not None and os.path.isdir(below):
            st = os.lstat(below)
            if os.geteuid() == 0:
                os.chown(current, st.st_uid, st.st_gid)
            os.chmod(current, st.st_mode & 0o7777)
            os.utime(current, ns=(st.st_atime_ns, st.st_mtime_ns))
