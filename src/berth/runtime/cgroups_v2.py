"""Cgroup v2: OCI ``linux.resources`` translated into ordered writes to unified-hierarchy files.

Rules: sans-IO, exactly like ``cgroups_v1``: functions read the kernel only through the
``read(controller, file)`` callback (None = no such file) and return ``(writes, notes)``, where
a write is ``(controller, file, data, OCI field, OCI value)`` and a note names a setting skipped
on purpose (logged at debug by the caller). Conversions follow runc so the same config.json
gives the same limits under either runtime:

- memory.swap.max = swap - limit (OCI swap is the memory+swap total); -1 -> "max"; 0 = unset;
  unlimited memory with swap unset means unlimited swap too.
- cpu.weight = 1 + (shares - 2) * 9999 / 262142 (shares clamped to the kernel's [2, 262144]).
- cpu.max = "<quota> <period>", "max <period>" when there is no quota, "<quota>" when the
  period is not given (the kernel keeps the current one).
- io.bfq.weight takes the OCI weight as is; io.weight gets 1 + (weight - 10) * 9999 / 990.
- Devices: cgroup v2 has no device files -- access control needs an eBPF program attached to
  the cgroup (BPF_CGROUP_DEVICE). Berth does not load one: device rules are skipped (noted at
  debug) and the container's /dev is the only device boundary on v2.
- Swappiness, disableOOMKiller, kernel and kernelTCP have no v2 equivalent: skipped, noted.
- Realtime cpu limits have no v2 equivalent: setting them is ``Unsupported``.
"""

from __future__ import annotations

from berth.errors import InvalidArgument, Unsupported
from berth.runtime import cgroups_v1 as v1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from berth.spec.config import CPU, DeviceRule, Memory

# the plan's shape and the OCI field names are v1's
Write = v1.Write
Plan = v1.Plan
_MEM = v1._MEM
_CPU = v1._CPU


def _max(value: int) -> str:
    return "max" if value < 0 else str(value)


def swap_max(swap: int | None, limit: int | None) -> int | None:
    """OCI memory+swap total -> memory.swap.max (-1 = "max", None = leave as is), as runc."""
    swap = swap or 0
    if limit == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap if swap == -1 else None
    if limit is None or limit in (0, -1):
        raise InvalidArgument(f"{_MEM}.swap: {swap}: a swap limit needs a memory limit")
    if swap < limit:
        raise InvalidArgument(
            f"{_MEM}.swap: {swap} is below {_MEM}.limit {limit} (swap is the memory+swap total)"
        )
    return swap - limit


def memory(mem: Memory, read: Callable[[str, str], str | None]) -> Plan:
    writes: list[Write] = []
    notes: list[str] = []
    if mem.limit is not None:
        shown = str(mem.limit)
        writes.append(("memory", "memory.max", _max(mem.limit), f"{_MEM}.limit", shown))
    swap = swap_max(mem.swap, mem.limit)
    if swap is not None:
        shown = str(mem.swap if mem.swap else swap)
        if read("memory", "memory.swap.max") is not None:
            writes.append(("memory", "memory.swap.max", _max(swap), f"{_MEM}.swap", shown))
        elif swap == -1:
            notes.append(f"{_MEM}.swap: {shown} skipped: this kernel has no memory.swap.max")
        else:
            raise Unsupported(f"{_MEM}.swap: {shown}: this kernel has no memory.swap.max")
    if mem.reservation is not None:
        shown = str(mem.reservation)
        writes.append(("memory", "memory.low", _max(mem.reservation), f"{_MEM}.reservation", shown))
    for field, ignored in (
        ("swappiness", mem.swappiness),
        ("kernel", mem.kernel),
        ("kernelTCP", mem.kernel_tcp),
        ("disableOOMKiller", mem.disable_oom_killer or None),
    ):
        if ignored is not None:
            notes.append(f"{_MEM}.{field}: {ignored} ignored: cgroup v2 has no equivalent")
    return writes, notes


def shares_to_weight(shares: int) -> int:
    shares = min(max(shares, 2), 262144)
    return 1 + (shares - 2) * 9999 // 262142


def cpu(c: CPU) -> Plan:
    writes: list[Write] = []
    for field, value in (
        ("realtimeRuntime", c.realtime_runtime),
        ("realtimePeriod", c.realtime_period),
    ):
        if value:
            raise Unsupported(f"{_CPU}.{field}: {value}: cgroup v2 has no realtime cpu limits")
    if c.idle is not None and c.idle == 0:
        writes.append(("cpu", "cpu.idle", "0", f"{_CPU}.idle", "0"))
    if c.shares:
        weight = str(shares_to_weight(c.shares))
        writes.append(("cpu", "cpu.weight", weight, f"{_CPU}.shares", str(c.shares)))
    has_quota = c.quota is not None and c.quota != 0
    if has_quota or c.period:
        if c.burst is not None:
            writes.append(("cpu", "cpu.max.burst", "0", f"{_CPU}.burst", str(c.burst)))
        data = str(c.quota) if c.quota is not None and c.quota > 0 else "max"
        if c.period:
            data += f" {c.period}"
        field = f"{_CPU}.quota" if has_quota else f"{_CPU}.period"
        shown = f"{c.quota if has_quota else 'max'} (period {c.period or 'unchanged'})"
        writes.append(("cpu", "cpu.max", data, field, shown))
    if c.burst is not None:
        writes.append(("cpu", "cpu.max.burst", str(c.burst), f"{_CPU}.burst", str(c.burst)))
    if c.idle is not None and c.idle != 0:
        writes.append(("cpu", "cpu.idle", str(c.idle), f"{_CPU}.idle", str(c.idle)))
    return writes, []


# the cpuset and pids files are the same in both versions
cpuset = v1.cpuset
pids = v1.pids


def io(weight: int | None, leaf_weight: int | None, read: Callable[[str, str], str | None]) -> Plan:
    writes: list[Write] = []
    notes: list[str] = []
    field = "linux.resources.blockIO"
    if weight is not None:
        shown = str(weight)
        if read("io", "io.bfq.weight") is not None:
            writes.append(("io", "io.bfq.weight", shown, f"{field}.weight", shown))
        elif read("io", "io.weight") is not None:
            converted = str(1 + (weight - 10) * 9999 // 990)
            writes.append(("io", "io.weight", converted, f"{field}.weight", shown))
        else:
            notes.append(f"{field}.weight: {weight} skipped: no io.weight/io.bfq.weight")
    if leaf_weight is not None:
        notes.append(f"{field}.leafWeight: {leaf_weight} ignored: cgroup v2 has no equivalent")
    return writes, notes


def devices(rules: Sequence[DeviceRule]) -> Plan:
    note = (
        f"linux.resources.devices: {len(rules)} rule(s) skipped: cgroup v2 device control "
        "needs an eBPF program, which Berth does not load"
    )
    return [], [note]


def unified(entries: Mapping[str, str]) -> Plan:
    """Each key is a file of the container's v2 cgroup; its controller is the part before the
    first dot (``cgroup`` for core files)."""
    writes: list[Write] = []
    for key, value in entries.items():
        if not key or "/" in key or key.startswith(".") or "." not in key or "\0" in key:
            raise InvalidArgument(f"linux.resources.unified: {key!r} is not a cgroup file name")
        controller = key.split(".", 1)[0]
        writes.append((controller, key, value, f"linux.resources.unified[{key!r}]", repr(value)))
    return writes, []
