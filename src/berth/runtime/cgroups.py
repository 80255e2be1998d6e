"""Container cgroups on cgroup v1, v2 and hybrid hosts: detect, plan, create, limit, freeze, kill.

Rules:
- Import cost matters (this is on the container start path): only os, errno, signal, time,
  dataclasses, typing and berth.errors / berth.spec.config (plus ``sys``, which is built in).
  Debug notes go to ``berth.runtime.log`` or ``logging`` only if the process already imported
  one of them; this module never imports a logging package itself.
- No global paths: ``detect`` takes the /proc root, and everything after it works on the
  mountpoints the layout names, so tests point the whole module at a fake tree in a temp dir.
- Layout: v1 hierarchies and the cgroup2 mount are read from ``<proc>/<pid>/mountinfo`` and
  matched to the caller's cgroups in ``<proc>/<pid>/cgroup``; named v1 hierarchies
  (``name=systemd``) are ignored. On a hybrid host v1 is used for every controller v1 has; the
  unified hierarchy only for controllers found nowhere else (it is still joined, as runc does).
- Paths (``linux.cgroupsPath``): "" means ``<container id>`` (as runc); a relative path goes under
  the caller's own cgroup in each hierarchy -- on cgroup v2 under the *parent* of the caller's
  cgroup, as runc does, because the no-internal-process rule forbids enabling controllers below
  a cgroup that holds the caller; an absolute path is taken from the hierarchy root. ``..``
  components and systemd's ``slice:prefix:name`` form are ``InvalidArgument``.
- Ownership: ``create`` records each directory it made; ``destroy`` removes only those (deepest
  first, a container's own sub-cgroups included), so shared parents made by others and
  pre-existing cgroups survive. The record round-trips through ``to_json``/``from_json``.
- v2 controllers: ``create`` enables cpu, cpuset, io, memory and pids (those the hierarchy
  offers) in the ``cgroup.subtree_control`` of every ancestor; other controllers are enabled
  only when an ``apply`` write needs them (``linux.resources.unified``).
- Errors: a kernel refusal of a limit is ``InvalidArgument`` naming the OCI field and value; a
  missing controller or file is ``Unsupported``; a cgroup that cannot be made, joined, frozen
  or removed is ``FailedPrecondition`` (``Unavailable`` when freezing times out). Translation
  of limits into file writes, and its ordering rules, live in ``cgroups_v1``/``cgroups_v2``.
- Devices: an empty ``linux.resources.devices`` leaves the cgroup's device access as it is
  (inherited); a non-empty one replaces it (deny all, then the rules in order). On cgroup v2
  device rules need eBPF, which Berth does not load: they are skipped (see ``cgroups_v2``).
- ``kill_all(SIGKILL)`` uses the unified hierarchy's ``cgroup.kill`` when there is one (every
  container process is in the unified cgroup too, hybrid included); otherwise, and for other
  signals, it freezes, signals every pid and thaws. Stats use 0 for "unknown" and "no limit".
"""

from __future__ import annotations

import errno
import os
import sys
import time

from berth.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, Unsupported
from berth.runtime import cgroups_v1 as v1
from berth.runtime import cgroups_v2 as v2
from berth.runtime.signals import SIGKILL
from berth.spec.value import value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from berth.spec.config import CPU, Memory, Resources

V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")  # enabled for every container
_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded LONG_MAX


@value
class Hierarchy:
    version: int  # 1 or 2
    mountpoint: str  # e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup/unified
    controllers: tuple[str, ...]  # v1: the hierarchy's controllers; v2: the usable ones
    mount_options: str  # superblock options to mount it again ("cpu,cpuacct"); "" for v2
    own_path: str  # the caller's cgroup in this hierarchy, as /proc/self/cgroup says
    mount_root: str = "/"  # the cgroup the mount shows at its mountpoint (mountinfo field 4)


@value
class CgroupLayout:
    mode: str  # "v1" | "v2" | "hybrid"
    hierarchies: tuple[Hierarchy, ...]


@value
class CgroupStats:
    memory_usage: int = 0
    memory_limit: int = 0  # 0 = no limit
    memory_max_usage: int = 0  # 0 = unknown
    cpu_usage_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    pids_current: int = 0
    pids_limit: int = 0  # 0 = max
    oom_kills: int = 0


# --------------------------------------------------------------------------- file helpers


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        os.close(fd)


