"""From ``POST /containers/create`` to an OCI runtime config.json, as dockerd does.

Two steps, both pure (no daemon state):

* ``CreateRequest.from_json(body)`` parses and validates the create body the docker CLI and
  docker-py send (``Config`` fields at the top level, ``HostConfig`` beside them). It lives in
  ``oci_request`` (its rules are there) and is re-exported here. Every bad value raises
  ``InvalidArgument`` (400) with dockerd's message where people grep for it ("Minimum memory
  limit allowed is 6MB", ``unknown capability: "CAP_FOO"``, ...). Checks that need the host or
  the image (CPUs that exist, the user in /etc/passwd) happen in step two.
* ``build_spec(container_id, req, image, rootfs, hostname=...)`` merges the request with the
  image config (Docker's rules: the request's Entrypoint replaces the image's and resets its
  Cmd; request Env over image Env; PATH, HOSTNAME and TERM as dockerd adds them) and returns
  the config.json dict: Docker's mounts, masked and read-only paths, 14 capabilities, default
  seccomp profile, devices cgroup allow-list, namespaces and resources. ``warnings`` (a list the
  caller passes) receives what dockerd would put in the create response's ``Warnings``, and what
  Berth changed on its own (an rlimit clamped to the host's hard limit, DESIGN.md).

Networks: the engine (``networks``) makes and pins a namespace for "bridge", "default" and user
networks and passes its path in ``namespace_paths["network"]``, which the spec joins; without a
path (``none``) the mode gets a new namespace with only ``lo``, up (the runtime's
``LOOPBACK_ANNOTATION``). "host" shares berthd's; "container:<id>" joins the namespace whose
path the engine passes in ``namespace_paths["network"]`` (likewise for PidMode and IpcMode).

What this module does not do, because it owns no files: /etc/hostname, /etc/hosts,
/etc/resolv.conf bind mounts, volumes and binds (``HostConfig.Binds``/``Mounts`` stay in
``req.raw``; ``container_mounts`` turns them into mounts the engine appends), ``--init``
(``host_config.init`` is parsed, the engine decides), and creating the
working directory in the rootfs (the engine mkdirs ``spec["process"]["cwd"]``). Labels stay in
the request for the engine; they are not OCI annotations. dockerd resolves the user at start,
not create; calling ``build_spec`` at create reports an unknown user earlier, with the same
message. HOME comes from the user's passwd entry when the env has none (runc's init adds it
the same way).
"""

from __future__ import annotations

import json
import os
import posixpath
import resource
import stat
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from berth.engine.oci_request import (
    DEFAULT_SHM_SIZE,
    MIN_MEMORY,
    RLIM_INFINITY,
    ULIMITS,
    CreateRequest,
    DeviceMapping,
    HostConfig,
    Ulimit,
    _cpu_range,
    _merge_tmpfs_options,
    _parse_cpuset,
    _seccomp_from_docker,
)
from berth.engine.seccomp_default import DEFAULT_CAPABILITIES, default_seccomp_profile
from berth.errors import InvalidArgument
from berth.runtime.loopback import LOOPBACK_ANNOTATION
from berth.spec.defaults import CAPABILITIES, DEFAULT_PATH
from berth.spec.image import ContainerConfig, ImageConfig
from berth.spec.value import value

# the create body's types live in oci_request; they are re-exported so callers need one module
__all__ = [
    "CPU_PERIOD",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_DEVICE_RULES",
    "DEFAULT_SHM_SIZE",
    "MASKED_PATHS",
    "MAX_CPU_SHARES",
    "MIN_CPU_SHARES",
    "MIN_MEMORY",
    "OCI_VERSION",
    "READONLY_PATHS",
    "RLIM_INFINITY",
    "ULIMITS",
    "CreateRequest",
    "DeviceMapping",
    "HostConfig",
    "HostFacts",
    "Ulimit",
    "build_spec",
    "config_env",
    "entrypoint_and_cmd",
    "resolve_user",
    "scan_host_devices",
]

OCI_VERSION = "1.0.2-dev"

CPU_PERIOD = 100_000  # the CFS period --cpus uses
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144


# Docker's masked and read-only paths (moby oci/defaults.go), not runc's `spec` lists.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# The devices cgroup as dockerd writes it: deny everything, then the nodes every container
# needs (the runtime adds its own defaults: /dev/full, /dev/pts/*, /dev/ptmx, mknod), and
# /dev/fuse denied until --device asks for it.
DEFAULT_DEVICE_RULES: tuple[dict[str, Any], ...] = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
)

_MAX_ID = 2**31 - 1


