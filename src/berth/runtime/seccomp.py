"""The OCI seccomp profile (``linux.seccomp``) compiled and loaded through libseccomp.

Rules: stdlib + ctypes only, sync. libseccomp is loaded with ctypes lazily, the first time a
profile is built, so importing this module costs nothing on the start path of a container without
seccomp. ``build`` validates the whole profile before it touches libseccomp, raising
``InvalidArgument``/``Unsupported`` that name the field (``linux.seccomp.syscalls[3].action``);
the libseccomp calls go through an injectable ``LibSeccomp`` so tests can record them.

Semantics follow runc: ``SCMP_ACT_KILL`` is kill-thread; ERRNO and TRACE return ``errnoRet``
(EPERM when absent); system call names libseccomp does not know are skipped (``Filter.skipped``);
a rule whose action equals the default action is skipped (libseccomp refuses it); when one rule
has several conditions on the same argument index they cannot be AND-ed in one libseccomp rule,
so every condition of that rule becomes a rule of its own, otherwise all conditions go in one rule.
The native architecture is always in the filter; ``architectures`` adds more. no_new_privs is not
set by libseccomp (``SCMP_FLTATR_CTL_NNP`` 0): the runtime sets it itself when
``process.noNewPrivileges`` asks, and loading the filter without it needs CAP_SYS_ADMIN.
Constants are those of libseccomp's ``seccomp.h`` (2.5) and the kernel's ``linux/audit.h``.
Value types are NamedTuples, not dataclasses: a dataclass costs ~0.5 ms of import each.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from berth.errors import BerthError, InvalidArgument, Unavailable, Unsupported

if TYPE_CHECKING:
    from berth.spec.config import Seccomp, SeccompSyscall

LIBRARY = "libseccomp.so.2"

# actions (seccomp.h)
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_KILL = SCMP_ACT_KILL_THREAD
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_NOTIFY = 0x7FC00000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000  # | (errno & 0xffff)
_SCMP_ACT_TRACE = 0x7FF00000  # | (msg_num & 0xffff)


def scmp_act_errno(value: int) -> int:
    return _SCMP_ACT_ERRNO | (value & 0xFFFF)


def scmp_act_trace(value: int) -> int:
    return _SCMP_ACT_TRACE | (value & 0xFFFF)


ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": SCMP_ACT_KILL,
    "SCMP_ACT_KILL_PROCESS": SCMP_ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": SCMP_ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": SCMP_ACT_TRAP,
    "SCMP_ACT_ERRNO": _SCMP_ACT_ERRNO,
    "SCMP_ACT_TRACE": _SCMP_ACT_TRACE,
    "SCMP_ACT_ALLOW": SCMP_ACT_ALLOW,
    "SCMP_ACT_LOG": SCMP_ACT_LOG,
}
# actions whose data is a return value (errnoRet); the others take none
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare (seccomp.h): numbering starts at 1
SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_LE = 3
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7
OPS: dict[str, int] = {
    "SCMP_CMP_NE": SCMP_CMP_NE,
    "SCMP_CMP_LT": SCMP_CMP_LT,
    "SCMP_CMP_LE": SCMP_CMP_LE,
    "SCMP_CMP_EQ": SCMP_CMP_EQ,
    "SCMP_CMP_GE": SCMP_CMP_GE,
    "SCMP_CMP_GT": SCMP_CMP_GT,
    "SCMP_CMP_MASKED_EQ": SCMP_CMP_MASKED_EQ,
}

# enum scmp_filter_attr (seccomp.h, libseccomp 2.5)
SCMP_FLTATR_ACT_DEFAULT = 1
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_FLTATR_API_TSKIP = 5
SCMP_FLTATR_CTL_LOG = 6
SCMP_FLTATR_CTL_SSB = 7
SCMP_FLTATR_CTL_OPTIMIZE = 8
SCMP_FLTATR_API_SYSRAWRC = 9

# the OCI flags, as the filter attribute each one sets to 1
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": SCMP_FLTATR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SCMP_FLTATR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SCMP_FLTATR_CTL_SSB,
}
_UNSUPPORTED_FLAGS = ("SECCOMP_FILTER_FLAG_NEW_LISTENER", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")

# architecture tokens: the kernel's AUDIT_ARCH_* values (EM_* | 64BIT | LE), except X32
_AUDIT_ARCH_64BIT = 0x80000000
_AUDIT_ARCH_LE = 0x40000000
_AUDIT_ARCH_MIPS64_N32 = 0x20000000
_EM_386, _EM_68K, _EM_MIPS, _EM_PARISC, _EM_PPC, _EM_PPC64, _EM_S390 = 3, 4, 8, 15, 20, 21, 22
_EM_ARM, _EM_SH, _EM_X86_64, _EM_AARCH64, _EM_RISCV, _EM_LOONGARCH = 40, 42, 62, 183, 243, 258
ARCHITECTURES: dict[str, int] = {
    "SCMP_ARCH_X86": _EM_386 | _AUDIT_ARCH_LE,
    "SCMP_ARCH_X86_64": _EM_X86_64 | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE,
    "SCMP_ARCH_X32": _EM_X86_64 | _AUDIT_ARCH_LE,  # libseccomp's own token, not the kernel's
    "SCMP_ARCH_ARM": _EM_ARM | _AUDIT_ARCH_LE,
    "SCMP_ARCH_AARCH64": _EM_AARCH64 | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE,
    "SCMP_ARCH_MIPS": _EM_MIPS,
    "SCMP_ARCH_MIPS64": _EM_MIPS | _AUDIT_ARCH_64BIT,
    "SCMP_ARCH_MIPS64N32": _EM_MIPS | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_MIPS64_N32,
    "SCMP_ARCH_MIPSEL": _EM_MIPS | _AUDIT_ARCH_LE,
    "SCMP_ARCH_MIPSEL64": _EM_MIPS | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE,
    "SCMP_ARCH_MIPSEL64N32": _EM_MIPS | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE | _AUDIT_ARCH_MIPS64_N32,
    "SCMP_ARCH_PPC": _EM_PPC,
    "SCMP_ARCH_PPC64": _EM_PPC64 | _AUDIT_ARCH_64BIT,
    "SCMP_ARCH_PPC64LE": _EM_PPC64 | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE,
    "SCMP_ARCH_S390": _EM_S390,
    "SCMP_ARCH_S390X": _EM_S390 | _AUDIT_ARCH_64BIT,
    "SCMP_ARCH_PARISC": _EM_PARISC,
    "SCMP_ARCH_PARISC64": _EM_PARISC | _AUDIT_ARCH_64BIT,
    "SCMP_ARCH_RISCV64": _EM_RISCV | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE,
    "SCMP_ARCH_LOONGARCH64": _EM_LOONGARCH | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE,  # libseccomp 2.6
    "SCMP_ARCH_M68K": _EM_68K,  # libseccomp 2.6
    "SCMP_ARCH_SH": _EM_SH | _AUDIT_ARCH_LE,  # libseccomp 2.6
    "SCMP_ARCH_SHEB": _EM_SH,  # libseccomp 2.6
}

NR_SCMP_ERROR = -1  # __NR_SCMP_ERROR: what seccomp_syscall_resolve_name returns for a stranger
_MAX_ARGS = 6
_DEFAULT_ERRNO = errno.EPERM


class Condition(NamedTuple):
    """One ``struct scmp_arg_cmp``: argument ``arg`` (0..5) compared by ``op`` to ``a`` (and ``b``).

    For SCMP_CMP_MASKED_EQ the test is ``(argument & a) == b``.
    """

    arg: int
    op: int
    a: int
    b: int = 0


class _ArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp { unsigned int arg; enum scmp_compare op; uint64 datum_a, datum_b; }
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class LibSeccomp:
    """The few libseccomp calls Berth makes; each raises ``OSError`` on a negative return.

    A filter context is an opaque pointer, carried as an int.
    """

    def __init__(self, path: str = LIBRARY) -> None:
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise Unavailable(
                f"linux.seccomp: cannot load {path} (install libseccomp2): {e}"
            ) from e
        self._lib = lib
        ctx, u32, cint, cstr = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
        lib.seccomp_init.argtypes = [u32]
        lib.seccomp_init.restype = ctx
        lib.seccomp_release.argtypes = [ctx]
        lib.seccomp_release.restype = None
        lib.seccomp_arch_add.argtypes = [ctx, u32]
        lib.seccomp_arch_add.restype = cint
        lib.seccomp_arch_resolve_name.argtypes = [cstr]
        lib.seccomp_arch_resolve_name.restype = u32
        lib.seccomp_arch_native.argtypes = []
        lib.seccomp_arch_native.restype = u32
        lib.seccomp_attr_set.argtypes = [ctx, cint, u32]
        lib.seccomp_attr_set.restype = cint
        lib.seccomp_attr_get.argtypes = [ctx, cint, ctypes.POINTER(u32)]
        lib.seccomp_attr_get.restype = cint
        lib.seccomp_syscall_resolve_name.argtypes = [cstr]
        lib.seccomp_syscall_resolve_name.restype = cint
        lib.seccomp_rule_add_array.argtypes = [
            ctx,
            u32,
            cint,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        ]
        lib.seccomp_rule_add_array.restype = cint
        lib.seccomp_load.argtypes = [ctx]
        lib.seccomp_load.restype = cint
        lib.seccomp_export_pfc.argtypes = [ctx, cint]
        lib.seccomp_export_pfc.restype = cint
        lib.seccomp_export_bpf.argtypes = [ctx, cint]
        lib.seccomp_export_bpf.restype = cint

    @staticmethod
    def _check(rc: int, what: str) -> int:
        if rc < 0:
            raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
        return rc

    def init(self, default_action: int) -> int:
        ctx = self._lib.seccomp_init(default_action)
        if not ctx:
            raise OSError(errno.EINVAL, f"seccomp_init({default_action:#x}) failed")
        return int(ctx)

    def release(self, ctx: int) -> None:
        self._lib.seccomp_release(ctx)

    def arch_add(self, ctx: int, arch: int) -> None:
        """Add an architecture; one already in the filter (the native one) is not an error."""
        rc = int(self._lib.seccomp_arch_add(ctx, arch))
        if rc != -errno.EEXIST:
            self._check(rc, f"seccomp_arch_add({arch:#x})")

    def arch_resolve_name(self, name: str) -> int:
        """libseccomp's token for a lower-case name such as ``x86_64``; 0 if unknown."""
        return int(self._lib.seccomp_arch_resolve_name(name.encode()))

    def arch_native(self) -> int:
        return int(self._lib.seccomp_arch_native())

    def attr_set(self, ctx: int, attr: int, value: int) -> None:
        self._check(int(self._lib.seccomp_attr_set(ctx, attr, value)), f"seccomp_attr_set({attr})")

    def attr_get(self, ctx: int, attr: int) -> int:
        value = ctypes.c_uint32()
        self._check(
            int(self._lib.seccomp_attr_get(ctx, attr, ctypes.byref(value))),
            f"seccomp_attr_get({attr})",
        )
        return value.value

    def resolve_name(self, name: str) -> int:
        """The native number of a system call; ``NR_SCMP_ERROR`` if libseccomp does not know it."""
        return int(self._lib.seccomp_syscall_resolve_name(name.encode()))

    def rule_add(
        self, ctx: int, action: int, syscall: int, conditions: Sequence[Condition]
    ) -> None:
        """One rule: ``action`` when ``syscall`` is made and every condition holds (AND)."""
        array = (_ArgCmp * max(len(conditions), 1))()
        for i, c in enumerate(conditions):
            array[i] = _ArgCmp(c.arg, c.op, c.a, c.b)
        self._check(
            int(self._lib.seccomp_rule_add_array(ctx, action, syscall, len(conditions), array)),
            f"seccomp_rule_add({syscall})",
        )

    def load(self, ctx: int) -> None:
        self._check(int(self._lib.seccomp_load(ctx)), "seccomp_load")

    def export_pfc(self, ctx: int, fd: int) -> None:
        """Write the filter as libseccomp's human-readable pseudo filter code to ``fd``."""
        self._check(int(self._lib.seccomp_export_pfc(ctx, fd)), "seccomp_export_pfc")

    def export_bpf(self, ctx: int) -> bytes:
        """The filter compiled to the kernel's BPF (``struct sock_filter`` array)."""
        fd = os.memfd_create("berth-seccomp", os.MFD_CLOEXEC)
        try:
            self._check(int(self._lib.seccomp_export_bpf(ctx, fd)), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)


