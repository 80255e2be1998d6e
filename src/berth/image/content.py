"""The content-addressed blob store (containerd's model): blobs named by their digest.

Layout under the root the caller hands in::

    <root>/blobs/<algorithm>/<hex>     committed blobs, read-only (0444)
    <root>/ingest/<random>             writes in progress

Rules:
- A blob is only ever written through ``writer``: bytes stream into an ingest file and are
  hashed as they go; on commit the size and digest are checked against what the caller
  expected, the file is fsynced and renamed into place (atomic), and the directory fsynced.
  So a file under ``blobs/`` is always whole and always matches its name.
- Every failure — a digest or size mismatch, an exception inside the ``with`` block, a
  malformed expected digest — leaves nothing behind: the ingest file is removed.
- Writing a blob that is already present is a no-op that returns its ``Info`` (the bytes are
  still hashed and checked, so a caller streaming corrupt data learns of it). Two writers of the
  same digest cannot corrupt it: whoever renames first wins; the other finds it present.
- ``gc`` deletes blobs not in ``keep`` and ingest files untouched for an hour. It does not
  lock: the image store above decides when it runs (no writer of a blob it would drop).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import tempfile
import time

from berth.errors import InvalidArgument, NotFound
from berth.image import digest as digests
from berth.spec.image import Descriptor
from berth.spec.value import value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import BinaryIO

log = logging.getLogger(__name__)

INGEST_MAX_AGE = 3600.0  # seconds an ingest file may sit untouched before gc removes it
_BLOB_MODE = 0o444


@value
class Info:
    digest: str
    size: int

    def descriptor(self, media_type: str) -> Descriptor:
        return Descriptor(media_type=media_type, digest=self.digest, size=self.size)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ContentStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs_dir = os.path.join(root, "blobs")
        self.ingest_dir = os.path.join(root, "ingest")

    def _blob_path(self, digest: str) -> str:
        parsed = digests.parse(digest)
        return os.path.join(self.blobs_dir, parsed.algorithm, parsed.hex)

    def path(self, digest: str) -> str:
        """Where the blob is on disk; NotFound naming the digest if it is not there."""
        path = self._blob_path(digest)
        if not os.path.isfile(path):
            raise NotFound(f"blob {digest} not found")
        return path

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self._blob_path(digest))

    def info(self, digest: str) -> Info:
        try:
            size = os.stat(self._blob_path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None
        return Info(digest, size)

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self._blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read_bytes(self, digest: str) -> bytes:
        with self.open(digest) as stream:
            return stream.read()

    def writer(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> Writer:
        """A writer to use as a context manager; it commits when the block ends cleanly."""
        return Writer(self, expected_digest, expected_size)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> Info:
        with self.writer(expected_digest, len(data)) as w:
            w.write(data)
        return w.commit()

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self._blob_path(digest))
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None
        log.debug("deleted blob %s", digest)

    def list(self) -> builtins.list[Info]:
        """Every committed blob, sorted by digest."""
        found: builtins.list[Info] = []
        for algorithm in digests.ALGORITHMS:
            directory = os.path.join(self.blobs_dir, algorithm)
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                digest = f"{algorithm}:{entry.name}"
                if entry.is_file(follow_symlinks=False) and digests.is_digest(digest):
                    found.append(Info(digest, entry.stat(follow_symlinks=False).st_size))
        found.sort(key=lambda info: info.digest)
        return found

    def usage(self) -> int:
        """Total bytes of the committed blobs."""
        return sum(info.size for info in self.list())

    def verify(self, digest: str) -> Info:
        """Re-hash a blob; InvalidArgument if its bytes no longer match its digest."""
        expected = digests.parse(digest)
        with self.open(digest) as stream:
            actual, size = digests.of_stream(stream, expected.algorithm)
        if actual != digest:
            raise InvalidArgument(
                f"blob {digest} is corrupt: digest mismatch: expected {digest}, got {actual}"
            )
        return Info(digest, size)

    def gc(self, keep: set[str], ingest_max_age: float = INGEST_MAX_AGE) -> builtins.list[str]:
        """Delete blobs not in ``keep`` and stale ingest files; the deleted digests, sorted."""
        removed: builtins.list[str] = []
        for info in self.list():
            if info.digest not in keep:
                _unlink_quietly(self._blob_path(info.digest))
                removed.append(info.digest)
        cutoff = time.time() - ingest_max_age
        try:
            entries = list(os.scandir(self.ingest_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                stale = entry.stat(follow_symlinks=False).st_mtime < cutoff
            except FileNotFoundError:
                continue  # its writer just finished
            if stale:
                _unlink_quietly(entry.path)
                log.info("gc: removed stale ingest file %s", entry.path)
        if removed:
            log.info("gc: removed %d blobs from %s", len(removed), self.root)
        return removed


class Writer:
    """Streams one blob into ingest; ``commit`` verifies and moves it into place."""

    def __init__(
        self, store: ContentStore, expected_digest: str | None, expected_size: int | None
    ) -> None:
        algorithm = digests.SHA256
        if expected_digest is not None:
            algorithm = digests.parse(expected_digest).algorithm
        if expected_size is not None and expected_size < 0:
            raise InvalidArgument(f"expected size {expected_size} is negative")
        self.store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self._hasher = digests.Hasher(algorithm)
        self._fd: int | None = None
        self._ingest_path = ""
        self._result: Info | None = None
        self._done = False
        # Already present: hash the bytes to check them, but store nothing.
        self.present = expected_digest is not None and store.exists(expected_digest)

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._hasher.size

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.commit()

    def _open_ingest(self) -> int:
        if self._fd is None:
            os.makedirs(self.store.ingest_dir, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=self.store.ingest_dir, prefix="blob-")
            self._fd, self._ingest_path = fd, path
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise InvalidArgument("write to a blob writer that was already committed or aborted")
        if self.expected_size is not None and self.size + len(data) > self.expected_size:
            self.abort()
            raise InvalidArgument(
                f"size mismatch: expected {self.expected_size} bytes, got more "
                f"({self.size + len(data)} so far)"
            )
        self._hasher.update(data)
        if not self.present:
            view = memoryview(data)
            fd = self._open_ingest()
            while view:
                written = os.write(fd, view)
                view = view[written:]
        return len(data)

    def abort(self) -> None:
        """Drop everything written; the ingest file is removed."""
        self._done = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._ingest_path:
            _unlink_quietly(self._ingest_path)
            self._ingest_path = ""

    def commit(self) -> Info:
        """Verify size and digest, then move the blob into place (idempotent)."""
        if self._result is not None:
            return self._result
        if self._done:
            raise InvalidArgument("commit of a blob writer that was aborted")
        try:
            actual = self._hasher.digest()
            if self.expected_size is not None and self.size != self.expected_size:
                raise InvalidArgument(
                    f"size mismatch: expected {self.expected_size} bytes, got {self.size}"
                )
            if self.expected_digest is not None and actual != self.expected_digest:
                raise InvalidArgument(
                    f"digest mismatch: expected {self.expected_digest}, got {actual}"
                )
            if not self.present:
                self._move_into_place(actual)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._result = Info(actual, self.size)
        return self._result

    def _move_into_place(self, actual: str) -> None:
        target = self.store._blob_path(actual)
        if os.path.isfile(target):  # another writer got there first
            self.abort()
            return
        fd = self._open_ingest()  # an empty blob never wrote, so never opened
        os.fchmod(fd, _BLOB_MODE)
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        try:
            os.rename(self._ingest_path, target)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise InvalidArgument(f"ingest file for {actual} vanished before commit") from None
        self._ingest_path = ""
        _fsync_dir(directory)
        log.debug("committed blob %s (%d bytes)", actual, self.size)