# ---------------------------------------------------------------- host facts


@value
class HostFacts:
    """What validation needs to know about the host; ``HostFacts.probe()`` reads them."""

    cpus: frozenset[int]
    mems: frozenset[int]
    hard_limits: dict[str, int]  # RLIMIT_* -> the caller's hard limit (RLIM_INFINITY: none)
    cgroup_v2: bool = False  # a pure cgroup v2 host: containers get a cgroup namespace

    @staticmethod
    def probe() -> HostFacts:
        cpus = frozenset(os.sched_getaffinity(0))
        try:
            with open("/sys/devices/system/node/online", encoding="ascii") as fh:
                mems = _parse_cpuset(fh.read().strip(), "bad node list")
        except (OSError, InvalidArgument):
            mems = frozenset({0})
        hard: dict[str, int] = {}
        for rname in ULIMITS.values():
            number = getattr(resource, rname, None)
            if number is not None:
                limit = resource.getrlimit(number)[1]
                hard[rname] = RLIM_INFINITY if limit == resource.RLIM_INFINITY else limit
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        return HostFacts(cpus=cpus, mems=mems, hard_limits=hard, cgroup_v2=v2)


def _format_cpuset(cpus: Iterable[int]) -> str:
    ordered = sorted(cpus)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


# ---------------------------------------------------------------- building the spec


