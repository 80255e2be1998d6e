"""Berth's default seccomp profile: an allow-list that blocks what Docker's default blocks.

The profile is an OCI ``linux.seccomp`` section: ``defaultAction`` SCMP_ACT_ERRNO with errno 1
(EPERM), architectures x86_64 + x86 + x32 (on x86_64 hosts; the host's family elsewhere), and
rules that allow the system calls ordinary programs make. What stays blocked, as in Docker's
profile (moby ``profiles/seccomp/default.json``), unless the container holds the capability
that makes the call legitimate:

* kernel modules (init_module, finit_module, delete_module) — CAP_SYS_MODULE
* kexec_load, kexec_file_load, reboot — reboot with CAP_SYS_BOOT only; kexec never
* clock changes (settimeofday, stime, clock_settime) — CAP_SYS_TIME
* mount, umount2, pivot_root, new mount API, setns, unshare, namespaces in clone — CAP_SYS_ADMIN
* bpf (CAP_SYS_ADMIN or CAP_BPF), perf_event_open (CAP_SYS_ADMIN or CAP_PERFMON)
* keyctl, add_key, request_key (the kernel keyring is not namespaced), userfaultfd
* acct (CAP_SYS_PACCT), swapon/swapoff, quotactl, syslog, lookup_dcookie (CAP_SYS_ADMIN)
* open_by_handle_at (CAP_DAC_READ_SEARCH), name_to_handle_at (CAP_SYS_ADMIN)
* personality except the harmless personas, vm86, iopl/ioperm (CAP_SYS_RAWIO)
* kcmp, pidfd_getfd, process_madvise (CAP_SYS_PTRACE); ptrace and process_vm_readv/writev
  are allowed, as Docker allows them on kernels >= 4.8 (seccomp is re-checked after a
  tracer's changes; the kernel's ptrace access checks still apply)
* socket(AF_VSOCK); adjtimex and clock_adjtime stay allowed, as in Docker's profile: they
  read the clock's state, and the kernel refuses any change without CAP_SYS_TIME
* clone3 returns ENOSYS (its flags live in memory a filter cannot read), so libc falls back
  to clone, whose flags are checked; with CAP_SYS_ADMIN both are allowed.

The system call lists below are Berth's own grouping (by what the calls do), checked against
the behaviour of Docker's profile, not a copy of its file.
"""

from __future__ import annotations

import errno
import platform
from collections.abc import Iterable
from typing import Any

from berth.errors import InvalidArgument

EPERM = errno.EPERM

# namespace flags of clone(2): CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
CLONE_NAMESPACE_FLAGS |= 0x20000000 | 0x40000000

# personality(2) values that change nothing dangerous: PER_LINUX, PER_LINUX32,
# UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (a query)
SAFE_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_FILES = """
access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchdir fchmod fchmodat fchown fchown32
fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents getdents64
getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch ioctl lchown lchown32
lgetxattr link linkat listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
mkdir mkdirat mknod mknodat newfstatat open openat openat2 pread64 preadv preadv2 pwrite64
pwritev pwritev2 read readahead readlink readlinkat readv removexattr rename renameat renameat2
rmdir sendfile sendfile64 setxattr splice stat stat64 statfs statfs64 statx symlink symlinkat
sync sync_file_range syncfs tee truncate truncate64 umask unlink unlinkat utime utimensat
utimensat_time64 utimes vmsplice write writev fanotify_mark
"""
_MEMORY = """
brk madvise membarrier memfd_create mincore mlock mlock2 mlockall mmap mmap2 mprotect mremap
msync munlock munlockall munmap remap_file_pages
"""
_PROCESSES = """
arch_prctl capget capset execve execveat exit exit_group fork getcpu getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getpgid getpgrp getpid getppid getpriority
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
get_thread_area gettid getuid getuid32 ioprio_get ioprio_set kill modify_ldt pidfd_open
pidfd_send_signal prctl prlimit64 restart_syscall rseq sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp setfsgid setfsgid32 setfsuid setfsuid32
setgid setgid32 setgroups setgroups32 setpgid setpriority setregid setregid32 setresgid
setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid
set_thread_area set_tid_address setuid setuid32 tgkill tkill ugetrlimit uname vfork wait4
waitid waitpid sysinfo times capget
"""
_SIGNALS_AND_TIME = """
alarm clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 getitimer gettimeofday nanosleep pause rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo setitimer sigaltstack signalfd signalfd4 sigprocmask
sigreturn time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 adjtimex clock_adjtime clock_adjtime64
"""
_EVENTS_AND_IPC = """
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 futex futex_time64 futex_waitv io_cancel io_destroy
io_getevents io_pgetevents io_pgetevents_time64 io_setup io_submit io_uring_enter
io_uring_register io_uring_setup ipc mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd
pipe pipe2 poll ppoll ppoll_time64 pselect6 pselect6_time64 select _newselect semctl semget
semop semtimedop semtimedop_time64 shmat shmctl shmdt shmget getrandom
"""
_NETWORK = """
accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom recvmmsg
recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown socketcall
socketpair
"""
# newer calls that grant nothing the process could not already do
_CONFINING = """
landlock_add_rule landlock_create_ruleset landlock_restrict_self memfd_secret pkey_alloc
pkey_free pkey_mprotect process_mrelease
"""
# ptrace and reading/writing another process's memory: seccomp is re-checked after a tracer's
# changes since Linux 4.8, so Docker allows them (the kernel's own ptrace checks still apply)
_TRACING = "ptrace process_vm_readv process_vm_writev"
AF_VSOCK = 40

# calls a capability makes legitimate, allowed only when the container holds it
BY_CAPABILITY: dict[str, tuple[str, ...]] = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "name_to_handle_at",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": (
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}

