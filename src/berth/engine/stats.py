"""``GET /containers/{id}/stats`` documents: a container's cgroup readings in dockerd's JSON.

Rules (what the docker CLI 28 and docker-py 7 read; moby's ``types.StatsJSON``):
- A frame is ``read``/``preread`` (RFC 3339, Go's zero time when unset), ``pids_stats``,
  ``blkio_stats``, ``num_procs`` (0 on Linux), ``storage_stats`` ({}), ``cpu_stats``,
  ``precpu_stats`` (the previous frame's ``cpu_stats``; zeros on the first), ``memory_stats``,
  ``name`` ("/name") and ``id``; ``networks`` (per interface of the container's network
  namespace but lo: rx/tx bytes, packets, errors, dropped, from its init's /proc/<pid>/net/dev)
  when it has any, as dockerd leaves it out for ``--network none``.
- ``cpu_stats.system_cpu_usage`` is dockerd's: the first seven fields of /proc/stat's ``cpu``
  line (user .. softirq) in nanoseconds; ``online_cpus`` the number of ``cpuN`` lines.
  ``percpu_usage``, ``memory_stats.max_usage`` and ``failcnt`` exist only on cgroup v1 and are
  omitted elsewhere, as dockerd omits empty fields; on v2 ``blkio_stats`` has only
  ``io_service_bytes_recursive`` (ops "read"/"write"), the other lists are null.
- ``memory_stats.limit`` is the container's limit, or the machine's memory when it has none
  (or a larger one), as dockerd reports it.
- A container that is not running gives a zero frame with only ``name`` and ``id`` set.
- Sampling is blocking file I/O: callers run ``Sampler.frame`` in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from berth.engine.containers_state import ZERO_TIME, now_rfc3339
from berth.runtime import cgroups_stats
from berth.runtime.cgroups import Cgroup

NS_PER_SECOND = 1_000_000_000
BLKIO_FIELDS = (
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queue_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
)


# --------------------------------------------------------------------------- host readings


def system_cpu_usage(proc: str = "/proc") -> tuple[int, int]:
    """(the host's CPU time in ns as dockerd counts it, the number of online CPUs)."""
    total, online = 0, 0
    with open(f"{proc}/stat", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if name == "cpu":
                ticks = sum(int(n) for n in rest.split()[:7])
                total = ticks * NS_PER_SECOND // os.sysconf("SC_CLK_TCK")
            elif name.startswith("cpu"):
                online += 1
    return total, online


def machine_memory(proc: str = "/proc") -> int:
    """MemTotal in bytes (0 when unreadable)."""
    try:
        with open(f"{proc}/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- documents


def zero_cpu() -> dict[str, Any]:
    return {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def empty_frame(name: str, cid: str) -> dict[str, Any]:
    """What dockerd answers for a container that is not running."""
    return {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": dict.fromkeys(BLKIO_FIELDS),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": zero_cpu(),
        "precpu_stats": zero_cpu(),
        "memory_stats": {},
        "name": name,
        "id": cid,
    }


def cpu_stats(cpu: cgroups_stats.CpuUsage, system_ns: int, online: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": cpu.total_ns}
    if cpu.percpu_ns:
        usage["percpu_usage"] = list(cpu.percpu_ns)
    usage["usage_in_kernelmode"] = cpu.system_ns
    usage["usage_in_usermode"] = cpu.user_ns
    return {
        "cpu_usage": usage,
        "system_cpu_usage": system_ns,
        "online_cpus": online,
        "throttling_data": {
            "periods": cpu.periods,
            "throttled_periods": cpu.throttled_periods,
            "throttled_time": cpu.throttled_ns,
        },
    }


def memory_stats(mem: cgroups_stats.MemoryUsage, machine: int) -> dict[str, Any]:
    if mem.version == 0:
        return {}
    limit = mem.limit
    if machine > 0 and (limit == 0 or limit > machine):
        limit = machine
    out: dict[str, Any] = {"usage": mem.usage}
    if mem.max_usage:
        out["max_usage"] = mem.max_usage
    out["stats"] = dict(mem.stat)
    if mem.failcnt:
        out["failcnt"] = mem.failcnt
    out["limit"] = limit
    return out


def blkio_stats(sample: cgroups_stats.DetailedStats) -> dict[str, Any]:
    """v1: bytes and operations; v2: bytes only, as dockerd reports them."""
    out: dict[str, Any] = dict.fromkeys(BLKIO_FIELDS)
    wanted = [("io_service_bytes_recursive", sample.io_service_bytes)]
    if sample.io_version == 1:
        wanted.append(("io_serviced_recursive", sample.io_serviced))
    for key, entries in wanted:
        if entries:
            out[key] = [
                {"major": e.major, "minor": e.minor, "op": e.op, "value": e.value} for e in entries
            ]
    return out


def pids_stats(sample: cgroups_stats.DetailedStats) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sample.pids_current:
        out["current"] = sample.pids_current
    if sample.pids_limit:
        out["limit"] = sample.pids_limit
    return out


NET_DEV_FIELDS = {  # dockerd's names -> the column of /proc/net/dev after the interface
    "rx_bytes": 0, "rx_packets": 1, "rx_errors": 2, "rx_dropped": 3,
    "tx_bytes": 8, "tx_packets": 9, "tx_errors": 10, "tx_dropped": 11,
}  # fmt: skip


def network_stats(path: str) -> dict[str, dict[str, int]]:
    """Each interface of a /proc/<pid>/net/dev but lo, in dockerd's ``networks`` form ({} when
    unreadable: the process is gone)."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, _, rest = line.partition(":")
        name, columns = name.strip(), rest.split()
        if name and name != "lo" and len(columns) >= 16:
            out[name] = {key: int(columns[i]) for key, i in NET_DEV_FIELDS.items()}
    return out


# --------------------------------------------------------------------------- the sampler


class Sampler:
    """Frames of one container, each with the previous one's CPU figures as ``precpu``.

    ``cgroup`` returns the running container's cgroup, or None when it is not running."""

    def __init__(
        self,
        name: str,
        cid: str,
        cgroup: Callable[[], Cgroup | None],
        proc: str = "/proc",
        pid: Callable[[], int] = lambda: 0,
    ) -> None:
        self.name = name
        self.id = cid
        self._cgroup = cgroup
        self._pid = pid
        self._proc = proc
        self._machine = machine_memory(proc)
        self._previous_cpu = zero_cpu()
        self._previous_read = ZERO_TIME

    def frame(self) -> dict[str, Any]:
        """One document (blocking: it reads cgroup files)."""
        cgroup = self._cgroup()
        if cgroup is None:
            self._previous_cpu, self._previous_read = zero_cpu(), ZERO_TIME
            return empty_frame(self.name, self.id)
        read = now_rfc3339()
        sample = cgroups_stats.read(cgroup)
        system_ns, online = system_cpu_usage(self._proc)
        cpu = cpu_stats(sample.cpu, system_ns, online)
        doc = {
            "read": read,
            "preread": self._previous_read,
            "pids_stats": pids_stats(sample),
            "blkio_stats": blkio_stats(sample),
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": cpu,
            "precpu_stats": self._previous_cpu,
            "memory_stats": memory_stats(sample.memory, self._machine),
            "name": self.name,
            "id": self.id,
        }
        pid = self._pid()
        if pid > 0 and (networks := network_stats(f"{self._proc}/{pid}/net/dev")):
            doc["networks"] = networks
        self._previous_cpu, self._previous_read = cpu, read
        return doc
