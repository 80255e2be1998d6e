"""A container's resources in berthd: its live cgroup, ``top`` and ``update``.

Rules:
- The cgroup of a running container is the one the supervisor's runtime store records
  (``<run>/supervisor/<id>/state.json``); berthd only reads that record. A container whose
  record is gone or whose init is dead has no cgroup (None).
- ``top`` does what dockerd does: the host's procps ``ps`` with the client's ``ps_args``
  (``-ef`` by default) and ``-q <the cgroup's pids>``, again without ``-q`` when ps refuses the
  pair (``f`` with ``q``), keeping the rows whose PID is in the cgroup (and the thread rows,
  PID ``-``, that follow them); columns past the last title are joined into it. A container
  that is not running is a ``Conflict``; ps failing is a 500 carrying ps's first error line
  (``HostToolFailed``); renaming another column to ``PID`` (``-o ppid=PID``) is refused.
- ``update`` follows dockerd's ``UpdateContainer``: a zero field leaves the value as it is;
  Nano CPUs and CPU period/quota exclude each other across the update, and a memory limit
  above the already set memory+swap limit needs MemorySwap in the same update -- those are
  dockerd's 409s, "Cannot update container <id>: ...". One deliberate difference: dockerd
  also refuses ``--memory`` alone on a container that has no swap limit at all (its check
  compares with 0 on hosts with swap accounting); here no swap limit means nothing to
  exceed. A container created with ``--memory`` has dockerd's default swap limit (twice the
  memory) made explicit in its HostConfig at its first update. The merged HostConfig is then
  validated as create validates it (dockerd's 400s), written live to the cgroup of a running
  container (the old limits are written back if the kernel refuses one), and persisted in
  the bundle's ``config.json`` (so a restart keeps it) and in the record's HostConfig.
  RestartPolicy is validated as create does and stored (the restart manager reads it from
  HostConfig).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import subprocess
from typing import Any

from berth.engine import oci_config
from berth.engine.api_errors import HostToolFailed
from berth.engine.containers import ContainerManager
from berth.engine.containers_restart import RestartPolicy
from berth.engine.containers_state import Record
from berth.engine.oci_request import _host_config
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound
from berth.runtime import store as runtime_store
from berth.runtime.cgroups import Cgroup
from berth.spec.config import Resources

log = logging.getLogger(__name__)

# The fields of ``POST /containers/{id}/update`` that are resources, with their Go types.
UPDATE_INTS = (
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "BlkioWeight",
)
UPDATE_STRINGS = ("CpusetCpus", "CpusetMems")
PS_TIMEOUT = 30.0
_PS_ARG_PID = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


# --------------------------------------------------------------------------- the live cgroup


def live_init(supervisor_root: str, cid: str) -> runtime_store.Record | None:
    """The runtime's record of the container while its init runs, or None (blocking)."""
    try:
        record = runtime_store.Store(supervisor_root).load(cid)
    except NotFound:
        return None
    return record if record.init_alive() else None


def live_cgroup(supervisor_root: str, cid: str) -> Cgroup | None:
    """The cgroup of the container's running init, or None (blocking: reads its record)."""
    record = live_init(supervisor_root, cid)
    return None if record is None else Cgroup.from_json(record.cgroup)


# --------------------------------------------------------------------------- top


def check_ps_args(ps_args: str) -> None:
    """dockerd refuses a ``key=PID`` column rename other than ``pid=``."""
    for key, renamed in _PS_ARG_PID.findall(" " + ps_args):
        if key != "pid":
            raise InvalidArgument(f'specifying "{key}={renamed}" is not allowed')