# never allowed by the default profile, whatever the capabilities (documentation and tests)
ALWAYS_BLOCKED = (
    "add_key",
    "keyctl",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "userfaultfd",
    "swapon",
    "swapoff",
    "pivot_root",
    "vm86",
    "vm86old",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
)

# Docker's default capability set (moby oci/caps/defaults.go), in Docker's order; oci_config
# grants it and the profile opens the system calls it needs.
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


def allowed_unconditionally() -> tuple[str, ...]:
    """The system calls every container may make, whatever its capabilities."""
    names: list[str] = []
    groups = (_FILES, _MEMORY, _PROCESSES, _SIGNALS_AND_TIME, _EVENTS_AND_IPC, _NETWORK)
    for group in (*groups, _CONFINING, _TRACING):
        names.extend(group.split())
    return tuple(sorted(set(names)))


def architectures(machine: str | None = None) -> list[str]:
    machine = machine or platform.machine()
    return {
        "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "ppc64le": ["SCMP_ARCH_PPC64LE"],
        "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    }.get(machine, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])


def _allow(names: Iterable[str], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def default_seccomp_profile(
    capabilities: Iterable[str] | None = None, machine: str | None = None
) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` section for a container holding ``capabilities``.

    ``capabilities`` defaults to Docker's 14; ``machine`` to this host's (``uname -m``).
    Returns a fresh dict.
    """
    caps = set(DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    syscalls: list[dict[str, Any]] = [_allow(allowed_unconditionally())]
    # sockets of every family but vsock (a channel to the hypervisor, not namespaced)
    syscalls.append(_allow(["socket"], [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]))
    syscalls.extend(
        _allow(["personality"], [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}])
        for v in SAFE_PERSONAS
    )
    for cap, names in BY_CAPABILITY.items():
        if cap in caps:
            syscalls.append(_allow(names))
    if "CAP_SYS_ADMIN" not in caps:
        # clone without namespace flags (x86_64 and x86: the flags are argument 0)
        syscalls.append(
            _allow(
                ["clone"],
                [
                    {
                        "index": 0,
                        "value": CLONE_NAMESPACE_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            )
        )
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures(machine),
        "syscalls": syscalls,
    }


_ARCH_FAMILY = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_ARM",),
}


def from_docker_profile(
    profile: dict[str, Any], capabilities: Iterable[str] | None = None
) -> dict[str, Any]:
    """A Docker-format profile (``--security-opt seccomp=<json>``) as the OCI section.

    Docker's format adds ``name`` (one call), ``archMap``, ``includes``/``excludes`` by
    capability and ``comment``; rules whose includes/excludes do not match ``capabilities``
    are dropped, as dockerd does. Raises ``InvalidArgument`` for a malformed profile.
    """
    caps = set(DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    default = profile.get("defaultAction")
    if not isinstance(default, str) or not default:
        raise InvalidArgument("Decoding seccomp profile failed: defaultAction is required")
    out: dict[str, Any] = {"defaultAction": default}
    if isinstance(profile.get("defaultErrnoRet"), int):
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = profile.get("architectures")
    if arches is None and isinstance(profile.get("archMap"), list):
        arches = []
        native = architectures()[0]
        for entry in profile["archMap"]:
            if isinstance(entry, dict) and entry.get("architecture") == native:
                arches = [native, *entry.get("subArchitectures", [])]
    if arches:
        if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
            raise InvalidArgument("Decoding seccomp profile failed: bad architectures")
        out["architectures"] = list(arches)
    if isinstance(profile.get("flags"), list):
        out["flags"] = list(profile["flags"])
    rules: list[dict[str, Any]] = []
    raw_rules = profile.get("syscalls")
    raw_rules = [] if raw_rules is None else raw_rules
    if not isinstance(raw_rules, list):
        raise InvalidArgument("Decoding seccomp profile failed: syscalls must be a list")
    for i, rule in enumerate(raw_rules):
        if not isinstance(rule, dict):
            raise InvalidArgument(f"Decoding seccomp profile failed: syscalls[{i}] is no object")
        if not _rule_applies(rule, caps):
            continue
        names = rule.get("names") or ([rule["name"]] if isinstance(rule.get("name"), str) else [])
        if not names or not all(isinstance(n, str) for n in names):
            raise InvalidArgument(f"Decoding seccomp profile failed: syscalls[{i}] names no call")
        action = rule.get("action")
        if not isinstance(action, str):
            raise InvalidArgument(f"Decoding seccomp profile failed: syscalls[{i}] has no action")
        oci: dict[str, Any] = {"names": list(names), "action": action}
        if isinstance(rule.get("errnoRet"), int):
            oci["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            oci["args"] = [
                {k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a}
                for a in rule["args"]
                if isinstance(a, dict)
            ]
        rules.append(oci)
    out["syscalls"] = rules
    return out


def _rule_applies(rule: dict[str, Any], caps: set[str]) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if isinstance(includes, dict):
        wanted = includes.get("caps") or []
        if wanted and not all(c in caps for c in wanted):
            return False
        arches = includes.get("arches") or []
        if arches and platform.machine() not in _docker_arches(arches):
            return False
    if isinstance(excludes, dict):
        unwanted = excludes.get("caps") or []
        if unwanted and any(c in caps for c in unwanted):
            return False
        arches = excludes.get("arches") or []
        if arches and platform.machine() in _docker_arches(arches):
            return False
    return True


def _docker_arches(arches: Iterable[str]) -> set[str]:
    go_to_uname = {"amd64": "x86_64", "x86_64": "x86_64", "x32": "x86_64", "x86": "i686",
                   "arm64": "aarch64", "aarch64": "aarch64", "s390x": "s390x",
                   "ppc64le": "ppc64le"}  # fmt: skip
    return {go_to_uname.get(a, a) for a in arches}
