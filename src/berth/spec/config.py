"""The OCI runtime configuration (config.json, runtime spec 1.2) as frozen value classes.

Rules: ``Spec.from_json`` is the one way in; it checks types and required fields against the
spec's schema and raises ``InvalidArgument`` naming the dotted field path. Field names are the
spec's, in snake_case. Semantic checks that need the kernel (capability names, namespace paths)
belong to the runtime, not here.
"""

from __future__ import annotations

from berth.errors import InvalidArgument
from berth.spec import fields as f
from berth.spec import jsonio
from berth.spec.value import field, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
HOOK_KINDS = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)
PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable")
SECCOMP_OPS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)


def _choice(value: str, allowed: tuple[str, ...], path: str) -> str:
    if value not in allowed:
        raise InvalidArgument(
            f"{path}: {value!r} is not one of {', '.join(a for a in allowed if a)}"
        )
    return value


@value
class Root:
    path: str
    readonly: bool = False

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Root:
        return Root(path=f.string(d, "path", p), readonly=f.boolean(d, "readonly", p))


@value
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()

    @staticmethod
    def from_json(d: f.Obj, p: str) -> User:
        return User(
            uid=f.integer(d, "uid", p, minimum=0, maximum=2**32 - 1),
            gid=f.integer(d, "gid", p, minimum=0, maximum=2**32 - 1),
            umask=f.opt_int(d, "umask", p, minimum=0, maximum=0o7777),
            additional_gids=f.ints(d, "additionalGids", p, minimum=0, maximum=2**32 - 1),
        )


@value
class Capabilities:
    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Capabilities:
        return Capabilities(*(f.strings(d, k, p) for k in Capabilities.SETS))

    SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


@value
class Rlimit:
    type: str
    hard: int
    soft: int

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Rlimit:
        rtype = f.string(d, "type", p)
        if not rtype.startswith("RLIMIT_"):
            raise InvalidArgument(f"{p}.type: {rtype!r} is not an RLIMIT_* name")
        return Rlimit(
            type=rtype,
            hard=f.integer(d, "hard", p, minimum=0, maximum=2**64 - 1),
            soft=f.integer(d, "soft", p, minimum=0, maximum=2**64 - 1),
        )


@value
class Process:
    args: tuple[str, ...]
    cwd: str
    env: tuple[str, ...] = ()
    terminal: bool = False
    console_height: int = 0
    console_width: int = 0
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    apparmor_profile: str | None = None
    selinux_label: str | None = None

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Process:
        args = f.strings(d, "args", p)
        if not args:
            raise InvalidArgument(f"{p}.args: must name the program to run")
        cwd = f.string(d, "cwd", p)
        if not cwd.startswith("/"):
            raise InvalidArgument(f"{p}.cwd: {cwd!r} must be an absolute path")
        env = f.strings(d, "env", p)
        for i, entry in enumerate(env):
            if "=" not in entry:
                raise InvalidArgument(f"{p}.env[{i}]: {entry!r} is not NAME=value")
        size = f.opt_obj(d, "consoleSize", p) or {}
        user = f.opt_obj(d, "user", p)
        caps = f.opt_obj(d, "capabilities", p)
        return Process(
            args=args,
            cwd=cwd,
            env=env,
            terminal=f.boolean(d, "terminal", p),
            console_height=f.integer(size, "height", f"{p}.consoleSize", default=0, minimum=0),
            console_width=f.integer(size, "width", f"{p}.consoleSize", default=0, minimum=0),
            user=User.from_json(user, f"{p}.user") if user is not None else User(),
            capabilities=None
            if caps is None
            else Capabilities.from_json(caps, f"{p}.capabilities"),
            rlimits=f.items(d, "rlimits", p, Rlimit.from_json),
            no_new_privileges=f.boolean(d, "noNewPrivileges", p),
            oom_score_adj=f.opt_int(d, "oomScoreAdj", p, minimum=-1000, maximum=1000),
            apparmor_profile=f.opt_string(d, "apparmorProfile", p),
            selinux_label=f.opt_string(d, "selinuxLabel", p),
        )


@value
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Mount:
        dest = f.string(d, "destination", p)
        if not dest:
            raise InvalidArgument(f"{p}.destination: must not be empty")
        return Mount(
            destination=dest if dest.startswith("/") else "/" + dest,  # relative: from / (1.2)
            type=f.opt_string(d, "type", p) or "",
            source=f.opt_string(d, "source", p) or "",
            options=f.strings(d, "options", p),
        )


@value
class Hook:
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Hook:
        path = f.string(d, "path", p)
        if not path.startswith("/"):
            raise InvalidArgument(f"{p}.path: {path!r} must be an absolute path")
        return Hook(
            path=path,
            args=f.strings(d, "args", p),
            env=f.strings(d, "env", p),
            timeout=f.opt_int(d, "timeout", p, minimum=1),
        )


