"""berth.runtime.seccomp: validation names the field, rules become the right libseccomp calls.

Rules: nothing is loaded into the kernel here. A recording fake stands in for libseccomp to check
the calls; the real library is used only to build (never load) filters and to cross-check our
constants against libseccomp's own resolvers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import pytest

from berth.errors import BerthError, InvalidArgument, Unsupported
from berth.runtime import seccomp
from berth.runtime.seccomp import (
    SCMP_ACT_ALLOW,
    SCMP_ACT_KILL_PROCESS,
    SCMP_ACT_LOG,
    SCMP_ACT_TRAP,
    SCMP_CMP_EQ,
    SCMP_CMP_MASKED_EQ,
    SCMP_CMP_NE,
    SCMP_FLTATR_API_SYSRAWRC,
    SCMP_FLTATR_CTL_LOG,
    SCMP_FLTATR_CTL_NNP,
    SCMP_FLTATR_CTL_SSB,
    SCMP_FLTATR_CTL_TSYNC,
    Condition,
    LibSeccomp,
)
from berth.spec.config import Seccomp, SeccompArg, SeccompSyscall

CTX = 0x5EC


class FakeLib(LibSeccomp):
    """Records every call; knows the syscalls in ``numbers``; ``fail`` maps a method to errno."""

    def __init__(self, numbers: dict[str, int] | None = None, fail: dict[str, int] | None = None):
        self.calls: list[tuple[Any, ...]] = []
        self.numbers = (
            numbers
            if numbers is not None
            else {"mkdir": 83, "personality": 135, "clone": 56, "read": 0}
        )
        self.fail = fail or {}

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] in self.fail:
            raise OSError(self.fail[call[0]], f"{call[0]}: failed")

    def init(self, default_action: int) -> int:
        self._record("init", default_action)
        return CTX

    def release(self, ctx: int) -> None:
        self._record("release", ctx)

    def arch_add(self, ctx: int, arch: int) -> None:
        self._record("arch_add", ctx, arch)

    def attr_set(self, ctx: int, attr: int, value: int) -> None:
        self._record("attr_set", ctx, attr, value)

    def resolve_name(self, name: str) -> int:
        return self.numbers.get(name, seccomp.NR_SCMP_ERROR)

    def rule_add(
        self, ctx: int, action: int, syscall: int, conditions: Sequence[Condition]
    ) -> None:
        self._record("rule_add", ctx, action, syscall, tuple(conditions))

    def load(self, ctx: int) -> None:
        self._record("load", ctx)

    def rules(self) -> list[tuple[Any, ...]]:
        return [c[2:] for c in self.calls if c[0] == "rule_add"]


def profile(*syscalls: SeccompSyscall, default: str = "SCMP_ACT_ALLOW", **kw: Any) -> Seccomp:
    return Seccomp(default_action=default, syscalls=syscalls, **kw)


def rule(
    names: str, action: str = "SCMP_ACT_ERRNO", *args: SeccompArg, **kw: Any
) -> SeccompSyscall:
    return SeccompSyscall(names=tuple(names.split()), action=action, args=args, **kw)


def arg(index: int, value: int, op: str = "SCMP_CMP_EQ", value_two: int = 0) -> SeccompArg:
    return SeccompArg(index=index, value=value, op=op, value_two=value_two)


EPERM_ACT = seccomp.scmp_act_errno(errno.EPERM)


# --------------------------------------------------------------------------- constants


def test_action_values_are_libseccomps() -> None:
    assert seccomp.ACTIONS["SCMP_ACT_KILL"] == seccomp.ACTIONS["SCMP_ACT_KILL_THREAD"] == 0
    assert SCMP_ACT_KILL_PROCESS == 0x80000000
    assert SCMP_ACT_TRAP == 0x00030000
    assert seccomp.scmp_act_errno(38) == 0x00050026
    assert seccomp.scmp_act_trace(1) == 0x7FF00001
    assert SCMP_ACT_LOG == 0x7FFC0000
    assert SCMP_ACT_ALLOW == 0x7FFF0000
    assert seccomp.SCMP_ACT_NOTIFY == 0x7FC00000
    assert (SCMP_CMP_NE, SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ) == (1, 4, 7)
    assert list(seccomp.OPS.values()) == list(range(1, 8))


def test_every_oci_op_is_known() -> None:
    from berth.spec.config import SECCOMP_OPS

    assert set(SECCOMP_OPS) == set(seccomp.OPS)


def test_arg_cmp_layout() -> None:
    import ctypes

    assert ctypes.sizeof(seccomp._ArgCmp) == 24
    assert seccomp._ArgCmp.datum_a.offset == 8


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            profile(default="SCMP_ACT_NOPE"),
            InvalidArgument,
            r"^linux\.seccomp\.defaultAction: 'SCMP_ACT_NOPE' is not one of SCMP_ACT_KILL, ",
        ),
        (
            profile(default="SCMP_ACT_NOTIFY"),
            Unsupported,
            r"^linux\.seccomp\.defaultAction: SCMP_ACT_NOTIFY is not supported",
        ),
        (
            profile(rule("read", "SCMP_ACT_ALLOW"), rule("mkdir", "allow")),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[1\]\.action: 'allow' is not one of",
        ),
        (
            profile(rule("mkdir", "SCMP_ACT_NOTIFY")),
            Unsupported,
            r"^linux\.seccomp\.syscalls\[0\]\.action: SCMP_ACT_NOTIFY",
        ),
        (
            profile(rule("mkdir", "SCMP_ACT_ALLOW", errno_ret=1), default="SCMP_ACT_KILL"),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[0\]\.errnoRet: SCMP_ACT_ALLOW takes no",
        ),
        (
            profile(default_errno_ret=1),
            InvalidArgument,
            r"^linux\.seccomp\.defaultErrnoRet: SCMP_ACT_ALLOW takes no errno",
        ),
        (
            profile(rule("mkdir", errno_ret=70000)),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[0\]\.errnoRet: 70000 does not fit",
        ),
        (
            profile(architectures=("SCMP_ARCH_X86_64", "x86")),
            InvalidArgument,
            r"^linux\.seccomp\.architectures\[1\]: 'x86' is not one of SCMP_ARCH_X86, ",
        ),
        (
            profile(flags=("SECCOMP_FILTER_FLAG_BOGUS",)),
            InvalidArgument,
            r"^linux\.seccomp\.flags\[0\]: 'SECCOMP_FILTER_FLAG_BOGUS' is not one of",
        ),
        (
            profile(flags=("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",)),
            Unsupported,
            r"^linux\.seccomp\.flags\[0\]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        ),
        (
            profile(rule("mkdir", "SCMP_ACT_ERRNO", arg(0, 1), arg(1, 1, "SCMP_CMP_SAME"))),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[0\]\.args\[1\]\.op: 'SCMP_CMP_SAME'",
        ),
        (
            profile(rule("mkdir", "SCMP_ACT_ERRNO", arg(6, 1))),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[0\]\.args\[0\]\.index: 6 is not in 0\.\.5",
        ),
        (
            profile(rule("mkdir", "SCMP_ACT_ERRNO", arg(0, 2**64))),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[0\]\.args\[0\]\.value: ",
        ),
        (
            profile(SeccompSyscall(names=(), action="SCMP_ACT_ERRNO")),
            InvalidArgument,
            r"^linux\.seccomp\.syscalls\[0\]\.names: must name",
        ),
    ],
)
def test_validation_names_the_field_before_touching_libseccomp(
    bad: Seccomp, error: type[BerthError], message: str
) -> None:
    fake = FakeLib()
    with pytest.raises(error, match=message):
        seccomp.build(bad, fake)
    assert fake.calls == []
    with pytest.raises(error, match=message):
        seccomp.validate(bad)


def test_validate_accepts_none_and_a_good_profile() -> None:
    seccomp.validate(None)
    seccomp.validate(profile(rule("mkdir"), architectures=("SCMP_ARCH_X86_64",)))


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(InvalidArgument, match=r"^spec\.sc\.defaultAction: "):
        seccomp.build(profile(default="x"), FakeLib(), field="spec.sc")


# --------------------------------------------------------------------------- building


def test_build_sets_attributes_arches_and_rules() -> None:
    fake = FakeLib()
    prof = profile(
        rule("mkdir read"),
        rule("personality", "SCMP_ACT_TRAP"),
        default="SCMP_ACT_LOG",
        architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86"),
        flags=(
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ),
    )
    flt = seccomp.build(prof, fake)
    assert fake.calls == [
        ("init", SCMP_ACT_LOG),
        ("attr_set", CTX, SCMP_FLTATR_CTL_NNP, 0),
        ("attr_set", CTX, SCMP_FLTATR_API_SYSRAWRC, 1),
        ("attr_set", CTX, SCMP_FLTATR_CTL_TSYNC, 1),
        ("attr_set", CTX, SCMP_FLTATR_CTL_LOG, 1),
        ("attr_set", CTX, SCMP_FLTATR_CTL_SSB, 1),
        ("arch_add", CTX, 0xC000003E),
        ("arch_add", CTX, 0x40000003),
        ("rule_add", CTX, EPERM_ACT, 83, ()),
        ("rule_add", CTX, EPERM_ACT, 0, ()),
        ("rule_add", CTX, SCMP_ACT_TRAP, 135, ()),
    ]
    assert flt.skipped == ()
    flt.load()
    assert fake.calls[-1] == ("load", CTX)
    flt.release()
    flt.release()
    assert [c for c in fake.calls if c[0] == "release"] == [("release", CTX)]
    with pytest.raises(BerthError, match="already released"):
        flt.load()


def test_errno_defaults_to_eperm_and_errno_ret_is_used() -> None:
    fake = FakeLib()
    seccomp.build(
        profile(
            rule("mkdir", errno_ret=errno.ENOSYS),
            rule("read", "SCMP_ACT_TRACE"),
            rule("clone", "SCMP_ACT_TRACE", errno_ret=7),
            default="SCMP_ACT_ERRNO",
            default_errno_ret=errno.EACCES,
        ),
        fake,
    )
    assert fake.calls[0] == ("init", seccomp.scmp_act_errno(errno.EACCES))
    assert fake.rules() == [
        (seccomp.scmp_act_errno(errno.ENOSYS), 83, ()),
        (seccomp.scmp_act_trace(errno.EPERM), 0, ()),
        (seccomp.scmp_act_trace(7), 56, ()),
    ]
    fake = FakeLib()
    seccomp.build(profile(default="SCMP_ACT_ERRNO"), fake)
    assert fake.calls[0] == ("init", EPERM_ACT)


def test_rules_with_the_default_action_are_skipped() -> None:
    fake = FakeLib()
    seccomp.build(
        profile(
            rule("read", "SCMP_ACT_ALLOW"),
            rule("mkdir"),  # ERRNO(EPERM) == default: skipped
            rule("clone", errno_ret=errno.EACCES),  # a different errno is a different action
            rule("personality", "SCMP_ACT_KILL_THREAD"),
            default="SCMP_ACT_ERRNO",
        ),
        fake,
    )
    assert fake.rules() == [
        (SCMP_ACT_ALLOW, 0, ()),
        (seccomp.scmp_act_errno(errno.EACCES), 56, ()),
        (0, 135, ()),
    ]
    fake = FakeLib()
    seccomp.build(profile(rule("read", "SCMP_ACT_KILL"), default="SCMP_ACT_KILL_THREAD"), fake)
    assert fake.rules() == []  # KILL is KILL_THREAD


def test_unknown_syscall_names_are_skipped_and_reported() -> None:
    fake = FakeLib()
    flt = seccomp.build(profile(rule("mkdir no_such_call"), rule("no_such_call other_one")), fake)
    assert fake.rules() == [(EPERM_ACT, 83, ())]
    assert flt.skipped == ("no_such_call", "other_one")


def test_conditions_on_different_indexes_make_one_rule() -> None:
    fake = FakeLib()
    seccomp.build(
        profile(
            rule(
                "clone",
                "SCMP_ACT_ERRNO",
                arg(0, 0x7E020000, "SCMP_CMP_MASKED_EQ", 0),
                arg(2, 5, "SCMP_CMP_NE"),
            )
        ),
        fake,
    )
    assert fake.rules() == [
        (
            EPERM_ACT,
            56,
            (Condition(0, SCMP_CMP_MASKED_EQ, 0x7E020000, 0), Condition(2, SCMP_CMP_NE, 5, 0)),
        ),
    ]


def test_conditions_on_the_same_index_become_one_rule_each() -> None:
    fake = FakeLib()
    seccomp.build(
        profile(
            rule("personality", "SCMP_ACT_ERRNO", arg(0, 0xFFFFFFFF), arg(0, 8), arg(1, 3)),
            rule("clone", "SCMP_ACT_ERRNO", arg(0, 1), arg(1, 2)),
        ),
        fake,
    )
    assert fake.rules() == [
        # runc: once any index repeats, every condition of the rule goes alone
        (EPERM_ACT, 135, (Condition(0, SCMP_CMP_EQ, 0xFFFFFFFF),)),
        (EPERM_ACT, 135, (Condition(0, SCMP_CMP_EQ, 8),)),
        (EPERM_ACT, 135, (Condition(1, SCMP_CMP_EQ, 3),)),
        (EPERM_ACT, 56, (Condition(0, SCMP_CMP_EQ, 1), Condition(1, SCMP_CMP_EQ, 2))),
    ]


def test_split_conditions() -> None:
    a, b, c = Condition(0, 4, 1), Condition(1, 4, 1), Condition(0, 1, 2)
    assert seccomp.split_conditions([]) == [[]]
    assert seccomp.split_conditions([a, b]) == [[a, b]]
    assert seccomp.split_conditions([a, b, c]) == [[a], [b], [c]]


def test_a_failing_rule_releases_the_context_and_names_the_rule() -> None:
    fake = FakeLib(fail={"rule_add": errno.EEXIST})
    with pytest.raises(
        InvalidArgument,
        match=r"^linux\.seccomp\.syscalls\[0\]: adding the rule "
        r"for 'mkdir'",
    ):
        seccomp.build(profile(rule("mkdir")), fake)
    assert fake.calls[-1] == ("release", CTX)


def test_an_architecture_libseccomp_lacks_is_unsupported() -> None:
    fake = FakeLib(fail={"arch_add": errno.EINVAL})
    with pytest.raises(
        Unsupported,
        match=r"^linux\.seccomp\.architectures\[0\]: "
        r"SCMP_ARCH_LOONGARCH64: libseccomp cannot add it",
    ):
        seccomp.build(profile(architectures=("SCMP_ARCH_LOONGARCH64",)), fake)
    assert fake.calls[-1] == ("release", CTX)


def test_load_failure_is_a_berth_error_naming_the_field() -> None:
    fake = FakeLib(fail={"load": errno.EACCES})
    flt = seccomp.build(profile(), fake)
    with pytest.raises(BerthError, match=r"^linux\.seccomp: loading the filter: load: failed"):
        flt.load()
    with flt:
        pass
    assert fake.calls[-1] == ("release", CTX)


# --------------------------------------------------------------------------- real libseccomp


@pytest.fixture(scope="module")
def lib() -> LibSeccomp:
    try:
        return seccomp.library()
    except BerthError as e:
        pytest.skip(str(e))


def test_architecture_tokens_match_libseccomp(lib: LibSeccomp) -> None:
    checked = 0
    for token, value in seccomp.ARCHITECTURES.items():
        resolved = lib.arch_resolve_name(token.removeprefix("SCMP_ARCH_").lower())
        if resolved:  # 0: this libseccomp does not know the architecture
            assert resolved == value, token
            checked += 1
    assert checked >= 19
    assert lib.arch_native() == seccomp.ARCHITECTURES["SCMP_ARCH_X86_64"]


def test_names_known(lib: LibSeccomp) -> None:
    assert seccomp.names_known(["mkdir", "nope_not_a_syscall", "personality"]) == [
        "mkdir",
        "personality",
    ]
    assert lib.resolve_name("mkdir") == 83
    assert lib.resolve_name("nope_not_a_syscall") == seccomp.NR_SCMP_ERROR


def test_build_with_the_real_library(lib: LibSeccomp) -> None:
    prof = profile(
        rule("mkdir mkdirat nope_not_a_syscall", errno_ret=errno.EROFS),
        rule("personality", "SCMP_ACT_ERRNO", arg(0, 0xFFFFFFFF), arg(0, 0x0008)),
        rule(
            "clone",
            "SCMP_ACT_ERRNO",
            arg(0, 0x7E020000, "SCMP_CMP_MASKED_EQ", 0x10000000),
            arg(1, 5, "SCMP_CMP_GT"),
        ),
        architectures=("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
        flags=("SECCOMP_FILTER_FLAG_LOG",),
    )
    with seccomp.build(prof) as flt:
        assert flt.skipped == ("nope_not_a_syscall",)
        assert lib.attr_get(flt.ctx, SCMP_FLTATR_CTL_NNP) == 0
        assert lib.attr_get(flt.ctx, SCMP_FLTATR_CTL_LOG) == 1
        with tempfile.TemporaryFile() as out:
            flt.export_pfc(out.fileno())
            out.seek(0)
            pfc = out.read().decode()
    x86_64 = pfc.split("# filter for arch x86_64")[1].split("# filter for arch")[0]
    assert 'syscall "mkdir" (83)' in x86_64 and f"action ERRNO({errno.EROFS});" in x86_64
    assert "if ($a0.lo32 == 4294967295)" in x86_64 and "if ($a0.lo32 == 8)" in x86_64
    assert "# filter for arch x86 (" in pfc and "# filter for arch x32 (" in pfc


def _in_a_child(program: seccomp.Program) -> int:
    """Fork; the child sets no_new_privs, installs ``program`` and reports mkdir's errno."""
    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            program.load()
            try:
                os.mkdir("/proc/berth-seccomp-test")
            except OSError as e:
                code = e.errno
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_prepared_program_is_compiled_once_and_enforced(lib: LibSeccomp) -> None:
    prof = profile(rule("mkdir mkdirat nope_not_a_syscall", errno_ret=errno.EROFS))
    program = seccomp.prepare(prof)
    assert isinstance(program, seccomp.Program)
    assert program.skipped == ("nope_not_a_syscall",)
    again = profile(rule("mkdir mkdirat nope_not_a_syscall", errno_ret=errno.EROFS))
    assert seccomp.prepare(again) is program  # an equal profile: the same program
    assert _in_a_child(program) == errno.EROFS
    program.release()  # shared: a no-op, it still loads
    assert _in_a_child(program) == errno.EROFS


def test_a_profile_with_flags_keeps_libseccomps_own_load(lib: LibSeccomp) -> None:
    prepared = seccomp.prepare(profile(rule("mkdir"), flags=("SECCOMP_FILTER_FLAG_LOG",)))
    try:
        assert isinstance(prepared, seccomp.Filter) and prepared.flags
    finally:
        prepared.release()


def test_real_library_refuses_what_the_fake_cannot_know(lib: LibSeccomp) -> None:
    if lib.arch_resolve_name("loongarch64"):
        pytest.skip("this libseccomp knows loongarch64")
    with pytest.raises(Unsupported, match=r"architectures\[0\]: SCMP_ARCH_LOONGARCH64"):
        seccomp.build(profile(architectures=("SCMP_ARCH_LOONGARCH64",)))


def test_import_and_validate_do_not_load_libseccomp() -> None:
    code = (
        "import sys, berth.runtime.seccomp as s; from berth.spec.config import Seccomp; "
        "s.validate(Seccomp('SCMP_ACT_ALLOW', architectures=('SCMP_ARCH_X86',))); "
        "maps = open('/proc/self/maps').read(); "
        "print('libseccomp' in maps, [m for m in ('logging', 'asyncio', 'subprocess') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False []"