_LIB: LibSeccomp | None = None


def library() -> LibSeccomp:
    """The process-wide libseccomp binding, loaded on first use."""
    global _LIB  # noqa: PLW0603 - one lazily loaded library per process
    if _LIB is None:
        _LIB = LibSeccomp()
    return _LIB


class Filter:
    """A built libseccomp filter context; ``load`` installs it on the calling thread."""

    def __init__(
        self, lib: LibSeccomp, ctx: int, skipped: tuple[str, ...] = (), flags: bool = False
    ) -> None:
        self._lib = lib
        self._ctx: int | None = ctx
        # system call names libseccomp did not know, skipped as runc does
        self.skipped = skipped
        # the profile sets SECCOMP_FILTER_FLAG_*s: only libseccomp's own load applies them
        self.flags = flags

    @property
    def ctx(self) -> int:
        if self._ctx is None:
            raise BerthError("linux.seccomp: the filter was already released")
        return self._ctx

    def load(self) -> None:
        """seccomp_load in the calling process (needs no_new_privs or CAP_SYS_ADMIN)."""
        try:
            self._lib.load(self.ctx)
        except OSError as e:
            raise BerthError(f"linux.seccomp: loading the filter: {e.strerror or e}") from e

    def export_pfc(self, fd: int) -> None:
        """Write the filter in libseccomp's pseudo filter code to ``fd`` (for debugging)."""
        self._lib.export_pfc(self.ctx, fd)

    def export_bpf(self) -> bytes:
        return self._lib.export_bpf(self.ctx)

    def release(self) -> None:
        """Free the context (a loaded filter stays in force); calling it twice is harmless."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            self._lib.release(ctx)

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _action(
    name: str, errno_ret: int | None, default_errno: int, field: str, errno_field: str
) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise Unsupported(f"{field}: SCMP_ACT_NOTIFY is not supported yet (no seccomp listener)")
    base = ACTIONS.get(name)
    if base is None:
        raise InvalidArgument(f"{field}: {name!r} is not one of {', '.join(ACTIONS)}")
    if name not in _WITH_ERRNO:
        if errno_ret is not None:
            raise InvalidArgument(
                f"{errno_field}: {name} takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"
            )
        return base
    value = default_errno if errno_ret is None else errno_ret
    if not 0 <= value <= 0xFFFF:
        raise InvalidArgument(f"{errno_field}: {value} does not fit in 16 bits")
    return base | value


def _conditions(rule: SeccompSyscall, field: str) -> list[Condition]:
    conditions = []
    for j, arg in enumerate(rule.args):
        where = f"{field}.args[{j}]"
        if not 0 <= arg.index < _MAX_ARGS:
            raise InvalidArgument(f"{where}.index: {arg.index} is not in 0..{_MAX_ARGS - 1}")
        op = OPS.get(arg.op)
        if op is None:
            raise InvalidArgument(f"{where}.op: {arg.op!r} is not one of {', '.join(OPS)}")
        for key, value in (("value", arg.value), ("valueTwo", arg.value_two)):
            if not 0 <= value < 2**64:
                raise InvalidArgument(f"{where}.{key}: {value} does not fit in 64 bits")
        conditions.append(Condition(arg.index, op, arg.value, arg.value_two))
    return conditions


def split_conditions(conditions: Sequence[Condition]) -> list[list[Condition]]:
    """The condition lists of the libseccomp rules one OCI rule becomes (runc's behaviour).

    libseccomp cannot AND two comparisons of the same argument in one rule, so if any index
    repeats, every condition becomes a rule of its own (the rule then matches if any holds);
    otherwise all of them go in one rule.
    """
    indexes = [c.arg for c in conditions]
    if len(set(indexes)) != len(indexes):
        return [[c] for c in conditions]
    return [list(conditions)]


class _Rule(NamedTuple):
    field: str
    names: tuple[str, ...]
    action: int
    conditions: tuple[tuple[Condition, ...], ...]  # one libseccomp rule per inner tuple


class _Plan(NamedTuple):
    """A validated profile in libseccomp's numbers; each list item keeps its field path."""

    field: str
    default: int
    attrs: tuple[tuple[str, int], ...]
    arches: tuple[tuple[str, int], ...]
    rules: tuple[_Rule, ...]


def _plan(profile: Seccomp, field: str) -> _Plan:
    default = _action(
        profile.default_action,
        profile.default_errno_ret,
        _DEFAULT_ERRNO,
        f"{field}.defaultAction",
        f"{field}.defaultErrnoRet",
    )
    arches = []
    for i, arch in enumerate(profile.architectures):
        where = f"{field}.architectures[{i}]"
        token = ARCHITECTURES.get(arch)
        if token is None:
            raise InvalidArgument(f"{where}: {arch!r} is not one of {', '.join(ARCHITECTURES)}")
        arches.append((f"{where}: {arch}", token))
    attrs = []
    for i, flag in enumerate(profile.flags):
        where = f"{field}.flags[{i}]"
        if flag in _UNSUPPORTED_FLAGS:
            raise Unsupported(f"{where}: {flag} is not supported yet")
        attr = FLAGS.get(flag)
        if attr is None:
            raise InvalidArgument(f"{where}: {flag!r} is not one of {', '.join(FLAGS)}")
        attrs.append((f"{where}: {flag}", attr))
    rules = []
    for i, rule in enumerate(profile.syscalls):
        where = f"{field}.syscalls[{i}]"
        if not rule.names:
            raise InvalidArgument(f"{where}.names: must name at least one system call")
        action = _action(
            rule.action, rule.errno_ret, _DEFAULT_ERRNO, f"{where}.action", f"{where}.errnoRet"
        )
        groups = split_conditions(_conditions(rule, where))
        rules.append(_Rule(where, rule.names, action, tuple(tuple(g) for g in groups)))
    return _Plan(field, default, tuple(attrs), tuple(arches), tuple(rules))


def validate(profile: Seccomp | None, field: str = "linux.seccomp") -> None:
    """Raise ``InvalidArgument``/``Unsupported`` naming the field; needs no libseccomp."""
    if profile is not None:
        _plan(profile, field)


def build(profile: Seccomp, lib: LibSeccomp | None = None, field: str = "linux.seccomp") -> Filter:
    """Validate ``profile`` and compile it into a libseccomp filter (not loaded yet).

    Raises ``InvalidArgument``/``Unsupported`` naming the field before libseccomp is touched;
    ``Unavailable`` if libseccomp cannot be loaded.
    """
    plan = _plan(profile, field)
    lib = lib or library()
    try:
        ctx = lib.init(plan.default)
    except OSError as e:
        raise BerthError(f"{field}: seccomp_init: {e.strerror or e}") from e
    try:
        skipped = _fill(lib, ctx, plan)
    except BaseException:
        lib.release(ctx)
        raise
    return Filter(lib, ctx, skipped, flags=bool(plan.attrs))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class Program:
    """A filter compiled to BPF once, installed by one ``prctl`` in the process that loads it.

    Why: libseccomp generates the BPF inside ``seccomp_load``, in the container's init, on every
    start (several ms for Docker's profile of ~360 rules). A long-lived caller (berthd's
    supervisor) keeps the program of each profile it has seen (``prepare``) and each init only
    installs it. The buffer lives as long as the Program; ``release`` is a no-op (it is shared).
    """

    def __init__(self, bpf: bytes, skipped: tuple[str, ...] = ()) -> None:
        if not bpf or len(bpf) % 8:
            raise BerthError(f"linux.seccomp: a BPF program of {len(bpf)} bytes is not whole")
        self.skipped = skipped
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._fprog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buffer))
        self._prctl = ctypes.CDLL(None, use_errno=True).prctl
        self._prctl.argtypes = [
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_void_p,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]
        self._prctl.restype = ctypes.c_int

    def load(self) -> None:
        """Install the program on the calling thread (needs no_new_privs or CAP_SYS_ADMIN)."""
        pointer = ctypes.addressof(self._fprog)
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, pointer, 0, 0) != 0:
            reason = os.strerror(ctypes.get_errno())
            raise BerthError(f"linux.seccomp: loading the filter: {reason}")

    def release(self) -> None:
        pass


