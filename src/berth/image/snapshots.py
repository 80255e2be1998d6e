"""Snapshots in containerd's shape: committed layers keyed by chain id, writable container
snapshots keyed by the caller, and mounts handed back as data.

Layout under the root given to ``Snapshotter`` (every path derives from it, so tests use a
temp dir)::

    committed/<chain id hex>/fs       a layer's tree; ``parent`` holds the parent chain id
    active/<key>/fs, work             a container's upper and overlay work dir (overlay mode)
    ingest/<random>/fs                a layer being applied (``prepare_layer``)
    trash/                            snapshots being removed

Rules:
- It never mounts anything: ``active`` and ``mounts`` return ``Mount`` values for the caller
  (the runtime, in the container's mount namespace) to perform.
- Everything becomes visible by one atomic rename: ``prepare_layer`` hands out a directory
  under ``ingest/``, ``commit`` renames it to ``committed/<chain id>`` (when that chain id is
  already there the existing snapshot is kept and the new one discarded); an active snapshot
  is built under ``ingest/`` and renamed into ``active/``; ``remove`` renames into ``trash/``
  before deleting. A crash leaves at most litter under ``ingest/`` and ``trash/``.
- A committed snapshot is immutable and cannot be removed while a snapshot names it parent.
- ``mode="overlay"``: a committed snapshot holds only its own layer (apply with
  ``whiteouts="overlay"``), a container gets an overlay of the chain (top first) with its own
  upper/work pair. ``mode="copy"`` for hosts without overlay: a committed snapshot is a full
  tree, made as a hard-link copy of its parent (``apply_layer(..., whiteouts="delete")``
  replaces files, never writes into them, so the parent's inodes stay intact); a container
  gets a real copy (no hard links: its processes write into files) and a bind mount.
- stdlib only; imports ``berth.spec``, ``berth.errors`` and this package, never the runtime.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from typing import Literal

from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.spec.value import value

Mode = Literal["overlay", "copy"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@value
class Mount:
    """A mount to perform, as data (containerd's ``mount.Mount``): no target, the caller
    knows where the rootfs goes."""

    type: str
    source: str
    options: tuple[str, ...] = ()


@value
class SnapshotInfo:
    key: str  # a chain id for committed snapshots, the caller's key for active ones
    kind: str  # "committed" | "active"
    parent: str | None  # parent chain id
    path: str  # the tree: a layer (overlay, committed), a container's upper dir or full tree


@value
class Usage:
    size: int  # bytes allocated (st_blocks * 512), each inode counted once, like du
    inodes: int


def chain_id(diff_ids: Sequence[str]) -> str:
    """The image spec's ChainID of a stack of layers (bottom first).

    ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
    """
    if not diff_ids:
        raise InvalidArgument("chain_id: no diff ids")
    for diff_id in diff_ids:
        _check_digest(diff_id, "diff id")
    current = diff_ids[0]
    for diff_id in diff_ids[1:]:
        current = "sha256:" + hashlib.sha256(f"{current} {diff_id}".encode()).hexdigest()
    return current


def _check_digest(digest: str, what: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"{what} {digest!r}: not a sha256 digest (sha256:<64 hex>)")
    return digest[len("sha256:") :]


class Snapshotter:
    """Overlay (or copy) snapshots under ``root``; see the module docstring."""

    def __init__(self, root: str, mode: Mode = "overlay") -> None:
        if mode not in ("overlay", "copy"):
            raise InvalidArgument(f"snapshotter mode {mode!r}: not 'overlay' or 'copy'")
        root = os.path.abspath(root)
        if any(c in root for c in ":,\n"):
            raise InvalidArgument(f"snapshotter root {root!r}: ':' and ',' break overlay options")
        self.root = root
        self.mode: Mode = mode
        for sub in ("committed", "active", "ingest", "trash"):
            os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)

    # -- paths

    def _committed(self, chain: str) -> str:
        return os.path.join(self.root, "committed", _check_digest(chain, "chain id"))

    def _active(self, key: str) -> str:
        if not _KEY.fullmatch(key):
            raise InvalidArgument(
                f"snapshot key {key!r}: 1-128 of [A-Za-z0-9_.-], starting alphanumeric"
            )
        return os.path.join(self.root, "active", key)

    def _new_ingest(self) -> str:
        return tempfile.mkdtemp(dir=os.path.join(self.root, "ingest"))

    def _require_committed(self, chain: str | None) -> str | None:
        """The fs dir of a committed parent, or None for no parent."""
        if chain is None:
            return None
        path = self._committed(chain)
        if not os.path.isdir(path):
            raise NotFound(f"snapshot {chain}: no such committed snapshot")
        return os.path.join(path, "fs")

    # -- layers

    def prepare_layer(self, parent_chain_id: str | None) -> str:
        """A fresh work dir to apply one layer into, then ``commit`` (or ``abort``)."""
        parent_fs = self._require_committed(parent_chain_id)
        ingest = self._new_ingest()
        try:
            fs = os.path.join(ingest, "fs")
            if self.mode == "copy" and parent_fs is not None:
                copy_tree(parent_fs, fs, hardlinks=True)
            else:
                os.mkdir(fs, 0o755)
            _write_parent(ingest, parent_chain_id)
        except BaseException:
            shutil.rmtree(ingest, ignore_errors=True)
            raise
        return fs

    def _ingest_of(self, work_dir: str) -> str:
        ingest = os.path.dirname(os.path.abspath(work_dir))
        inside = os.path.dirname(ingest) == os.path.join(self.root, "ingest")
        if not inside or os.path.basename(work_dir) != "fs" or not os.path.isdir(ingest):
            raise NotFound(f"work dir {work_dir!r}: not a prepared layer of {self.root}")
        return ingest

    def commit(self, work_dir: str, chain_id: str) -> str:
        """Make a prepared layer the committed snapshot ``chain_id``; return its fs dir.

        An already committed ``chain_id`` is kept as it is and the work dir discarded."""
        target = self._committed(chain_id)
        ingest = self._ingest_of(work_dir)
        if not os.path.isdir(target):
            try:
                os.rename(ingest, target)
                return os.path.join(target, "fs")
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FailedPrecondition(f"commit {chain_id}: {e.strerror}") from e
        self._discard(ingest)
        return os.path.join(target, "fs")

    def abort(self, work_dir: str) -> None:
        """Throw away a prepared layer that will not be committed."""
        self._discard(self._ingest_of(work_dir))

    # -- containers

    def active(self, key: str, parent_chain_id: str | None) -> list[Mount]:
        """Create the writable snapshot ``key`` on top of a chain; return its mounts."""
        target = self._active(key)
        if os.path.lexists(target):
            raise AlreadyExists(f"snapshot {key!r} already exists")
        parent_fs = self._require_committed(parent_chain_id)
        ingest = self._new_ingest()
        try:
            fs = os.path.join(ingest, "fs")
            if self.mode == "copy" and parent_fs is not None:
                copy_tree(parent_fs, fs, hardlinks=False)
            else:
                os.mkdir(fs, 0o755)
                if self.mode == "overlay":
                    os.mkdir(os.path.join(ingest, "work"), 0o700)
            _write_parent(ingest, parent_chain_id)
            try:
                os.rename(ingest, target)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise AlreadyExists(f"snapshot {key!r} already exists") from e
                raise
        except BaseException:
            if os.path.isdir(ingest):
                shutil.rmtree(ingest, ignore_errors=True)
            raise
        return self.mounts(key)

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an existing active snapshot (the same every time)."""
        target = self._active(key)
        if not os.path.isdir(target):
            raise NotFound(f"snapshot {key!r}: no such active snapshot")
        fs = os.path.join(target, "fs")
        lowers = self.lowers(_read_parent(target))
        if self.mode == "copy" or not lowers:
            return [Mount(type="bind", source=fs, options=("rbind", "rw"))]
        options = (
            "lowerdir=" + ":".join(lowers),
            f"upperdir={fs}",
            "workdir=" + os.path.join(target, "work"),
        )
        return [Mount(type="overlay", source="overlay", options=options)]

    def lowers(self, chain: str | None) -> list[str]:
        """The fs dirs of a committed chain, top first (overlay's ``lowerdir`` order); in copy
        mode only the top one, which holds the whole tree."""
        dirs: list[str] = []
        while chain is not None:
            fs = self._require_committed(chain)
            assert fs is not None
            dirs.append(fs)
            if self.mode == "copy":
                break
            chain = _read_parent(os.path.dirname(fs))
        return dirs

    # -- any snapshot

    def _dir(self, key: str) -> tuple[str, str]:
        if key.startswith("sha256:"):
            path, kind = self._committed(key), "committed"
        else:
            path, kind = self._active(key), "active"
        if not os.path.isdir(path):
            raise NotFound(f"snapshot {key!r}: no such snapshot")
        return path, kind

    def stat(self, key: str) -> SnapshotInfo:
        path, kind = self._dir(key)
        return SnapshotInfo(
            key=key, kind=kind, parent=_read_parent(path), path=os.path.join(path, "fs")
        )

    def list(self) -> list[SnapshotInfo]:
        infos = []
        for kind in ("committed", "active"):
            for name in sorted(os.listdir(os.path.join(self.root, kind))):
                key = f"sha256:{name}" if kind == "committed" else name
                path = os.path.join(self.root, kind, name)
                infos.append(SnapshotInfo(key, kind, _read_parent(path), os.path.join(path, "fs")))
        return infos

    def remove(self, key: str) -> None:
        """Remove a snapshot; a committed one only when no snapshot is built on it."""
        path, kind = self._dir(key)
        if kind == "committed":
            children = [i.key for i in self.list() if i.parent == key]
            if children:
                raise FailedPrecondition(
                    f"snapshot {key}: still the parent of {', '.join(sorted(children))}"
                )
        self._discard(path)

    def usage(self, key: str) -> Usage:
        """Disk use of one snapshot's own tree (a container's upper dir in overlay mode)."""
        path, _ = self._dir(key)
        return disk_usage(os.path.join(path, "fs"))

    def _discard(self, path: str) -> None:
        trash = tempfile.mkdtemp(dir=os.path.join(self.root, "trash"))
        os.rename(path, os.path.join(trash, "x"))
        shutil.rmtree(trash)


def _write_parent(snapshot_dir: str, parent: str | None) -> None:
    with open(os.path.join(snapshot_dir, "parent"), "w", encoding="ascii") as f:
        f.write(parent or "")


def _read_parent(snapshot_dir: str) -> str | None:
    try:
        with open(os.path.join(snapshot_dir, "parent"), encoding="ascii") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def disk_usage(tree: str) -> Usage:
    """Bytes allocated and inodes under ``tree``, each inode once (``du``)."""
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [tree]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            stack.extend(os.path.join(path, name) for name in os.listdir(path))
    return Usage(size=size, inodes=len(seen))


def copy_tree(src: str, dst: str, *, hardlinks: bool) -> None:
    """Copy a tree with everything a layer holds: owners, modes, mtimes, xattrs, special
    files, and the hard links within it. ``hardlinks=True`` links regular files to the
    source's inodes (falling back to a copy across filesystems) instead of copying data."""
    _copy_dir(src, dst, os.lstat(src), hardlinks, {})


def _copy_dir(
    src: str, dst: str, st: os.stat_result, hardlinks: bool, seen: dict[tuple[int, int], str]
) -> None:
    os.mkdir(dst, 0o700)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        s, d = entry.path, os.path.join(dst, entry.name)
        est = entry.stat(follow_symlinks=False)
        mode = est.st_mode
        if stat.S_ISDIR(mode):
            _copy_dir(s, d, est, hardlinks, seen)
            continue
        if stat.S_ISREG(mode):
            ino = (est.st_dev, est.st_ino)
            if hardlinks or ino in seen:
                try:
                    os.link(s if hardlinks else seen[ino], d, follow_symlinks=False)
                    continue
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                        raise
            shutil.copyfile(s, d, follow_symlinks=False)
            if est.st_nlink > 1:
                seen[ino] = d
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        else:
            os.mknod(d, mode, est.st_rdev)
        _copy_meta(s, d, est)
    _copy_meta(src, dst, st)


def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    for key in os.listxattr(src, follow_symlinks=False):
        val = os.getxattr(src, key, follow_symlinks=False)
        os.setxattr(dst, key, val, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
