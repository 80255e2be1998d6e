"""OCI image layers: apply a layer tar onto a directory; turn an overlay upper dir into a layer.

The format is image-spec 1.1 ``layer.md``: a tar (plain, gzip or zstd) of a filesystem changeset in
which ``<dir>/.wh.<name>`` deletes ``<name>`` of the layers below and ``<dir>/.wh..wh..opq``
hides everything the layers below put in ``<dir>``. Overlayfs spells the same two things as a
0:0 character device named ``<name>`` and the ``trusted.overlay.opaque=y`` xattr.

Rules:
- stdlib only, but for ``zstandard`` (the bindings of the zstd C library), imported only when
  a zstd layer is read or written; imports ``berth.spec`` and ``berth.errors`` only (never
  ``berth.runtime``).
- ``apply_layer`` writes into a directory the caller owns alone and throws away on failure:
  apply into a fresh directory (for ``whiteouts="delete"``: a fresh copy of the parent
  snapshot) and rename it into place only when the call returned. A failed apply leaves a
  half-written tree behind on purpose; nothing here tries to roll back.
- Safety of apply: every entry name is relative and free of ``..`` (else ``InvalidArgument``
  naming the entry); every parent directory of an entry must be a real directory (never a
  symlink), so no entry can be written through a symlink, whatever it points to; the final
  component is created with no-follow calls after removing what was there (a layer replaces
  paths, it never writes into an existing file, so hard-linked copies of a parent snapshot
  stay intact). Symlink targets are data and are never resolved. Hard links must name an
  existing non-directory inside the target. ``trusted.overlay.*`` xattrs in a layer are
  dropped: they are overlay's own bookkeeping, not content.
- Ownership is restored (numeric uid/gid, never user names) when running as root; as another
  user the files belong to the caller, as with tar. Modes (setuid included), mtimes and xattrs
  are restored; directory modes and mtimes are set last, deepest first.
- Same-layer rule of the spec: a whiteout or opaque marker only hides what lower layers put
  there, never an entry of the same layer, whatever their order in the tar.
- ``diff_to_layer`` output is deterministic: entries sorted by name (whiteouts before their
  siblings), numeric ids only, no user/group names, integer mtimes (or one fixed mtime), PAX
  headers only for xattrs and what ustar cannot hold, gzip with mtime 0 and no file name,
  zstd at a fixed level in one frame with a checksum and no content size. The same tree gives
  the same digest (with the same zlib/libzstd), which the build cache relies on.
- zstd is read frame after frame (skippable frames skipped, as zstd:chunked writes them) in
  bounded memory; a stream that ends inside a frame is refused (``zstandard``'s own stream
  reader would take that for the end of the data).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from typing import BinaryIO, Literal, Protocol, cast

from berth.errors import FailedPrecondition, InvalidArgument, Unsupported
from berth.spec.value import value

log = logging.getLogger(__name__)

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_TAR_GZIP = MEDIA_TYPE_TAR + "+gzip"
MEDIA_TYPE_TAR_ZSTD = MEDIA_TYPE_TAR + "+zstd"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_META_PREFIX = ".wh..wh."  # aufs bookkeeping (.wh..wh.plnk, ...): skipped on apply
OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
# An upper dir with these cannot be diffed by reading it alone (its content lives elsewhere).
_UNDIFFABLE_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_XATTR_PAX = "SCHILY.xattr."

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# zstd input is fed in steps sized for about _ZSTD_OUT bytes of output at the last ratio seen,
# so even a hostile stream (RLE blocks inflate up to 32768:1) cannot blow up one read.
_ZSTD_STEP_MIN, _ZSTD_STEP_MAX, _ZSTD_OUT = 64, 1 << 17, 1 << 20
ZSTD_LEVEL = 3  # zstd's default; fixed, so that diff_to_layer's output is deterministic

Compression = Literal["gzip", "zstd"]

Whiteouts = Literal["overlay", "delete"]


@value
class LayerStats:
    """What a layer was: ``diff_id``/``size`` of the uncompressed tar, ``digest``/
    ``compressed_size`` of the bytes as read or written (equal to those when uncompressed)."""

    diff_id: str
    size: int
    digest: str
    compressed_size: int
    media_type: str
    entries: int  # tar entries, whiteout markers included


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Closable(Protocol):
    def close(self) -> None: ...


# --------------------------------------------------------------------------- streams


class _HashingReader:
    """Passes reads through, hashing and counting the bytes."""

    def __init__(self, raw: _Reader, prefix: bytes = b"") -> None:
        self._raw = raw
        self._prefix = prefix
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        if self._prefix:
            data = self._prefix if n < 0 else self._prefix[:n]
            self._prefix = self._prefix[len(data) :]
            if n < 0:
                data += self._raw.read()
        else:
            data = self._raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class _HashingWriter:
    def __init__(self, raw: _Writer) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._raw.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._raw, "flush", None)
        if flush is not None:
            flush()

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class ZstdDataError(ValueError):
    """A zstd stream that is corrupt or ends inside a frame."""


class ZstdReader:
    """The decompressed bytes of a zstd stream read from ``raw``, as they are read (see the
    module rules: every frame, bounded memory, truncation refused with ``ZstdDataError``)."""

    def __init__(self, raw: _Reader) -> None:
        import zstandard  # here, so that only zstd layers pay for the import

        self._error: type[Exception] = zstandard.ZstdError
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._raw = raw
        self._fed = False  # the current frame has had input
        self._pending = b""  # input read, not fed yet (what followed the last frame)
        self._out = b""
        self._pos = 0
        self._step = _ZSTD_STEP_MIN
        self._eof = False

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        while self._pos == len(self._out) and not self._eof:
            self._fill()
        data = self._out[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def _fill(self) -> None:
        data, self._pending = self._pending or self._raw.read(self._step), b""
        if not data:
            if self._fed:
                raise ZstdDataError("the stream ends inside a zstd frame (truncated)")
            self._eof = True
            return
        try:
            out = self._frame.decompress(data)
        except self._error as e:
            raise ZstdDataError(str(e)) from None
        self._fed = True
        if self._frame.eof:  # a frame ended; what followed it starts the next one
            self._pending = self._frame.unused_data
            self._frame = self._dctx.decompressobj()
            self._fed = False
        ratio = max(1, len(out) // len(data))
        self._step = min(_ZSTD_STEP_MAX, max(_ZSTD_STEP_MIN, _ZSTD_OUT // ratio))
        self._out, self._pos = out, 0


def read_head(raw: _Reader, n: int = 4) -> bytes:
    """The first ``n`` bytes of ``raw`` (fewer only at its end): a format's magic."""
    head = b""
    while len(head) < n:
        more = raw.read(n - len(head))
        if not more:
            break
        head += more
    return head