@value
class Hooks:
    by_kind: dict[str, tuple[Hook, ...]]

    def __getitem__(self, kind: str) -> tuple[Hook, ...]:
        return self.by_kind.get(kind, ())

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Hooks:
        unknown = sorted(set(d) - set(HOOK_KINDS))
        if unknown:
            raise InvalidArgument(f"{p}: unknown hook kind {unknown[0]!r}")
        return Hooks({kind: f.items(d, kind, p, Hook.from_json) for kind in HOOK_KINDS})


@value
class Namespace:
    type: str
    path: str = ""

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Namespace:
        return Namespace(
            type=_choice(f.string(d, "type", p), NAMESPACE_TYPES, f"{p}.type"),
            path=f.opt_string(d, "path", p) or "",
        )


@value
class IDMapping:
    container_id: int
    host_id: int
    size: int

    @staticmethod
    def from_json(d: f.Obj, p: str) -> IDMapping:
        return IDMapping(
            container_id=f.integer(d, "containerID", p, minimum=0),
            host_id=f.integer(d, "hostID", p, minimum=0),
            size=f.integer(d, "size", p, minimum=1),
        )


@value
class Device:
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Device:
        dtype = _choice(f.string(d, "type", p), ("c", "b", "u", "p"), f"{p}.type")
        needs_numbers = dtype != "p"
        return Device(
            path=f.string(d, "path", p),
            type=dtype,
            major=f.integer(d, "major", p) if needs_numbers else 0,
            minor=f.integer(d, "minor", p) if needs_numbers else 0,
            file_mode=f.opt_int(d, "fileMode", p, minimum=0, maximum=0o7777),
            uid=f.opt_int(d, "uid", p, minimum=0),
            gid=f.opt_int(d, "gid", p, minimum=0),
        )


@value
class DeviceRule:
    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"

    @staticmethod
    def from_json(d: f.Obj, p: str) -> DeviceRule:
        access = f.opt_string(d, "access", p) or "rwm"
        if not access or set(access) - set("rwm"):
            raise InvalidArgument(f"{p}.access: {access!r} must be letters of 'rwm'")
        return DeviceRule(
            allow=f.boolean(d, "allow", p),
            type=_choice(f.opt_string(d, "type", p) or "a", ("a", "c", "b"), f"{p}.type"),
            major=f.opt_int(d, "major", p),
            minor=f.opt_int(d, "minor", p),
            access=access,
        )


@value
class Memory:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool = False


@value
class CPU:
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str = ""
    mems: str = ""
    idle: int | None = None


@value
class Resources:
    devices: tuple[DeviceRule, ...] = ()
    memory: Memory | None = None
    cpu: CPU | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None
    blkio_leaf_weight: int | None = None
    unified: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Resources:
        mem = f.opt_obj(d, "memory", p)
        cpu = f.opt_obj(d, "cpu", p)
        pids = f.opt_obj(d, "pids", p)
        blkio = f.opt_obj(d, "blockIO", p)
        mp, cp = f"{p}.memory", f"{p}.cpu"
        return Resources(
            devices=f.items(d, "devices", p, DeviceRule.from_json),
            memory=None
            if mem is None
            else Memory(
                limit=f.opt_int(mem, "limit", mp),
                reservation=f.opt_int(mem, "reservation", mp),
                swap=f.opt_int(mem, "swap", mp),
                kernel=f.opt_int(mem, "kernel", mp),
                kernel_tcp=f.opt_int(mem, "kernelTCP", mp),
                swappiness=f.opt_int(mem, "swappiness", mp, minimum=0, maximum=100),
                disable_oom_killer=f.boolean(mem, "disableOOMKiller", mp),
            ),
            cpu=None
            if cpu is None
            else CPU(
                shares=f.opt_int(cpu, "shares", cp, minimum=0),
                quota=f.opt_int(cpu, "quota", cp),
                burst=f.opt_int(cpu, "burst", cp, minimum=0),
                period=f.opt_int(cpu, "period", cp, minimum=0),
                realtime_runtime=f.opt_int(cpu, "realtimeRuntime", cp),
                realtime_period=f.opt_int(cpu, "realtimePeriod", cp, minimum=0),
                cpus=f.opt_string(cpu, "cpus", cp) or "",
                mems=f.opt_string(cpu, "mems", cp) or "",
                idle=f.opt_int(cpu, "idle", cp),
            ),
            pids_limit=None if pids is None else f.integer(pids, "limit", f"{p}.pids"),
            blkio_weight=None
            if blkio is None
            else f.opt_int(blkio, "weight", f"{p}.blockIO", minimum=10, maximum=1000),
            blkio_leaf_weight=None
            if blkio is None
            else f.opt_int(blkio, "leafWeight", f"{p}.blockIO", minimum=10, maximum=1000),
            unified=f.string_map(d, "unified", p),
        )


@value
class SeccompArg:
    index: int
    value: int
    op: str
    value_two: int = 0

    @staticmethod
    def from_json(d: f.Obj, p: str) -> SeccompArg:
        return SeccompArg(
            index=f.integer(d, "index", p, minimum=0, maximum=5),
            value=f.integer(d, "value", p, minimum=0, maximum=2**64 - 1),
            value_two=f.integer(d, "valueTwo", p, default=0, minimum=0, maximum=2**64 - 1),
            op=_choice(f.string(d, "op", p), SECCOMP_OPS, f"{p}.op"),
        )


