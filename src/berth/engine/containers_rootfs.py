"""A container's rootfs on the host: mounting the snapshot's mounts (data, from the image
store) at ``<containers>/<id>/rootfs``, unmounting, and making the WorkingDir inside it.

berthd runs as root in the host mount namespace (``/`` has private propagation here), so these
mounts are berthd's; they are made while a container runs (and while it is created, to write
into the rootfs) and removed after. Symlinks met while making a directory are resolved as if
the rootfs were ``/``: an image cannot make berthd write outside it.
"""

from __future__ import annotations

import errno
import os

from berth.errors import InvalidArgument
from berth.image.snapshots import Mount
from berth.runtime import syscalls as s


def mount_rootfs(mounts: list[Mount], target: str) -> None:
    for m in mounts:
        if m.type == "bind":
            flags = s.MS_BIND | (s.MS_REC if "rbind" in m.options else 0)
            s.LINUX.mount(m.source, target, None, flags, None)
        else:
            s.LINUX.mount(m.source, target, m.type, 0, ",".join(m.options))


def unmount(target: str) -> None:
    try:
        s.LINUX.umount2(target, 0)
    except OSError as e:
        if e.errno == errno.EINVAL:  # not mounted
            return
        if e.errno != errno.EBUSY:
            raise
        s.LINUX.umount2(target, s.MNT_DETACH)


def mount_points() -> set[str]:
    """Every mount point of this mount namespace (one read of the mount table)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return {line.split()[4].replace("\\040", " ") for line in f}
    except OSError:
        return set()


def is_mount_point(path: str) -> bool:
    return path in mount_points()


def make_dir_in(root: str, path: str) -> None:
    """``mkdir -p path`` inside ``root``, resolving symlinks as if ``root`` were ``/``."""
    current = root
    depth = 0
    parts = [p for p in path.split("/") if p not in ("", ".")]
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = os.path.dirname(current) if current != root else root
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            depth += 1
            if depth > 40:
                raise InvalidArgument(f"WorkingDir {path!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if not os.path.exists(candidate):
            os.mkdir(candidate, 0o755)
        elif not os.path.isdir(candidate):
            raise InvalidArgument(f"Cannot mkdir: {path} is not a directory")
        current = candidate
