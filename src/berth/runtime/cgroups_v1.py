"""Cgroup v1: OCI ``linux.resources`` translated into ordered writes to v1 controller files.

Rules: sans-IO. Every function here looks at the kernel only through the ``read`` callback it
is given (``read(controller, file)`` -> the file's text, or None when the file does not exist)
and returns the writes to make, in order, as ``Write`` tuples ``(controller, file, data, field,
value)`` -- ``field``/``value`` are the OCI field and value an error message must name -- plus
``notes``: settings skipped on purpose, which the caller logs at debug. The caller
(``berth.runtime.cgroups``) routes each write to the hierarchy carrying ``controller``, does
the I/O and turns kernel refusals into errors. Imports: typing-only besides berth.errors.

Ordering rules kept here:
- memory: v1 requires memory.memsw.limit_in_bytes >= memory.limit_in_bytes at every moment.
  When the new memory+swap total is at least the current limit we write memsw first, else the
  limit first; either way every intermediate state is valid (runc does the same comparison).
- cpu: when quota and period (or burst) change together, quota is first set to -1 (always
  valid), then period, burst and finally quota, so no intermediate quota/period/burst
  combination can be refused. ``cpu.idle`` is written before the shares when it is being
  cleared and after them when it is being set (the kernel refuses shares on an idle group).
- devices: ``a`` to devices.deny first (deny all), then each rule in order.
"""

from __future__ import annotations

from berth.errors import InvalidArgument, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from berth.spec.config import CPU, DeviceRule, Memory

# (controller, file, data, OCI field, OCI value as shown in errors)
Write = tuple[str, str, str, str, str]
Plan = tuple[list[Write], list[str]]

_MEM = "linux.resources.memory"
_CPU = "linux.resources.cpu"


def _set(value: int | None) -> bool:
    """OCI integers where 0 means "not set" (runc's reading of swap)."""
    return value is not None and value != 0


def memory(mem: Memory, read: Callable[[str, str], str | None]) -> Plan:
    writes: list[Write] = []
    notes: list[str] = []
    limit = mem.limit
    swap = mem.swap if _set(mem.swap) else None
    has_memsw = read("memory", "memory.memsw.limit_in_bytes") is not None
    if limit == -1 and swap is None and has_memsw:
        swap = -1  # "unlimited memory" means unlimited memory+swap too, as runc does
    if swap is not None and not has_memsw:
        if swap != -1:
            raise Unsupported(
                f"{_MEM}.swap: {swap}: this kernel has no memory.memsw.limit_in_bytes "
                "(swap accounting is off)"
            )
        notes.append(f"{_MEM}.swap: -1 skipped: swap accounting is off")
        swap = None
    if limit is not None and swap is not None and limit != -1 and swap != -1 and swap < limit:
        raise InvalidArgument(
            f"{_MEM}.swap: {swap} is below {_MEM}.limit {limit} (on cgroup v1 swap is the "
            "memory+swap total, so it must be at least the memory limit)"
        )
    w_limit = (
        ("memory", "memory.limit_in_bytes", str(limit), f"{_MEM}.limit", str(limit))
        if limit is not None
        else None
    )
    w_swap = (
        ("memory", "memory.memsw.limit_in_bytes", str(swap), f"{_MEM}.swap", str(swap))
        if swap is not None
        else None
    )
    if w_limit and w_swap and swap is not None:
        current = _int(read("memory", "memory.limit_in_bytes"))
        if swap == -1 or current is None or swap >= current:
            writes += [w_swap, w_limit]  # raising: make room with memsw first
        else:
            writes += [w_limit, w_swap]  # lowering: shrink the limit first
    else:
        writes += [w for w in (w_limit, w_swap) if w]
    if mem.reservation is not None:
        value = str(mem.reservation)
        writes.append(("memory", "memory.soft_limit_in_bytes", value, f"{_MEM}.reservation", value))
    if mem.swappiness is not None:
        value = str(mem.swappiness)
        writes.append(("memory", "memory.swappiness", value, f"{_MEM}.swappiness", value))
    if mem.disable_oom_killer:
        writes.append(("memory", "memory.oom_control", "1", f"{_MEM}.disableOOMKiller", "true"))
    if mem.kernel is not None:
        notes.append(f"{_MEM}.kernel: {mem.kernel} ignored: kernel memory limits are deprecated")
    if mem.kernel_tcp is not None:
        value = str(mem.kernel_tcp)
        writes.append(
            ("memory", "memory.kmem.tcp.limit_in_bytes", value, f"{_MEM}.kernelTCP", value)
        )
    return writes, notes