@value
class SeccompSyscall:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[SeccompArg, ...] = ()

    @staticmethod
    def from_json(d: f.Obj, p: str) -> SeccompSyscall:
        names = f.strings(d, "names", p)
        if not names:
            raise InvalidArgument(f"{p}.names: must name at least one system call")
        return SeccompSyscall(
            names=names,
            action=f.string(d, "action", p),
            errno_ret=f.opt_int(d, "errnoRet", p, minimum=0),
            args=f.items(d, "args", p, SeccompArg.from_json),
        )


@value
class Seccomp:
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    listener_path: str = ""
    syscalls: tuple[SeccompSyscall, ...] = ()

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Seccomp:
        return Seccomp(
            default_action=f.string(d, "defaultAction", p),
            default_errno_ret=f.opt_int(d, "defaultErrnoRet", p, minimum=0),
            architectures=f.strings(d, "architectures", p),
            flags=f.strings(d, "flags", p),
            listener_path=f.opt_string(d, "listenerPath", p) or "",
            syscalls=f.items(d, "syscalls", p, SeccompSyscall.from_json),
        )


@value
class Linux:
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    cgroups_path: str = ""
    resources: Resources | None = None
    rootfs_propagation: str = ""
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict)
    seccomp: Seccomp | None = None
    mount_label: str = ""

    def namespace(self, ns_type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == ns_type), None)

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Linux:
        namespaces = f.items(d, "namespaces", p, Namespace.from_json)
        seen: set[str] = set()
        for i, ns in enumerate(namespaces):
            if ns.type in seen:
                raise InvalidArgument(f"{p}.namespaces[{i}]: duplicate namespace {ns.type!r}")
            seen.add(ns.type)
        resources = f.opt_obj(d, "resources", p)
        seccomp = f.opt_obj(d, "seccomp", p)
        return Linux(
            namespaces=namespaces,
            uid_mappings=f.items(d, "uidMappings", p, IDMapping.from_json),
            gid_mappings=f.items(d, "gidMappings", p, IDMapping.from_json),
            devices=f.items(d, "devices", p, Device.from_json),
            cgroups_path=f.opt_string(d, "cgroupsPath", p) or "",
            resources=Resources.from_json(resources, f"{p}.resources") if resources else None,
            rootfs_propagation=_choice(
                f.opt_string(d, "rootfsPropagation", p) or "",
                PROPAGATIONS,
                f"{p}.rootfsPropagation",
            ),
            masked_paths=f.strings(d, "maskedPaths", p),
            readonly_paths=f.strings(d, "readonlyPaths", p),
            sysctl=f.string_map(d, "sysctl", p),
            seccomp=_parsed_seccomp(seccomp, f"{p}.seccomp") if seccomp else None,
            mount_label=f.opt_string(d, "mountLabel", p) or "",
        )


@value
class Spec:
    oci_version: str
    root: Root | None = None
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks = field(default_factory=lambda: Hooks({}))
    annotations: dict[str, str] = field(default_factory=dict)
    linux: Linux = field(default_factory=Linux)

    @staticmethod
    def from_json(data: Any) -> Spec:
        d = f.obj(data, "config")
        version = f.string(d, "ociVersion", "")  # not checked further, as runc
        root = f.opt_obj(d, "root", "")
        process = f.opt_obj(d, "process", "")
        hooks = f.opt_obj(d, "hooks", "")
        linux = f.opt_obj(d, "linux", "")
        return Spec(
            oci_version=version,
            root=Root.from_json(root, "root") if root is not None else None,
            process=Process.from_json(process, "process") if process is not None else None,
            hostname=f.opt_string(d, "hostname", "") or "",
            domainname=f.opt_string(d, "domainname", "") or "",
            mounts=f.items(d, "mounts", "", Mount.from_json),
            hooks=Hooks.from_json(hooks, "hooks") if hooks is not None else Hooks({}),
            annotations=f.string_map(d, "annotations", ""),
            linux=Linux.from_json(linux, "linux") if linux is not None else Linux(),
        )


_SECCOMP_PARSED: dict[str, Seccomp] = {}
SECCOMP_PARSED_KEPT = 16


def _parsed_seccomp(raw: f.Obj, p: str) -> Seccomp:
    """``Seccomp.from_json``, kept for the last few profiles by their JSON text: a long-lived
    caller (berthd's supervisor) parses the same ~360-rule default profile for every
    container, and the same object also makes the runtime's compiled-filter cache a cheap
    lookup (its hash is kept on the value)."""
    key = jsonio.dumps(raw)
    parsed = _SECCOMP_PARSED.get(key)
    if parsed is None:
        parsed = Seccomp.from_json(raw, p)
        if len(_SECCOMP_PARSED) >= SECCOMP_PARSED_KEPT:
            del _SECCOMP_PARSED[next(iter(_SECCOMP_PARSED))]
        _SECCOMP_PARSED[key] = parsed
    return parsed
