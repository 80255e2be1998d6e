"""Seccomp filters and capability sets on the real kernel, each in a forked child.

Rules: only a forked child loads a filter or changes its capabilities, and it changes nothing
but itself: the calls it tries are harmless (mkdir in a temp dir, personality(0xffffffff) which
only queries, lseek on its own pipe). The child reports through a pipe as JSON and leaves with
os._exit; the parent asserts. Nothing host-global is touched.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from berth.errors import BerthError
from berth.runtime import capabilities, seccomp
from berth.spec.config import Capabilities, Seccomp, SeccompArg, SeccompSyscall

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

_SYS_PERSONALITY = 135  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def personality(persona: int) -> int:
    """personality(2); returns the old persona or -errno."""
    ctypes.set_errno(0)
    rc = int(_libc.syscall(_SYS_PERSONALITY, ctypes.c_ulong(persona)))
    return -ctypes.get_errno() if rc == -1 else rc


def in_child(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` in a forked child; return (what it returned or raised, its wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(r)
            try:
                payload = {"ok": fn()}
            except BaseException as e:
                payload = {"raised": type(e).__name__, "message": str(e)}
            os.write(w, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    return (json.loads(data) if data else None), status


def ok(result: Any) -> Any:
    """What the child's function returned; fails with what it raised otherwise."""
    assert isinstance(result, dict) and "ok" in result, result
    return result["ok"]


def status_fields(*names: str) -> dict[str, str]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in names:
            fields[key] = value.strip()
    return fields


def caps_of_self() -> dict[str, int]:
    raw = status_fields("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    return {k: int(v, 16) for k, v in raw.items()}


def bits(*names: str) -> int:
    return capabilities.to_mask(names, "test")


def skip_without_libseccomp() -> None:
    try:
        seccomp.library()
    except BerthError as e:
        pytest.skip(str(e))


# --------------------------------------------------------------------------- seccomp


def test_errno_rules_block_only_what_they_name(tmp_path: Path) -> None:
    skip_without_libseccomp()
    profile = Seccomp(
        default_action="SCMP_ACT_ALLOW",
        architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
        syscalls=(
            SeccompSyscall(names=("mkdir", "mkdirat"), action="SCMP_ACT_ERRNO"),
            SeccompSyscall(
                names=("personality",),
                action="SCMP_ACT_ERRNO",
                errno_ret=errno.EXDEV,
                args=(SeccompArg(index=0, value=0xFFFFFFFF, op="SCMP_CMP_EQ"),),
            ),
        ),
    )

    def child() -> dict[str, Any]:
        out: dict[str, Any] = {"query_before": personality(0xFFFFFFFF)}
        os.mkdir(tmp_path / "before")
        flt = seccomp.build(profile)
        flt.load()
        flt.release()
        try:
            os.mkdir(tmp_path / "after")
            out["mkdir"] = 0
        except OSError as e:
            out["mkdir"] = e.errno
        os.rmdir(tmp_path / "before")  # not named: allowed
        out["query_after"] = personality(0xFFFFFFFF)
        out["set_same"] = personality(out["query_before"])  # another value: allowed, a no-op
        out["status"] = status_fields("Seccomp", "NoNewPrivs")
        return out

    result, status = in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0
    out = ok(result)
    assert out["query_before"] >= 0
    assert out["mkdir"] == errno.EPERM  # ERRNO without errnoRet: EPERM, as runc
    assert out["query_after"] == -errno.EXDEV
    assert out["set_same"] == out["query_before"]
    assert out["status"] == {"Seccomp": "2", "NoNewPrivs": "0"}  # libseccomp did not set NNP
    assert not (tmp_path / "after").exists()
    assert not (tmp_path / "before").exists()


def test_same_index_conditions_are_or_and_different_indexes_are_and() -> None:
    skip_without_libseccomp()
    r, w = os.pipe()
    profile = Seccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=(
            # same index twice: two rules, either condition blocks
            SeccompSyscall(
                names=("personality",),
                action="SCMP_ACT_ERRNO",
                errno_ret=errno.EXDEV,
                args=(
                    SeccompArg(index=0, value=0xFFFFFFFF, op="SCMP_CMP_EQ"),
                    SeccompArg(index=0, value=0, op="SCMP_CMP_EQ"),
                ),
            ),
            # different indexes: one rule, both must hold
            SeccompSyscall(
                names=("lseek",),
                action="SCMP_ACT_ERRNO",
                errno_ret=errno.ENOTSUP,
                args=(
                    SeccompArg(index=0, value=r, op="SCMP_CMP_EQ"),
                    SeccompArg(index=2, value=os.SEEK_SET, op="SCMP_CMP_EQ"),
                ),
            ),
        ),
    )

    def attempt(call: Callable[[], object]) -> int:
        try:
            call()
        except OSError as e:
            return e.errno or -1
        return 0

    def child() -> dict[str, Any]:
        with seccomp.build(profile) as flt:
            flt.load()
        return {
            "query": personality(0xFFFFFFFF),
            "set_zero": personality(0),
            "seek_r_set": attempt(lambda: os.lseek(r, 0, os.SEEK_SET)),
            "seek_r_cur": attempt(lambda: os.lseek(r, 0, os.SEEK_CUR)),
            "seek_w_set": attempt(lambda: os.lseek(w, 0, os.SEEK_SET)),
        }

    try:
        result, status = in_child(child)
    finally:
        os.close(r)
        os.close(w)
    assert os.waitstatus_to_exitcode(status) == 0
    out = ok(result)
    assert out["query"] == -errno.EXDEV
    assert out["set_zero"] == -errno.EXDEV
    assert out["seek_r_set"] == errno.ENOTSUP  # both conditions hold
    assert out["seek_r_cur"] == errno.ESPIPE  # whence differs: allowed, a pipe cannot seek
    assert out["seek_w_set"] == errno.ESPIPE  # fd differs: allowed


