"""The container's root filesystem, set up inside its new mount namespace.

Order (runtime spec, config-linux.md): propagation of / made slave (or the configured one) so
nothing leaks to the host; the rootfs bind-mounted on itself; each configured mount in order
(destinations resolved inside the rootfs, never through a symlink that leads out of it); the
default and configured devices; then ``pivot_root`` (or ``MS_MOVE`` + chroot with --no-pivot);
then masked paths, read-only paths, a read-only root and the rootfs propagation.

Rules: runs only in the container's init process, after it has its own mount namespace; every
kernel call goes through ``Syscalls``; a failure raises ``BerthError`` naming the config field.
"""

from __future__ import annotations

import errno
import os
import stat

from berth.errors import BerthError, InvalidArgument
from berth.runtime import mountopts
from berth.runtime import syscalls as s
from berth.runtime.cgroups import Cgroup, CgroupLayout
from berth.spec.config import Device, Mount, Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0),
    Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0),
    Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0),
    Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)
KCORE_SYMLINK = ("/proc/kcore", "/dev/core")  # only where the kernel has /proc/kcore, as runc
_MAX_SYMLINKS = 255


def secure_join(root: str, path: str) -> str:
    """``root/path`` with every symlink resolved as if ``root`` were ``/``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise InvalidArgument(f"{path}: too many levels of symbolic links in the rootfs")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)


def _make_target(target: str, like_file: bool) -> None:
    if os.path.lexists(target):
        return
    if like_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    else:
        os.makedirs(target, 0o755, exist_ok=True)


def _locked_flags(path: str) -> int:
    """Flags a remount must keep (in a user namespace the kernel refuses to clear them)."""
    f_flag = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, s.MS_NOSUID),
        (os.ST_NODEV, s.MS_NODEV),
        (os.ST_NOEXEC, s.MS_NOEXEC),
        (os.ST_RDONLY, s.MS_RDONLY),
    ):
        if f_flag & st_flag:
            flags |= ms_flag
    return flags


def bind(sys: s.Syscalls, source: str, target: str, flags: int, recursive: bool = True) -> None:
    """Bind-mount, then remount to apply ``flags`` (ro, nosuid …) a plain bind ignores."""
    sys.mount(source, target, None, s.MS_BIND | (s.MS_REC if recursive else 0), None)
    extra = flags & mountopts.REMOUNT_FLAGS
    if extra:
        try:
            sys.mount(None, target, None, s.MS_BIND | s.MS_REMOUNT | extra, None)
        except PermissionError:
            locked = _locked_flags(target) & ~s.MS_RDONLY
            sys.mount(None, target, None, s.MS_BIND | s.MS_REMOUNT | extra | locked, None)


def _mount_cgroups(
    sys: s.Syscalls,
    target: str,
    flags: int,
    layout: CgroupLayout,
    cgroup: Cgroup,
    cgroupns: bool,
) -> None:
    """/sys/fs/cgroup in the container: the container's own cgroups, one per hierarchy."""
    base_flags = flags & (s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC | s.MS_RELATIME)
    if layout.mode == "v2":
        only = layout.hierarchies[0]
        _mount_one_cgroup(
            sys, target, base_flags, only.version, "", cgroup.paths[only.mountpoint], cgroupns
        )
    else:
        sys.mount("tmpfs", target, "tmpfs", base_flags, "mode=755")
        for h in layout.hierarchies:
            sub = os.path.join(target, os.path.basename(h.mountpoint))
            os.makedirs(sub, exist_ok=True)
            _mount_one_cgroup(
                sys,
                sub,
                base_flags,
                h.version,
                h.mount_options,
                cgroup.paths[h.mountpoint],
                cgroupns,
            )
    if flags & s.MS_RDONLY:
        for h in layout.hierarchies:
            sub = (
                target
                if layout.mode == "v2"
                else os.path.join(target, os.path.basename(h.mountpoint))
            )
            sys.mount(None, sub, None, s.MS_BIND | s.MS_REMOUNT | s.MS_RDONLY | base_flags, None)
        if layout.mode != "v2":
            sys.mount(None, target, None, s.MS_REMOUNT | s.MS_RDONLY | base_flags, "mode=755")


def _mount_one_cgroup(
    sys: s.Syscalls,
    target: str,
    flags: int,
    version: int,
    options: str,
    host_dir: str,
    cgroupns: bool,
) -> None:
    if cgroupns:
        try:
            if version == 2:
                sys.mount("cgroup2", target, "cgroup2", flags, None)
            else:
                sys.mount("cgroup", target, "cgroup", flags, options)
            return
        except PermissionError:
            pass  # in a user namespace: fall back to binding the host's directory
    bind(sys, host_dir, target, flags, recursive=False)