def _write(path: str, data: str) -> None:
    """One write(2), as cgroup files expect; OSError carries the path."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        os.write(fd, data.encode())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        os.close(fd)


def _read_opt(path: str) -> str | None:
    try:
        return _read(path)
    except FileNotFoundError:
        return None


def _number(path: str) -> int:
    """An integer file; 0 when missing, unparsable or "max"."""
    text = _read_opt(path)
    try:
        return int(text.split()[0]) if text and text.split() else 0
    except ValueError:
        return 0


def _keyed(path: str) -> dict[str, int]:
    """A ``key value`` per line file (cpu.stat, memory.events, ...); {} when missing."""
    out: dict[str, int] = {}
    for line in (_read_opt(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _debug(message: str) -> None:
    log = sys.modules.get("berth.runtime.log")
    if log is not None:
        log.entry("debug", message)
        return
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(message)


def _chain(mountpoint: str, leaf: str) -> list[str]:
    """The directories from ``mountpoint`` down to ``leaf``, both included."""
    top = mountpoint.rstrip("/") or "/"
    rel = leaf[len(top) :].strip("/")
    dirs = [top]
    for part in rel.split("/") if rel else ():
        dirs.append(f"{dirs[-1].rstrip('/')}/{part}")
    return dirs


# --------------------------------------------------------------------------- detect


@value
class _Mount:
    root: str
    mountpoint: str
    fstype: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _cgroup_mounts(mountinfo: str) -> list[_Mount]:
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            _Mount(_unescape(fields[3]), _unescape(fields[4]), tail[0], tuple(tail[2].split(",")))
        )
    return mounts


def _reaches(mount: _Mount, path: str) -> bool:
    root = mount.root.rstrip("/")
    return not root or path == root or path.startswith(root + "/")


_LAYOUTS: dict[tuple[str, str], CgroupLayout] = {}


def detect(proc: str = "/proc", pid: str = "self") -> CgroupLayout:
    """The cgroup hierarchies process ``pid`` sees, and its own cgroup in each.

    The layout of the calling process is kept per cgroup membership: its mount table can be
    long (every running container's rootfs is a mount of the host's), and a long-lived caller
    (berthd's supervisor) would read it again for every container it creates. Cgroup
    hierarchies are mounted at boot; a process that moves to another cgroup reads it anew.
    """
    base = f"{proc}/{pid}"
    try:
        membership = _read(f"{base}/cgroup")
        key = (base, membership)
        if pid == "self" and key in _LAYOUTS:
            return _LAYOUTS[key]
        mounts = _cgroup_mounts(_read(f"{base}/mountinfo"))
    except OSError as exc:
        raise Unavailable(f"cgroups: cannot read {exc.filename}: {exc.strerror}") from exc
    layout = _layout(base, mounts, membership)
    if pid == "self":
        _LAYOUTS.clear()  # one membership at a time
        _LAYOUTS[key] = layout
    return layout


def _layout(base: str, mounts: list[_Mount], membership: str) -> CgroupLayout:
    own_v1: list[tuple[tuple[str, ...], str]] = []
    own_v2: str | None = None
    for line in membership.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, names, path = parts
        if hid == "0" and not names:
            own_v2 = path
            continue
        controllers = tuple(n for n in names.split(",") if n and not n.startswith("name="))
        if controllers:
            own_v1.append((controllers, path))
    hierarchies: list[Hierarchy] = []
    for controllers, path in own_v1:
        for m in mounts:
            usable = m.fstype == "cgroup" and set(controllers) <= set(m.super_options)
            if usable and _reaches(m, path):
                options = ",".join(controllers)
                hierarchies.append(Hierarchy(1, m.mountpoint, controllers, options, path, m.root))
                break
    v1_controllers = {c for h in hierarchies for c in h.controllers}
    has_v1 = bool(hierarchies)
    if own_v2 is not None:
        for m in mounts:
            if m.fstype == "cgroup2" and _reaches(m, own_v2):
                try:
                    offered = _read(f"{m.mountpoint.rstrip('/')}/cgroup.controllers").split()
                except OSError as exc:
                    raise Unavailable(
                        f"cgroups: cannot read {exc.filename}: {exc.strerror}"
                    ) from exc
                controllers = tuple(c for c in offered if c not in v1_controllers)
                hierarchies.append(Hierarchy(2, m.mountpoint, controllers, "", own_v2, m.root))
                break
    has_v2 = any(h.version == 2 for h in hierarchies)
    if not hierarchies:
        raise Unsupported(f"cgroups: no cgroup hierarchy is mounted ({base}/mountinfo)")
    mode = "hybrid" if has_v1 and has_v2 else "v1" if has_v1 else "v2"
    return CgroupLayout(mode, tuple(hierarchies))


# --------------------------------------------------------------------------- plan


def _inner_path(cgroups_path: str, container_id: str) -> str:
    """The normalised ``linux.cgroupsPath``: "a/b" (relative) or "/a/b" (absolute)."""
    field = "linux.cgroupsPath"
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise InvalidArgument(f"container id {container_id!r} cannot name a cgroup")
        return container_id
    if "\0" in cgroups_path or "\n" in cgroups_path:
        raise InvalidArgument(f"{field}: {cgroups_path!r} contains a NUL or newline")
    if len(cgroups_path.split(":")) == 3:
        raise InvalidArgument(
            f"{field}: {cgroups_path!r} is systemd's 'slice:prefix:name' form; Berth drives "
            "cgroupfs directly, give a path"
        )
    parts = cgroups_path.split("/")
    if ".." in parts:
        raise InvalidArgument(f"{field}: {cgroups_path!r} must not contain '..'")
    kept = [p for p in parts if p not in ("", ".")]
    if not kept:
        raise InvalidArgument(f"{field}: {cgroups_path!r} names no cgroup of its own")
    joined = "/".join(kept)
    return f"/{joined}" if cgroups_path.startswith("/") else joined


def _own_dir(h: Hierarchy) -> str:
    """The caller's cgroup relative to what the mount shows: "/" or "/a/b"."""
    root, path = h.mount_root.rstrip("/"), h.own_path
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path or "/"


@value
class _Entry:
    version: int
    mountpoint: str
    controllers: tuple[str, ...]
    path: str  # the container's cgroup directory


# --------------------------------------------------------------------------- Cgroup


class Cgroup:
    """One container's cgroup across all hierarchies."""

    def __init__(self, entries: Sequence[_Entry], created: Iterable[str] = ()) -> None:
        self._entries = tuple(entries)
        self.paths: dict[str, str] = {e.mountpoint: e.path for e in self._entries}
        self.created: list[str] = list(created)  # dirs we made, parents first

    @staticmethod
    def plan(layout: CgroupLayout, cgroups_path: str, container_id: str) -> Cgroup:
        inner = _inner_path(cgroups_path, container_id)
        entries = []
        for h in layout.hierarchies:
            if inner.startswith("/"):
                rel = inner
            else:
                base = _own_dir(h)
                if h.version == 2:
                    base = os.path.dirname(base)
                rel = f"{base.rstrip('/')}/{inner}"
            entries.append(
                _Entry(h.version, h.mountpoint, h.controllers, h.mountpoint.rstrip("/") + rel)
            )
        return Cgroup(entries)

    # -- state file
    def to_json(self) -> dict[str, Any]:
        return {
            "hierarchies": [
                {
                    "version": e.version,
                    "mountpoint": e.mountpoint,
                    "controllers": list(e.controllers),
                    "path": e.path,
                }
                for e in self._entries
            ],
            "created": list(self.created),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Cgroup:
        try:
            entries = [
                _Entry(
                    int(h["version"]),
                    str(h["mountpoint"]),
                    tuple(str(c) for c in h["controllers"]),
                    str(h["path"]),
                )
                for h in d["hierarchies"]
            ]
            created = [str(p) for p in d.get("created", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"cgroup state: malformed ({exc!r})") from exc
        for e in entries:
            if e.version not in (1, 2) or not e.path.startswith(e.mountpoint.rstrip("/") + "/"):
                raise InvalidArgument(
                    f"cgroup state: {e.path!r} is not a cgroup of {e.mountpoint!r}"
                )
        return Cgroup(entries, created)

    # -- lookups
    def _v1(self, controller: str) -> _Entry | None:
        return next(
            (e for e in self._entries if e.version == 1 and controller in e.controllers), None
        )

    def _v2(self) -> _Entry | None:
        return next((e for e in self._entries if e.version == 2), None)

    def _owner(self, v1_name: str, v2_name: str) -> _Entry | None:
        """The hierarchy that carries a controller: v1 first, then the unified one."""
        entry = self._v1(v1_name)
        if entry is None:
            unified = self._v2()
            if unified is not None and v2_name in unified.controllers:
                entry = unified
        return entry

    def dir_for(self, controller: str) -> str | None:
        """This container's cgroup directory for ``controller`` (v1 or v2 name), if any."""
        entry = self._owner(controller, controller)
        return entry.path if entry is not None else None

    # -- create
    def create(self) -> None:
        made: list[str] = []
        try:
            for e in self._entries:
                self._mkdirs(e, made)
                if e.version == 1 and "cpuset" in e.controllers:
                    self._init_cpuset(e)
                if e.version == 2:
                    wanted = tuple(c for c in V2_CONTROLLERS if c in e.controllers)
                    if wanted:
                        self._enable_v2(e, wanted)
        except BaseException as exc:
            leftovers = _remove_quietly(reversed(made))
            if not isinstance(exc, OSError):
                raise
            hint = ""
            if exc.errno == errno.EBUSY and str(exc.filename).endswith("subtree_control"):
                hint = " (the cgroup holds processes: cgroup v2 forbids controllers below it)"
            if leftovers:
                hint += f"; could not clean up {', '.join(leftovers)}"
            raise FailedPrecondition(f"cgroup {exc.filename}: {exc.strerror}{hint}") from exc
        self.created.extend(d for d in made if d not in self.created)

    @staticmethod
    def _mkdirs(e: _Entry, made: list[str]) -> None:
        for attempt in range(3):
            try:
                for d in _chain(e.mountpoint, e.path)[1:]:
                    try:
                        os.mkdir(d, 0o755)
                        made.append(d)
                    except FileExistsError:
                        if not os.path.isdir(d):
                            raise OSError(
                                errno.ENOTDIR, "exists and is not a directory", d
                            ) from None
                return
            except FileNotFoundError:
                if attempt == 2:  # else a concurrent destroy removed a shared parent: again
                    raise

    @staticmethod
    def _init_cpuset(e: _Entry) -> None:
        """A new v1 cpuset has empty cpus/mems and refuses tasks: copy them down."""
        dirs = _chain(e.mountpoint, e.path)
        for i in range(1, len(dirs)):
            parent, d = dirs[i - 1], dirs[i]
            for name in ("cpuset.cpus", "cpuset.mems"):
                current = _read_opt(f"{d}/{name}")
                if current is not None and not current.strip():
                    _write(f"{d}/{name}", _read(f"{parent}/{name}").strip())

    @staticmethod
    def _enable_v2(e: _Entry, wanted: Sequence[str]) -> None:
        """Enable ``wanted`` controllers in every ancestor's cgroup.subtree_control."""
        for d in _chain(e.mountpoint, e.path)[:-1]:
            offered = (_read_opt(f"{d}/cgroup.controllers") or "").split()
            enabled = (_read_opt(f"{d}/cgroup.subtree_control") or "").split()
            wanted = [c for c in wanted if c in offered]
            missing = [c for c in wanted if c not in enabled]
            if missing:
                _write(f"{d}/cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    # -- apply
    def _read_ctl(self, controller: str, name: str) -> str | None:
        entry = self._owner(controller, controller)
        if entry is None:
            return None
        try:
            return _read_opt(f"{entry.path}/{name}")
        except OSError as exc:
            raise FailedPrecondition(f"cgroup {exc.filename}: {exc.strerror}") from exc

    def _need(self, v1_name: str, v2_name: str, field: str) -> _Entry:
        entry = self._owner(v1_name, v2_name)
        if entry is None:
            raise Unsupported(f"{field}: this host has no {v1_name} cgroup controller")
        return entry

    def apply(self, resources: Resources | None) -> None:
        """Write the limits; all are translated (and checked) before the first write."""
        if resources is None:
            return
        r = resources
        read = self._read_ctl
        plans: list[tuple[_Entry, v1.Plan]] = []
        field = "linux.resources"
        if r.memory is not None and _memory_set(r.memory):
            e = self._need("memory", "memory", f"{field}.memory")
            plans.append((e, (v1.memory if e.version == 1 else v2.memory)(r.memory, read)))
        if r.cpu is not None and _cpu_set(r.cpu):
            e = self._need("cpu", "cpu", f"{field}.cpu")
            plans.append((e, (v1.cpu if e.version == 1 else v2.cpu)(r.cpu)))
        if r.cpu is not None and (r.cpu.cpus or r.cpu.mems):
            e = self._need("cpuset", "cpuset", f"{field}.cpu.{'cpus' if r.cpu.cpus else 'mems'}")
            plans.append((e, (v1.cpuset if e.version == 1 else v2.cpuset)(r.cpu)))
        if r.pids_limit is not None:
            e = self._need("pids", "pids", f"{field}.pids.limit")
            plans.append((e, (v1.pids if e.version == 1 else v2.pids)(r.pids_limit)))
        if r.blkio_weight is not None or r.blkio_leaf_weight is not None:
            found = self._owner("blkio", "io")
            if found is None:
                _debug(f"cgroup {self._name()}: {field}.blockIO skipped: no blkio/io controller")
            elif found.version == 1:
                plans.append((found, v1.blkio(r.blkio_weight, r.blkio_leaf_weight, read)))
            else:
                plans.append((found, v2.io(r.blkio_weight, r.blkio_leaf_weight, read)))
        if r.devices:
            found, unified = self._v1("devices"), self._v2()
            if found is not None:
                plans.append((found, v1.devices(r.devices)))
            elif unified is not None:
                plans.append((unified, v2.devices(r.devices)))
            else:
                raise Unsupported(f"{field}.devices: this host has no devices cgroup controller")
        if r.unified:
            plans.append(self._unified_plan(r.unified))
        for entry, (writes, notes) in plans:
            for note in notes:
                _debug(f"cgroup {entry.path}: {note}")
            for w in writes:
                self._apply_write(entry, w)

    def _unified_plan(self, entries: dict[str, str]) -> tuple[_Entry, v1.Plan]:
        unified = self._v2()
        if unified is None:
            raise Unsupported("linux.resources.unified: needs cgroup v2; this host has only v1")
        plan = v2.unified(entries)
        for controller, _name, _data, field, _value in plan[0]:
            if controller != "cgroup" and self._v1(controller) is not None:
                raise Unsupported(f"{field}: the {controller} controller is on cgroup v1 here")
        return unified, plan

    def _apply_write(self, e: _Entry, w: v1.Write) -> None:
        controller, name, data, field, value = w
        path = f"{e.path}/{name}"
        try:
            try:
                _write(path, data)
            except FileNotFoundError:
                if e.version != 2 or controller == "cgroup" or not os.path.isdir(e.path):
                    raise
                self._enable_v2(e, (controller,))
                _write(path, data)
        except OSError as exc:
            if not os.path.isdir(e.path):
                raise FailedPrecondition(f"cgroup {e.path} does not exist") from exc
            if exc.errno == errno.ENOENT:
                raise Unsupported(
                    f"{field}: {value}: this kernel has no {name} in {e.path}"
                ) from exc
            raise InvalidArgument(
                f"{field}: {value} refused by the kernel: {exc.strerror}"
            ) from exc

    # -- processes
    def unified_path(self) -> str | None:
        """The container's cgroup v2 directory, if the host has a v2 hierarchy."""
        return next((e.path for e in self._entries if e.version == 2), None)

    def add_process(self, pid: int) -> None:
        for e in self._entries:
            self._join(e, "cgroup.procs", str(pid))

    def join_self(self, skip_v2: bool = False) -> None:
        """Move the calling single-threaded process into the container's cgroups.

        In v1 through ``tasks`` with "0": moving the caller's own thread skips the kernel's
        global threadgroup lock, whose write side waits out an RCU grace period (~10-25 ms
        per first write through ``cgroup.procs``). v2 has no such door: it goes through
        ``cgroup.procs`` unless ``skip_v2`` (the process was cloned into it already).
        """
        for e in self._entries:
            if e.version == 1:
                self._join(e, "tasks", "0")
            elif not skip_v2:
                self._join(e, "cgroup.procs", "0")

    @staticmethod
    def _join(e: _Entry, file: str, pid: str) -> None:
        try:
            _write(f"{e.path}/{file}", pid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise NotFound(f"pid {pid}: no such process") from exc
            raise FailedPrecondition(
                f"cgroup {e.path}: cannot add pid {pid}: {exc.strerror}"
            ) from exc

    def pids(self) -> list[int]:
        """Every pid in the container's cgroup, its sub-cgroups included."""
        e = self._v1("pids") or self._v1("memory") or self._v2() or self._entries[0]
        found: set[int] = set()
        for dirpath, _dirs, _files in os.walk(e.path):
            text = _read_opt(f"{dirpath}/cgroup.procs") or ""
            found.update(int(p) for p in text.split())
        return sorted(found)

    # -- freezer
    def _freezer(self) -> _Entry | None:
        return self._v1("freezer") or self._v2()

    def freeze(self, timeout: float = 5.0) -> None:
        e = self._freezer()
        if e is None:
            raise Unsupported(f"cgroup {self._name()}: this host has no freezer")
        try:
            if e.version == 1:
                _freeze_v1(e.path, timeout)
            else:
                _freeze_v2(e.path, timeout)
        except OSError as exc:
            raise FailedPrecondition(
                f"cgroup {exc.filename}: cannot freeze: {exc.strerror}"
            ) from exc

    def thaw(self) -> None:
        e = self._freezer()
        if e is None:
            raise Unsupported(f"cgroup {self._name()}: this host has no freezer")
        try:
            if e.version == 1:
                _write(f"{e.path}/freezer.state", "THAWED")
            else:
                _write(f"{e.path}/cgroup.freeze", "0")
        except OSError as exc:
            raise FailedPrecondition(f"cgroup {exc.filename}: cannot thaw: {exc.strerror}") from exc

    def is_frozen(self) -> bool:
        e = self._freezer()
        if e is None:
            return False
        if e.version == 1:
            return (_read_opt(f"{e.path}/freezer.state") or "").strip() == "FROZEN"
        return _keyed(f"{e.path}/cgroup.events").get("frozen") == 1

    def kill_all(self, sig: int = SIGKILL) -> None:
        """Signal every process; frozen meanwhile, so that none can fork away from it."""
        unified = self._v2()
        if sig == SIGKILL and unified is not None:
            try:
                _write(f"{unified.path}/cgroup.kill", "1")  # kernel >= 5.14: atomic
                freezer = self._freezer()
                if freezer is not None and freezer.version == 1 and self.is_frozen():
                    self.thaw()  # a v1-frozen (paused) process cannot act on its SIGKILL
                return
            except FileNotFoundError:
                pass  # an older kernel, or the cgroup is gone: freeze and signal below
            except OSError as exc:
                raise FailedPrecondition(
                    f"cgroup {exc.filename}: cannot kill: {exc.strerror}"
                ) from exc
        frozen = False
        freezer = self._freezer()
        if freezer is not None and os.path.isdir(freezer.path):
            try:
                self.freeze()
                frozen = True
            except Unavailable as exc:  # a stuck freezer must not stop the kill
                _debug(f"{exc.message}; signalling unfrozen")
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.thaw()

    # -- stats
    def stats(self) -> CgroupStats:
        usage = limit = peak = 0
        mem = self._owner("memory", "memory")
        if mem is not None and mem.version == 1:
            usage = _number(f"{mem.path}/memory.usage_in_bytes")
            limit = _number(f"{mem.path}/memory.limit_in_bytes")
            limit = 0 if limit >= _UNLIMITED else limit
            peak = _number(f"{mem.path}/memory.max_usage_in_bytes")
        elif mem is not None:
            usage = _number(f"{mem.path}/memory.current")
            limit = _number(f"{mem.path}/memory.max")
            peak = _number(f"{mem.path}/memory.peak")
        cpu_total = cpu_user = cpu_system = 0
        acct, unified = self._v1("cpuacct"), self._v2()
        if acct is not None:
            cpu_total = _number(f"{acct.path}/cpuacct.usage")
            if _read_opt(f"{acct.path}/cpuacct.usage_user") is not None:
                cpu_user = _number(f"{acct.path}/cpuacct.usage_user")
                cpu_system = _number(f"{acct.path}/cpuacct.usage_sys")
            else:
                ticks = _keyed(f"{acct.path}/cpuacct.stat")
                ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
                cpu_user = ticks.get("user", 0) * ns_per_tick
                cpu_system = ticks.get("system", 0) * ns_per_tick
        elif unified is not None:
            stat = _keyed(f"{unified.path}/cpu.stat")
            cpu_total = stat.get("usage_usec", 0) * 1000
            cpu_user = stat.get("user_usec", 0) * 1000
            cpu_system = stat.get("system_usec", 0) * 1000
        pids_current = pids_limit = 0
        pids = self._owner("pids", "pids")
        if pids is not None:
            pids_current = _number(f"{pids.path}/pids.current")
            pids_limit = _number(f"{pids.path}/pids.max")
        return CgroupStats(
            memory_usage=usage,
            memory_limit=limit,
            memory_max_usage=peak,
            cpu_usage_ns=cpu_total,
            cpu_user_ns=cpu_user,
            cpu_system_ns=cpu_system,
            pids_current=pids_current,
            pids_limit=pids_limit,
            oom_kills=self._oom_kills(),
        )

    def _oom_kills(self) -> int:
        mem = self._owner("memory", "memory")
        if mem is None:
            return 0
        if mem.version == 2:  # hierarchical: counts sub-cgroups too
            return _keyed(f"{mem.path}/memory.events").get("oom_kill", 0)
        total = 0  # v1 counts per cgroup: add up the container's sub-cgroups
        for dirpath, _dirs, _files in os.walk(mem.path):
            total += _keyed(f"{dirpath}/memory.oom_control").get("oom_kill", 0)
        return total

    def oom_killed(self) -> bool:
        return self._oom_kills() > 0

    # -- destroy
    def destroy(self, timeout: float = 1.0) -> None:
        """Remove the dirs ``create`` made, deepest first; idempotent."""
        deadline = time.monotonic() + timeout
        leaves = set(self.paths.values())
        failed: list[tuple[str, OSError]] = []
        for d in reversed(list(self.created)):
            if d in leaves:
                error = _remove_tree(d, deadline)
            else:
                error = _rmdir(d, 0.0)
                if error is not None and error.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    error = None  # a shared parent with other containers' cgroups in it
                    _debug(f"cgroup {d}: left in place, it is still in use")
                    self.created.remove(d)
                    continue
            if error is None:
                self.created.remove(d)
            else:
                failed.append((d, error))
        if failed:
            d, error = failed[0]
            raise FailedPrecondition(
                f"cgroup {d}: cannot remove: {error.strerror}"
                + (" (processes still in it)" if error.errno == errno.EBUSY else "")
            )

    def _name(self) -> str:
        return next(iter(self.paths.values()), "?")


# --------------------------------------------------------------------------- helpers


def _memory_set(m: Memory) -> bool:
    values = (m.limit, m.reservation, m.swap, m.kernel, m.kernel_tcp, m.swappiness)
    return any(v is not None for v in values) or m.disable_oom_killer


def _cpu_set(c: CPU) -> bool:
    values = (c.shares, c.quota, c.burst, c.period, c.realtime_runtime, c.realtime_period, c.idle)
    return any(v is not None for v in values)


def _freeze_v1(path: str, timeout: float) -> None:
    state = f"{path}/freezer.state"
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        if attempt and attempt % 25 == 0:
            _write(state, "THAWED")  # stuck in FREEZING: thaw and try again, as runc does
        _write(state, "FROZEN")
        if _read(state).strip() == "FROZEN":
            return
        if time.monotonic() > deadline:
            _write(state, "THAWED")
            raise Unavailable(f"cgroup {path}: still FREEZING after {timeout:g} s; thawed it")
        attempt += 1
        time.sleep(0.001 * min(attempt, 10))


def _freeze_v2(path: str, timeout: float) -> None:
    _write(f"{path}/cgroup.freeze", "1")
    deadline = time.monotonic() + timeout
    attempt = 0
    while _keyed(f"{path}/cgroup.events").get("frozen") != 1:
        if time.monotonic() > deadline:
            _write(f"{path}/cgroup.freeze", "0")
            raise Unavailable(f"cgroup {path}: not frozen after {timeout:g} s; thawed it")
        attempt += 1
        time.sleep(0.001 * min(attempt, 10))


def _rmdir(d: str, deadline: float) -> OSError | None:
    """rmdir, retrying EBUSY (processes still exiting) until ``deadline``; ENOENT is fine."""
    while True:
        try:
            os.rmdir(d)
            return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= deadline:
                return exc
            time.sleep(0.01)


def _remove_tree(d: str, deadline: float) -> OSError | None:
    """A container's cgroup and the sub-cgroups it made inside, deepest first."""
    subdirs = [
        os.path.join(dirpath, name)
        for dirpath, dirnames, _files in os.walk(d, topdown=False)
        for name in dirnames
    ]
    for sub in subdirs:
        error = _rmdir(sub, deadline)
        if error is not None:
            return error
    return _rmdir(d, deadline)


def _remove_quietly(dirs: Iterable[str]) -> list[str]:
    """Best-effort cleanup after a failed create; returns what could not be removed."""
    return [d for d in dirs if _rmdir(d, 0.0) is not None]
