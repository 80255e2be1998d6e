"""The RUN steps of ``docker build`` in berthd: ``image.build.Runner`` as real containers.

``StepRunner(paths, cgroup_parent).run(mounts, process)`` runs one step and returns its exit
status; ``cancel()`` (from any thread) stops the step in progress and every later one.

Rules:
- Each step is a container of ``berth-runtime run`` (a child process, so berthd never forks
  from its threads) with the id ``new_id()``; its bundle is ``<data root>/builds/<id>/``
  (``config.json`` beside the ``rootfs`` mount point) and its runtime state is under
  ``<run dir>/build-runtime``.
- The config is the one dockerd gives build containers: ``oci_config.build_spec`` of a create
  request with the step's args, env, user and working dir, the build's resource limits (a
  HostConfig, as ``docker build --memory`` gives), Docker's default capabilities, seccomp
  profile and masked paths; hostname ``<id>[:12]``; cgroup ``<cgroup parent>/<id>`` (relative
  to berthd's own, as for containers). The working dir is made in the rootfs first (it becomes
  part of the layer, as with Docker).
- Network: with ``networks`` (``StepNetworks``: ``docker build --network``, default the
  default bridge) each step gets its own sandbox (``NetworkManager.attach_build``: a pinned
  namespace with a veth on the network, or berthd's own with ``host``) and its /etc/hostname,
  hosts and resolv.conf bind-mounted from the bundle; ``release`` runs when the step ends,
  fails or is cancelled, before the rootfs is unmounted. Those three files are not part of
  the step's layer (dockerd keeps them in a layer of their own): a mount point the runtime
  made for one (the file was not in the rootfs) is removed after the step, and so is the
  ``/etc`` it made (or copied up) in the layer to hold it, once unmounted, if left empty. Without
  ``networks`` a step has loopback only (its own namespace, made by the runtime).
- The snapshot's mounts are mounted on ``rootfs`` in berthd's mount namespace (``/`` has
  private propagation) and always unmounted in ``finally``, whatever happened; the bundle dir
  is then removed with ``rmdir``/``unlink`` only (never a recursive delete that could reach
  into a rootfs still mounted).
- Output: stdout and stderr are read as they come and handed to ``process.output`` line by
  line (a last line without a newline too).
- Cancelling kills every process of the step's cgroup (the runtime library's ``kill --all``,
  repeated at each poll until the output pipes close, since the runtime may not have made the
  container yet), waits for ``berth-runtime run`` to reap its init and delete the container,
  and deletes it itself (``--force``) if it is still known; the step then raises
  ``BuildCancelled``. A step whose ``berth-runtime run`` is still alive when the step ends is
  killed the same way.
- A berthd killed mid-build leaves its step running and mounted: ``sweep`` (run before the
  first build of the next daemon) deletes such containers, unmounts and removes their bundles
  and the old context dirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from berth.engine import network_files, network_sandbox, oci_config
from berth.engine.containers import DEFAULT_CGROUP_PARENT
from berth.engine.containers_rootfs import is_mount_point, make_dir_in, mount_rootfs, unmount
from berth.engine.containers_state import new_id
from berth.engine.network_build import StepSandbox
from berth.engine.paths import Paths
from berth.errors import BerthError, Unavailable
from berth.image.build import RunProcess
from berth.image.snapshots import Mount
from berth.runtime import container as runtime
from berth.runtime import store as runtime_store
from berth.runtime.rootfs import secure_join

if TYPE_CHECKING:
    from berth.engine.networks import NetworkManager

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks at the cancel flag while a step is silent
READ_SIZE = 1 << 16
RUNTIME = os.path.join(os.path.dirname(sys.executable), "berth-runtime")


class BuildCancelled(Unavailable):
    """The build was stopped: the client went away or the daemon is stopping."""


class StepNetworks:
    """The steps' sandboxes through the ``NetworkManager``, which lives on berthd's event loop
    (``loop``) while the steps run on a build thread: each call waits for the loop to do it."""

    def __init__(
        self, networks: NetworkManager, mode: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.networks = networks
        self.mode = mode
        self.loop = loop
        self.released: list[str] = []

    def attach(self, step_id: str, directory: str) -> StepSandbox:
        coro = self.networks.attach_build(step_id, self.mode, directory)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def release(self, step_id: str) -> None:
        self.released.append(step_id)
        coro = self.networks.release_build(step_id)
        asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def settled(self) -> None:
        """(On the loop) wait until the released steps' veths are gone and addresses free."""
        for step_id in self.released:
            await self.networks.retired(container=step_id)


