"""Containers in berthd: records, lifecycle, exits, waits and logs, over the image store and
the supervisor.

Rules:
- One record per container (``containers_state.Record``) in ``<containers>/<id>/``, beside the
  bundle's ``config.json``, the json-file log ``<id>-json.log`` and the ``rootfs`` mount point.
  Every change of a record is saved at once (atomically) before anyone is told of it.
- Create prepares everything and runs nothing: it resolves the image (404 "No such image"),
  makes the container's snapshot, mounts it to mkdir the WorkingDir, writes ``config.json``
  (``oci_config.build_spec``, plus the binds, volumes and tmpfs of ``container_mounts``, whose
  named volumes are made on demand), and leaves the rootfs mounted for the start that usually
  follows (berthd runs as root in the host mount namespace); start mounts it if it is not
  (a restart, a reboot) and asks the supervisor to create and start the container; the
  rootfs stays mounted while the container runs and is unmounted when its exit is handled
  and when the container is removed;
  on daemon start, running containers get theirs back. A failed create leaves nothing (no
  anonymous volume either). ``rm -v`` and ``--rm`` also remove the anonymous volumes.
- Exits come only from the supervisor's ``subscribe`` stream (and, at start-up and after a
  lost connection, from its ``state``): the record is updated (ExitCode, OOMKilled,
  FinishedAt), the supervisor's record deleted (its cgroup goes), the rootfs unmounted, then
  waiters are woken; ``--rm`` containers are then removed (after a failed start too: the CLI
  waits for ``condition=removed``).
- Restart policies (``containers_restart``): at an exit the record becomes ``restarting``
  (saved) or ``exited``; a user's stop, kill or ``rm -f`` cancels restarts until the next start.
  Pause, unpause and rename are ``containers_admin``'s; a signalled paused container is thawed.
  Waits, logs, attach and stdin are ``containers_streams``'s.
- Every lifecycle step is a container event on ``self.events`` (``emit``), after its record is
  saved: create, start, kill (signal), oom, die (exitCode), stop, restart, destroy, pause …
- One ``asyncio.Lock`` per container orders start, exit handling, removal and pause; waiters use
  one ``asyncio.Condition`` per container and counters (starts, exits) to tell "the next
  exit" from an old one.
- Cgroups go under ``--cgroup-parent`` (``<parent>/<id>``, relative to the supervisor's own
  cgroup); the parent is removed at daemon stop when it is empty.
- Networking is ``networks.NetworkManager``'s (``self.networks``): planned at create, made at
  each start before the supervisor creates the container, released at each exit, after a
  failed start and at removal.
- Errors are ``berth.errors`` kinds with Docker's messages; ``api_errors`` maps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import signal as signals
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from berth.engine import container_mounts, containers_admin, oci_config
from berth.engine import containers_restart as restarts
from berth.engine import supervisor_protocol as p
from berth.engine.api_errors import NotModified
from berth.engine.containers_restart import Backoff, RestartPolicy
from berth.engine.containers_rootfs import (
    is_mount_point,
    make_dir_in,
    mount_points,
    mount_rootfs,
    unmount,
)
from berth.engine.containers_state import (
    ZERO_TIME,
    Record,
    check_name,
    generate_name,
    merged_config,
    new_id,
    now_rfc3339,
    parse_rfc3339,
    parse_signal,
    start_exit_code,
)
from berth.engine.events import EventBus
from berth.engine.image_lock import ImageLock
from berth.engine.network_sandbox import Sandbox
from berth.engine.networks import NetworkManager
from berth.engine.paths import Paths
from berth.engine.supervisor_client import AsyncClient, ensure_started_async
from berth.engine.volumes import VolumeStore
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound, Unavailable
from berth.image.store import Image, ImageStore
from berth.runtime import cgroups

log = logging.getLogger(__name__)

DEFAULT_CGROUP_PARENT = "berth"
DEFAULT_STOP_TIMEOUT = 10
KILL_WAIT = 10.0
RECONNECT_DELAY = 0.5


# --------------------------------------------------------------------------- helpers


@dataclass
class Live:
    """What waiters share about one container, in memory."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    starts: int = 0
    exits: int = 0
    removed: bool = False
    exit_code: int = 0
    error: str = ""
    # restart policies: the pending restart, its back-off, and "the user stopped it: not now"
    restart_task: asyncio.Task[None] | None = None
    backoff: Backoff = field(default_factory=Backoff)
    exit_on_next: bool = False

    async def notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        async with self.cond:
            try:
                await asyncio.wait_for(self.cond.wait_for(predicate), timeout)
            except TimeoutError:
                return False
        return True


