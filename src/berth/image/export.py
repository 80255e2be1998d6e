"""``docker export``: a container's filesystem as a tar stream, as its processes see it.

Rules:
- It walks the snapshot dirs in user space and never mounts: the container's own (active)
  snapshot on top, then its image's layers (overlay mode; in copy mode the active snapshot is
  already the whole tree). The top-most entry of a name wins; an overlay whiteout (a 0:0
  character device) hides the name below it; an opaque directory (``trusted.overlay.opaque``
  ``y``) hides what is below it; a file in a layer hides every directory of that name further
  down.
- Entries are written in name order, a directory's before its content; sockets are skipped;
  a file with several links is written once and then as hard links to its first name.
- Xattrs travel as PAX ``SCHILY.xattr.`` headers; overlay's own (``trusted.overlay.*``) are
  dropped, and ones that mean overlay keeps the file elsewhere (redirect_dir, metacopy) are
  ``Unsupported``, since the merge here cannot follow them.
- Only a container's snapshot can be exported (``InvalidArgument`` otherwise).
- Imports ``berth.errors`` and this package only; stdlib only.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
import tarfile
from typing import BinaryIO

from berth.errors import InvalidArgument, Unsupported
from berth.image import layers
from berth.image.store import ImageStore

log = logging.getLogger(__name__)

_OVERLAY_XATTR_PREFIX = "trusted.overlay."
_OPAQUE_XATTR = "trusted.overlay.opaque"
_UNMERGEABLE_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_XATTR_PAX = "SCHILY.xattr."


def export_container(store: ImageStore, container_key: str, out: BinaryIO) -> None:
    """``docker export``: the container's filesystem as a tar stream, as its processes see it
    (its image's layers with its own changes on top), read from the snapshot dirs."""
    info = store.snapshots.stat(container_key)
    if info.kind != "active":
        raise InvalidArgument(f"snapshot {container_key!r} is not a container's")
    layers = [info.path]
    if store.snapshots.mode == "overlay":
        layers.extend(store.snapshots.lowers(info.parent))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _Exporter(tar).walk("", layers)
    log.info("exported container snapshot %s", container_key)


class _Exporter:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.links: dict[tuple[int, int], str] = {}

    def walk(self, rel: str, layers: list[str]) -> None:
        """Emit the directory ``rel`` merged from ``layers`` (top first; in each one ``rel``
        is a directory, the first being where it is visible from)."""
        found: dict[str, tuple[int, os.stat_result]] = {}
        seen: set[str] = set()
        for k, root in enumerate(layers):
            directory = os.path.join(root, rel)
            for name in os.listdir(directory):
                if name in seen:
                    continue
                seen.add(name)
                st = os.lstat(os.path.join(directory, name))
                if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):  # a whiteout hides
                    found[name] = (k, st)
            if _xattr(directory, _OPAQUE_XATTR) == b"y":
                break
        for name in sorted(found):
            k, st = found[name]
            arc = posixpath.join(rel, name)
            path = os.path.join(layers[k], arc)
            self.entry(path, arc, st)
            if stat.S_ISDIR(st.st_mode):
                below = [layers[k]]
                for root in layers[k + 1 :]:
                    try:
                        lst = os.lstat(os.path.join(root, arc))
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISDIR(lst.st_mode):
                        break  # a file or whiteout there hides everything further down
                    below.append(root)
                self.walk(arc, below)

    def entry(self, path: str, arc: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return
        info = tarfile.TarInfo(arc)
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        if stat.S_ISREG(mode) and st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.tar.addfile(info)
                return
            self.links[(st.st_dev, st.st_ino)] = arc
        info.pax_headers = {
            _XATTR_PAX + key: val.decode("utf-8", "surrogateescape")
            for key, val in _xattrs(path).items()
        }
        if stat.S_ISREG(mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                self.tar.addfile(info, f)
            return
        layers.set_special_type(info, path, st)
        self.tar.addfile(info)


def _xattr(path: str, key: str) -> bytes | None:
    try:
        return os.getxattr(path, key, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return None
        raise


def _xattrs(path: str) -> dict[str, bytes]:
    """The xattrs of a file as content: overlay's own are dropped; ones that mean overlay
    keeps the file elsewhere (redirect_dir, metacopy) cannot be merged here."""
    found: dict[str, bytes] = {}
    for key in sorted(os.listxattr(path, follow_symlinks=False)):
        if key.startswith(_UNMERGEABLE_XATTRS):
            raise Unsupported(
                f"export of {path}: xattr {key} (overlay redirect_dir/metacopy) is not supported"
            )
        if not key.startswith(_OVERLAY_XATTR_PREFIX):
            found[key] = os.getxattr(path, key, follow_symlinks=False)
    return found
