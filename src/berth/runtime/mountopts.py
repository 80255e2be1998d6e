"""Mount option strings (``ro``, ``nosuid``, ``rbind``, ``mode=755`` …) to mount(2) arguments.

Rules: one table maps every option the runtime accepts to (set flags, clear flags); propagation
options are kept apart because the kernel wants them in a separate mount call; whatever is not
in the tables is filesystem data (``mode=755,size=64k``) handed to the filesystem untouched.
"""

from __future__ import annotations

from berth.runtime import syscalls as s
from berth.spec.value import value

# option -> (flags to set, flags to clear)
FLAGS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (s.MS_RDONLY, 0),
    "rw": (0, s.MS_RDONLY),
    "suid": (0, s.MS_NOSUID),
    "nosuid": (s.MS_NOSUID, 0),
    "dev": (0, s.MS_NODEV),
    "nodev": (s.MS_NODEV, 0),
    "exec": (0, s.MS_NOEXEC),
    "noexec": (s.MS_NOEXEC, 0),
    "sync": (s.MS_SYNCHRONOUS, 0),
    "async": (0, s.MS_SYNCHRONOUS),
    "dirsync": (s.MS_DIRSYNC, 0),
    "remount": (s.MS_REMOUNT, 0),
    "mand": (s.MS_MANDLOCK, 0),
    "nomand": (0, s.MS_MANDLOCK),
    "atime": (0, s.MS_NOATIME),
    "noatime": (s.MS_NOATIME, 0),
    "diratime": (0, s.MS_NODIRATIME),
    "nodiratime": (s.MS_NODIRATIME, 0),
    "bind": (s.MS_BIND, 0),
    "rbind": (s.MS_BIND | s.MS_REC, 0),
    "relatime": (s.MS_RELATIME, 0),
    "norelatime": (0, s.MS_RELATIME),
    "strictatime": (s.MS_STRICTATIME, 0),
    "nostrictatime": (0, s.MS_STRICTATIME),
    "lazytime": (s.MS_LAZYTIME, 0),
    "nolazytime": (0, s.MS_LAZYTIME),
    "symfollow": (0, s.MS_NOSYMFOLLOW),
    "nosymfollow": (s.MS_NOSYMFOLLOW, 0),
    "acl": (s.MS_POSIXACL, 0),
    "noacl": (0, s.MS_POSIXACL),
    "iversion": (s.MS_I_VERSION, 0),
    "noiversion": (0, s.MS_I_VERSION),
    "silent": (s.MS_SILENT, 0),
    "loud": (0, s.MS_SILENT),
}

# recursive options (mount_setattr on the whole tree) -> (attributes to set, to clear)
_ATIME = s.MOUNT_ATTR__ATIME
RECURSIVE: dict[str, tuple[int, int]] = {
    "rro": (s.MOUNT_ATTR_RDONLY, 0),
    "rrw": (0, s.MOUNT_ATTR_RDONLY),
    "rnosuid": (s.MOUNT_ATTR_NOSUID, 0),
    "rsuid": (0, s.MOUNT_ATTR_NOSUID),
    "rnodev": (s.MOUNT_ATTR_NODEV, 0),
    "rdev": (0, s.MOUNT_ATTR_NODEV),
    "rnoexec": (s.MOUNT_ATTR_NOEXEC, 0),
    "rexec": (0, s.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (s.MOUNT_ATTR_NODIRATIME, 0),
    "rdiratime": (0, s.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (s.MOUNT_ATTR_NOSYMFOLLOW, 0),
    "rsymfollow": (0, s.MOUNT_ATTR_NOSYMFOLLOW),
    "rrelatime": (s.MOUNT_ATTR_RELATIME, _ATIME),
    "rnorelatime": (0, _ATIME),
    # the kernel takes atime changes only as "clear the whole atime field, set one mode"
    "ratime": (s.MOUNT_ATTR_RELATIME, _ATIME),
    "rnoatime": (s.MOUNT_ATTR_NOATIME, _ATIME),
    "rstrictatime": (s.MOUNT_ATTR_STRICTATIME, _ATIME),
    "rnostrictatime": (s.MOUNT_ATTR_RELATIME, _ATIME),
}

PROPAGATION: dict[str, int] = {
    "private": s.MS_PRIVATE,
    "rprivate": s.MS_PRIVATE | s.MS_REC,
    "shared": s.MS_SHARED,
    "rshared": s.MS_SHARED | s.MS_REC,
    "slave": s.MS_SLAVE,
    "rslave": s.MS_SLAVE | s.MS_REC,
    "unbindable": s.MS_UNBINDABLE,
    "runbindable": s.MS_UNBINDABLE | s.MS_REC,
}

# flags that a bind mount only honours through a second, remounting call
REMOUNT_FLAGS = (
    s.MS_RDONLY
    | s.MS_NOSUID
    | s.MS_NODEV
    | s.MS_NOEXEC
    | s.MS_NOATIME
    | s.MS_NODIRATIME
    | s.MS_RELATIME
    | s.MS_STRICTATIME
    | s.MS_NOSYMFOLLOW
)


@value
class ParsedOptions:
    flags: int
    propagation: tuple[int, ...]
    data: str
    recursive_set: int = 0
    recursive_clear: int = 0

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & s.MS_BIND)


def parse(options: tuple[str, ...]) -> ParsedOptions:
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    attr_set = attr_clear = 0
    for option in options:
        if option in FLAGS:
            set_flags, clear_flags = FLAGS[option]
            flags = (flags | set_flags) & ~clear_flags
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        elif option in RECURSIVE:
            set_attr, clear_attr = RECURSIVE[option]
            attr_set = (attr_set & ~clear_attr) | set_attr
            attr_clear = (attr_clear & ~set_attr) | clear_attr
        elif option:
            data.append(option)
    return ParsedOptions(flags, tuple(propagation), ",".join(data), attr_set, attr_clear)