# --------------------------------------------------------------------------- the manager


class ContainerManager:
    def __init__(
        self,
        paths: Paths,
        images: ImageStore,
        image_lock: ImageLock,
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        events: EventBus | None = None,
        networks: NetworkManager | None = None,
    ) -> None:
        self.paths = paths
        self.volumes = VolumeStore.under(paths)
        self.events = events if events is not None else EventBus()
        self.networks = networks or NetworkManager(paths, self.events)
        self.networks.containers = self
        self.images = images
        self.image_lock = image_lock
        self.cgroup_parent = cgroup_parent.strip("/") or DEFAULT_CGROUP_PARENT
        self.records: dict[str, Record] = {}
        self.live: dict[str, Live] = {}
        self.sup = AsyncClient(paths.supervisor_socket)
        self.names_lock = asyncio.Lock()
        # names of containers being created (their records come when create ends): creates
        # prepare side by side, each holding the names lock only to pick and reserve a name
        self.reserved_names: dict[str, str] = {}
        self.starting = 0  # starts and builds under the cgroup parent (cgroup_parent_held)
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribed = asyncio.Event()
        # called with the record after each start and each exit (health.HealthMonitor)
        self.started_hooks: list[Callable[[Record], None]] = []
        self.exited_hooks: list[Callable[[Record], None]] = []
        # Set when the daemon stops: waits, follows and attaches end (their clients see the
        # connection close), so the API's shutdown does not wait for container exits.
        self.closing = asyncio.Event()

    # -- paths
    @property
    def supervisor_root(self) -> str:
        return os.path.join(self.paths.run_dir, "supervisor")

    def init_start(self, cid: str) -> int | None:
        """When the container's running init started (its stat's field 22, as the runtime
        recorded it), or None; blocking (reads the runtime's record)."""
        from berth.engine.containers_resources import live_init

        record = live_init(self.supervisor_root, cid)
        return None if record is None else record.pid_start

    @property
    def supervisor_log(self) -> str:
        return os.path.join(self.paths.run_dir, "supervisor.log")

    def bundle(self, cid: str) -> str:
        return self.paths.container(cid)

    # -- start-up and shutdown
    async def open(self) -> None:
        """Load the records, start (or find) the supervisor, follow its exits, reconcile."""
        os.makedirs(self.paths.containers, mode=0o700, exist_ok=True)
        for cid in sorted(os.listdir(self.paths.containers)):
            directory = self.paths.container(cid)
            try:
                rec = Record.load(directory)
            except FileNotFoundError:
                log.warning("container dir %s has no record: removed", directory)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            except (ValueError, KeyError, OSError) as e:
                log.error("container %s: unreadable record, skipped: %s", cid, e)
                continue
            self.records[rec.id] = rec
            self.live[rec.id] = Live()
        await self.networks.open()
        mounted = await asyncio.to_thread(mount_points)
        for rec in self.records.values():
            rec.mounted = rec.mounted and rec.rootfs in mounted  # a reboot took them
        await ensure_started_async(
            self.supervisor_root, self.paths.supervisor_socket, self.supervisor_log
        )
        self._watcher = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._subscribed.wait(), 30)
        await self.networks.reconcile()
        log.info("containers: %d loaded", len(self.records))
        await restarts.restart_at_open(self)

    async def shutdown(self, _app: object = None) -> None:
        """The API is stopping (aiohttp's ``on_shutdown``): end every wait and stream."""
        self.closing.set()
        for live in list(self.live.values()):
            await live.notify()

    async def close(self) -> None:
        self.closing.set()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.networks.retired()  # released veths still being deleted
        await self.sup.close()
        await asyncio.to_thread(self._remove_cgroup_parent)

    @contextlib.contextmanager
    def cgroup_parent_held(self) -> Iterator[None]:
        """While a start or a build makes cgroups under ``--cgroup-parent``, it stays."""
        self.starting += 1
        try:
            yield
        finally:
            self.starting -= 1
            self._remove_cgroup_parent_if_idle()

    def _remove_cgroup_parent_if_idle(self) -> None:
        """With no container running and no start or build under way, the
        ``--cgroup-parent`` dirs go (the runtime makes them again when needed): on the loop,
        so no start slips in between the check and the rmdirs (well under a millisecond)."""
        if self.starting or any(r.has_process for r in self.records.values()):
            return
        self._remove_cgroup_parent()

    def _remove_cgroup_parent(self) -> None:
        try:
            layout = cgroups.detect()
            parent = cgroups.Cgroup.plan(layout, self.cgroup_parent, "parent")
        except BerthError as e:
            log.debug("cgroup parent: %s", e.message)
            return
        for path in set(parent.paths.values()):
            try:
                os.rmdir(path)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    log.warning("cgroup parent %s: %s", path, e)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("containers: background task failed", exc_info=task.exception())

    async def _watch(self) -> None:
        """Follow the supervisor's exit events for as long as the daemon runs."""
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await self.sup._open()
                await self.sup._exchange(reader, writer, p.Subscribe())
                await self._reconcile()
                self._subscribed.set()
                while True:
                    line = await reader.readline()
                    if not line:
                        raise Unavailable("supervisor closed the event stream")
                    body = p.decode_reply(line)
                    if body.get("event") == "exit":
                        self._spawn(self._on_exit(p.Exit.from_json(body["exit"])))
            except (Unavailable, OSError) as e:
                log.warning("containers: lost the supervisor's events (%s); reconnecting", e)
                await asyncio.sleep(RECONNECT_DELAY)
                with contextlib.suppress(BerthError, OSError, TimeoutError):
                    await ensure_started_async(
                        self.supervisor_root, self.paths.supervisor_socket, self.supervisor_log
                    )
            finally:
                if writer is not None:
                    writer.close()

    async def _reconcile(self) -> None:
        """Match the records with the supervisor's containers after a (re)connection: exits
        missed while no one listened, a start whose record was not saved (berthd died in
        between), containers no record knows (killed and deleted), rootfs mounts to remount,
        and removals a crash interrupted."""
        infos = {info.id: info for info in await self.sup.list()}
        for cid, info in infos.items():
            rec = self.records.get(cid)
            try:
                if rec is None:
                    log.warning("container %s: in the supervisor but no record: deleted", cid)
                    await self.sup.delete(cid, force=True)
                elif not rec.has_process and info.exit is None and info.status == "running":
                    log.warning("container %s: running without a saved start: adopted", cid)
                    rec.state.update(
                        Status="running",
                        Running=True,
                        Restarting=False,
                        Pid=info.pid,
                        StartedAt=info.started_at or now_rfc3339(),
                    )
                    rec.save(self.bundle(cid))
                    self.live_of(cid).starts += 1
                elif not rec.has_process:
                    await self.sup.delete(cid, force=True)  # left over from a crash
            except (BerthError, OSError) as e:
                log.error("container %s: cannot reconcile: %s", cid, e)
        for rec in list(self.records.values()):
            if rec.status == "removing":
                self._spawn(self._auto_remove(rec.id))
                continue
            if not rec.has_process:
                continue
            found = infos.get(rec.id)
            if found is None:
                log.warning("container %s: unknown to the supervisor; marked exited", rec.id)
                gone = p.Exit(rec.id, 0, p.UNKNOWN_EXIT_CODE, False, now_rfc3339(), False)
                self._spawn(self._on_exit(gone))
            elif found.exit is not None:
                self._spawn(self._on_exit(found.exit))
            elif not await asyncio.to_thread(is_mount_point, rec.rootfs):
                try:
                    await asyncio.to_thread(self._mount, rec)
                except (BerthError, OSError) as e:
                    log.error("container %s: cannot mount its rootfs again: %s", rec.id, e)

    # -- lookups
    def get(self, ref: str) -> Record:
        """By full id, name (with or without ``/``) or unique id prefix (404 otherwise)."""
        rec = self.records.get(ref)
        if rec is not None:
            return rec
        name = ref if ref.startswith("/") else "/" + ref
        for rec in self.records.values():
            if rec.name == name:
                return rec
        if ref:
            found = [r for r in self.records.values() if r.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def emit(self, rec: Record, action: str, **attributes: str) -> None:
        """A container event (``GET /events``): its labels, image and name, and ``attributes``
        (``exitCode`` for die, ``signal`` for kill …). Other parts of the engine (exec, health
        checks, resize) call this too."""
        found = dict(rec.labels)
        found.update(image=rec.image_ref or rec.image_id, name=rec.name.lstrip("/"))
        found.update(attributes)
        self.events.emit("container", action, rec.id, found)

    def lock_of(self, cid: str) -> asyncio.Lock:
        """The lock that orders the container's start, exit handling, removal and pause."""
        return self.live_of(cid).lock

    def live_of(self, cid: str) -> Live:
        return self.live.setdefault(cid, Live())

    def image_in_use(self, image_id: str) -> bool:
        return any(r.image_id == image_id for r in self.records.values())

    def counts(self) -> dict[str, int]:
        running = sum(1 for r in self.records.values() if r.running and not r.state["Paused"])
        paused = sum(1 for r in self.records.values() if r.state["Paused"])
        total = len(self.records)
        return {
            "Containers": total,
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": total - running - paused,
        }

    def disk_rows(self) -> list[dict[str, Any]]:
        rows = sorted(self.records.values(), key=lambda r: r.created, reverse=True)
        return [{**r.summary(), "SizeRw": 0, "SizeRootFs": 0} for r in rows]

    # -- create
    async def create(self, body: dict[str, Any], name: str | None) -> tuple[Record, list[str]]:
        """A new container (nothing runs yet); the record and the create response's
        Warnings."""
        req = oci_config.CreateRequest.from_json(body)
        RestartPolicy.validate(body.get("HostConfig") or {})
        image_ref = req.image
        warnings: list[str] = []
        async with self.names_lock:  # held only to pick the name and reserve it
            taken = {r.name for r in self.records.values()} | set(self.reserved_names)
            cid = new_id()
            if name:
                wanted = check_name(name)
                self.check_name_free(wanted)
            else:
                wanted = generate_name(taken)
            self.reserved_names[wanted] = cid
        try:
            async with self.image_lock.shared():
                rec, sandbox = await asyncio.to_thread(
                    self._prepare, cid, wanted, image_ref, body, req, warnings
                )
            self.records[cid] = rec
            self.networks.register(sandbox)
            self.live[cid] = Live()
        finally:
            del self.reserved_names[wanted]
        self.emit(rec, "create")
        log.info("container %s: created as %s from %s", cid, rec.name, rec.image_id)
        return rec, warnings

    def _prepare(
        self,
        cid: str,
        name: str,
        image_ref: str,
        body: dict[str, Any],
        req: oci_config.CreateRequest,
        warnings: list[str],
    ) -> tuple[Record, Sandbox]:
        image = self.images.resolve(image_ref)
        mount_specs = container_mounts.parse(body, _image_config(image).get("Volumes"))
        sandbox = self.networks.plan(cid, body)
        netns_path = self.networks.spec_namespace(sandbox)
        directory = self.paths.container(cid)
        os.makedirs(directory, mode=0o700)
        rootfs = os.path.join(directory, "rootfs")
        mounted = False
        mount_rows: list[dict[str, Any]] = []
        volumes_claimed = False
        try:
            os.mkdir(rootfs, 0o755)
            mounts = self.images.container_mounts(image, cid)
            config = merged_config(body, _image_config(image))
            if not config.get("Hostname"):
                config["Hostname"] = cid[:12]
            mount_rootfs(mounts, rootfs)
            mounted = True
            spec = oci_config.build_spec(
                cid,
                req,
                image.config,
                rootfs,
                hostname=config["Hostname"],
                warnings=warnings,
                namespace_paths={"network": netns_path} if netns_path else None,
            )
            spec.setdefault("linux", {})["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
            cwd = str((spec.get("process") or {}).get("cwd") or "/")
            make_dir_in(rootfs, cwd)
            extra, mount_rows = container_mounts.prepare(mount_specs, self.volumes, rootfs)
            volumes_claimed = True
            spec["mounts"].extend(extra)
            if propagation := container_mounts.rootfs_propagation(extra):
                spec["linux"]["rootfsPropagation"] = propagation
            taken = [str(m["destination"]) for m in spec["mounts"]]
            spec["mounts"].extend(self.networks.file_mounts(sandbox, directory, taken))
            data = json.dumps(spec, separators=(",", ":")).encode() + b"\n"
            from berth.runtime import store as runtime_store

            runtime_store.write_atomically(os.path.join(directory, "config.json"), data, 0o600)
            self.volumes.release(container_mounts.claimed(mount_rows))  # config.json holds them
            volumes_claimed = False
            args = [str(a) for a in (spec.get("process") or {}).get("args") or []]
            host_config = dict(body.get("HostConfig") or {})
            rec = Record(
                id=cid,
                name=name,
                created=now_rfc3339(),
                image_id=image.id,
                image_ref=image_ref,
                config=config,
                host_config=host_config,
                path=args[0] if args else "",
                args=args[1:],
                log_path=os.path.join(directory, f"{cid}-json.log"),
                rootfs=rootfs,
                mounted=True,  # kept for the start that usually follows at once
                mount_points=mount_rows,
            )
            self.networks.write_files(sandbox, directory, rec.to_json())
            sandbox.save(directory)
            rec.save(directory)
        except BaseException:
            if mounted:
                with contextlib.suppress(OSError):
                    unmount(rootfs)
            with contextlib.suppress(BerthError, OSError):
                self.images.remove_container(cid)
            shutil.rmtree(directory, ignore_errors=True)
            if volumes_claimed:
                self.volumes.release(container_mounts.claimed(mount_rows))
            for volume in container_mounts.anonymous_volumes(mount_rows):
                self.volumes.remove_if_unused(volume)
            raise
        return rec, sandbox

    def _mount(self, rec: Record) -> None:
        image = self.images.resolve(rec.image_id)
        mount_rootfs(self.images.container_mounts(image, rec.id), rec.rootfs)
        rec.mounted = True
        rec.save(self.bundle(rec.id))

    def _unmount(self, rec: Record) -> None:
        if rec.mounted or is_mount_point(rec.rootfs):
            unmount(rec.rootfs)
        rec.mounted = False

    # -- start
    async def start(self, ref: str) -> Record:
        """The user's start: it also forgets an earlier stop by the user and the restart
        count (as dockerd's start does)."""
        rec = self.get(ref)
        live = self.live_of(rec.id)
        async with live.lock:
            if rec.id not in self.records:
                raise NotFound(f"No such container: {ref}")
            if rec.paused:
                raise Conflict("cannot start a paused container, try unpause instead")
            if rec.running:
                raise NotModified(f"container {rec.id} is already running")
            rec.manually_stopped = False
            rec.restart_count = 0
            live.exit_on_next = False
            live.backoff.reset()
            await self._start_locked(rec, live)
        await live.notify()
        return rec

    async def _start_locked(self, rec: Record, live: Live) -> None:
        if not rec.mounted:  # else still mounted since create (open checked the flags)
            async with self.image_lock.shared():
                await asyncio.to_thread(self._mount, rec)
        try:
            await self.networks.attach(rec)
        except BerthError as e:
            await self._start_failed(rec, live, e)
            raise type(e)(f"failed to set up container networking: {e.message}") from None
        try:
            with self.cgroup_parent_held():
                info = await self.sup.create(
                    rec.id,
                    self.bundle(rec.id),
                    rec.log_path,
                    start=True,
                    stdin=bool(rec.config.get("OpenStdin")),
                )
        except BerthError as e:
            message = await self._start_failed(rec, live, e)
            raise InvalidArgument(message) from None
        rec.state.update(
            Status="running",
            Running=True,
            Paused=False,
            Restarting=False,
            OOMKilled=False,
            Dead=False,
            Pid=info.pid,
            ExitCode=0,
            Error="",
            StartedAt=info.started_at or now_rfc3339(),
        )
        rec.save(self.bundle(rec.id))
        live.starts += 1
        self.emit(rec, "start")
        for hook in self.started_hooks:
            hook(rec)
        log.info("container %s: started, pid %d", rec.id, info.pid)

    async def _start_failed(self, rec: Record, live: Live, e: BerthError) -> str:
        message = f"failed to create task for container: OCI runtime create failed: {e.message}"
        message += ": unknown"
        await self.networks.release(rec.id)
        await asyncio.to_thread(self._unmount, rec)
        code = start_exit_code(e.message)
        rec.state.update(ExitCode=code, Error=message, Running=False, Restarting=False, Pid=0)
        if rec.state["StartedAt"] != ZERO_TIME:
            rec.state.update(Status="exited", FinishedAt=now_rfc3339())
        rec.save(self.bundle(rec.id))
        live.exit_code, live.error = code, message
        live.exits += 1
        self._spawn(live.notify())
        log.info("container %s: start failed: %s", rec.id, e.message)
        if rec.auto_remove:
            self._spawn(self._auto_remove(rec.id))
        return message

    # -- exits and restart policies
    async def _on_exit(self, ex: p.Exit) -> None:
        rec = self.records.get(ex.id)
        if rec is None:
            with contextlib.suppress(BerthError):
                await self.sup.delete(ex.id, force=True)
            return
        live = self.live_of(rec.id)
        async with live.lock:
            if not rec.has_process or self.records.get(ex.id) is not rec:
                return
            policy = RestartPolicy.of(rec.host_config)
            again = not live.exit_on_next and policy.on_exit(
                ex.exit_code, rec.manually_stopped, rec.restart_count
            )
            ran_for = parse_rfc3339(ex.finished_at) - parse_rfc3339(rec.state["StartedAt"])
            rec.state.update(
                Status="restarting" if again else "exited",
                Running=again,
                Restarting=again,
                Paused=False,
                Pid=0,
                ExitCode=ex.exit_code,
                OOMKilled=ex.oom_killed,
                FinishedAt=ex.finished_at,
            )
            if again:
                rec.restart_count += 1
            rec.save(self.bundle(rec.id))
            for hook in self.exited_hooks:
                hook(rec)
            try:
                await self.sup.delete(rec.id, force=True)
            except NotFound:
                pass
            except BerthError as e:
                log.warning("container %s: supervisor delete: %s", rec.id, e.message)
            await self.networks.release(rec.id)
            await asyncio.to_thread(self._unmount, rec)
            rec.save(self.bundle(rec.id))
            live.exit_code, live.error = ex.exit_code, ""
            live.exits += 1
            if again:
                delay = live.backoff.next(ran_for)
                live.restart_task = self._spawn(restarts.restart_later(self, rec.id, delay))
        if ex.oom_killed:
            self.emit(rec, "oom")
        self.emit(rec, "die", exitCode=str(ex.exit_code), execDuration=str(int(ran_for)))
        await live.notify()
        log.info(
            "container %s: exited %d (oom %s)%s",
            rec.id,
            ex.exit_code,
            ex.oom_killed,
            f"; restart {rec.restart_count} in {live.backoff.delay:g}s" if again else "",
        )
        if rec.auto_remove and not again:
            await self._auto_remove(rec.id)

    async def _auto_remove(self, cid: str) -> None:
        try:
            await self.remove(cid, force=True, volumes=True)
        except NotFound:
            pass

    # -- stop, kill, restart
    async def wait_exit(self, live: Live, after: int, timeout: float | None) -> bool:
        return await live.wait_for(lambda: live.exits > after or live.removed, timeout)

    async def _signal(self, rec: Record, sig: int, all_: bool = False) -> None:
        """Send ``sig`` (the kill event); a paused container that is to stop is thawed after
        it, so that it acts on it (as dockerd does)."""
        await self.sup.kill(rec.id, sig, all=all_)
        self.emit(rec, "kill", signal=str(sig))
        if rec.paused and self.live_of(rec.id).exit_on_next:
            await containers_admin.thaw(self, rec)

    async def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        rec = self.get(ref)
        if not rec.running:
            raise NotModified(f"container {rec.id} is already stopped")
        live = self.live_of(rec.id)
        restarts.stopped_by_user(self, rec, live)
        if await restarts.cancel_restart(self, rec, live):
            self.emit(rec, "stop")
            return
        seen = live.exits
        sig = parse_signal(signal or rec.config.get("StopSignal"))
        if timeout is None:
            configured = rec.config.get("StopTimeout")
            timeout = int(configured) if configured is not None else DEFAULT_STOP_TIMEOUT
        with contextlib.suppress(BerthError):
            await self._signal(rec, sig)
        wait = None if timeout < 0 else float(timeout)
        if not await self.wait_exit(live, seen, wait):
            log.info("container %s: no exit %ss after signal %d: SIGKILL", rec.id, timeout, sig)
            with contextlib.suppress(BerthError):
                await self._signal(rec, signals.SIGKILL, all_=True)
            if not await self.wait_exit(live, seen, KILL_WAIT):
                raise Unavailable(f"container {rec.id}: did not exit after SIGKILL")
        self.emit(rec, "stop")

    async def kill(self, ref: str, signal: str | None = None) -> None:
        rec = self.get(ref)
        sig = parse_signal(signal, signals.SIGKILL)
        if not rec.running:
            raise Conflict(f"Cannot kill container: {ref}: Container {rec.id} is not running")
        live = self.live_of(rec.id)
        restarts.stopped_by_user(self, rec, live, sig)
        if rec.restarting:  # no process to signal: the restart is off, or waits on
            if live.exit_on_next:
                await restarts.cancel_restart(self, rec, live)
            return
        seen = live.exits
        try:
            await self._signal(rec, sig)
        except BerthError as e:
            raise Conflict(f"Cannot kill container: {ref}: {e.message}") from None
        if sig == signals.SIGKILL:
            await self.wait_exit(live, seen, KILL_WAIT)

    async def restart(self, ref: str, timeout: int | None = None) -> None:
        rec = self.get(ref)
        if rec.running:
            await self.stop(rec.id, timeout)
        await self.start(rec.id)
        self.emit(rec, "restart")

    def check_name_free(self, name: str, context: str = "") -> None:
        other = next((r.id for r in self.records.values() if r.name == name), None)
        other = other or self.reserved_names.get(name)
        if other is not None:
            raise Conflict(
                f'{context}Conflict. The container name "{name}" is already in use by container'
                f' "{other}". You have to remove (or rename) that container to be able to reuse'
                " that name."
            )

    # -- remove
    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """``volumes`` (``rm -v``) also removes the container's anonymous volumes."""
        rec = self.get(ref)
        live = self.live_of(rec.id)
        if rec.running:
            if not force:
                procedure = "Stop the container before attempting removal or force remove"
                if rec.paused:
                    procedure = "Unpause and then " + procedure[0].lower() + procedure[1:]
                raise Conflict(f"You cannot remove a {rec.status} container {rec.id}. {procedure}")
            restarts.stopped_by_user(self, rec, live)
            if not await restarts.cancel_restart(self, rec, live):
                seen = live.exits
                with contextlib.suppress(BerthError):
                    await self._signal(rec, signals.SIGKILL, all_=True)
                if not await self.wait_exit(live, seen, KILL_WAIT):
                    raise Unavailable(f"container {rec.id}: did not exit after SIGKILL")
        async with live.lock:
            if self.records.get(rec.id) is not rec:
                raise NotFound(f"No such container: {ref}")
            if rec.running:
                raise Conflict(f"container {rec.id} was started again while being removed")
            rec.state["Status"] = "removing"  # a crash from here on: finished at start-up
            rec.save(self.bundle(rec.id))
            with contextlib.suppress(NotFound):
                await self.sup.delete(rec.id, force=True)
            await self.networks.forget(rec.id)
            await asyncio.to_thread(self._destroy, rec)
            del self.records[rec.id]
            live.removed = True
            if volumes:
                for name in container_mounts.anonymous_volumes(rec.mount_points):
                    await asyncio.to_thread(self.volumes.remove_if_unused, name)
        self.live.pop(rec.id, None)
        self.emit(rec, "destroy")
        self._remove_cgroup_parent_if_idle()
        await live.notify()
        # Waiters (``run --rm``) are answered; the caller of rm returns once its veths are gone.
        await self.networks.retired(container=rec.id)
        log.info("container %s: removed", rec.id)

    def _destroy(self, rec: Record) -> None:
        self._unmount(rec)
        try:
            self.images.remove_container(rec.id)
        except NotFound:
            pass
        shutil.rmtree(self.bundle(rec.id), ignore_errors=True)

    async def prune(self, keep: Callable[[Record], bool]) -> list[str]:
        gone = []
        for rec in list(self.records.values()):
            if rec.running or keep(rec):
                continue
            with contextlib.suppress(NotFound):
                await self.remove(rec.id)
                gone.append(rec.id)
        return gone


def _image_config(image: Image) -> dict[str, Any]:
    out: dict[str, Any] = image.config.config.to_json()
    return out
