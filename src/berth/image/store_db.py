"""``images.json``: the image store's references database, and the lock around it.

Why one ``images.json`` and not one file per image: a tag moves a reference from one image to
another, a removal drops references and a record together, and resolving a short id or
listing needs every record anyway. One file makes each of those one atomic rename (never a
half-moved tag), and the file stays small (a few hundred bytes per image).

Rules:
- The file is ``{"version": 1, "images": {id: record}, "refs": {reference: manifest
  digest}}``; a record holds ``manifest`` and ``added`` (and ``last_tag_time`` once tagged).
  What the fields mean is ``store``'s business; this module only reads, locks and writes.
- A missing file is an empty database; another version or bytes that are not JSON are
  ``InvalidArgument`` naming the file, never an empty database (that would drop every tag).
- Every read-modify-write runs inside ``DbFile.locked()``: an exclusive flock on
  ``<root>/lock`` around reading the file and writing it back, which happens only when the
  block succeeds and changed the database.
- A write is atomic and durable: a temp file in the root, fsync, rename over ``images.json``,
  then fsync of the directory; a failed write leaves the previous file and no temp file. So a
  reader without the lock (listing, resolving) always sees one whole version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from berth.errors import InvalidArgument

DB_VERSION = 1


class Db:
    """The decoded images.json: records by id, references -> manifest digest."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.images: dict[str, dict[str, str]] = data.get("images", {})
        self.refs: dict[str, str] = data.get("refs", {})

    def to_json(self) -> dict[str, Any]:
        return {"version": DB_VERSION, "images": self.images, "refs": self.refs}

    def id_of_manifest(self) -> dict[str, str]:
        return {rec["manifest"]: image_id for image_id, rec in self.images.items()}

    def refs_of(self, image_id: str) -> list[str]:
        manifest = self.images[image_id]["manifest"]
        return sorted(r for r, m in self.refs.items() if m == manifest)


class DbFile:
    """``<root>/images.json`` and ``<root>/lock``; see the module docstring."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.path = os.path.join(root, "images.json")
        self._lock_path = os.path.join(root, "lock")

    def read(self) -> Db:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return Db({})
        except ValueError as e:
            raise InvalidArgument(f"{self.path}: not valid JSON: {e}") from e
        if not isinstance(data, dict) or data.get("version") != DB_VERSION:
            raise InvalidArgument(f"{self.path}: expected version {DB_VERSION}")
        return Db(data)

    def write(self, db: Db) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".images-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(db.to_json(), indent=1, sort_keys=True).encode())
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[Db]:
        """The database, locked against other writers; written back if the block succeeds."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            db = self.read()
            before = json.dumps(db.to_json(), sort_keys=True)
            yield db
            if json.dumps(db.to_json(), sort_keys=True) != before:
                self.write(db)
        finally:
            os.close(fd)  # releases the lock