def mount_one(
    sys: s.Syscalls,
    rootfs: str,
    mount: Mount,
    where: str,
    layout: CgroupLayout | None,
    cgroup: Cgroup | None,
    namespaces: set[str],
) -> None:
    opts = mountopts.parse(mount.options)
    is_bind = opts.is_bind or mount.type == "bind"
    target = secure_join(rootfs, mount.destination)
    if is_bind:
        source = mount.source
        if not os.path.isabs(source):
            raise InvalidArgument(f"{where}.source: bind source {source!r} must be absolute")
        try:
            source_is_dir = os.path.isdir(source)
        except OSError:
            source_is_dir = False
        if not os.path.exists(source):
            raise InvalidArgument(f"{where}.source: {source} does not exist")
        _make_target(target, like_file=not source_is_dir)
        bind(sys, source, target, opts.flags, recursive=bool(opts.flags & s.MS_REC))
    else:
        _make_target(target, like_file=False)
        if mount.type == "cgroup" and layout is not None and cgroup is not None:
            _mount_cgroups(sys, target, opts.flags, layout, cgroup, "cgroup" in namespaces)
        elif mount.type == "sysfs" and "network" not in namespaces:
            # sysfs can only be mounted by the owner of the network namespace; as runc does,
            # show the host's /sys read-only instead.
            bind(sys, "/sys", target, opts.flags | s.MS_RDONLY, recursive=True)
        elif mount.type == "mqueue" and "ipc" not in namespaces:
            bind(sys, "/dev/mqueue", target, opts.flags, recursive=False)
        else:
            fstype = mount.type or "none"
            data = opts.data
            try:
                try:
                    sys.mount(mount.source or fstype, target, fstype, opts.flags, data or None)
                except OSError as exc:
                    if not (exc.errno == errno.EOVERFLOW and fstype == "devpts"):
                        raise
                    # gid=5 (tty) is unmapped in this user namespace: mount without it, as runc
                    data = ",".join(o for o in data.split(",") if not o.startswith("gid="))
                    sys.mount(mount.source or fstype, target, fstype, opts.flags, data or None)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise InvalidArgument(
                        f"{where}.type: the kernel has no filesystem {mount.type!r}"
                    ) from None
                raise
    if opts.recursive_set or opts.recursive_clear:
        sys.mount_setattr_recursive(target, opts.recursive_set, opts.recursive_clear)
    for propagation in opts.propagation:
        sys.mount(None, target, None, propagation, None)


def create_devices(
    sys: s.Syscalls, rootfs: str, devices: Sequence[Device], in_userns: bool
) -> None:
    for dev in devices:
        target = secure_join(rootfs, dev.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):
            if dev in DEFAULT_DEVICES:
                continue
            os.unlink(target)
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[
            dev.type
        ]
        mode = dev.file_mode if dev.file_mode is not None else 0o666
        if in_userns:
            # mknod is refused in a user namespace: bind the host's node instead, as runc does
            _make_target(target, like_file=True)
            bind(sys, dev.path, target, 0, recursive=False)
            continue
        old_umask = os.umask(0)
        try:
            os.mknod(target, kind | mode, os.makedev(dev.major, dev.minor))
        finally:
            os.umask(old_umask)
        os.chown(target, dev.uid or 0, dev.gid or 0)


def setup_dev(rootfs: str, kcore: str = KCORE_SYMLINK[0]) -> None:
    """/dev's symlinks and ptmx; ``/dev/core`` only if ``kcore`` (the kernel's, which the
    container's /proc will show) exists: a dangling link otherwise (CONFIG_PROC_KCORE=n)."""
    links = DEV_SYMLINKS + ((KCORE_SYMLINK,) if os.path.exists(kcore) else ())
    for source, link in links:
        target = secure_join(rootfs, link)
        if not os.path.lexists(target):
            os.symlink(source, target)
    ptmx = secure_join(rootfs, "/dev/ptmx")
    if os.path.isdir(os.path.join(rootfs, "dev/pts")):
        if os.path.lexists(ptmx) and not os.path.islink(ptmx):
            os.unlink(ptmx)
        if not os.path.lexists(ptmx):
            os.symlink("pts/ptmx", ptmx)