def _run_ps(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ps", *args], capture_output=True, timeout=PS_TIMEOUT, check=False)


def top(pids: list[int], ps_args: str) -> dict[str, Any]:
    """``Titles`` and ``Processes`` of ps's output restricted to ``pids`` (blocking)."""
    ps_args = ps_args or "-ef"
    check_ps_args(ps_args)
    args = [a for a in ps_args.split(" ") if a] if ps_args.strip() else []
    quick = "-q" + ",".join(str(p) for p in pids)
    done = _run_ps([*args, quick])
    if done.returncode != 0:
        done = _run_ps(args)
        if done.returncode != 0:
            first = done.stderr.decode(errors="replace").split("\n", 1)[0].strip()
            raise HostToolFailed(f"ps: {first or f'exit status {done.returncode}'}")
    return parse_ps(done.stdout.decode(errors="replace"), set(pids))


def parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise HostToolFailed("Couldn't find PID field in ps output")
    at = titles.index("PID")
    processes: list[list[str]] = []
    keep_threads = False
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) <= at:
            raise HostToolFailed(f"Unexpected ps output line: {line!r}")
        if fields[at] == "-":  # a thread row (``-m``/``H``) of the process above it
            if keep_threads:
                processes.append(_row(fields, len(titles)))
            continue
        try:
            pid = int(fields[at])
        except ValueError:
            raise HostToolFailed(f"Unexpected pid '{fields[at]}'") from None
        keep_threads = pid in pids
        if keep_threads:
            processes.append(_row(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _row(fields: list[str], columns: int) -> list[str]:
    """The last title's column takes the rest of the line (a command with spaces)."""
    return [*fields[: columns - 1], " ".join(fields[columns - 1 :])]


# --------------------------------------------------------------------------- update


def _update_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The resource fields of an update body, type-checked (Go's unmarshal errors)."""
    out: dict[str, Any] = {}
    for key in UPDATE_INTS:
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise InvalidArgument(
                f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                f"UpdateConfig.{key} of type int64"
            )
        out[key] = v or 0
    for key in UPDATE_STRINGS:
        v = body.get(key)
        if v is not None and not isinstance(v, str):
            raise InvalidArgument(
                f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                f"UpdateConfig.{key} of type string"
            )
        out[key] = v or ""
    pids = body.get("PidsLimit")
    if pids is not None and (not isinstance(pids, int) or isinstance(pids, bool)):
        raise InvalidArgument(
            "json: cannot unmarshal into Go struct field UpdateConfig.PidsLimit of type int64"
        )
    out["PidsLimit"] = pids
    return out


def merge_update(host_config: dict[str, Any], body: dict[str, Any], cid: str) -> dict[str, Any]:
    """The HostConfig of container ``cid`` after ``body`` (dockerd's rules and messages);
    ``host_config`` is not changed."""
    new = _update_fields(body)
    hc = copy.deepcopy(host_config)
    cur = {key: hc.get(key) or 0 for key in UPDATE_INTS}
    if cur["Memory"] > 0 and cur["MemorySwap"] == 0:
        cur["MemorySwap"] = hc["MemorySwap"] = 2 * cur["Memory"]  # dockerd's default at create
    conflicts = (
        ("NanoCpus", "CpuPeriod", "Nano CPUs cannot be updated as CPU Period has already been set"),
        ("NanoCpus", "CpuQuota", "Nano CPUs cannot be updated as CPU Quota has already been set"),
        ("CpuPeriod", "NanoCpus", "CPU Period cannot be updated as NanoCPUs has already been set"),
        ("CpuQuota", "NanoCpus", "CPU Quota cannot be updated as NanoCPUs has already been set"),
    )
    for wanted, already, message in conflicts:
        if new[wanted] > 0 and cur[already] > 0:
            raise _cannot_update(cid, f"Conflicting options: {message}")
    if (
        new["Memory"]
        and cur["MemorySwap"] > 0
        and new["Memory"] > cur["MemorySwap"]
        and not new["MemorySwap"]
    ):
        raise _cannot_update(
            cid,
            "Memory limit should be smaller than already set memoryswap limit, "
            "update the memoryswap at the same time",
        )
    for key in (*UPDATE_INTS, *UPDATE_STRINGS):
        if new[key]:
            hc[key] = new[key]
    if new["PidsLimit"] is not None:  # 0 and -1 both lift the limit; dockerd stores 0
        hc["PidsLimit"] = max(new["PidsLimit"], 0)
    policy = body.get("RestartPolicy")
    if isinstance(policy, dict) and policy.get("Name"):
        hc["RestartPolicy"] = _restart_policy(policy, bool(hc.get("AutoRemove")), cid)
    return hc


def _cannot_update(cid: str, message: str) -> Conflict:
    return Conflict(f"Cannot update container {cid}: {message}")


def _restart_policy(policy: dict[str, Any], auto_remove: bool, cid: str) -> dict[str, Any]:
    """The update's policy, checked as create checks it (``RestartPolicy.validate``)."""
    if auto_remove and policy.get("Name") not in (None, "", "no"):
        raise _cannot_update(
            cid, "Restart policy cannot be updated because AutoRemove is enabled for the container"
        )
    checked = RestartPolicy.validate({"RestartPolicy": policy})
    return {"Name": checked.name, "MaximumRetryCount": checked.maximum_retry_count}


def oci_resources(hc: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """``linux.resources`` (devices aside) for a HostConfig, validated as create does."""
    parsed = _host_config(hc)
    return oci_config._resources(parsed, oci_config.HostFacts.probe(), warnings)


def live_resources(resources: dict[str, Any], pids_limit: object) -> Resources:
    """What to write to a running container's cgroup: ``resources`` plus an explicit
    unlimited pids when the update's ``PidsLimit`` is 0 or -1 (it lifts the old limit)."""
    wanted = {k: v for k, v in resources.items() if k != "devices"}
    if isinstance(pids_limit, int) and pids_limit <= 0:
        wanted["pids"] = {"limit": -1}
    return Resources.from_json(wanted, "linux.resources")


def apply_live(
    cgroup: Cgroup, resources: dict[str, Any], pids_limit: object, old_host_config: dict[str, Any]
) -> None:
    """Write ``resources`` to the cgroup; if the kernel refuses one of the writes, put the
    limits of ``old_host_config`` back (as far as the kernel lets us) before raising."""
    try:
        cgroup.apply(live_resources(resources, pids_limit))
    except BerthError:
        old = oci_resources(old_host_config, [])
        try:
            cgroup.apply(live_resources(old, old_host_config.get("PidsLimit") or 0))
        except BerthError as e:
            log.warning("cgroup %s: the old limits could not be restored: %s", cgroup.paths, e)
        raise


def write_bundle_resources(bundle: str, resources: dict[str, Any]) -> None:
    """Put ``resources`` in the bundle's config.json, keeping its devices rules."""
    path = os.path.join(bundle, "config.json")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    linux = spec.setdefault("linux", {})
    old = linux.get("resources") or {}
    linux["resources"] = {**resources, "devices": old.get("devices") or []}
    data = json.dumps(spec, separators=(",", ":")).encode() + b"\n"
    runtime_store.write_atomically(path, data, 0o600)


def not_running(cid: str) -> Conflict:
    return Conflict(f"Container {cid} is not running")


async def update(m: ContainerManager, ref: str, body: dict[str, Any]) -> list[str]:
    """Apply and persist an update; the answer's Warnings."""
    rec = m.get(ref)
    async with m.live_of(rec.id).lock:  # ordered with start, exit handling and removal
        if rec.id not in m.records:
            raise NotFound(f"No such container: {ref}")
        if rec.status in ("removing", "dead"):
            raise Conflict(
                f"Cannot update container {rec.id}: "
                'container is marked for removal and cannot be "update"'
            )
        return await asyncio.to_thread(_update, m, rec, body)


def _update(m: ContainerManager, rec: Record, body: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    hc = merge_update(rec.host_config, body, rec.id)
    resources = oci_resources(hc, warnings)
    if rec.has_process:
        cgroup = live_cgroup(m.supervisor_root, rec.id)
        if cgroup is not None:
            apply_live(cgroup, resources, body.get("PidsLimit"), rec.host_config)
    write_bundle_resources(m.bundle(rec.id), resources)
    rec.host_config = hc
    rec.save(m.bundle(rec.id))
    return warnings