def build_spec(
    container_id: str,
    req: CreateRequest,
    image: ImageConfig | None,
    rootfs: str,
    *,
    hostname: str,
    annotations: dict[str, str] | None = None,
    warnings: list[str] | None = None,
    namespace_paths: Mapping[str, str] | None = None,
    host: HostFacts | None = None,
    host_devices: Callable[[], list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The OCI config.json for ``req`` run from ``image`` on ``rootfs`` (the merged rootfs dir).

    ``hostname``: the engine's choice (the request's, or the id's first 12 characters).
    ``warnings``: receives the create response's Warnings. ``namespace_paths``: for the
    "container:<id>" modes, the path of the namespace to join, by OCI type ("network",
    "ipc", "pid"). ``host`` and ``host_devices`` default to probing this host (tests pass
    their own). Raises ``InvalidArgument`` for what only the image or host can reveal.
    """
    hc = req.host_config
    host = host or HostFacts.probe()
    notes = warnings if warnings is not None else []
    image_conf = image.config if image is not None else None

    args = _args(req, image_conf)
    if req.host_config.network_mode == "host" and req.host_config.sysctls:
        for key in req.host_config.sysctls:
            if key.startswith("net."):
                raise InvalidArgument(f"sysctl '{key}' is not allowed in host network namespace")
    user_spec = req.user or (image_conf.user if image_conf else "")
    uid, gid, groups, home = resolve_user(rootfs, user_spec)
    for extra in hc.group_add:
        groups.append(_resolve_group(rootfs, extra))
    env = _env(req, image_conf, hostname, home)
    cwd = req.working_dir or (image_conf.working_dir if image_conf else "") or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(
            f"the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )

    caps = _capabilities(hc)
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    extra_gids = list(dict.fromkeys(groups))
    if extra_gids:
        user["additionalGids"] = extra_gids
    process: dict[str, Any] = {
        "terminal": req.tty,
        "user": user,
        "args": args,
        "env": env,
        "cwd": posixpath.normpath(cwd),
        "capabilities": {"bounding": list(caps)}
        if uid != 0
        else {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)},
    }
    rlimits = _rlimits(hc.ulimits, host, notes)
    if rlimits:
        process["rlimits"] = rlimits
    if hc.no_new_privileges:
        process["noNewPrivileges"] = True
    process["oomScoreAdj"] = hc.oom_score_adj  # dockerd always writes it, 0 included
    if req.tty and req.console_size is not None:
        process["consoleSize"] = {"height": req.console_size[0], "width": req.console_size[1]}

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": hc.readonly_rootfs},
    }
    if hc.uts_mode != "host":
        spec["hostname"] = hostname
        if req.domainname:
            spec["domainname"] = req.domainname
    paths = namespace_paths or {}
    spec["mounts"] = _mounts(hc, paths)
    spec_annotations = dict(annotations or {})
    own_netns = hc.network_mode != "host" and not hc.network_mode.startswith("container:")
    if own_netns and not paths.get("network"):  # a pinned namespace has lo up already
        spec_annotations[LOOPBACK_ANNOTATION] = "up"
    if spec_annotations:
        spec["annotations"] = spec_annotations

    linux: dict[str, Any] = {
        "namespaces": _namespaces(hc, paths, host.cgroup_v2),
        "cgroupsPath": f"berth/{container_id}",
        "resources": _resources(hc, host, notes),
    }
    devices, rules = _device_nodes(hc, host_devices)
    if devices:
        linux["devices"] = devices
    linux["resources"]["devices"] = rules
    if hc.sysctls:
        linux["sysctl"] = dict(hc.sysctls)
    if not hc.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        seccomp = _seccomp(hc, caps)
        if seccomp is not None:
            linux["seccomp"] = seccomp
    spec["linux"] = linux
    return spec


def entrypoint_and_cmd(
    req: CreateRequest, image: ContainerConfig | None
) -> tuple[list[str], list[str]]:
    """Docker's merge: the request's Entrypoint (even ``[""]``, --entrypoint "") replaces the
    image's and drops the image's Cmd; otherwise the request's Cmd replaces the image's."""
    if req.entrypoint is not None:
        entrypoint = [] if req.entrypoint == ("",) else list(req.entrypoint)
        return entrypoint, list(req.cmd or ())
    if image is None:
        return [], list(req.cmd or ())
    return list(image.entrypoint or ()), list(req.cmd or image.cmd or ())


def _args(req: CreateRequest, image: ContainerConfig | None) -> list[str]:
    entrypoint, cmd = entrypoint_and_cmd(req, image)
    if not entrypoint + cmd:
        raise InvalidArgument("No command specified")
    return entrypoint + cmd


def config_env(req: CreateRequest, image: ContainerConfig | None) -> list[str]:
    """``Config.Env`` as dockerd stores it: the request's, then the image's it does not name."""
    env = list(req.env)
    named = {e.partition("=")[0] for e in env}
    env.extend(e for e in (image.env if image else ()) if e.partition("=")[0] not in named)
    return env


def _env(req: CreateRequest, image: ContainerConfig | None, hostname: str, home: str) -> list[str]:
    """dockerd's CreateDaemonEnvironment: PATH, HOSTNAME and TERM, replaced or extended by
    ``Config.Env`` ("NAME" alone unsets NAME); HOME from passwd as runc's init adds it."""
    merged: dict[str, str | None] = {"PATH": DEFAULT_PATH.partition("=")[2], "HOSTNAME": hostname}
    if req.tty:
        merged["TERM"] = "xterm"
    for entry in config_env(req, image):
        key, sep, val = entry.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable: {entry}")
        merged[key] = val if sep else None
    if "HOME" not in merged:
        merged["HOME"] = home
    return [f"{k}={v}" for k, v in merged.items() if v is not None]


def _capabilities(hc: HostConfig) -> list[str]:
    """Docker's TweakCapabilities."""
    if hc.privileged:
        return list(CAPABILITIES)
    if not hc.cap_add and not hc.cap_drop:
        return list(DEFAULT_CAPABILITIES)
    if "ALL" in hc.cap_add:
        return [c for c in CAPABILITIES if c not in hc.cap_drop]
    if "ALL" in hc.cap_drop:
        return [c for c in hc.cap_add if c != "ALL"]
    caps = [c for c in DEFAULT_CAPABILITIES if c not in hc.cap_drop]
    caps.extend(c for c in hc.cap_add if c not in caps)
    return caps


def _rlimits(ulimits: Iterable[Ulimit], host: HostFacts, notes: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for u in ulimits:
        rname = ULIMITS[u.name]
        soft = RLIM_INFINITY if u.soft < 0 else u.soft
        hard = RLIM_INFINITY if u.hard < 0 else u.hard
        ceiling = host.hard_limits.get(rname, RLIM_INFINITY)
        if hard > ceiling:
            notes.append(
                f"--ulimit {u.name}={_show(u.soft)}:{_show(u.hard)} is above this host's hard "
                f"limit {_show(ceiling)}: clamped to {_show(min(soft, ceiling))}:{_show(ceiling)}"
            )
            hard = ceiling
        out.append({"type": rname, "hard": hard, "soft": min(soft, hard)})
    return out


def _show(limit: int) -> str:
    return "unlimited" if limit < 0 or limit >= RLIM_INFINITY else str(limit)


def _shm_mount(hc: HostConfig, paths: Mapping[str, str]) -> dict[str, Any] | None:
    """/dev/shm: a tmpfs of ShmSize; the host's with --ipc host; with --ipc container:<id>,
    that container's (through /proc/<pid>/root when the engine gives /proc/<pid>/ns/ipc)."""
    if hc.ipc_mode == "none":
        return None
    source = ""
    if hc.ipc_mode == "host":
        source = "/dev/shm"
    elif hc.ipc_mode.startswith("container:"):
        ns_path = paths.get("ipc", "")
        if ns_path.startswith("/proc/") and ns_path.endswith("/ns/ipc"):
            source = ns_path[: -len("/ns/ipc")] + "/root/dev/shm"
    if source:
        return {
            "destination": "/dev/shm",
            "type": "bind",
            "source": source,
            "options": ["rbind", "nosuid", "noexec", "nodev"],
        }
    options = ["nosuid", "noexec", "nodev", "mode=1777", f"size={hc.shm_size}"]
    return {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": options}


def _mounts(hc: HostConfig, paths: Mapping[str, str]) -> list[dict[str, Any]]:
    ro_sys = [] if hc.privileged else ["ro"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", *ro_sys]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*ro_sys, "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]  # fmt: skip
    shm = _shm_mount(hc, paths)
    if shm is not None:
        mounts.append(shm)
    for dest, data in hc.tmpfs:
        options = _merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", *data.split(",")])
        mounts = [m for m in mounts if m["destination"] != dest]
        mounts.append({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options})
    return mounts


def _namespaces(hc: HostConfig, paths: Mapping[str, str], v2: bool) -> list[dict[str, Any]]:
    """Docker's order; a cgroup namespace when asked, or by default on cgroup v2 (dockerd's
    default cgroupns mode is "private" on v2 hosts and "host" on v1 and hybrid ones)."""
    out: list[dict[str, Any]] = [{"type": "mount"}]

    def join(ns_type: str, mode: str) -> None:
        if mode == "host":
            return
        if mode.startswith("container:"):
            path = paths.get(ns_type)
            if not path:
                raise InvalidArgument(
                    f"{mode}: no {ns_type} namespace to join (the container is not running)"
                )
            out.append({"type": ns_type, "path": path})
            return
        if ns_type == "network" and paths.get(ns_type):  # the engine's pinned namespace
            out.append({"type": ns_type, "path": paths[ns_type]})
            return
        out.append({"type": ns_type})

    join("network", hc.network_mode)
    join("uts", "host" if hc.uts_mode == "host" else "")
    join("pid", hc.pid_mode)
    join("ipc", hc.ipc_mode)
    if hc.cgroupns_mode == "private" or (hc.cgroupns_mode == "" and v2):
        out.append({"type": "cgroup"})
    return out


def _resources(hc: HostConfig, host: HostFacts, notes: list[str]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    if hc.memory > 0:
        memory["limit"] = hc.memory
        swap = hc.memory_swap or hc.memory * 2  # dockerd: swap as much as memory by default
        memory["swap"] = swap
    elif hc.memory_swap == -1:
        memory["swap"] = -1
    if hc.memory_reservation > 0:
        memory["reservation"] = hc.memory_reservation
    if hc.memory_swappiness is not None:
        memory["swappiness"] = hc.memory_swappiness
    if hc.oom_kill_disable:
        memory["disableOOMKiller"] = True
        if hc.memory <= 0:
            notes.append(
                "OOM killer is disabled for the container, but no memory limit is set, "
                "this can result in the system running out of resources."
            )
    if memory:
        res["memory"] = memory

    cpu: dict[str, Any] = {}
    if hc.nano_cpus > 0:
        ncpu = len(host.cpus)
        if hc.nano_cpus > ncpu * 10**9:
            raise _cpu_range(ncpu)
        cpu["quota"] = hc.nano_cpus * CPU_PERIOD // 10**9
        cpu["period"] = CPU_PERIOD
    if hc.cpu_quota:
        cpu["quota"] = hc.cpu_quota
    if hc.cpu_period:
        cpu["period"] = hc.cpu_period
    if hc.cpu_shares:
        shares = min(max(hc.cpu_shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
        if shares != hc.cpu_shares:
            bound = "minimum" if shares == MIN_CPU_SHARES else "maximum"
            notes.append(
                f"Changing requested CPUShares of {hc.cpu_shares} to {bound} allowed of {shares}"
            )
        cpu["shares"] = shares
    if hc.cpuset_cpus:
        wanted = _parse_cpuset(hc.cpuset_cpus, f"Invalid value {hc.cpuset_cpus} for cpuset cpus")
        if not wanted <= host.cpus:
            raise InvalidArgument(
                f"Requested CPUs are not available - requested {hc.cpuset_cpus}, "
                f"available: {_format_cpuset(host.cpus)}"
            )
        cpu["cpus"] = hc.cpuset_cpus
    if hc.cpuset_mems:
        wanted = _parse_cpuset(hc.cpuset_mems, f"Invalid value {hc.cpuset_mems} for cpuset mems")
        if not wanted <= host.mems:
            raise InvalidArgument(
                f"Requested memory nodes are not available - requested {hc.cpuset_mems}, "
                f"available: {_format_cpuset(host.mems)}"
            )
        cpu["mems"] = hc.cpuset_mems
    if cpu:
        res["cpu"] = cpu
    if hc.pids_limit is not None:
        res["pids"] = {"limit": hc.pids_limit}
    if hc.blkio_weight:
        res["blockIO"] = {"weight": hc.blkio_weight}
    return res


def _device_nodes(
    hc: HostConfig, host_devices: Callable[[], list[dict[str, Any]]] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and the devices cgroup rules (privileged: every host device, allow all)."""
    if hc.privileged:
        return (host_devices or scan_host_devices)(), [{"allow": True, "access": "rwm"}]
    rules = [dict(r) for r in DEFAULT_DEVICE_RULES]
    nodes: list[dict[str, Any]] = []
    for dev in hc.devices:
        node = _device_node(dev.path_on_host, dev.path_in_container)
        nodes.append(node)
        rules.append(
            {
                "allow": True,
                "type": node["type"],
                "major": node["major"],
                "minor": node["minor"],
                "access": dev.cgroup_permissions,
            }
        )
    return nodes, rules


def _device_node(host_path: str, container_path: str) -> dict[str, Any]:
    try:
        st = os.stat(host_path)
    except OSError as e:
        raise InvalidArgument(
            "error gathering device information while adding custom device "
            f"{json.dumps(host_path)}: {(e.strerror or str(e)).lower()}"
        ) from e
    if stat.S_ISCHR(st.st_mode):
        dtype = "c"
    elif stat.S_ISBLK(st.st_mode):
        dtype = "b"
    else:
        raise InvalidArgument(
            "error gathering device information while adding custom device "
            f"{json.dumps(host_path)}: not a device node"
        )
    return {
        "path": container_path,
        "type": dtype,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


_SKIP_DEV_DIRS = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def scan_host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node under /dev, as --privileged gives them (moby's HostDevices)."""
    out: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DEV_DIRS]
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path == os.path.join(root, "console"):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(_device_node(path, "/dev" + path[len(root) :]))
    return out


def _seccomp(hc: HostConfig, caps: list[str]) -> dict[str, Any] | None:
    profile = hc.seccomp_profile
    if profile == "unconfined":
        return None
    if profile in ("", "builtin"):
        return default_seccomp_profile(caps)
    return _seccomp_from_docker(json.loads(profile), caps)


# ---------------------------------------------------------------- users and groups


def _read_db(rootfs: str, name: str) -> list[list[str]]:
    path = os.path.join(rootfs, "etc", name)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def _id(text: str) -> int | None:
    if not text.isdigit():
        return None
    number = int(text)
    if number > _MAX_ID:
        raise InvalidArgument("uids and gids must be in range 0-2147483647")
    return number


def _resolve_group(rootfs: str, group: str) -> int:
    gid = _id(group)
    if gid is not None:
        return gid
    for entry in _read_db(rootfs, "group"):
        if len(entry) >= 3 and entry[0] == group and entry[2].isdigit():
            return int(entry[2])
    raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")


def resolve_user(rootfs: str, user: str) -> tuple[int, int, list[int], str]:
    """``user[:group]`` against the rootfs's /etc/passwd and /etc/group (runc's GetExecUser).

    Returns (uid, gid, supplementary gids, home). A numeric uid absent from passwd is used as
    is, with gid 0 and home "/"; a name must be there.
    """
    name, _, group = user.partition(":")
    uid, gid, home, login = 0, 0, "/", ""
    passwd = [e for e in _read_db(rootfs, "passwd") if len(e) >= 6]
    if name:
        number = _id(name)
        match = next(
            (e for e in passwd if (e[2] == name if number is not None else e[0] == name)),
            None,
        )
        if match is None and number is None:
            raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
        if match is not None:
            uid, login, home = int(match[2]), match[0], match[5] or "/"
            gid = int(match[3]) if match[3].isdigit() else 0
        else:
            uid = number or 0
    else:
        match = next((e for e in passwd if e[2] == "0"), None)
        if match is not None:
            login, home = match[0], match[5] or "/"
            gid = int(match[3]) if match[3].isdigit() else 0
    groups: list[int] = []
    if group:
        gid = _resolve_group(rootfs, group)
    elif login:
        for entry in _read_db(rootfs, "group"):
            if len(entry) >= 4 and entry[2].isdigit() and login in entry[3].split(","):
                groups.append(int(entry[2]))
    return uid, gid, groups, home