def cpu(c: CPU) -> Plan:
    writes: list[Write] = []

    def add(file: str, value: int, field: str) -> None:
        writes.append(("cpu", file, str(value), f"{_CPU}.{field}", str(value)))

    if c.idle is not None and c.idle == 0:
        add("cpu.idle", 0, "idle")
    if c.shares is not None and c.shares != 0:
        add("cpu.shares", c.shares, "shares")
    if _set(c.quota) and (c.period or c.burst is not None):
        writes.append(("cpu", "cpu.cfs_quota_us", "-1", f"{_CPU}.quota", str(c.quota)))
    if c.period:
        add("cpu.cfs_period_us", c.period, "period")
    if c.burst is not None:
        add("cpu.cfs_burst_us", c.burst, "burst")
    if c.quota is not None and _set(c.quota):
        add("cpu.cfs_quota_us", c.quota, "quota")
    if c.realtime_period and c.realtime_runtime is not None:
        writes.append(("cpu", "cpu.rt_runtime_us", "0", f"{_CPU}.realtimeRuntime", "0"))
    if c.realtime_period:
        add("cpu.rt_period_us", c.realtime_period, "realtimePeriod")
    if c.realtime_runtime is not None:
        add("cpu.rt_runtime_us", c.realtime_runtime, "realtimeRuntime")
    if c.idle is not None and c.idle != 0:
        add("cpu.idle", c.idle, "idle")
    return writes, []


def cpuset(c: CPU) -> Plan:
    writes: list[Write] = []
    if c.cpus:
        writes.append(("cpuset", "cpuset.cpus", c.cpus, f"{_CPU}.cpus", c.cpus))
    if c.mems:
        writes.append(("cpuset", "cpuset.mems", c.mems, f"{_CPU}.mems", c.mems))
    return writes, []


def pids(limit: int) -> Plan:
    data = "max" if limit <= 0 else str(limit)
    return [("pids", "pids.max", data, "linux.resources.pids.limit", str(limit))], []


def blkio(
    weight: int | None, leaf_weight: int | None, read: Callable[[str, str], str | None]
) -> Plan:
    writes: list[Write] = []
    notes: list[str] = []
    field = "linux.resources.blockIO"
    if weight is not None:
        for file in ("blkio.weight", "blkio.bfq.weight"):
            if read("blkio", file) is not None:
                writes.append(("blkio", file, str(weight), f"{field}.weight", str(weight)))
                break
        else:
            notes.append(f"{field}.weight: {weight} skipped: no blkio.weight/blkio.bfq.weight")
    if leaf_weight is not None:
        if read("blkio", "blkio.leaf_weight") is not None:
            value = str(leaf_weight)
            writes.append(("blkio", "blkio.leaf_weight", value, f"{field}.leafWeight", value))
        else:
            notes.append(f"{field}.leafWeight: {leaf_weight} skipped: no blkio.leaf_weight")
    return writes, notes


def device_rule(rule: DeviceRule) -> str:
    """``c 1:3 rwm``; ``*`` for a missing major or minor."""
    major = "*" if rule.major is None or rule.major < 0 else str(rule.major)
    minor = "*" if rule.minor is None or rule.minor < 0 else str(rule.minor)
    return f"{rule.type} {major}:{minor} {rule.access}"


def devices(rules: Sequence[DeviceRule]) -> Plan:
    field = "linux.resources.devices"
    writes: list[Write] = [("devices", "devices.deny", "a", field, "deny all")]
    for i, rule in enumerate(rules):
        line = device_rule(rule)
        file = "devices.allow" if rule.allow else "devices.deny"
        writes.append(("devices", file, line, f"{field}[{i}]", repr(line)))
    return writes, []


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None
