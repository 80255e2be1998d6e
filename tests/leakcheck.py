"""Leak detection for the test suite: snapshot the host state tests may touch, diff it later.

Rules: stdlib only and no pytest, so the parse and diff logic is unit-tested on sample text.
Reading is all it does: it never mounts, unmounts, kills, removes or writes anything. Every
parser takes text and every reader takes the paths it reads (defaults: the live /proc), so
tests feed in fixtures. A resource that vanishes while it is
being read is skipped, never an error.

What a snapshot holds, and so what counts as a leak when it is new at the end:
- mounts: every entry of the mount table of the test process's mount namespace (nsfs entries,
  i.e. bind-mounted namespaces such as `ip netns add` makes, are reported as kind "netns");
- cgroups: directories below the test process's own cgroup in every hierarchy (v1 and v2,
  from /proc/self/mountinfo and /proc/self/cgroup), plus the subtrees of directories named
  those named with the session's tag (``tagged_name``) at each hierarchy root and below our
  own cgroup — tests must name the cgroups and containers they make that way;
- netns: entries of /run/netns;
- interfaces: network interfaces of the test process's network namespace (/proc/self/net/dev);
- processes: live (non-zombie) processes that descend from the test process, or whose initial
  environment carries the session marker (``BERTH_TEST_SESSION=<uuid>``, inherited by every
  child unless it execs with an explicit environment, as container processes do: those are
  caught by their cgroup instead);
- self: the test process's own namespaces (a test that unshared or setns'ed the test process
  itself) and namespace file descriptors it holds open.
- devices: the type and mode of the host's /dev/null, /dev/zero … (a chmod through a bind
  mount or a tool writing its output to /dev/null as root would change them for everyone).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MARKER_VAR = "BERTH_TEST_SESSION"
# Cgroups are not marked with the session as processes are: tests put this tag in the names of
# the cgroups (and container ids) they make, so that concurrent test runs on one kernel do not
# report each other's. Set once by the outermost session; nested runs inherit it.
TAG_VAR = "BERTH_TEST_TAG"


def session_tag() -> str:
    return os.environ.get(TAG_VAR, "")


def tagged_name(prefix: str = "test") -> str:
    """A unique cgroup / container name the leak check watches: ``<prefix><tag><random>``."""
    return f"{prefix}{session_tag()}{uuid.uuid4().hex[:8]}"


def watched(name: str) -> bool:
    tag = session_tag()
    return name.startswith((f"test{tag}", f"berth-test-{tag}"))


NS_TYPES = frozenset(
    {"mnt", "net", "pid", "ipc", "uts", "user", "cgroup", "time"}
)  # what /proc/<pid>/fd links to namespaces look like: "net:[4026531840]"
_OWN_NS = ("mnt", "net", "pid", "ipc", "uts", "user", "cgroup")
_OCTAL = re.compile(r"\\([0-7]{3})")


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/<pid>/mountinfo."""

    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str  # the path inside the filesystem that is mounted
    mount_point: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def unescape_mountinfo(text: str) -> str:
    r"""Undo the kernel's octal escapes in mountinfo paths (``\040`` is a space)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse /proc/<pid>/mountinfo; malformed lines are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    device=fields[2],
                    root=unescape_mountinfo(fields[3]),
                    mount_point=unescape_mountinfo(fields[4]),
                    fstype=fields[sep + 1],
                    source=unescape_mountinfo(fields[sep + 2]),
                    super_options=tuple(fields[sep + 3].split(","))
                    if len(fields) > sep + 3
                    else (),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


@dataclass(frozen=True)
class CgroupMembership:
    """One line of /proc/<pid>/cgroup: ``hierarchy-id:controllers:path``."""

    hierarchy_id: int
    controllers: tuple[str, ...]  # () for the v2 hierarchy
    path: str


def parse_proc_cgroup(text: str) -> list[CgroupMembership]:
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        with contextlib.suppress(ValueError):
            controllers = tuple(c for c in parts[1].split(",") if c)
            out.append(CgroupMembership(int(parts[0]), controllers, parts[2]))
    return out


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy and the directory of the caller's own cgroup in it."""

    mount_point: str
    version: int  # 1 or 2
    own_dir: str | None  # None when the caller's cgroup is not visible under this mount


def cgroup_hierarchies(
    mounts: Iterable[MountEntry], membership: Iterable[CgroupMembership]
) -> list[Hierarchy]:
    """Pair each cgroup mount with the caller's cgroup in it; one entry per hierarchy."""
    members = list(membership)
    seen: set[str] = set()
    out = []
    for m in mounts:
        if m.fstype not in ("cgroup", "cgroup2") or m.device in seen:
            continue
        seen.add(m.device)
        version = 2 if m.fstype == "cgroup2" else 1
        path: str | None = None
        for c in members:
            v2_match = version == 2 and c.hierarchy_id == 0 and not c.controllers
            v1_match = version == 1 and bool(c.controllers)
            if v2_match or (v1_match and set(c.controllers) <= set(m.super_options)):
                path = c.path
        own_dir = None
        if path is not None:
            root = m.root.rstrip("/")
            if path == root or path.startswith(root + "/") or root == "":
                rel = path[len(root) :].lstrip("/")
                own_dir = os.path.join(m.mount_point, rel) if rel else m.mount_point
        out.append(Hierarchy(m.mount_point, version, own_dir))
    return out


