"""Containers' records under the runtime's root directory.

Layout: ``<root>/<id>/state.json`` (the record), ``<root>/<id>/exec.fifo`` (exists from create
until start). Rules: a container's directory is made with ``mkdir`` (exclusive, so a duplicate id
fails there); the record is written atomically (tmp + fsync + rename); a directory without a
record is a create still in progress or one that died half-way, and shows as ``creating``.
The live status is derived from the kernel (is the init alive, with the same start time; is the
fifo still there; is the cgroup frozen), never trusted from the file.
"""

from __future__ import annotations

import os
import time

from berth.errors import AlreadyExists, BerthError, InvalidArgument, NotFound
from berth.spec import jsonio
from berth.spec.state import Status
from berth.spec.value import field, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


DEFAULT_ROOT = "/run/berth-runtime"
RECORD = "state.json"
EXEC_FIFO = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_id(container_id: str) -> str:
    if (
        not container_id
        or len(container_id) > 1024
        or not set(container_id) <= _ID_CHARS
        or container_id in (".", "..")
    ):
        raise InvalidArgument(
            f"container id {container_id!r} is invalid: use letters, digits, '_', '+', '-', '.'"
        )
    return container_id


def write_atomically(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` by one rename, so readers see the old or the new bytes, never a part.
    ``durable`` also syncs the data before the rename, for what must outlive a power loss; a
    state that means nothing after a reboot (a running container's) skips that wait, as
    runc's state.json does."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def rfc3339(ts_ns: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, as Go's time.RFC3339Nano prints."""
    secs, nanos = divmod(ts_ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def now() -> str:
    """The current time as ``rfc3339`` writes it."""
    return rfc3339(time.time_ns())


def proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state first: field 3), or None
    when the process is gone. The name is skipped by its last ')', as it may hold anything."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when the process is gone or a zombie."""
    rest = proc_stat(pid)
    if rest is None or rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


@value(frozen=False)
class Record:
    """What the runtime keeps about one container between invocations."""

    id: str
    bundle: str
    rootfs: str
    pid: int
    pid_start: int
    created: str
    config: dict[str, Any]
    cgroup: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)
    owner: str = ""
    no_new_keyring: bool = False  # created with --no-new-keyring: execs keep theirs too

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "pid": self.pid,
            "pidStart": self.pid_start,
            "created": self.created,
            "owner": self.owner,
            "noNewKeyring": self.no_new_keyring,
            "annotations": self.annotations,
            "cgroup": self.cgroup,
            "config": self.config,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Record:
        return Record(
            id=d["id"],
            bundle=d["bundle"],
            rootfs=d["rootfs"],
            pid=d["pid"],
            pid_start=d["pidStart"],
            created=d["created"],
            owner=d.get("owner", ""),
            no_new_keyring=d.get("noNewKeyring", False),
            annotations=d.get("annotations", {}),
            cgroup=d["cgroup"],
            config=d["config"],
        )

    def init_alive(self) -> bool:
        return self.pid > 0 and process_start_time(self.pid) == self.pid_start


class Store:
    """The runtime's root directory: one directory per container."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, check_id(container_id))

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), EXEC_FIFO)

    def reserve(self, container_id: str) -> str:
        """Make the container's directory; fail if the id is taken."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        path = self.dir(container_id)
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise AlreadyExists(f"container with id {container_id!r} already exists") from None
        return path

    def save(self, record: Record) -> None:
        data = jsonio.dumps(record.to_json()).encode()
        # a record describes processes of this boot: after a reboot it only says "stopped"
        write_atomically(os.path.join(self.dir(record.id), RECORD), data, durable=False)

    def load(self, container_id: str) -> Record:
        path = os.path.join(self.dir(container_id), RECORD)
        try:
            with open(path, "rb") as f:
                return Record.from_json(jsonio.loads(f.read()))
        except FileNotFoundError:
            raise NotFound(f"container {container_id!r} does not exist") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BerthError(
                f"container {container_id!r}: its record {path} is damaged: {exc}"
            ) from None

    def exists(self, container_id: str) -> bool:
        return os.path.isdir(self.dir(container_id))

    def remove(self, container_id: str) -> None:
        """Remove the container's directory (flat: the record, the fifo, temp files)."""
        path = self.dir(container_id)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self.root, n, RECORD)))

    def status(self, record: Record, frozen: bool) -> str:
        if not record.init_alive():
            return Status.STOPPED
        if os.path.exists(self.fifo(record.id)):
            return Status.CREATED
        return Status.PAUSED if frozen else Status.RUNNING