def prepare(
    sys: s.Syscalls,
    spec: Spec,
    rootfs: str,
    layout: CgroupLayout | None,
    cgroup: Cgroup | None,
    namespaces: set[str],
    before_cgroups: Callable[[], object] = lambda: None,
) -> None:
    """Everything before pivot_root, in the container's mount namespace; ``before_cgroups``
    runs once the first cgroup mount is reached (the init must be in its cgroups by then)."""
    propagation = spec.linux.rootfs_propagation
    flag = mountopts.PROPAGATION.get(propagation, s.MS_SLAVE | s.MS_REC)
    if flag & (s.MS_SHARED | s.MS_UNBINDABLE):
        # shared/unbindable are applied to the new root at the end; the host must not see our
        # mounts meanwhile
        flag = s.MS_SLAVE | s.MS_REC
    sys.mount(None, "/", None, flag, None)
    _make_parent_private(sys, rootfs)
    sys.mount(rootfs, rootfs, None, s.MS_BIND | s.MS_REC, None)
    for i, mount in enumerate(spec.mounts):
        if mount.type == "cgroup":
            before_cgroups()
        try:
            mount_one(sys, rootfs, mount, f"mounts[{i}]", layout, cgroup, namespaces)
        except BerthError:
            raise
        except OSError as exc:
            raise BerthError(f"mounts[{i}] ({mount.destination}): {exc.strerror or exc}") from exc
    dev_is_fresh = any(m.destination == "/dev" for m in spec.mounts)
    devices = (*DEFAULT_DEVICES, *spec.linux.devices) if dev_is_fresh else spec.linux.devices
    try:
        create_devices(sys, rootfs, devices, "user" in namespaces)
    except OSError as exc:
        raise BerthError(f"linux.devices: {exc.strerror or exc} ({exc.filename or ''})") from exc
    if dev_is_fresh:
        setup_dev(rootfs)


def _make_parent_private(sys: s.Syscalls, rootfs: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared: make that mount private."""
    mountpoint = _mountpoint_of(rootfs)
    sys.mount(None, mountpoint, None, s.MS_PRIVATE, None)


def _mountpoint_of(path: str) -> str:
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(
                best
            ):
                best = point
    return best


def pivot(sys: s.Syscalls, rootfs: str, no_pivot: bool) -> None:
    if no_pivot:
        os.chdir(rootfs)
        sys.mount(rootfs, "/", None, s.MS_MOVE, None)
        os.chroot(".")
        os.chdir("/")
        return
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        sys.pivot_root(".", ".")
        os.fchdir(old_root)
        sys.mount(None, ".", None, s.MS_SLAVE | s.MS_REC, None)
        sys.umount2(".", s.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def mask(sys: s.Syscalls, paths: Sequence[str]) -> None:
    for path in paths:
        try:
            if os.path.isdir(path):
                sys.mount("tmpfs", path, "tmpfs", s.MS_RDONLY, None)
            else:
                sys.mount("/dev/null", path, None, s.MS_BIND, None)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue
            raise BerthError(f"linux.maskedPaths: {path}: {exc.strerror}") from exc


def make_readonly(sys: s.Syscalls, paths: Sequence[str]) -> None:
    for path in paths:
        if not os.path.lexists(path):
            continue
        try:
            sys.mount(path, path, None, s.MS_BIND | s.MS_REC, None)
            flags = _locked_flags(path) | s.MS_RDONLY
            sys.mount(None, path, None, s.MS_BIND | s.MS_REMOUNT | s.MS_REC | flags, None)
        except OSError as exc:
            raise BerthError(f"linux.readonlyPaths: {path}: {exc.strerror}") from exc


def finish(sys: s.Syscalls, spec: Spec) -> None:
    """After pivot_root: masks, read-only paths, a read-only root, the root's propagation."""
    mask(sys, spec.linux.masked_paths)
    make_readonly(sys, spec.linux.readonly_paths)
    if spec.root is not None and spec.root.readonly:
        flags = _locked_flags("/") | s.MS_RDONLY
        sys.mount(None, "/", None, s.MS_BIND | s.MS_REMOUNT | s.MS_REC | flags, None)
    propagation = spec.linux.rootfs_propagation
    if propagation:
        sys.mount(None, "/", None, mountopts.PROPAGATION[propagation], None)


NAMESPACED_SYSCTLS = (
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
)


def check_sysctls(sysctl: dict[str, str], namespaces: set[str]) -> None:
    """Refuse any sysctl that is not namespaced: writing it would change the host."""
    for key in sysctl:
        parts = key.replace("/", ".").split(".")
        if "/" in key or any(part in ("", "..") for part in parts):
            raise InvalidArgument(f"linux.sysctl: {key!r} is not a sysctl name: refused")
        if key in NAMESPACED_SYSCTLS or key.startswith("fs.mqueue."):
            needed = "ipc"
        elif key.startswith("net."):
            needed = "network"
        elif key in ("kernel.hostname", "kernel.domainname"):
            needed = "uts"
        else:
            raise InvalidArgument(f"linux.sysctl: {key!r} is not namespaced: refused")
        if needed not in namespaces:
            raise InvalidArgument(
                f"linux.sysctl: {key!r} needs a new {needed} namespace, which the config lacks"
            )


def write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise BerthError(f"linux.sysctl: {key}={value}: {exc.strerror}") from exc