def parse_net_dev(text: str) -> set[str]:
    """Interface names from /proc/<pid>/net/dev (two header lines, then ``name: counters``)."""
    names = set()
    for line in text.splitlines()[2:]:
        name, sep, _ = line.partition(":")
        if sep and name.strip():
            names.add(name.strip())
    return names


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    start_time: int  # clock ticks since boot: with pid, identifies a process over time


def parse_proc_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat; the comm field may contain spaces and parentheses."""
    pid_part, _, rest = text.partition(" (")
    comm, _, tail = rest.rpartition(") ")
    fields = tail.split()
    # tail starts at field 3 (state); starttime is field 22.
    return ProcStat(int(pid_part), comm, fields[0], int(fields[1]), int(fields[19]))


def environ_has(environ: bytes, entry: str) -> bool:
    """Whether a NUL-separated /proc/<pid>/environ block holds exactly ``entry``."""
    return entry.encode() in environ.split(b"\0")


def session_processes(
    stats: Iterable[ProcStat], root_pid: int, has_marker: Callable[[int], bool]
) -> dict[tuple[int, int], tuple[ProcStat, str]]:
    """Live processes belonging to the session rooted at ``root_pid``, keyed by (pid, start).

    A process belongs if it descends from ``root_pid`` or ``has_marker(pid)`` says it carries
    the session marker. The root itself and zombies are left out.
    """
    by_pid = {s.pid: s for s in stats}
    children: dict[int, list[int]] = {}
    for s in by_pid.values():
        children.setdefault(s.ppid, []).append(s.pid)
    descendants: set[int] = set()
    todo = list(children.get(root_pid, ()))
    while todo:
        pid = todo.pop()
        if pid not in descendants:
            descendants.add(pid)
            todo.extend(children.get(pid, ()))
    out: dict[tuple[int, int], tuple[ProcStat, str]] = {}
    for s in by_pid.values():
        if s.pid == root_pid or s.state in ("Z", "X", "x"):
            continue
        if s.pid in descendants:
            why = f"descends from pid {root_pid}"
        elif has_marker(s.pid):
            why = f"carries {MARKER_VAR}"
        else:
            continue
        out[(s.pid, s.start_time)] = (s, why)
    return out


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    mounts: dict[int, MountEntry] = field(default_factory=dict)  # by mount id
    cgroups: frozenset[str] = frozenset()
    netns: frozenset[str] = frozenset()
    interfaces: frozenset[str] = frozenset()
    processes: dict[tuple[int, int], tuple[ProcStat, str]] = field(default_factory=dict)
    own_namespaces: dict[str, str] = field(default_factory=dict)
    ns_fds: frozenset[tuple[int, str]] = frozenset()
    device_modes: dict[str, int] = field(default_factory=dict)


# Host device nodes whose mode a stray chmod would change for every process on the machine
# (seen once: /dev/null left 0755, which broke runc's user-namespace containers).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


def device_modes(paths: Iterable[str] = DEVICES) -> dict[str, int]:
    """Each device node's type and mode bits (``st_mode``), or -1 when it is not there."""
    modes = {}
    for path in paths:
        try:
            modes[path] = os.stat(path).st_mode
        except OSError:
            modes[path] = -1
    return modes


@dataclass(frozen=True, order=True)
class Leak:
    kind: str  # mount | netns | cgroup | interface | process | namespace | fd | device
    what: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.what}"


def diff(before: Snapshot, after: Snapshot) -> list[Leak]:
    """What ``after`` holds that ``before`` did not, as leaks, sorted by kind."""
    leaks = []
    for mid, m in after.mounts.items():
        if mid not in before.mounts:
            kind = "netns" if m.fstype == "nsfs" else "mount"
            leaks.append(Leak(kind, f"{m.fstype} {m.source} on {m.mount_point} (mount id {mid})"))
    leaks += [Leak("cgroup", d) for d in sorted(after.cgroups - before.cgroups)]
    leaks += [Leak("netns", f"/run/netns/{n}") for n in sorted(after.netns - before.netns)]
    leaks += [Leak("interface", n) for n in sorted(after.interfaces - before.interfaces)]
    for key, (s, why) in after.processes.items():
        if key not in before.processes:
            leaks.append(Leak("process", f"pid {s.pid} ({s.comm}, state {s.state}, {why})"))
    for ns, link in after.own_namespaces.items():
        old = before.own_namespaces.get(ns)
        if old is not None and old != link:
            leaks.append(Leak("namespace", f"the test process moved from {old} to {link}"))
    for fd, link in sorted(after.ns_fds - before.ns_fds):
        leaks.append(Leak("fd", f"the test process holds fd {fd} open on {link}"))
    for path, mode in sorted(after.device_modes.items()):
        old = before.device_modes.get(path)
        if old is not None and old != mode:
            leaks.append(Leak("device", f"{path} changed from mode {old:o} to {mode:o}"))
    return sorted(leaks)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _walk_dirs(top: str, out: set[str]) -> None:
    """Every directory strictly below ``top`` (cgroupfs: no symlinks, nothing to follow)."""
    try:
        entries = list(os.scandir(top))
    except OSError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            out.add(e.path)
            _walk_dirs(e.path, out)


