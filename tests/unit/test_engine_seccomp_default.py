"""berth.engine.seccomp_default: our default profile blocks what Docker's blocks.

Rules: no root. The verdicts are read from the profile dict by a small evaluator that applies
the rules as libseccomp does for these shapes (any matching ALLOW rule wins, then a matching
rule with another action, then the default); the profile is then compiled by the runtime's
``seccomp.build`` with the real libseccomp (not loaded), and loaded for real only in a child
process that sets no_new_privs itself (no privilege needed) and probes harmless calls.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from typing import Any

import pytest

from berth.engine.oci_config import DEFAULT_CAPABILITIES
from berth.engine.seccomp_default import (
    ALWAYS_BLOCKED,
    BY_CAPABILITY,
    CLONE_NAMESPACE_FLAGS,
    allowed_unconditionally,
    default_seccomp_profile,
    from_docker_profile,
)
from berth.errors import InvalidArgument, Unavailable
from berth.runtime import seccomp
from berth.spec.config import Seccomp
from berth.spec.defaults import CAPABILITIES

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_THREAD_FLAGS = 0x003D0F00  # what pthread_create passes (VM|FS|FILES|SIGHAND|THREAD|...)


def _matches(rule: dict[str, Any], args: tuple[int, ...]) -> bool:
    for cond in rule.get("args", []):
        value = args[cond["index"]] if cond["index"] < len(args) else 0
        op = cond["op"]
        if op == "SCMP_CMP_EQ" and value != cond["value"]:
            return False
        if op == "SCMP_CMP_NE" and value == cond["value"]:
            return False
        if op == "SCMP_CMP_MASKED_EQ" and value & cond["value"] != cond.get("valueTwo", 0):
            return False
    return True


def verdict(profile: dict[str, Any], name: str, *args: int) -> str:
    """'allow', or 'errno:<n>' for the call with these arguments."""
    matching = [r for r in profile["syscalls"] if name in r["names"] and _matches(r, args)]
    if any(r["action"] == "SCMP_ACT_ALLOW" for r in matching):
        return "allow"
    for rule in matching:
        if rule["action"] == "SCMP_ACT_ERRNO":
            return f"errno:{rule.get('errnoRet', errno.EPERM)}"
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    return f"errno:{profile['defaultErrnoRet']}"


EPERM = f"errno:{errno.EPERM}"
DEFAULT = default_seccomp_profile()

BLOCKED = [
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "settimeofday", "clock_settime", "stime", "mount", "umount2", "pivot_root", "fsopen",
    "move_mount", "open_tree", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "userfaultfd", "unshare", "setns", "acct", "swapon", "swapoff", "quotactl", "syslog",
    "lookup_dcookie", "open_by_handle_at", "name_to_handle_at", "vm86", "vm86old", "iopl",
    "ioperm", "kcmp", "pidfd_getfd", "process_madvise", "sethostname", "setdomainname",
    "mbind", "set_mempolicy", "vhangup", "nfsservctl", "uselib", "_sysctl", "create_module",
]  # fmt: skip
ALLOWED = [
    "read", "write", "openat", "execve", "exit_group", "mmap", "futex", "epoll_wait", "socket",
    "connect", "setuid", "capset", "chroot", "mknod", "kill", "ptrace", "process_vm_readv",
    "io_uring_setup", "adjtimex", "clock_adjtime", "clock_gettime", "prctl", "seccomp",
    "arch_prctl", "rseq", "statx", "pidfd_open", "landlock_create_ruleset",
]  # fmt: skip


def test_shape_is_dockers() -> None:
    assert DEFAULT["defaultAction"] == "SCMP_ACT_ERRNO"
    assert DEFAULT["defaultErrnoRet"] == errno.EPERM
    assert default_seccomp_profile(machine="x86_64")["architectures"] == [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
    ]
    assert default_seccomp_profile() is not default_seccomp_profile()  # fresh dicts


@pytest.mark.parametrize("name", BLOCKED)
def test_blocked_with_the_default_capabilities(name: str) -> None:
    assert verdict(DEFAULT, name) == EPERM


@pytest.mark.parametrize("name", ALLOWED)
def test_allowed_with_the_default_capabilities(name: str) -> None:
    assert verdict(DEFAULT, name) == "allow"


def test_always_blocked_even_with_every_capability() -> None:
    everything = default_seccomp_profile(CAPABILITIES)
    for name in ALWAYS_BLOCKED:
        assert verdict(everything, name) == EPERM, name
        assert name not in allowed_unconditionally()


@pytest.mark.parametrize(("cap", "names"), sorted(BY_CAPABILITY.items()))
def test_a_capability_unlocks_its_calls(cap: str, names: tuple[str, ...]) -> None:
    profile = default_seccomp_profile([*DEFAULT_CAPABILITIES, cap])
    for name in names:
        assert verdict(profile, name) == "allow", name


def test_clone_is_allowed_without_namespace_flags_only() -> None:
    assert CLONE_NAMESPACE_FLAGS == 0x7E020000
    assert verdict(DEFAULT, "clone", CLONE_THREAD_FLAGS) == "allow"
    assert verdict(DEFAULT, "clone", 17) == "allow"  # fork(): SIGCHLD
    assert verdict(DEFAULT, "clone", CLONE_NEWUSER | 17) == EPERM
    assert verdict(DEFAULT, "clone", CLONE_NEWNS | 17) == EPERM
    # clone3 hides its flags in memory: ENOSYS, so libc falls back to clone
    assert verdict(DEFAULT, "clone3") == f"errno:{errno.ENOSYS}"
    admin = default_seccomp_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    assert verdict(admin, "clone", CLONE_NEWUSER) == "allow"
    assert verdict(admin, "clone3") == "allow"
    assert verdict(admin, "unshare") == "allow"


def test_personality_only_the_harmless_personas() -> None:
    for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict(DEFAULT, "personality", persona) == "allow"
    assert verdict(DEFAULT, "personality", 0x0040000) == EPERM  # ADDR_NO_RANDOMIZE


def test_vsock_sockets_are_blocked() -> None:
    assert verdict(DEFAULT, "socket", 2) == "allow"  # AF_INET
    assert verdict(DEFAULT, "socket", 40) == EPERM  # AF_VSOCK


def test_no_call_is_both_unconditional_and_capability_gated() -> None:
    gated = {name for names in BY_CAPABILITY.values() for name in names}
    assert gated & set(allowed_unconditionally()) == {
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
    }
    assert not set(ALWAYS_BLOCKED) & (gated | set(allowed_unconditionally()))


def test_the_oci_parser_and_libseccomp_accept_it() -> None:
    profile = Seccomp.from_json(DEFAULT, "linux.seccomp")
    seccomp.validate(profile)
    try:
        flt = seccomp.build(profile)
    except Unavailable as e:
        pytest.skip(str(e))
    with flt:
        # names this libseccomp does not know yet are skipped, as runc does: only new calls
        assert set(flt.skipped) <= {
            "futex_waitv", "landlock_add_rule", "landlock_create_ruleset",
            "landlock_restrict_self", "memfd_secret", "process_mrelease", "epoll_pwait2",
            "mount_setattr", "quotactl_fd", "close_range", "faccessat2", "openat2",
            "process_madvise", "pidfd_getfd", "set_mempolicy_home_node", "clone3",
        }  # fmt: skip


# A child loads the filter for real and probes calls that change nothing even if they
# succeeded: keyctl(KEYCTL_GET_KEYRING_ID) reads, unshare(CLONE_NEWUSER) only affects the
# child, personality(0xffffffff) queries, clone3 with a NULL argument fails either way.
_PROBE = r"""
import ctypes, ctypes.util, errno, json, sys
from berth.runtime import seccomp
from berth.spec.config import Seccomp
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
profile = Seccomp.from_json(json.loads(sys.argv[1]), "linux.seccomp")
seccomp.build(profile).load()
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    return 0 if rc >= 0 else ctypes.get_errno()
out = {
    "keyctl": call(250, 0, 0xFFFFFFFD, 0),
    "unshare_user": libc.unshare(0x10000000) == 0 or ctypes.get_errno(),
    "personality_query": call(135, 0xFFFFFFFF),
    "clone3": call(435, 0, 0),
    "getpid": call(39),
    "uname": call(63, 0) if False else 0,
}
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")
def test_loaded_in_a_child_it_blocks_and_allows() -> None:
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the probe uses x86_64 system call numbers")
    try:
        seccomp.library()
    except Unavailable as e:
        pytest.skip(str(e))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(DEFAULT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["keyctl"] == errno.EPERM
    assert got["unshare_user"] == errno.EPERM
    assert got["personality_query"] == 0
    assert got["clone3"] == errno.ENOSYS
    assert got["getpid"] == 0


def test_docker_format_conversion() -> None:
    docker = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "io"},
            {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        ],
    }  # fmt: skip
    oci = from_docker_profile(docker)
    assert oci == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }
    Seccomp.from_json(oci, "linux.seccomp")
    admin = from_docker_profile(docker, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    assert {"names": ["mount"], "action": "SCMP_ACT_ALLOW"} in admin["syscalls"]


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({}, "defaultAction is required"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls must be a list"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "x"}]}, "names no call"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]}, "has no action"),
    ],
)
def test_docker_format_errors(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        from_docker_profile(profile)
