"""The one kernel boundary of the runtime: every Linux call Python's ``os`` lacks, via libc.

Rules: nothing else in Berth calls libc through ctypes (libseccomp has its own module). Each
method raises ``OSError`` with errno and a message naming the call and its main argument, so
callers can turn it into a ``BerthError`` that names the field. ``Syscalls`` is a class so tests
can substitute a recording fake; ``LINUX`` is the real one. Constants are the x86_64/generic
values from the kernel headers.
"""

from __future__ import annotations

import os

from berth.runtime import libc as ctypes  # the pieces of ctypes we use, imported cheaply

# clone/unshare/setns flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}
# the name of each namespace under /proc/<pid>/ns/
NAMESPACE_PROC_NAMES = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_I_VERSION = 1 << 23
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
UMOUNT_NOFOLLOW = 8

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

SIGCHLD = 17

_SYS_CLONE = 56
_SYS_PIVOT_ROOT = 155
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_SYS_SETNS = 308
_SYS_PIDFD_OPEN = 434
_SYS_KEYCTL = 250
_SYS_MOUNT_SETATTR = 442
_SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
_KEYCTL_JOIN_SESSION_KEYRING = 1
_KEYCTL_SETPERM = 5
_KEYCTL_DESCRIBE = 6

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.Library:
    return ctypes.Library()


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


class Syscalls:
    """Thin, typed wrappers; each raises OSError(errno, "call(arg): strerror")."""

    def __init__(self) -> None:
        self._c = _libc()
        self._c.syscall.restype = ctypes.c_long
        self._c.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_void_p,
        ]
        self._c.prctl.argtypes = [
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]

    @staticmethod
    def _check(result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self._check(
            self._c.mount(
                source.encode() if source is not None else None,
                target.encode(),
                fstype.encode() if fstype is not None else None,
                flags,
                data.encode() if data else None,
            ),
            f"mount {source or fstype} on {target}",
        )

    def mount_setattr_recursive(self, target: str, attr_set: int, attr_clr: int) -> None:
        """Change the flags of a whole mount tree (the ``r*`` options: rro, rnosuid …)."""
        attr = _MountAttr(attr_set, attr_clr, 0, 0)
        self._check(
            self._c.syscall(
                _SYS_MOUNT_SETATTR,
                ctypes.c_int(AT_FDCWD),
                target.encode(),
                ctypes.c_uint(AT_RECURSIVE),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"mount_setattr {target}",
        )

    def umount2(self, target: str, flags: int = 0) -> None:
        self._check(self._c.umount2(target.encode(), flags), f"umount {target}")

    def unshare(self, flags: int) -> None:
        self._check(self._c.unshare(flags), f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._check(self._c.syscall(_SYS_SETNS, fd, nstype), f"setns({nstype:#x})")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._check(
            self._c.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()),
            f"pivot_root {new_root}",
        )

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._c.sethostname(raw, len(raw)), f"sethostname {name!r}")

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._c.setdomainname(raw, len(raw)), f"setdomainname {name!r}")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return self._check(self._c.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")

    def clone(self, flags: int) -> int:
        """fork(2) with namespace flags: returns 0 in the child, the child's pid in the parent.

        The caller must be single-threaded (the runtime always is). A raw clone bypasses
        Python's fork hooks, so run it through ``os.register_at_fork``-free code only.
        """
        return self._check(
            self._c.syscall(_SYS_CLONE, ctypes.c_ulong(flags | SIGCHLD), None, None, None, None),
            f"clone({flags:#x})",
        )

    def clone3(self, flags: int, cgroup_fd: int | None = None) -> int:
        """``clone`` with namespace flags, born straight into the cgroup v2 directory
        ``cgroup_fd`` (CLONE_INTO_CGROUP) when given: no migration afterwards."""
        args = _CloneArgs()
        args.flags = flags | (CLONE_INTO_CGROUP if cgroup_fd is not None else 0)
        args.exit_signal = SIGCHLD
        if cgroup_fd is not None:
            args.cgroup = cgroup_fd
        return self._check(
            self._c.syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))),
            f"clone3({args.flags:#x})",
        )

    def capget(self) -> tuple[int, int, int]:
        """The calling thread's (effective, permitted, inheritable) sets as 64-bit masks."""
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        self._check(
            self._c.syscall(_SYS_CAPGET, ctypes.byref(header), ctypes.byref(data)), "capget"
        )
        return (
            data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32,
        )

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i, shift in enumerate((0, 32)):
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        self._check(
            self._c.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset"
        )

    def join_session_keyring(self, name: str, add_perm: int) -> bool:
        """Join the session keyring ``name`` (made if there is none we may search) and add
        ``add_perm`` to its permissions, as runc does so that the container's later processes
        can join it by name; False where the kernel refuses keyrings (it is best effort)."""
        serial: int = self._c.syscall(_SYS_KEYCTL, _KEYCTL_JOIN_SESSION_KEYRING, name.encode())
        if serial < 0:
            return False
        buf = ctypes.create_string_buffer(512)
        size = self._check(
            self._c.syscall(_SYS_KEYCTL, _KEYCTL_DESCRIBE, serial, buf, len(buf)),
            f"keyctl describe {name}",
        )
        # "type;uid;gid;perm;description", perm in hex
        perm = int(buf.raw[: min(size, len(buf))].split(b";")[3], 16)
        if perm & add_perm != add_perm:
            self._check(
                self._c.syscall(
                    _SYS_KEYCTL, _KEYCTL_SETPERM, serial, ctypes.c_uint32(perm | add_perm)
                ),
                f"keyctl setperm {name}",
            )
        return True

    def pidfd_open(self, pid: int) -> int:
        return self._check(self._c.syscall(_SYS_PIDFD_OPEN, pid, 0), f"pidfd_open({pid})")


LINUX = Syscalls()
