"""A container's detailed resource usage read from its cgroups (v1, v2 or hybrid), as the
engine's stats endpoint reports it: CPU (per-CPU on v1, throttling), memory (with the
controller's ``memory.stat``), pids and block I/O.

Rules:
- Not on the container start path, but the runtime's import rules hold: stdlib only, no
  logging; it reads through ``cgroups``' file helpers and ``Cgroup.dir_for`` and never writes.
- The hierarchy a controller lives in decides the files: v1 first (``cpuacct`` for usage,
  ``cpu`` for throttling, ``memory``, ``pids``, ``blkio``), then the unified one (``cpu``,
  ``memory``, ``pids``, ``io``). Which version a directory is comes from the files in it
  (``memory.usage_in_bytes`` is v1, ``memory.current`` v2), so tests use a fake tree.
- Units: nanoseconds and bytes everywhere (v2's microseconds and v1's clock ticks are
  converted). 0 means "unknown" or "no limit"; a missing file or a cgroup that vanished
  while being read (the container exited) reads as zeros, never as an error.
"""

from __future__ import annotations

import os

from berth.runtime.cgroups import _UNLIMITED, Cgroup, _keyed, _number, _read_opt
from berth.spec.value import field, value

NS_PER_USEC = 1000


@value
class CpuUsage:
    total_ns: int = 0
    user_ns: int = 0
    system_ns: int = 0
    percpu_ns: tuple[int, ...] = ()  # v1 only (cpuacct.usage_percpu)
    periods: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0


@value
class MemoryUsage:
    version: int = 0  # 1 or 2; 0 when the host has no memory controller
    usage: int = 0
    max_usage: int = 0  # v1 only
    failcnt: int = 0  # v1 only
    limit: int = 0  # 0 = no limit
    stat: dict[str, int] = field(default_factory=dict)  # memory.stat as the kernel names it


@value
class IoEntry:
    major: int
    minor: int
    op: str  # "Read", "Write", ... as v1 names them; v2's are mapped to "read"/"write"
    value: int


@value
class DetailedStats:
    cpu: CpuUsage
    memory: MemoryUsage
    pids_current: int = 0
    pids_limit: int = 0  # 0 = max
    io_version: int = 0  # 1 (blkio) or 2 (io); 0 when the host has neither
    io_service_bytes: tuple[IoEntry, ...] = ()
    io_serviced: tuple[IoEntry, ...] = ()


def read(cgroup: Cgroup) -> DetailedStats:
    """Everything at once (each file read once; a vanished cgroup gives zeros)."""
    io_version, service_bytes, serviced = _io(cgroup)
    pids = cgroup.dir_for("pids")
    return DetailedStats(
        cpu=_cpu(cgroup),
        memory=_memory(cgroup),
        pids_current=_safe_number(f"{pids}/pids.current") if pids else 0,
        pids_limit=_safe_number(f"{pids}/pids.max") if pids else 0,
        io_version=io_version,
        io_service_bytes=service_bytes,
        io_serviced=serviced,
    )


def _safe_read(path: str) -> str | None:
    try:
        return _read_opt(path)
    except OSError:  # ENODEV and friends: the cgroup is being removed
        return None


def _safe_number(path: str) -> int:
    try:
        return _number(path)
    except OSError:
        return 0


def _safe_keyed(path: str) -> dict[str, int]:
    try:
        return _keyed(path)
    except OSError:
        return {}