_PROGRAMS: dict[Seccomp, Program] = {}
PROGRAMS_KEPT = 16


def prepare(profile: Seccomp, field: str = "linux.seccomp") -> Filter | Program:
    """What a container's init loads for ``profile``: the BPF program compiled the first time
    this process saw an equal profile (the last ``PROGRAMS_KEPT`` are kept), or a libseccomp
    ``Filter`` when the profile sets flags (the caller releases it). Errors as ``build``'s."""
    program = _PROGRAMS.get(profile)
    if program is not None:
        return program
    compiled = build(profile, field=field)
    if compiled.flags:
        return compiled
    try:
        program = Program(compiled.export_bpf(), compiled.skipped)
    except OSError as e:
        raise BerthError(f"{field}: seccomp_export_bpf: {e.strerror or e}") from e
    finally:
        compiled.release()
    if len(_PROGRAMS) >= PROGRAMS_KEPT:
        del _PROGRAMS[next(iter(_PROGRAMS))]
    _PROGRAMS[profile] = program
    return program


def _fill(lib: LibSeccomp, ctx: int, plan: _Plan) -> tuple[str, ...]:
    """Add attributes, architectures and rules to ``ctx``; return the skipped syscall names."""
    try:
        lib.attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        lib.attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1)  # real errnos from seccomp_load
    except OSError as e:
        raise BerthError(f"{plan.field}: setting libseccomp attributes: {e.strerror or e}") from e
    for what, attr in plan.attrs:
        try:
            lib.attr_set(ctx, attr, 1)
        except OSError as e:
            raise Unsupported(f"{what}: libseccomp refuses it: {e.strerror or e}") from e
    for what, arch in plan.arches:
        try:
            lib.arch_add(ctx, arch)
        except OSError as e:
            raise Unsupported(f"{what}: libseccomp cannot add it: {e.strerror or e}") from e
    skipped: dict[str, None] = {}
    for rule in plan.rules:
        if rule.action == plan.default:
            continue  # libseccomp refuses a rule that repeats the default action
        for name in rule.names:
            number = lib.resolve_name(name)
            if number == NR_SCMP_ERROR:
                skipped[name] = None
                continue
            for conditions in rule.conditions:
                try:
                    lib.rule_add(ctx, rule.action, number, conditions)
                except OSError as e:
                    raise InvalidArgument(
                        f"{rule.field}: adding the rule for {name!r}: {e.strerror or e}"
                    ) from e
    return tuple(skipped)


def names_known(names: Iterable[str], lib: LibSeccomp | None = None) -> list[str]:
    """The names among ``names`` that libseccomp can resolve (the others would be skipped)."""
    lib = lib or library()
    return [n for n in names if lib.resolve_name(n) != NR_SCMP_ERROR]
