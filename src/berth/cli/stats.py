"""``berth stats``: the containers' resource usage, once (``--no-stream``) or live.

Rules:
- The numbers are the docker CLI's: CPU % = Δcontainer / Δsystem * online CPUs * 100 (0 when
  either delta is not positive); memory used = usage minus the inactive page cache
  (``total_inactive_file`` on cgroup v1, ``inactive_file`` on v2); MEM % of the limit; network
  and block I/O summed over interfaces and devices, in decimal units; memory in binary units.
- Without names: the running containers (all with ``-a``); one that is gone by the time it
  is sampled shows dashes (``--``), as docker's table does. A named one that does not exist
  is the daemon's error (exit 1).
- ``--no-stream`` samples the containers in parallel (dockerd takes 1 s per sample).
- Live mode redraws the table every second (ANSI clear, no rich needed), each container fed by
  its own ``stats?stream=1`` connection in a thread; Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from berth.cli.client import ApiError, Client
from berth.cli.common import Context
from berth.cli.render import binary_size, format_rows, human_size
from berth.cli.template import Record

STATS_DEFAULT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t"
    "{{.BlockIO}}\t{{.PIDs}}"
)
STATS_HEADERS = {
    "ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
}  # fmt: skip


def cpu_percent(doc: dict[str, Any]) -> float:
    cpu = doc.get("cpu_stats") or {}
    pre = doc.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        pre.get("cpu_usage") or {}
    ).get("total_usage", 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    if cpu_delta > 0 and system_delta > 0:
        return float(cpu_delta / system_delta * (online or 1) * 100.0)
    return 0.0


def memory_used(memory: dict[str, Any]) -> int:
    usage: int = memory.get("usage") or 0
    stats = memory.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):
        inactive = stats.get(key)
        if inactive is not None and inactive < usage:
            return usage - int(inactive)
    return usage


def io_totals(doc: dict[str, Any]) -> tuple[int, int, int, int]:
    """(net rx, net tx, block read, block write) bytes."""
    rx = tx = 0
    for net in (doc.get("networks") or {}).values():
        rx += net.get("rx_bytes", 0)
        tx += net.get("tx_bytes", 0)
    read = write = 0
    for entry in (doc.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += entry.get("value", 0)
        elif op == "write":
            write += entry.get("value", 0)
    return rx, tx, read, write


def stats_row(doc: dict[str, Any], ident: str, trunc: bool = True) -> Record:
    full = doc.get("id") or ident
    name = str(doc.get("name") or "").lstrip("/")
    memory = doc.get("memory_stats") or {}
    if not doc.get("read") or doc.get("read", "").startswith("0001-") or not memory:
        dash = "--"
        return Record(ID=full[:12] if trunc else full, Container=ident, Name=name or dash,
                      CPUPerc=dash, MemUsage="-- / --", MemPerc=dash, NetIO="-- / --",
                      BlockIO="-- / --", PIDs=dash)  # fmt: skip
    used = memory_used(memory)
    limit = memory.get("limit") or 0
    rx, tx, read, write = io_totals(doc)
    return Record(
        ID=full[:12] if trunc else full,
        Container=ident,
        Name=name,
        CPUPerc=f"{cpu_percent(doc):.2f}%",
        MemUsage=f"{binary_size(used)} / {binary_size(limit)}",
        MemPerc=f"{(used / limit * 100.0) if limit else 0.0:.2f}%",
        NetIO=f"{human_size(rx)} / {human_size(tx)}",
        BlockIO=f"{human_size(read)} / {human_size(write)}",
        PIDs=str((doc.get("pids_stats") or {}).get("current", 0)),
    )


def _targets(ctx: Context, names: list[str], everything: bool) -> list[str]:
    if names:
        return names
    listed = ctx.client.get("/containers/json", {"all": everything})
    return [c["Id"][:12] for c in listed]


def _one_shot(client: Client, name: str, trunc: bool, named: bool) -> Record:
    try:
        doc = client.get(f"/containers/{name}/stats", {"stream": "0"})
    except ApiError as e:
        if named or e.status != 404 or "page not found" in e.message:
            raise
        return stats_row({}, name, trunc)  # it went away since the listing
    return stats_row(doc, name, trunc)


def show(
    ctx: Context, names: list[str], everything: bool, live: bool, fmt: str, no_trunc: bool
) -> int:
    targets = _targets(ctx, names, everything)
    if not live:  # one connection per container, in parallel: a sample takes the daemon 1 s
        from concurrent.futures import ThreadPoolExecutor

        def sample(name: str) -> Record:
            client = Client(ctx.client.url)
            try:
                return _one_shot(client, name, not no_trunc, bool(names))
            finally:
                client.close()

        with ThreadPoolExecutor(max_workers=min(16, len(targets) or 1)) as pool:
            rows = list(pool.map(sample, targets))
        sys.stdout.write(format_rows(rows, fmt, STATS_DEFAULT, STATS_HEADERS))
        return 0
    latest: dict[str, Record] = {name: stats_row({}, name, not no_trunc) for name in targets}
    for name in targets:
        threading.Thread(
            target=_follow, args=(ctx.client.url, name, latest, not no_trunc), daemon=True
        ).start()
    try:
        while True:
            text = format_rows([latest[n] for n in targets], fmt, STATS_DEFAULT, STATS_HEADERS)
            sys.stdout.write("\033[2J\033[H" + text)
            sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0


def _follow(url: str, name: str, latest: dict[str, Record], trunc: bool) -> None:
    client = Client(url)
    try:
        response = client.stream("GET", f"/containers/{name}/stats", {"stream": True})
        for doc in response.json_lines():
            latest[name] = stats_row(doc, name, trunc)
    except (ApiError, OSError):
        latest[name] = stats_row({}, name, trunc)
    finally:
        client.close()
