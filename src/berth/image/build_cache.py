"""The build cache and the layers a build makes.

Layout: ``<store root>/build/cache.json`` maps a step's cache key to what the step made (a
layer descriptor and its diffID, or nothing for a step that changed no file);
``<store root>/build/tmp/`` holds the staging dirs of steps in progress.

Rules:
- A key is sha256 over the parent step's key (a stage starts from its base image's id, so the
  parent chain id is part of it), the instruction after expansion, the ARG/ENV values it can
  see and, for COPY/ADD, the content hash of the sources. BuildKit keys the same things.
- ``cache.json`` is read-modify-written under an flock and replaced atomically (tmp + fsync +
  rename); an entry whose layer blob is gone (``ImageStore.gc``) is a miss.
- A layer is made from a directory shaped like an overlay upper dir (``layers.diff_to_layer``,
  uncompressed, deterministic) and committed as the next snapshot by applying it, as
  ``ImageStore.unpack`` does; a step whose diff is empty makes no layer (``empty_layer``).
- Copy-mode snapshots keep no diff: ``tree_diff`` writes the difference of two full trees as
  an upper dir (changed entries hard-linked, deleted ones as 0:0 character devices).
- stdlib only; imports ``berth.errors``, ``berth.spec`` and this package, never the runtime.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from berth.errors import InvalidArgument
from berth.image.layers import Whiteouts, apply_layer, diff_to_layer
from berth.image.snapshots import chain_id
from berth.spec import image as spec
from berth.spec.value import value

if TYPE_CHECKING:
    from berth.image.store import ImageStore

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@value
class Layer:
    """What a step added: ``layer`` is None for a step that changed no file."""

    layer: spec.Descriptor | None
    diff_id: str = ""
    created: str = ""


def cache_key(*parts: Any) -> str:
    """sha256 of the parts as canonical JSON."""
    data = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BuildCache:
    """Step keys -> layers, in ``<root>/cache.json``."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.path = os.path.join(root, "cache.json")
        self._lock = os.path.join(root, "cache.lock")

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise InvalidArgument(f"{self.path}: not valid JSON: {e}") from e
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            raise InvalidArgument(f"{self.path}: expected version {CACHE_VERSION}")
        steps = data.get("steps", {})
        return steps if isinstance(steps, dict) else {}

    def get(self, key: str) -> Layer | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        layer = entry.get("layer")
        created = str(entry.get("created", ""))
        if layer is None:
            return Layer(None, created=created)
        return Layer(
            spec.Descriptor.from_json(layer, "layer"), str(entry.get("diff_id", "")), created
        )

    def put_many(self, made: Mapping[str, Layer]) -> None:
        """Record the results of steps, by key."""
        with self._locked():
            steps = self._read()
            for key, layer in made.items():
                entry: dict[str, Any] = {"layer": None, "created": layer.created}
                if layer.layer is not None:
                    entry |= {"layer": layer.layer.to_json(), "diff_id": layer.diff_id}
                steps[key] = entry
            self._write({"version": CACHE_VERSION, "steps": steps})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".cache-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(data, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def make_layer(store: ImageStore, upper: str, lowers: list[str]) -> Layer:
    """The changes in ``upper`` as a layer blob in the store's content (None when empty)."""
    with store.content.writer() as writer:
        stats = diff_to_layer(upper, cast("BinaryIO", writer), lowers)
        if stats.entries == 0:
            writer.abort()
            return Layer(None)
    info = writer.commit()
    return Layer(info.descriptor(spec.OCI_LAYER), stats.diff_id)


def commit_layer(
    store: ImageStore, parent: str | None, diff_ids: tuple[str, ...], made: Layer
) -> str:
    """Make sure the snapshot of ``diff_ids`` (``made`` on ``parent``) exists; its chain id."""
    chain = chain_id(diff_ids)
    if any(i.key == chain for i in store.snapshots.list() if i.kind == "committed"):
        return chain
    assert made.layer is not None
    work = store.snapshots.prepare_layer(parent)
    try:
        mode: Whiteouts = "overlay" if store.snapshots.mode == "overlay" else "delete"
        with store.content.open(made.layer.digest) as blob:
            apply_layer(blob, work, whiteouts=mode)
    except BaseException:
        store.snapshots.abort(work)
        raise
    store.snapshots.commit(work, chain)
    log.debug("build: layer %s committed as %s", made.diff_id, chain)
    return chain


def tree_diff(old: str | None, new: str, upper: str) -> None:
    """Write into the empty dir ``upper`` what turns tree ``old`` into tree ``new``."""
    _diff_dir(old, new, upper)
    st = os.lstat(new)
    os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))


def _same(a: os.stat_result, b: os.stat_result, pa: str, pb: str) -> bool:
    keys = ("st_mode", "st_uid", "st_gid")
    if any(getattr(a, k) != getattr(b, k) for k in keys):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns and a.st_rdev == b.st_rdev


def _diff_dir(old: str | None, new: str, upper: str) -> bool:
    """Fill ``upper`` (an existing dir) with the changes under ``new``; True if any."""
    changed = False
    new_names = set(os.listdir(new))
    if old is not None:
        for name in sorted(set(os.listdir(old)) - new_names):
            os.mknod(os.path.join(upper, name), stat.S_IFCHR | 0o600, 0)
            changed = True
    dirs: list[tuple[str, str]] = []
    for name in sorted(new_names):
        src, dst = os.path.join(new, name), os.path.join(upper, name)
        st = os.lstat(src)
        prev = os.path.join(old, name) if old is not None else None
        pst = os.lstat(prev) if prev is not None and os.path.lexists(prev) else None
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst)
            below = prev if pst is not None and stat.S_ISDIR(pst.st_mode) else None
            inner = _diff_dir(below, src, dst)
            if inner or pst is None or prev is None or not _same(pst, st, prev, src):
                _copy_meta(src, dst, st)
                dirs.append((dst, src))
                changed = True
            else:
                os.rmdir(dst)
        elif pst is None or prev is None or not _same(pst, st, prev, src):
            if stat.S_ISREG(st.st_mode):
                os.link(src, dst)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
                _copy_meta(src, dst, st)
            else:
                os.mknod(dst, st.st_mode, st.st_rdev)
                _copy_meta(src, dst, st)
            changed = True
    for dst, src in dirs:
        st = os.lstat(src)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return changed


def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


@contextlib.contextmanager
def staging(store: ImageStore) -> Iterator[str]:
    """An empty dir under the store's root for one step, removed afterwards."""
    tmp_root = os.path.join(store.root, "build", "tmp")
    os.makedirs(tmp_root, mode=0o700, exist_ok=True)
    path = tempfile.mkdtemp(dir=tmp_root, prefix="step-")
    try:
        fs = os.path.join(path, "fs")
        os.mkdir(fs, 0o755)
        yield fs
    finally:
        shutil.rmtree(path, ignore_errors=True)
