"""The OCI runtime state document and the container lifecycle as one transition table.

Rules: ``Status`` is the spec's lifecycle plus ``paused`` (runc's), as plain strings; which
operation is allowed in which status is decided only by ``ALLOWED`` through
``check_operation``, which raises ``FailedPrecondition`` naming the container, the operation
and the status.
"""

from __future__ import annotations

from berth.errors import FailedPrecondition
from berth.spec import fields as f
from berth.spec.value import field, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


OCI_VERSION = "1.2.0"


class Status:
    """The lifecycle's states (plain strings: ``enum`` costs milliseconds on the start path)."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ALL = frozenset({CREATING, CREATED, RUNNING, PAUSED, STOPPED})


ALLOWED: dict[str, frozenset[str]] = {
    "start": frozenset({Status.CREATED}),
    "kill": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED}),
    # runc (and containerd's shim) delete a created container without --force: its init has
    # not run the user's program yet
    "delete": frozenset({Status.CREATED, Status.STOPPED}),
    "delete --force": Status.ALL,
    "pause": frozenset({Status.RUNNING}),
    "resume": frozenset({Status.PAUSED}),
    "exec": frozenset({Status.CREATED, Status.RUNNING}),
    "ps": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED}),
    "events": frozenset({Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED}),
}


def check_operation(container_id: str, operation: str, status: str) -> None:
    if status not in ALLOWED[operation]:
        wanted = " or ".join(sorted(ALLOWED[operation]))
        raise FailedPrecondition(
            f"container {container_id} is {status}: {operation} needs it to be {wanted}"
        )


@value
class State:
    """What ``state`` prints: the OCI state plus runc's extra fields (rootfs, created, owner)."""

    id: str
    status: str
    pid: int
    bundle: str
    rootfs: str = ""
    created: str = ""
    owner: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    oci_version: str = OCI_VERSION

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": self.pid,
            "status": self.status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @staticmethod
    def from_json(data: Any) -> State:
        d = f.obj(data, "state")
        status = f.string(d, "status", "state")
        if status not in Status.ALL:
            raise f.fail("state.status", "a lifecycle status", status)
        return State(
            id=f.string(d, "id", "state"),
            status=status,
            pid=f.integer(d, "pid", "state", default=0),
            bundle=f.string(d, "bundle", "state"),
            rootfs=f.opt_string(d, "rootfs", "state") or "",
            created=f.opt_string(d, "created", "state") or "",
            owner=f.opt_string(d, "owner", "state") or "",
            annotations=f.string_map(d, "annotations", "state"),
            oci_version=f.string(d, "ociVersion", "state"),
        )