# --------------------------------------------------------------------------- apply


def apply_layer(
    tar_stream: BinaryIO | _Reader, target_dir: str, *, whiteouts: Whiteouts = "overlay"
) -> LayerStats:
    """Apply one layer tar (plain, gzip or zstd, detected by magic) onto ``target_dir``.

    ``whiteouts="overlay"``: ``target_dir`` is a fresh directory that becomes an overlay
    lower/upper dir; whiteouts become 0:0 character devices (root needed), opaque markers the
    ``trusted.overlay.opaque=y`` xattr. ``whiteouts="delete"``: ``target_dir`` is a fresh
    copy of the layers below and the whited-out paths are deleted from it (no overlay needed).
    The whole stream is read (trailing padding included) so the digests cover every byte.
    Raises ``InvalidArgument`` for a malformed or hostile tar or a corrupt or truncated
    compressed stream, ``Unsupported`` for another compression (bzip2, xz),
    ``FailedPrecondition`` when the filesystem refuses a write.
    """
    if whiteouts not in ("overlay", "delete"):
        raise InvalidArgument(f"whiteouts: {whiteouts!r} is not 'overlay' or 'delete'")
    if not os.path.isdir(target_dir):
        raise InvalidArgument(f"target_dir: {target_dir!r} is not a directory")
    magic = read_head(tar_stream)
    if magic.startswith((b"BZh", b"\xfd7zX")):
        raise Unsupported("layer compression bzip2/xz is not supported (OCI: gzip or zstd)")
    raw = _HashingReader(tar_stream, magic)
    compression: Compression | None = None
    tar_in = raw
    if magic.startswith(_GZIP_MAGIC):
        compression = "gzip"
        tar_in = _HashingReader(gzip.GzipFile(fileobj=cast("BinaryIO", raw), mode="rb"))
    elif magic.startswith(_ZSTD_MAGIC):
        compression = "zstd"
        tar_in = _HashingReader(ZstdReader(raw))
    applier = _Applier(os.path.abspath(target_dir), whiteouts)
    try:
        with tarfile.open(fileobj=cast("BinaryIO", tar_in), mode="r|", errorlevel=2) as tar:
            for member in tar:
                applier.entry(member, tar)
        tar_in.drain()
        if compression:
            raw.drain()
    except (tarfile.TarError, EOFError, zlib.error, OSError, ZstdDataError) as e:
        filesystem = isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile)
        if filesystem and getattr(e, "errno", None) is not None:
            raise FailedPrecondition(f"applying layer onto {target_dir}: {e}") from e
        kind = f"({compression}) " if compression else "(gzip) "
        raise InvalidArgument(f"layer tar: not a valid {kind}tar archive: {e}") from e
    applier.finish()
    return LayerStats(
        diff_id=tar_in.digest(),
        size=tar_in.size,
        digest=raw.digest(),
        compressed_size=raw.size,
        media_type=_MEDIA_TYPES[compression],
        entries=applier.entries,
    )