def scan_cgroups(hierarchies: Iterable[Hierarchy]) -> frozenset[str]:
    dirs: set[str] = set()
    for h in hierarchies:
        tops = {h.mount_point}
        if h.own_dir is not None:
            tops.add(h.own_dir)
        for top in tops:
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue
            for e in entries:
                if watched(e.name) and e.is_dir(follow_symlinks=False):
                    dirs.add(e.path)
                    _walk_dirs(e.path, dirs)
    return frozenset(dirs)


def scan_processes(
    root_pid: int, marker: str, proc: str = "/proc"
) -> dict[tuple[int, int], tuple[ProcStat, str]]:
    entry = f"{MARKER_VAR}={marker}"
    stats = []
    for name in os.listdir(proc):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stats.append(parse_proc_stat(_read(f"{proc}/{name}/stat")))

    def has_marker(pid: int) -> bool:
        try:
            with open(f"{proc}/{pid}/environ", "rb") as f:
                return environ_has(f.read(), entry)
        except OSError:
            return False

    return session_processes(stats, root_pid, has_marker)


def own_namespaces(proc_self: str = "/proc/self") -> dict[str, str]:
    out = {}
    for ns in _OWN_NS:
        with contextlib.suppress(OSError):
            out[ns] = os.readlink(f"{proc_self}/ns/{ns}")
    return out


def namespace_fds(proc_self: str = "/proc/self") -> frozenset[tuple[int, str]]:
    out = set()
    try:
        names = os.listdir(f"{proc_self}/fd")
    except OSError:
        return frozenset()
    for name in names:
        try:
            link = os.readlink(f"{proc_self}/fd/{name}")
        except OSError:
            continue
        kind, sep, _ = link.partition(":[")
        if sep and kind in NS_TYPES:
            out.add((int(name), link))
    return frozenset(out)


@dataclass
class Checker:
    """Takes snapshots of the state a test session may leak, for one marker and root pid."""

    marker: str
    root_pid: int
    proc: str = "/proc"
    netns_dir: str = "/run/netns"
    hierarchies: list[Hierarchy] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.hierarchies:
            mounts = parse_mountinfo(_read(f"{self.proc}/{self.root_pid}/mountinfo"))
            membership = parse_proc_cgroup(_read(f"{self.proc}/{self.root_pid}/cgroup"))
            self.hierarchies = cgroup_hierarchies(mounts, membership)

    def snapshot(self) -> Snapshot:
        base = f"{self.proc}/{self.root_pid}"
        mounts = {m.mount_id: m for m in parse_mountinfo(_read(f"{base}/mountinfo"))}
        try:
            netns = frozenset(os.listdir(self.netns_dir))
        except OSError:
            netns = frozenset()
        try:
            interfaces = frozenset(parse_net_dev(_read(f"{base}/net/dev")))
        except OSError:
            interfaces = frozenset()
        return Snapshot(
            mounts=mounts,
            cgroups=scan_cgroups(self.hierarchies),
            netns=netns,
            interfaces=interfaces,
            processes=scan_processes(self.root_pid, self.marker, self.proc),
            own_namespaces=own_namespaces(base),
            ns_fds=namespace_fds(base),
            device_modes=device_modes(),
        )

    def leaks_since(self, before: Snapshot, grace: float = 0.0) -> list[Leak]:
        """Leaks now, re-checked for up to ``grace`` seconds while any remain.

        The grace period lets processes finish dying and lets resources that a concurrent
        session on the same kernel created for a moment go away again.
        """
        deadline = time.monotonic() + grace
        delay = 0.02
        while True:
            leaks = diff(before, self.snapshot())
            if not leaks or time.monotonic() >= deadline:
                return leaks
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)


def format_report(leaks: Iterable[Leak], title: str) -> str:
    leaks = list(leaks)
    lines = [f"{title}: {len(leaks)} leaked resource(s)"]
    lines += [f"  {leak}" for leak in leaks]
    if any(leak.kind in ("mount", "netns", "interface") for leak in leaks):
        lines.append(
            "  (mounts, netns and interfaces carry no owner: if one is not this session's, another"
            " session on this kernel leaked it)"
        )
    return "\n".join(lines)


def new_mounts_under(before: Snapshot, after: Snapshot, directory: str) -> list[str]:
    """Mount points of mounts new since ``before`` at or below ``directory``, deepest first."""
    prefix = directory.rstrip("/") + "/"
    points = {
        m.mount_point
        for mid, m in after.mounts.items()
        if mid not in before.mounts and (m.mount_point + "/").startswith(prefix)
    }
    return sorted(points, key=lambda p: (-p.count("/"), p))