def test_kill_process_action_kills_the_child_with_sigsys() -> None:
    skip_without_libseccomp()
    profile = Seccomp(
        default_action="SCMP_ACT_ALLOW",
        syscalls=(SeccompSyscall(names=("getppid",), action="SCMP_ACT_KILL_PROCESS"),),
    )

    def child() -> str:
        seccomp.build(profile).load()
        os.getppid()
        return "survived"

    result, status = in_child(child)
    assert result is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


# --------------------------------------------------------------------------- capabilities


def test_drop_bounding_and_apply() -> None:
    caps = Capabilities(
        bounding=("CAP_CHOWN", "CAP_KILL", "CAP_SETPCAP"),
        effective=("CAP_CHOWN",),
        permitted=("CAP_CHOWN", "CAP_KILL"),
        inheritable=("CAP_KILL",),
        ambient=("CAP_KILL",),
    )

    def child() -> dict[str, int]:
        capabilities.drop_bounding(caps)
        capabilities.apply(caps)
        return caps_of_self()

    result, status = in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ok(result) == {
        "CapBnd": bits("CAP_CHOWN", "CAP_KILL", "CAP_SETPCAP"),
        "CapEff": bits("CAP_CHOWN"),
        "CapPrm": bits("CAP_CHOWN", "CAP_KILL"),
        "CapInh": bits("CAP_KILL"),
        "CapAmb": bits("CAP_KILL"),
    }


def test_bounding_only_chown() -> None:
    caps = Capabilities(bounding=("CAP_CHOWN",), effective=("CAP_CHOWN",), permitted=("CAP_CHOWN",))

    def child() -> dict[str, int]:
        capabilities.drop_bounding(caps)  # drops CAP_SETPCAP too; the effective set still has it
        capabilities.apply(caps)
        return caps_of_self()

    result, status = in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0
    got = ok(result)
    assert got["CapBnd"] == got["CapEff"] == got["CapPrm"] == bits("CAP_CHOWN")
    assert got["CapInh"] == got["CapAmb"] == 0


def test_ambient_that_cannot_be_raised_is_skipped() -> None:
    caps = Capabilities(permitted=("CAP_KILL",), effective=("CAP_KILL",), ambient=("CAP_KILL",))

    def child() -> dict[str, int]:
        capabilities.apply(caps)  # CAP_KILL is not inheritable: the kernel refuses, we warn
        return caps_of_self()

    result, status = in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ok(result)["CapAmb"] == 0
    assert ok(result)["CapEff"] == bits("CAP_KILL")


@pytest.mark.parametrize("keep", [True, False])
def test_keep_across_setuid(keep: bool) -> None:
    caps = Capabilities(
        bounding=("CAP_CHOWN", "CAP_NET_BIND_SERVICE"),
        effective=("CAP_NET_BIND_SERVICE",),
        permitted=("CAP_NET_BIND_SERVICE",),
    )

    def child() -> dict[str, Any]:
        capabilities.drop_bounding(caps)
        if keep:
            capabilities.keep_across_setuid()
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        after_switch = caps_of_self()
        capabilities.apply(caps)
        return {"uid": os.getuid(), "after_switch": after_switch, "final": caps_of_self()}

    result, status = in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0
    if keep:
        out = ok(result)
        assert out["uid"] == 65534
        assert out["after_switch"]["CapEff"] == 0  # the switch clears effective...
        assert out["after_switch"]["CapPrm"] == caps_of_self()["CapPrm"]  # ...keeps permitted
        assert out["final"]["CapEff"] == out["final"]["CapPrm"] == bits("CAP_NET_BIND_SERVICE")
    else:  # without keepcaps the permitted set is gone and capset cannot raise it again
        assert result["raised"] == "BerthError", result
        assert result["message"].startswith("process.capabilities: capset(")
