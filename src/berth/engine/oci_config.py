"""From ``POST /containers/create`` to an OCI runtime config.json, as dockerd does.

Two steps, both pure (no daemon state):

* ``CreateRequest.from_json(body)`` parses and validates the create body the docker CLI and
  docker-py send (``Config`` fields at the top level, ``HostConfig`` beside them). Every bad
  value raises ``InvalidArgument`` (400) with dockerd's message where people grep for it
  ("Minimum memory limit allowed is 6MB", ``unknown capability: "CAP_FOO"``, ...). Checks that
  need the host or the image (CPUs that exist, the user in /etc/passwd) happen in step two.
* ``build_spec(container_id, req, image, rootfs, hostname=...)`` merges the request with the
  image config (Docker's rules: the request's Entrypoint replaces the image's and resets its
  Cmd; request Env over image Env; PATH, HOSTNAME and TERM as dockerd adds them) and returns
  the config.json dict: Docker's mounts, masked and read-only paths, 14 capabilities, default
  seccomp profile, devices cgroup allow-list, namespaces and resources. ``warnings`` (a list the
  caller passes) receives what dockerd would put in the create response's ``Warnings``, and what
  Berth changed on its own (an rlimit clamped to the host's hard limit, DESIGN.md).

Networks: NetworkMode "none", "bridge", "default" and user networks all get a network namespace
of their own, with only ``lo`` for now (connecting it to a bridge is issue 5); "host" shares the
host's; "container:<id>" joins the namespace whose path the engine passes in
``namespace_paths["network"]`` (likewise "container:<id>" for PidMode and IpcMode).

What this module does not do, because it owns no files: /etc/hostname, /etc/hosts,
/etc/resolv.conf bind mounts, volumes and binds (``HostConfig.Binds``/``Mounts`` stay in
``req.raw``), ``--init`` (``host_config.init`` is parsed, the engine decides), and creating the
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
import re
import resource
import stat
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from berth.engine.seccomp_default import default_seccomp_profile, from_docker_profile
from berth.errors import InvalidArgument
from berth.spec.defaults import CAPABILITIES, DEFAULT_PATH
from berth.spec.image import ContainerConfig, ImageConfig
from berth.spec.value import field, value

OCI_VERSION = "1.0.2-dev"

MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
CPU_PERIOD = 100_000  # the CFS period --cpus uses
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144

# Docker's default capability set (moby oci/caps/defaults.go), in Docker's order.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

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

# --ulimit names (go-units) and the rlimit each one sets.
ULIMITS = {
    "as": "RLIMIT_AS",
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
}
RLIM_INFINITY = 2**64 - 1  # how an unlimited rlimit reads in config.json

_MAX_ID = 2**31 - 1
# opposite pairs of mount flags; the later one wins when tmpfs options are merged
_FLAG_PAIRS = (
    ("ro", "rw"),
    ("exec", "noexec"),
    ("suid", "nosuid"),
    ("dev", "nodev"),
    ("atime", "noatime"),
    ("diratime", "nodiratime"),
    ("relatime", "norelatime"),
    ("strictatime", "nostrictatime"),
    ("sync", "async"),
)
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


# ---------------------------------------------------------------- reading the JSON body


def _go_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _bad_type(path: str, value: object, go_type: str) -> InvalidArgument:
    # dockerd's body decoding error, word for word
    return InvalidArgument(
        f"json: cannot unmarshal {_go_type(value)} into Go struct field {path} of type {go_type}"
    )


def _str(d: Mapping[str, Any], key: str, path: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _bad_type(f"{path}.{key}", v, "string")
    return v


def _bool(d: Mapping[str, Any], key: str, path: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad_type(f"{path}.{key}", v, "bool")
    return v


def _int(d: Mapping[str, Any], key: str, path: str, go_type: str = "int64") -> int:
    v = _opt_int(d, key, path, go_type)
    return 0 if v is None else v


def _opt_int(d: Mapping[str, Any], key: str, path: str, go_type: str = "int64") -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad_type(f"{path}.{key}", v, go_type)
    return v


def _strs(d: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    """A list of strings; a single string is accepted too (Docker's StrSlice)."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _bad_type(f"{path}.{key}", v, "[]string")
    return tuple(v)


def _str_map(d: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(s, str) for s in v.values()):
        raise _bad_type(f"{path}.{key}", v, "map[string]string")
    return dict(v)


def _objs(d: Mapping[str, Any], key: str, path: str, go_type: str) -> list[dict[str, Any]]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(o, dict) for o in v):
        raise _bad_type(f"{path}.{key}", v, go_type)
    return v