class StepRunner:
    """Runs RUN steps (``image.build.Runner``); ``started(id)`` is told each step's id;
    ``limits`` are HostConfig resource keys (``Memory``, ``CpuShares``, …) for every step."""

    def __init__(
        self,
        paths: Paths,
        cgroup_parent: str,
        started: Callable[[str], None] = lambda _cid: None,
        runtime_path: str = RUNTIME,
        limits: dict[str, Any] | None = None,
        networks: StepNetworks | None = None,
    ) -> None:
        self.paths = paths
        self.cgroup_parent = cgroup_parent.strip("/") or DEFAULT_CGROUP_PARENT
        self.started = started
        self.runtime_path = runtime_path
        self.limits = dict(limits or {})
        self.networks = networks
        self.state = runtime_store.Store(os.path.join(paths.run_dir, "build-runtime"))
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def run(self, mounts: list[Mount], process: RunProcess) -> int:
        if self.cancelled.is_set():
            raise BuildCancelled("the build was cancelled")
        cid = new_id()
        bundle = os.path.join(self.paths.builds, cid)
        rootfs = os.path.join(bundle, "rootfs")
        os.makedirs(rootfs, mode=0o755)
        mounted = attached = False
        made: list[str] = []  # the /etc files' mount points the runtime will make
        upper, new_dirs = _upper_dir(mounts), []  # the dirs the runtime makes for them there
        try:
            mount_rootfs(mounts, rootfs)
            mounted = True
            sandbox = None
            if self.networks is not None:
                sandbox = self.networks.attach(cid, bundle)
                attached = True
                made = _absent(rootfs, [str(m["destination"]) for m in sandbox.mounts])
                if upper is not None:
                    new_dirs = _absent(upper, sorted({os.path.dirname(t) for t in made}))
            spec = self.step_spec(cid, process, rootfs, sandbox)
            make_dir_in(rootfs, str(spec["process"]["cwd"]))
            runtime_store.write_atomically(
                os.path.join(bundle, "config.json"), json.dumps(spec).encode(), 0o600
            )
            self.started(cid)
            log.info("build step %s: running %s", cid[:12], list(process.args))
            return self._execute(cid, bundle, process)
        finally:
            try:
                if attached and self.networks is not None:
                    self.networks.release(cid)
            finally:
                if mounted:
                    _remove_mount_points(rootfs, made)
                if mounted or is_mount_point(rootfs):
                    unmount(rootfs)
                if upper is not None and new_dirs and not is_mount_point(rootfs):
                    _remove_empty_dirs(upper, new_dirs)
                _remove_bundle(bundle, rootfs)

    def step_spec(
        self, cid: str, process: RunProcess, rootfs: str, sandbox: StepSandbox | None = None
    ) -> dict[str, Any]:
        """The config.json of the step (see the module docstring)."""
        user = "" if process.user in ("", "root") else process.user
        req = oci_config.CreateRequest.from_json(
            {
                "Image": "build",
                "Cmd": list(process.args),
                "Env": list(process.env),
                "User": user,
                "WorkingDir": process.workdir or "/",
                "HostConfig": {
                    **self.limits,
                    "NetworkMode": sandbox.network_mode if sandbox else "none",
                },
            }
        )
        netns_path = sandbox.netns_path if sandbox else None
        spec = oci_config.build_spec(
            cid,
            req,
            None,
            rootfs,
            hostname=cid[:12],
            namespace_paths={"network": netns_path} if netns_path else None,
        )
        spec["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
        if sandbox is not None:
            spec["mounts"].extend(dict(m) for m in sandbox.mounts)
        return spec

    def _execute(self, cid: str, bundle: str, process: RunProcess) -> int:
        argv = [self.runtime_path, "--root", self.state.root, "run", "--bundle", bundle, cid]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            self._pump(cid, proc, process)
            status = proc.wait()
        finally:
            if proc.poll() is None:
                self._stop(cid, proc)
            self._forget(cid)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self.cancelled.is_set():
            raise BuildCancelled(f"build step {cid[:12]} was cancelled")
        return status

    def _pump(self, cid: str, proc: subprocess.Popen[bytes], process: RunProcess) -> None:
        """Hand the output to ``process.output`` until both pipes close; stop on cancel."""
        assert proc.stdout is not None and proc.stderr is not None
        partial = {"stdout": b"", "stderr": b""}
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
            sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
            killed = False
            while sel.get_map():
                if self.cancelled.is_set():  # again at each poll: the runtime may not have
                    self._kill(cid, quiet=killed)  # made the container the first time
                    killed = True
                for key, _ in sel.select(timeout=POLL):
                    stream = str(key.data)
                    data = os.read(key.fd, READ_SIZE)
                    if not data:
                        sel.unregister(key.fileobj)
                        if partial[stream]:
                            process.output(stream, partial[stream].decode(errors="replace"))
                        continue
                    *lines, partial[stream] = (partial[stream] + data).split(b"\n")
                    for line in lines:
                        process.output(stream, line.decode(errors="replace"))

    def _kill(self, cid: str, quiet: bool = False) -> None:
        if not quiet:
            log.info("build step %s: cancelled, killing its processes", cid[:12])
        with contextlib.suppress(BerthError, OSError):
            runtime.kill(self.state, cid, signal.SIGKILL, all_processes=True)

    def _stop(self, cid: str, proc: subprocess.Popen[bytes]) -> None:
        self._kill(cid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("build step %s: berth-runtime run did not exit; killed", cid[:12])
            proc.kill()
            proc.wait()

    def _forget(self, cid: str) -> None:
        """Delete the runtime's container if ``berth-runtime run`` did not (killed early)."""
        if not os.path.isdir(os.path.join(self.state.root, cid)):
            return
        try:
            runtime.delete(self.state, cid, force=True)
        except (BerthError, OSError) as e:
            log.error("build step %s: cannot delete the container: %s", cid[:12], e)


def sweep(paths: Paths, older_than: float) -> list[str]:
    """Remove what builds of a berthd that died left behind (its step containers, their
    mounts and bundles, and the context dirs made before ``older_than``, a unix time); the
    ids of the steps removed. Call it while no build of this daemon runs."""
    state = runtime_store.Store(os.path.join(paths.run_dir, "build-runtime"))
    removed = []
    for cid in state.ids() if os.path.isdir(state.root) else []:
        with contextlib.suppress(BerthError, OSError):
            runtime.delete(state, cid, force=True)
            removed.append(cid)
    for name in os.listdir(paths.builds) if os.path.isdir(paths.builds) else []:
        path = os.path.join(paths.builds, name)
        if name.startswith("ctx-"):
            with contextlib.suppress(OSError):
                if os.stat(path).st_mtime < older_than:
                    shutil.rmtree(path, ignore_errors=True)
            continue
        rootfs = os.path.join(path, "rootfs")
        if is_mount_point(rootfs):
            unmount(rootfs)
        _remove_bundle(path, rootfs)
        removed.append(name)
    steps = sorted(set(removed))
    if steps:
        log.warning("build: removed %d step(s) a daemon left mid-build", len(steps))
    return steps


def _upper_dir(mounts: list[Mount]) -> str | None:
    """The directory a step's writes land in (its layer): an overlay's upper, a bind's tree."""
    if len(mounts) != 1:
        return None
    if mounts[0].type == "bind":
        return mounts[0].source
    uppers = [o.partition("=")[2] for o in mounts[0].options if o.startswith("upperdir=")]
    return uppers[0] if uppers else None


def _absent(root: str, paths: list[str]) -> list[str]:
    return [p for p in paths if not os.path.lexists(secure_join(root, p))]


def _remove_empty_dirs(upper: str, paths: list[str]) -> None:
    """The dirs (``/etc``) made in the layer only to hold the mount points, once unmounted:
    a copy of a lower dir or a new one, left empty (nothing the step wrote is in it)."""
    for path in paths:
        with contextlib.suppress(BerthError, OSError):  # gone, not a dir, or not empty
            target = secure_join(upper, path)
            if not os.path.islink(target) and os.path.isdir(target) and not os.listdir(target):
                os.rmdir(target)


def _remove_mount_points(rootfs: str, targets: list[str]) -> None:
    """The empty files the runtime made to mount the step's /etc files on (see the rules)."""
    for target in targets:
        try:
            path = secure_join(rootfs, target)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size == 0 and not is_mount_point(path):
                os.unlink(path)
        except FileNotFoundError:
            continue
        except (BerthError, OSError) as e:
            log.error("build step: cannot remove the mount point %s: %s", target, e)


# What a step leaves in its bundle: its config, and the files of its networking.
BUNDLE_FILES = ("config.json", network_sandbox.STATE_FILE, *network_files.FILES)


def _remove_bundle(bundle: str, rootfs: str) -> None:
    if is_mount_point(rootfs):
        log.error("build step: %s is still mounted; left in place", rootfs)
        return
    for name in BUNDLE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(bundle, name))
    for path in (rootfs, bundle):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("build step: cannot remove %s: %s", path, e)
