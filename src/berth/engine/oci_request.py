"""The body of ``POST /containers/create``, parsed and validated as dockerd does.

Rules:

* ``CreateRequest.from_json(body)`` is the one way in. It reads the body the docker CLI and
  docker-py send (``Config`` fields at the top level, ``HostConfig`` beside them) into frozen
  values (``CreateRequest``, ``HostConfig``, ``Ulimit``, ``DeviceMapping``); the raw body stays
  in ``req.raw`` for what is parsed elsewhere (binds, mounts, networking).
* Pure: no daemon state and no files of its own. Checks that need the host or the image (CPUs
  and memory nodes that exist, rlimits above the hard limit, the user in /etc/passwd) belong to
  ``oci_config.build_spec``; the one host fact read here is dockerd's own: a negative NanoCpus
  is refused with the range of CPUs this process may run on.
* Every bad value raises ``InvalidArgument`` (400) with dockerd's message where people grep for
  it ("Minimum memory limit allowed is 6MB", ``unknown capability: "CAP_FOO"``, a Go-style
  "cannot unmarshal" for a JSON value of the wrong type, ...).
* A value is validated here with the same helper ``build_spec`` later uses on it (tmpfs
  options, a seccomp profile), so create refuses exactly what start would fail on.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from berth.engine.seccomp_default import from_docker_profile
from berth.errors import InvalidArgument
from berth.runtime.rootfs import NAMESPACED_SYSCTLS  # the ones moby's ValidateSysctl allows
from berth.spec.defaults import CAPABILITIES
from berth.spec.value import field, value

MIN_MEMORY = 6 * 1024 * 1024  # dockerd's linuxMinMemory
DEFAULT_SHM_SIZE = 64 * 1024 * 1024


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


def _console_size(hc: Any, field: str = "HostConfig.ConsoleSize") -> tuple[int, int] | None:
    size = hc.get("ConsoleSize") if isinstance(hc, dict) else None
    if size is None:
        return None
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size)
    ):
        raise _bad_type(field, size, "[2]uint")
    if size == [0, 0]:
        return None
    return size[0], size[1]


def _sysctls(sysctls: dict[str, str]) -> dict[str, str]:
    for key in sysctls:
        if key in NAMESPACED_SYSCTLS or key.startswith(("fs.mqueue.", "net.")):
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


# ---------------------------------------------------------------- shared with build_spec


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


def _cpu_range(ncpu: int) -> InvalidArgument:
    return InvalidArgument(
        f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
    )


def _seccomp_from_docker(
    profile: dict[str, Any], caps: Iterable[str] | None = None
) -> dict[str, Any]:
    """A Docker seccomp profile (``--security-opt seccomp=file.json``) as the OCI section."""
    return from_docker_profile(profile, caps)