# ---------------------------------------------------------------- the request


@value
class Ulimit:
    name: str
    soft: int
    hard: int


@value
class DeviceMapping:
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str = "rwm"


@value
class HostConfig:
    """The part of ``HostConfig`` that shapes the container (the rest stays in ``raw``)."""

    network_mode: str = "default"
    pid_mode: str = ""
    ipc_mode: str = ""
    uts_mode: str = ""
    cgroupns_mode: str = ""
    privileged: bool = False
    readonly_rootfs: bool = False
    cap_add: tuple[str, ...] = ()  # normalized: CAP_* or "ALL"
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    seccomp_profile: str = ""  # "", "unconfined", "builtin" or the profile's JSON text
    tmpfs: tuple[tuple[str, str], ...] = ()  # (destination, options)
    shm_size: int = DEFAULT_SHM_SIZE
    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool = False
    nano_cpus: int = 0
    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None  # None: unlimited
    ulimits: tuple[Ulimit, ...] = ()
    blkio_weight: int = 0
    oom_score_adj: int = 0
    devices: tuple[DeviceMapping, ...] = ()
    group_add: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    auto_remove: bool = False
    init: bool = False


@value
class CreateRequest:
    """The ``POST /containers/create`` body, parsed and validated (``raw`` is the body itself)."""

    image: str
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    stop_signal: str = ""
    stop_timeout: int | None = None
    network_disabled: bool = False
    console_size: tuple[int, int] | None = None  # [height, width], sent with -it (API >= 1.42)
    host_config: HostConfig = field(default_factory=HostConfig)
    raw: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_json(body: dict[str, Any]) -> CreateRequest:
        """Parse the create body; ``InvalidArgument`` (400) with dockerd's messages."""
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal the body into a container config")
        p = "Config"
        image = _str(body, "Image", p)
        if not image:
            raise InvalidArgument("Config.Image: an image is required")
        hc_raw = body.get("HostConfig")
        if hc_raw is not None and not isinstance(hc_raw, dict):
            raise _bad_type("ContainerConfigWrapper.HostConfig", hc_raw, "container.HostConfig")
        working_dir = _str(body, "WorkingDir", p)
        if working_dir:
            if not working_dir.startswith("/"):
                raise InvalidArgument(
                    f"the working directory '{working_dir}' is invalid, "
                    "it needs to be an absolute path"
                )
            working_dir = posixpath.normpath(working_dir)
        stop_timeout = _opt_int(body, "StopTimeout", p, "int")
        hostname = _str(body, "Hostname", p)
        if hostname and not _HOSTNAME.fullmatch(hostname):
            raise InvalidArgument(f"invalid hostname format: {hostname}")
        console = _console_size(body.get("HostConfig") or {})
        return CreateRequest(
            image=image,
            cmd=_strs(body, "Cmd", p),
            entrypoint=_strs(body, "Entrypoint", p),
            env=_strs(body, "Env", p) or (),
            working_dir=working_dir,
            user=_str(body, "User", p),
            hostname=hostname,
            domainname=_str(body, "Domainname", p),
            labels=_str_map(body, "Labels", p),
            tty=_bool(body, "Tty", p),
            open_stdin=_bool(body, "OpenStdin", p),
            stdin_once=_bool(body, "StdinOnce", p),
            attach_stdin=_bool(body, "AttachStdin", p),
            attach_stdout=_bool(body, "AttachStdout", p),
            attach_stderr=_bool(body, "AttachStderr", p),
            stop_signal=_str(body, "StopSignal", p),
            stop_timeout=stop_timeout,
            network_disabled=_bool(body, "NetworkDisabled", p),
            console_size=console,
            host_config=_host_config(hc_raw or {}),
            raw=body,
        )


