"""Linux capabilities of the container process: names, masks, bounding set, capset, ambient.

Rules: stdlib only, sync, imports nothing heavy (it sits on the container start path); warnings
go to the runtime's log (``berth.runtime.log``, imported only when there is something to say).
Every kernel call goes through an injected ``Syscalls`` (tests pass a recording fake). Errors are
``BerthError``s naming the config field, e.g. ``process.capabilities.bounding``.

Order of use in the container's init, as runc does it:

1. ``validate(caps)`` early, in the parent, so a bad name fails before anything is created;
2. ``drop_bounding(caps)`` while init still has CAP_SETPCAP (before the uid switch);
3. ``keep_across_setuid()`` if the process runs as a non-root user, then setresuid/setresgid;
4. ``apply(caps)``: capset(effective, permitted, inheritable), then the ambient set.

A name this module knows but the running kernel does not (number above
``/proc/sys/kernel/cap_last_cap``) is skipped with a warning, as runc does; a name nobody knows is
an ``InvalidArgument``.
"""

from __future__ import annotations

import errno
import os

from berth.errors import BerthError, InvalidArgument
from berth.runtime.syscalls import (
    LINUX,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    PR_SET_KEEPCAPS,
    Syscalls,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from berth.spec.config import Capabilities

# linux/capability.h
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
NAMES: dict[int, str] = {number: name for name, number in CAPABILITIES.items()}

_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


def _debug(message: str) -> None:
    from berth.runtime import log

    log.debug(message)


def _warn(message: str) -> None:
    from berth.runtime import log  # the runtime's runc-style log; imported only when needed

    log.warning(message)


_last_cap: list[int] = []  # the kernel's answer, once asked (it cannot change)


def _kernel_last_cap() -> int:
    if not _last_cap:
        _last_cap.append(_read_last_cap())
    return _last_cap[0]


def _read_last_cap() -> int:
    try:
        with open(_CAP_LAST_CAP, "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    # /proc not mounted (or odd): probe the bounding set as libcap does; EINVAL past the last one.
    last = -1
    while last < 63:
        try:
            LINUX.prctl(PR_CAPBSET_READ, last + 1)
        except OSError as e:
            if e.errno == errno.EINVAL:
                break
            raise
        last += 1
    return last


def last_cap() -> int:
    """The highest capability number the running kernel knows (cached: it cannot change)."""
    return _kernel_last_cap()


def unknown_to_kernel(names: Iterable[str]) -> list[str]:
    """The known ``CAP_*`` names among ``names`` that the running kernel does not have."""
    top = last_cap()
    return [n for n in names if n in CAPABILITIES and CAPABILITIES[n] > top]


def to_mask(names: Iterable[str], field: str) -> int:
    """The 64-bit mask of ``names``.

    An unknown name raises ``InvalidArgument``; a name too new for the running kernel is skipped.
    """
    top = last_cap()
    mask = 0
    for name in names:
        number = CAPABILITIES.get(name)
        if number is None:
            raise InvalidArgument(f"{field}: unknown capability {name!r}")
        if number > top:
            _warn(f"{field}: the running kernel does not know {name}; ignoring it")
            continue
        mask |= 1 << number
    return mask


def to_names(mask: int) -> list[str]:
    """The ``CAP_*`` names of the bits set in ``mask`` (unnamed bits as ``CAP_<n>``)."""
    return [NAMES.get(n, f"CAP_{n}") for n in range(64) if mask >> n & 1]


def validate(caps: Capabilities | None, field: str = "process.capabilities") -> None:
    """Raise ``InvalidArgument`` naming ``<field>.<set>`` if any set names an unknown capability."""
    if caps is None:
        return
    for set_name in caps.SETS:
        for name in getattr(caps, set_name):
            if name not in CAPABILITIES:
                raise InvalidArgument(f"{field}.{set_name}: unknown capability {name!r}")


def drop_bounding(
    caps: Capabilities | None, sys: Syscalls = LINUX, field: str = "process.capabilities"
) -> None:
    """Drop from the bounding set every capability not in ``caps.bounding``; None keeps them all.

    Needs CAP_SETPCAP in the effective set, so it runs before the uid switch and before
    ``apply``. Dropping a capability that is already out of the bounding set is harmless.
    """
    if caps is None:
        return
    keep = to_mask(caps.bounding, f"{field}.bounding")
    for number in range(last_cap() + 1):
        if keep >> number & 1:
            continue
        try:
            sys.prctl(PR_CAPBSET_DROP, number)
        except OSError as e:
            raise BerthError(
                f"{field}.bounding: dropping {NAMES.get(number, number)} from the bounding set: "
                f"{os.strerror(e.errno or 0)}"
            ) from e


def apply(
    caps: Capabilities | None, sys: Syscalls = LINUX, field: str = "process.capabilities"
) -> None:
    """Set effective/permitted/inheritable from ``caps``, then replace the ambient set.

    Runs after the uid/gid switch (and after ``keep_across_setuid`` for a non-root user). An
    ambient capability the kernel refuses to raise (it must be permitted and inheritable) is
    skipped with a warning, as runc does. None leaves every set as it is.
    """
    if caps is None:
        return
    effective = to_mask(caps.effective, f"{field}.effective")
    permitted = to_mask(caps.permitted, f"{field}.permitted")
    inheritable = to_mask(caps.inheritable, f"{field}.inheritable")
    ambient = to_mask(caps.ambient, f"{field}.ambient")
    try:
        sys.capset(effective, permitted, inheritable)
    except OSError as e:
        raise BerthError(
            f"{field}: capset(effective={effective:#x}, permitted={permitted:#x}, "
            f"inheritable={inheritable:#x}): {os.strerror(e.errno or 0)}"
        ) from e
    try:
        sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL or ambient:  # EINVAL: a kernel without ambient capabilities
            raise BerthError(
                f"{field}.ambient: clearing the ambient set: {os.strerror(e.errno or 0)}"
            ) from e
        return
    for number in range(64):
        if not ambient >> number & 1:
            continue
        try:
            sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
        except OSError as e:
            # runc's default config lists ambient caps that are not inheritable: as runc does,
            # note it for --debug only
            _debug(
                f"{field}.ambient: cannot raise {NAMES.get(number, number)} "
                f"(it must be permitted and inheritable): {os.strerror(e.errno or 0)}"
            )


def keep_across_setuid(sys: Syscalls = LINUX) -> None:
    """PR_SET_KEEPCAPS 1: keep the permitted set through a switch to a non-root uid.

    The effective set is still cleared by the switch; ``apply`` raises it again afterwards.
    """
    try:
        sys.prctl(PR_SET_KEEPCAPS, 1)
    except OSError as e:
        raise BerthError(
            f"process.capabilities: PR_SET_KEEPCAPS: {os.strerror(e.errno or 0)}"
        ) from e