_MEDIA_TYPES: dict[Compression | None, str] = {
    None: MEDIA_TYPE_TAR,
    "gzip": MEDIA_TYPE_TAR_GZIP,
    "zstd": MEDIA_TYPE_TAR_ZSTD,
}


def _components(name: str, entry: str) -> tuple[str, ...]:
    if name.startswith("/"):
        raise InvalidArgument(f"layer entry {entry!r}: absolute paths are refused")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidArgument(f"layer entry {entry!r}: '..' is refused (it could escape)")
    return parts


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "special file"


class _Applier:
    """The state of one apply: which paths this layer wrote, which dirs are verified."""

    def __init__(self, root: str, whiteouts: Whiteouts) -> None:
        self.root = root
        self.whiteouts = whiteouts
        self.chown = os.geteuid() == 0
        self.entries = 0
        self.written: set[tuple[str, ...]] = set()  # paths this layer created
        self.dirs: set[tuple[str, ...]] = {()}  # verified real directories
        self.deferred: dict[tuple[str, ...], tuple[int, int]] = {}  # dir -> (mode, mtime ns)

    def path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)

    # -- entries

    def entry(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.entries += 1
        name = member.name
        parts = _components(name, name)
        try:
            if parts and parts[-1].startswith(WHITEOUT_PREFIX):
                self.whiteout(parts, name)
                return
            self.parents(parts, name, create=True)
            if not parts:
                self.directory(parts, member)  # "./": the root's own attributes
            elif member.isdir():
                self.directory(parts, member)
            else:
                self.replace(parts)
                self.nondir(parts, member, tar, name)
                self.written.add(parts)
        except OSError as e:
            raise FailedPrecondition(f"layer entry {name!r}: {e.strerror or e}") from e

    def parents(self, parts: tuple[str, ...], entry: str, *, create: bool) -> None:
        """Check (and create) each parent of ``parts`` as a real directory, never a symlink."""
        for i in range(1, len(parts)):
            prefix = parts[:i]
            if prefix in self.dirs:
                continue
            # This layer has content under the prefix: a whiteout or opaque marker of the
            # same layer must not hide it (delete mode's clear() keeps it and descends).
            self.written.add(prefix)
            path = self.path(prefix)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    raise InvalidArgument(
                        f"layer entry {entry!r}: {'/'.join(prefix)!r} does not exist"
                    ) from None
                os.mkdir(path, 0o755)
                self.dirs.add(prefix)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(
                    f"layer entry {entry!r}: parent {'/'.join(prefix)!r} is a "
                    f"{_kind(st.st_mode)}, not a directory (no writing through links)"
                )
            self.dirs.add(prefix)

    def replace(self, parts: tuple[str, ...]) -> None:
        """Remove whatever is at ``parts`` (the spec's 'changeset over existing files')."""
        path = self.path(parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self.forget(parts)
        else:
            os.unlink(path)

    def forget(self, parts: tuple[str, ...]) -> None:
        n = len(parts)
        self.dirs = {d for d in self.dirs if d[:n] != parts}
        for key in [d for d in self.deferred if d[:n] == parts]:
            del self.deferred[key]

    def directory(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        path = self.path(parts)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            st = None
        if st is None:
            os.mkdir(path, 0o700)
        self.dirs.add(parts)
        self.written.add(parts)
        self.owner_and_xattrs(path, member)
        self.deferred[parts] = (member.mode & 0o7777, _mtime_ns(member))

    def nondir(
        self, parts: tuple[str, ...], member: tarfile.TarInfo, tar: tarfile.TarFile, entry: str
    ) -> None:
        path = self.path(parts)
        mode = member.mode & 0o7777
        if member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                source = tar.extractfile(member)
                if source is not None:
                    while chunk := source.read(_CHUNK):
                        _write_all(fd, chunk)
                if self.chown:
                    os.fchown(fd, member.uid, member.gid)
                for key, val in _xattrs(member):
                    os.setxattr(fd, key, val)
                os.fchmod(fd, mode)  # after chown, which clears setuid/setgid
                ns = _mtime_ns(member)
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)
            return
        if member.islnk():
            self.hardlink(parts, member, entry)
            return
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            raise InvalidArgument(f"layer entry {entry!r}: unsupported tar type {member.type!r}")
        self.owner_and_xattrs(path, member)
        if not member.issym():
            os.chmod(path, mode, follow_symlinks=False)
        ns = _mtime_ns(member)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)

    def hardlink(self, parts: tuple[str, ...], member: tarfile.TarInfo, entry: str) -> None:
        target = _components(member.linkname, entry)
        if not target or target[-1].startswith(WHITEOUT_PREFIX):
            raise InvalidArgument(f"layer entry {entry!r}: bad hard link {member.linkname!r}")
        self.parents(target, entry, create=False)
        source = self.path(target)
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            raise InvalidArgument(
                f"layer entry {entry!r}: hard link to {member.linkname!r}, which does not exist"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"layer entry {entry!r}: hard link to a directory")
        os.link(source, self.path(parts), follow_symlinks=False)

    def owner_and_xattrs(self, path: str, member: tarfile.TarInfo) -> None:
        if self.chown:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        for key, val in _xattrs(member):
            os.setxattr(path, key, val, follow_symlinks=False)

    # -- whiteouts

    def whiteout(self, parts: tuple[str, ...], entry: str) -> None:
        self.parents(parts, entry, create=True)
        parent, base = parts[:-1], parts[-1]
        if base == OPAQUE_MARKER:
            self.opaque(parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            log.debug("layer entry %r: aufs metadata, skipped", entry)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise InvalidArgument(f"layer entry {entry!r}: a whiteout must name an entry")
        victim = (*parent, name)
        if victim in self.written:
            return  # the same layer's entry wins: whiteouts only hide lower layers
        self.replace(victim)
        if self.whiteouts == "overlay":
            path = self.path(victim)
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            os.chown(path, 0, 0, follow_symlinks=False)

    def opaque(self, parent: tuple[str, ...]) -> None:
        if parent:
            self.written.add(parent)
        if self.whiteouts == "overlay":
            os.setxattr(self.path(parent), OPAQUE_XATTR, b"y", follow_symlinks=False)
        else:
            self.clear(parent)

    def clear(self, parent: tuple[str, ...]) -> None:
        """Delete what lower layers put under ``parent``, keeping this layer's entries."""
        path = self.path(parent)
        for name in os.listdir(path):
            child = (*parent, name)
            if child in self.written:
                if stat.S_ISDIR(os.lstat(self.path(child)).st_mode):
                    self.clear(child)
                continue
            self.replace(child)

    def finish(self) -> None:
        for parts in sorted(self.deferred, key=len, reverse=True):
            mode, ns = self.deferred[parts]
            path = self.path(parts)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
                os.chmod(path, mode, follow_symlinks=False)
                os.utime(path, ns=(ns, ns), follow_symlinks=False)
            except OSError as e:
                name = "/".join(parts) or "."
                raise FailedPrecondition(f"layer entry {name!r}: {e.strerror or e}") from e


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(member.mtime * 1_000_000_000)


def _xattrs(member: tarfile.TarInfo) -> Iterable[tuple[str, bytes]]:
    for key, val in member.pax_headers.items():
        if not key.startswith(_XATTR_PAX):
            continue
        name = key[len(_XATTR_PAX) :]
        if name.startswith(OVERLAY_XATTR_PREFIX):
            log.debug("layer entry %r: xattr %s dropped (overlay's own)", member.name, name)
            continue
        yield name, val.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- diff


def diff_to_layer(
    upper_dir: str,
    out_stream: BinaryIO | _Writer,
    lower_dirs: Sequence[str] = (),
    *,
    compress: bool | Compression = False,
    mtime: int | None = None,
) -> LayerStats:
    """Write the changes held in an overlay upper dir as an OCI layer tar to ``out_stream``.

    0:0 character devices become ``.wh.<name>`` entries, directories with
    ``trusted.overlay.opaque=y`` get a ``.wh..wh..opq`` entry right after their own; every
    other entry is written whole. ``lower_dirs`` (the overlay's lower dirs, any order) are
    optional: given, a whiteout that hides nothing in any of them is left out. ``mtime``
    replaces every entry's mtime (e.g. 0 for reproducible builds); ``compress`` ``"gzip"`` (or
    True) writes gzip (mtime 0 in its header), ``"zstd"`` one zstd frame at ``ZSTD_LEVEL`` with
    a checksum and no content size (see the module rules). Sockets cannot be put in a tar and
    are left out. Raises ``InvalidArgument`` for another ``compress``, ``Unsupported`` for an
    upper dir made with overlay's redirect_dir or metacopy features, whose content cannot be
    read from the upper dir alone.
    """
    if not os.path.isdir(upper_dir):
        raise InvalidArgument(f"upper_dir: {upper_dir!r} is not a directory")
    compression: Compression | None = "gzip" if compress is True else compress or None
    if compression not in _MEDIA_TYPES:
        raise InvalidArgument(f"compress: {compress!r} is not 'gzip' or 'zstd'")
    raw = _HashingWriter(out_stream)
    zipped: gzip.GzipFile | _Closable | None = None
    if compression == "gzip":
        zipped = gzip.GzipFile(
            filename="", mode="wb", fileobj=cast("BinaryIO", raw), mtime=0, compresslevel=6
        )
    elif compression == "zstd":
        import zstandard  # here, so that only zstd layers pay for the import

        zipped = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_checksum=True, write_content_size=False, threads=0
        ).stream_writer(cast("BinaryIO", raw), closefd=False)
    tar_out = raw if zipped is None else _HashingWriter(cast("_Writer", zipped))
    walker = _Differ(os.path.abspath(upper_dir), tuple(lower_dirs), mtime)
    try:
        with tarfile.open(
            fileobj=cast("BinaryIO", tar_out), mode="w|", format=tarfile.PAX_FORMAT
        ) as tar:
            walker.walk(tar, (), os.lstat(upper_dir))
        if zipped is not None:
            zipped.close()
    except OSError as e:
        raise FailedPrecondition(f"diffing {upper_dir}: {e}") from e
    raw.flush()
    return LayerStats(
        diff_id=tar_out.digest(),
        size=tar_out.size,
        digest=raw.digest(),
        compressed_size=raw.size,
        media_type=_MEDIA_TYPES[compression],
        entries=walker.entries,
    )


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def set_special_type(info: tarfile.TarInfo, path: str, st: os.stat_result) -> None:
    """A tar header's type for what is neither a regular file nor a hard link: directory,
    symlink (with its target), character or block device (with its numbers), fifo."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE


class _Differ:
    def __init__(self, root: str, lowers: tuple[str, ...], mtime: int | None) -> None:
        self.root = root
        self.lowers = lowers
        self.mtime = mtime
        self.entries = 0
        self.links: dict[tuple[int, int], str] = {}

    def walk(self, tar: tarfile.TarFile, parts: tuple[str, ...], st: os.stat_result) -> None:
        path = os.path.join(self.root, *parts)
        if parts:
            info = self.info(parts, st)
            xattrs = self.xattrs(path)
            opaque = xattrs.pop(OPAQUE_XATTR, None) == b"y"
            self.add(tar, info, xattrs)
            if opaque:
                marker = self.info((*parts, OPAQUE_MARKER), st)
                marker.type, marker.mode = tarfile.REGTYPE, 0o600
                self.add(tar, marker, {})
        names = sorted(os.listdir(path))
        stats = {name: os.lstat(os.path.join(path, name)) for name in names}
        whiteouts = [n for n in names if _is_whiteout(stats[n])]
        for name in whiteouts:
            if self.lowers and not self.in_lowers((*parts, name)):
                continue  # hides nothing below
            marker = self.info((*parts, WHITEOUT_PREFIX + name), stats[name])
            marker.type, marker.mode = tarfile.REGTYPE, 0o600
            self.add(tar, marker, {})
        for name in names:
            child, cst = (*parts, name), stats[name]
            if _is_whiteout(cst):
                continue
            if stat.S_ISDIR(cst.st_mode):
                self.walk(tar, child, cst)
            elif stat.S_ISSOCK(cst.st_mode):
                log.debug("diff of %s: socket %s left out", self.root, "/".join(child))
            else:
                self.nondir(tar, child, cst)

    def nondir(self, tar: tarfile.TarFile, parts: tuple[str, ...], st: os.stat_result) -> None:
        path = os.path.join(self.root, *parts)
        info = self.info(parts, st)
        mode = st.st_mode
        if stat.S_ISREG(mode) and st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.add(tar, info, {})
                return
            self.links[(st.st_dev, st.st_ino)] = info.name
        xattrs = self.xattrs(path)
        if stat.S_ISREG(mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                self.add(tar, info, xattrs, f)
            return
        set_special_type(info, path, st)
        self.add(tar, info, xattrs)

    def info(self, parts: tuple[str, ...], st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo("/".join(parts))
        info.type = tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else tarfile.REGTYPE
        info.mode = st.st_mode & 0o7777
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = self.mtime if self.mtime is not None else int(st.st_mtime)
        return info

    def xattrs(self, path: str) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for key in sorted(os.listxattr(path, follow_symlinks=False)):
            if key.startswith(_UNDIFFABLE_XATTRS):
                raise Unsupported(
                    f"diff of {path}: xattr {key} (overlay redirect_dir/metacopy) is not supported"
                )
            if key == OPAQUE_XATTR or not key.startswith(OVERLAY_XATTR_PREFIX):
                found[key] = os.getxattr(path, key, follow_symlinks=False)
        return found

    def in_lowers(self, parts: tuple[str, ...]) -> bool:
        return any(os.path.lexists(os.path.join(lower, *parts)) for lower in self.lowers)

    def add(
        self,
        tar: tarfile.TarFile,
        info: tarfile.TarInfo,
        xattrs: dict[str, bytes],
        fileobj: BinaryIO | None = None,
    ) -> None:
        info.pax_headers = {
            _XATTR_PAX + key: val.decode("utf-8", "surrogateescape")
            for key, val in xattrs.items()
            if key != OPAQUE_XATTR
        }
        tar.addfile(info, fileobj)
        self.entries += 1