def _host_config(d: dict[str, Any]) -> HostConfig:
    p = "HostConfig"
    memory = _int(d, "Memory", p)
    swap = _int(d, "MemorySwap", p)
    reservation = _int(d, "MemoryReservation", p)
    if memory != 0 and memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap > 0 and memory == 0:
        raise InvalidArgument(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    if memory > 0 and swap > 0 and swap < memory:
        raise InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if reservation != 0 and reservation < MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise InvalidArgument(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )
    swappiness = _opt_int(d, "MemorySwappiness", p)
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise InvalidArgument(
            f"Invalid value: {swappiness}, valid memory swappiness range is 0-100"
        )
    if swappiness == -1:
        swappiness = None

    nano = _int(d, "NanoCpus", p)
    period = _int(d, "CpuPeriod", p)
    quota = _int(d, "CpuQuota", p)
    if nano > 0 and period > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and quota > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano < 0:
        raise _cpu_range(len(os.sched_getaffinity(0)))
    if period != 0 and not 1000 <= period <= 1_000_000:
        raise InvalidArgument(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if 0 < quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    shares = _int(d, "CpuShares", p)
    if shares < 0:
        raise InvalidArgument(f"invalid CPU shares ({shares}): value must be a positive integer")
    cpus = _str(d, "CpusetCpus", p)
    if cpus:
        _parse_cpuset(cpus, f"Invalid value {cpus} for cpuset cpus")
    mems = _str(d, "CpusetMems", p)
    if mems:
        _parse_cpuset(mems, f"Invalid value {mems} for cpuset mems")
    blkio = _int(d, "BlkioWeight", p, "uint16")
    if blkio != 0 and not 10 <= blkio <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    oom = _int(d, "OomScoreAdj", p, "int")
    if not -1000 <= oom <= 1000:
        raise InvalidArgument(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    shm = _int(d, "ShmSize", p)
    if shm < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    pids = _opt_int(d, "PidsLimit", p)

    no_new_privs, seccomp = _security_opts(_strs(d, "SecurityOpt", p) or ())
    init = d.get("Init")
    if init is not None and not isinstance(init, bool):
        raise _bad_type(f"{p}.Init", init, "bool")
    return HostConfig(
        network_mode=_str(d, "NetworkMode", p) or "default",
        pid_mode=_namespace_mode(_str(d, "PidMode", p), "pid"),
        ipc_mode=_namespace_mode(_str(d, "IpcMode", p), "ipc"),
        uts_mode=_namespace_mode(_str(d, "UTSMode", p), "uts"),
        cgroupns_mode=_cgroupns_mode(_str(d, "CgroupnsMode", p)),
        privileged=_bool(d, "Privileged", p),
        readonly_rootfs=_bool(d, "ReadonlyRootfs", p),
        cap_add=_normalize_caps(_strs(d, "CapAdd", p) or ()),
        cap_drop=_normalize_caps(_strs(d, "CapDrop", p) or ()),
        no_new_privileges=no_new_privs,
        seccomp_profile=seccomp,
        tmpfs=_tmpfs(_str_map(d, "Tmpfs", p)),
        shm_size=shm or DEFAULT_SHM_SIZE,
        memory=memory,
        memory_swap=swap,
        memory_reservation=reservation,
        memory_swappiness=swappiness,
        oom_kill_disable=_bool(d, "OomKillDisable", p),
        nano_cpus=nano,
        cpu_shares=shares,
        cpu_quota=quota,
        cpu_period=period,
        cpuset_cpus=cpus,
        cpuset_mems=mems,
        pids_limit=pids if pids is not None and pids > 0 else None,
        ulimits=_ulimits(_objs(d, "Ulimits", p, "[]*units.Ulimit")),
        blkio_weight=blkio,
        oom_score_adj=oom,
        devices=_devices(_objs(d, "Devices", p, "[]container.DeviceMapping")),
        group_add=_strs(d, "GroupAdd", p) or (),
        sysctls=_sysctls(_str_map(d, "Sysctls", p)),
        auto_remove=_bool(d, "AutoRemove", p),
        init=bool(init),
    )


_HOSTNAME = re.compile(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def _console_size(hc: Any) -> tuple[int, int] | None:
    size = hc.get("ConsoleSize") if isinstance(hc, dict) else None
    if size is None:
        return None
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size)
    ):
        raise _bad_type("HostConfig.ConsoleSize", size, "[2]uint")
    if size == [0, 0]:
        return None
    return size[0], size[1]


# the sysctls that live in a container's own namespaces (moby's opts.ValidateSysctl)
_SYSCTLS = (
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
)


def _sysctls(sysctls: dict[str, str]) -> dict[str, str]:
    for key in sysctls:
        if key in _SYSCTLS or key.startswith(("fs.mqueue.", "net.")):
            continue
        raise InvalidArgument(f"sysctl '{key}' is not whitelisted")
    return sysctls


def _namespace_mode(mode: str, kind: str) -> str:
    allowed = {"pid": ("", "host"), "uts": ("", "host")}.get(
        kind, ("", "host", "private", "shareable", "none")
    )
    if mode in allowed:
        return mode
    if kind != "uts" and mode.startswith("container:") and len(mode) > len("container:"):
        return mode
    raise InvalidArgument(f"invalid {kind.upper()} mode: {mode}")


def _cgroupns_mode(mode: str) -> str:
    if mode not in ("", "host", "private"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {mode}")
    return mode


def _normalize_caps(caps: Iterable[str]) -> tuple[str, ...]:
    """Docker's NormalizeLegacyCapabilities: upper case, CAP_ prefix, "ALL", known names."""
    out: list[str] = []
    for cap in caps:
        name = cap.strip().upper()
        if name != "ALL" and not name.startswith("CAP_"):
            name = "CAP_" + name
        if name != "ALL" and name not in CAPABILITIES:
            raise InvalidArgument(f"unknown capability: {json.dumps(name)}")
        if name not in out:
            out.append(name)
    return tuple(out)


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _security_opts(opts: Iterable[str]) -> tuple[bool, str]:
    """dockerd's parseSecurityOpt for what Berth supports (no AppArmor or SELinux here)."""
    no_new_privs, seccomp = False, ""
    for opt in opts:
        if opt == "no-new-privileges":
            no_new_privs = True
            continue
        if opt == "disable":  # label=disable without SELinux: nothing to do
            continue
        if "=" in opt:
            key, val = opt.split("=", 1)
        elif ":" in opt:
            key, val = opt.split(":", 1)
        else:
            raise InvalidArgument(f"invalid --security-opt 1: {json.dumps(opt)}")
        if key == "no-new-privileges":
            if val in _TRUE:
                no_new_privs = True
            elif val in _FALSE:
                no_new_privs = False
            else:
                raise InvalidArgument(f"invalid --security-opt 2: {json.dumps(opt)}")
        elif key == "seccomp":
            if val not in ("unconfined", "builtin"):
                _check_seccomp_json(val)
            seccomp = val
        elif key in ("label", "apparmor"):
            continue  # no LSM on these hosts: accepted and ignored, as dockerd without one
        else:
            raise InvalidArgument(f"invalid --security-opt 2: {json.dumps(opt)}")
    return no_new_privs, seccomp


def _check_seccomp_json(text: str) -> None:
    try:
        profile = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"Decoding seccomp profile failed: {e}") from e
    if not isinstance(profile, dict):
        raise InvalidArgument("Decoding seccomp profile failed: not a JSON object")
    _seccomp_from_docker(profile)  # raises on what cannot be converted


def _tmpfs(tmpfs: dict[str, str]) -> tuple[tuple[str, str], ...]:
    out = []
    for dest, options in tmpfs.items():
        if not dest.startswith("/"):
            raise InvalidArgument(
                'invalid mount config for type "tmpfs": '
                f"invalid mount path: '{dest}' mount path must be absolute"
            )
        _merge_tmpfs_options(options.split(","))  # Invalid tmpfs option -> 400 now
        out.append((posixpath.normpath(dest), options))
    return tuple(out)


def _ulimits(items: list[dict[str, Any]]) -> tuple[Ulimit, ...]:
    out: list[Ulimit] = []
    for i, d in enumerate(items):
        p = f"HostConfig.Ulimits[{i}]"
        name = _str(d, "Name", p)
        if name not in ULIMITS:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        soft, hard = _int(d, "Soft", p), _int(d, "Hard", p)
        if (RLIM_INFINITY if soft < 0 else soft) > (RLIM_INFINITY if hard < 0 else hard):
            raise InvalidArgument(
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )
        out.append(Ulimit(name, soft, hard))
    return tuple(out)


def _devices(items: list[dict[str, Any]]) -> tuple[DeviceMapping, ...]:
    out: list[DeviceMapping] = []
    for i, d in enumerate(items):
        p = f"HostConfig.Devices[{i}]"
        host = _str(d, "PathOnHost", p)
        if not host:
            raise InvalidArgument(f"{p}.PathOnHost: a device path is required")
        inside = _str(d, "PathInContainer", p) or host
        perms = _str(d, "CgroupPermissions", p) or "rwm"
        if not inside.startswith("/"):
            raise InvalidArgument(f"{inside} is not an absolute path")
        if set(perms) - set("rwm"):
            raise InvalidArgument(f"invalid device cgroup permissions: {perms}")
        out.append(DeviceMapping(host, inside, perms))
    return tuple(out)


def _parse_cpuset(text: str, error: str) -> frozenset[int]:
    """ "0-2,4" -> {0, 1, 2, 4}; ``error`` when it is not a list of numbers and ranges."""
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise InvalidArgument(error)
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise InvalidArgument(error)
        out.update(range(first, last + 1))
    return frozenset(out)


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
    if annotations:
        spec["annotations"] = dict(annotations)

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


_TMPFS_FLAGS = {o for pair in _FLAG_PAIRS for o in pair} | set(_PROPAGATIONS) | {
    "dirsync", "remount", "mand", "nomand", "bind", "rbind", "unbindable", "runbindable"
}  # fmt: skip
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")


def _merge_tmpfs_options(options: Iterable[str]) -> list[str]:
    """mount.MergeTmpfsOptions: a later flag overrides its opposite, a later key=value its key."""
    out: list[str] = []
    for opt in options:
        if not opt or opt == "defaults":
            continue
        key = opt.split("=", 1)[0]
        if opt not in _TMPFS_FLAGS and ("=" not in opt or key not in _TMPFS_DATA):
            shown = " ".join(json.dumps(part) for part in opt.split("=", 1))
            raise InvalidArgument(f"Invalid tmpfs option [{shown}]")
        opposite = [o for pair in _FLAG_PAIRS if opt in pair for o in pair if o != opt] + (
            [p for p in _PROPAGATIONS if p != opt] if opt in _PROPAGATIONS else []
        )
        out = [
            o
            for o in out
            if o != opt and o not in opposite and ("=" not in o or o.split("=", 1)[0] != key)
        ]
        out.append(opt)
    return out


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


def _cpu_range(ncpu: int) -> InvalidArgument:
    return InvalidArgument(
        f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
    )


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


def _seccomp_from_docker(
    profile: dict[str, Any], caps: Iterable[str] | None = None
) -> dict[str, Any]:
    """A Docker seccomp profile (``--security-opt seccomp=file.json``) as the OCI section."""
    return from_docker_profile(profile, caps)


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