def _cpu(cgroup: Cgroup) -> CpuUsage:
    acct = cgroup.dir_for("cpuacct")
    cpu = cgroup.dir_for("cpu")
    throttle = _safe_keyed(f"{cpu}/cpu.stat") if cpu else {}
    periods = throttle.get("nr_periods", 0)
    throttled = throttle.get("nr_throttled", 0)
    throttled_ns = throttle.get("throttled_time", throttle.get("throttled_usec", 0) * NS_PER_USEC)
    if acct is not None:  # v1
        ticks = _safe_keyed(f"{acct}/cpuacct.stat")
        ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        percpu = (_safe_read(f"{acct}/cpuacct.usage_percpu") or "").split()
        return CpuUsage(
            total_ns=_safe_number(f"{acct}/cpuacct.usage"),
            user_ns=ticks.get("user", 0) * ns_per_tick,
            system_ns=ticks.get("system", 0) * ns_per_tick,
            percpu_ns=tuple(int(n) for n in percpu if n.isdigit()),
            periods=periods,
            throttled_periods=throttled,
            throttled_ns=throttled_ns,
        )
    return CpuUsage(
        total_ns=throttle.get("usage_usec", 0) * NS_PER_USEC,
        user_ns=throttle.get("user_usec", 0) * NS_PER_USEC,
        system_ns=throttle.get("system_usec", 0) * NS_PER_USEC,
        periods=periods,
        throttled_periods=throttled,
        throttled_ns=throttled_ns,
    )


def _memory(cgroup: Cgroup) -> MemoryUsage:
    mem = cgroup.dir_for("memory")
    if mem is None:
        return MemoryUsage()
    stat = _safe_keyed(f"{mem}/memory.stat")
    if _safe_read(f"{mem}/memory.usage_in_bytes") is not None:
        limit = _safe_number(f"{mem}/memory.limit_in_bytes")
        return MemoryUsage(
            version=1,
            usage=_safe_number(f"{mem}/memory.usage_in_bytes"),
            max_usage=_safe_number(f"{mem}/memory.max_usage_in_bytes"),
            failcnt=_safe_number(f"{mem}/memory.failcnt"),
            limit=0 if limit >= _UNLIMITED else limit,
            stat=stat,
        )
    return MemoryUsage(
        version=2,
        usage=_safe_number(f"{mem}/memory.current"),
        limit=_safe_number(f"{mem}/memory.max"),  # "max" reads as 0
        stat=stat,
    )


def _io(cgroup: Cgroup) -> tuple[int, tuple[IoEntry, ...], tuple[IoEntry, ...]]:
    blkio = cgroup.dir_for("blkio")
    if blkio is not None and _safe_read(f"{blkio}/io.stat") is None:  # v1
        service_bytes = _v1_io(blkio, "io_service_bytes_recursive")
        serviced = _v1_io(blkio, "io_serviced_recursive")
        return 1, service_bytes, serviced
    io = blkio or cgroup.dir_for("io")
    if io is None:
        return 0, (), ()
    return 2, *_v2_io(_safe_read(f"{io}/io.stat") or "")


def _v1_io(directory: str, name: str) -> tuple[IoEntry, ...]:
    """``blkio.<name>`` (CFQ/BFQ accounting), else ``blkio.throttle.<name>``: "8:0 Read 42"."""
    text = _safe_read(f"{directory}/blkio.{name}")
    if not text or text.split() in (["Total", "0"], []):
        text = _safe_read(f"{directory}/blkio.throttle.{name}") or text or ""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        major, _, minor = parts[0].partition(":")
        if major.isdigit() and minor.isdigit():
            entries.append(IoEntry(int(major), int(minor), parts[1], int(parts[2])))
    return tuple(entries)


def _v2_io(text: str) -> tuple[tuple[IoEntry, ...], tuple[IoEntry, ...]]:
    """io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device."""
    service_bytes: list[IoEntry] = []
    serviced: list[IoEntry] = []
    for line in text.splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        counters = dict(p.partition("=")[::2] for p in pairs)
        for key, op, into in (
            ("rbytes", "read", service_bytes),
            ("wbytes", "write", service_bytes),
            ("rios", "read", serviced),
            ("wios", "write", serviced),
        ):
            number = counters.get(key, "")
            if number.isdigit():
                into.append(IoEntry(int(major), int(minor), op, int(number)))
    return tuple(service_bytes), tuple(serviced)
