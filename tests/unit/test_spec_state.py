"""berth.spec.state: the state document (runc's field names) and the lifecycle table.

Rules: ``State.to_json`` prints exactly runc's keys (annotations only when present);
``check_operation`` is the one judge of which operation is allowed in which status.
"""

from __future__ import annotations

from typing import Any

import pytest

from berth.errors import FailedPrecondition, InvalidArgument
from berth.spec.state import ALLOWED, OCI_VERSION, State, Status, check_operation

RUNC_KEYS = ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]


def _state(**changes: Any) -> State:
    base: dict[str, Any] = {
        "id": "web",
        "status": Status.RUNNING,
        "pid": 4242,
        "bundle": "/srv/bundles/web",
        "rootfs": "/srv/bundles/web/rootfs",
        "created": "2024-05-01T10:20:30.123456789Z",
        "owner": "",
    }
    base.update(changes)
    return State(**base)


def test_to_json_uses_runcs_field_names_in_runcs_order() -> None:
    doc = _state().to_json()
    assert list(doc) == RUNC_KEYS
    assert doc["ociVersion"] == OCI_VERSION
    assert doc["pid"] == 4242
    assert doc["status"] == "running"


def test_annotations_appear_only_when_present() -> None:
    assert "annotations" not in _state().to_json()
    doc = _state(annotations={"org.example": "x"}).to_json()
    assert doc["annotations"] == {"org.example": "x"}


@pytest.mark.parametrize("status", sorted(Status.ALL))
def test_round_trip(status: str) -> None:
    state = _state(status=status, annotations={"a": "b"}, owner="alice")
    assert State.from_json(state.to_json()) == state


def test_from_json_reads_runcs_output() -> None:
    # what `runc state` printed for a created busybox container
    runc = {
        "ociVersion": "1.0.2-dev",
        "id": "c1",
        "pid": 1234,
        "status": "created",
        "bundle": "/tmp/b",
        "rootfs": "/tmp/b/rootfs",
        "created": "2024-01-02T03:04:05.06Z",
        "owner": "",
    }
    state = State.from_json(runc)
    assert state.oci_version == "1.0.2-dev"
    assert state.status == Status.CREATED
    assert state.annotations == {}
    assert state.to_json() == runc


def test_from_json_defaults_for_optional_fields() -> None:
    state = State.from_json({"ociVersion": "1.2.0", "id": "x", "status": "stopped", "bundle": "/b"})
    assert (state.pid, state.rootfs, state.created, state.owner) == (0, "", "", "")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"status": "sleeping"}, "state.status"),
        ({"status": None}, "state.status"),
        ({"id": 5}, "state.id"),
        ({"pid": "1"}, "state.pid"),
        ({"bundle": None}, "state.bundle"),
        ({"annotations": {"a": 1}}, "state.annotations"),
        ({"ociVersion": None}, "state.ociVersion"),
    ],
)
def test_from_json_errors_name_the_field(change: dict[str, Any], named: str) -> None:
    doc = _state().to_json()
    for key, val in change.items():
        if val is None:
            del doc[key]
        else:
            doc[key] = val
    with pytest.raises(InvalidArgument, match=rf"^{named}:"):
        State.from_json(doc)


def test_from_json_refuses_a_non_object() -> None:
    with pytest.raises(InvalidArgument, match=r"^state: expected an object"):
        State.from_json(["running"])


# --------------------------------------------------------------------------- the lifecycle table

# What runc 1.1.5 allows, written out by hand (not derived from ALLOWED).
EXPECTED = {
    ("start", "created"),
    ("delete", "created"),
    ("kill", "created"),
    ("kill", "running"),
    ("kill", "paused"),
    ("delete", "stopped"),
    ("delete --force", "creating"),
    ("delete --force", "created"),
    ("delete --force", "running"),
    ("delete --force", "paused"),
    ("delete --force", "stopped"),
    ("pause", "running"),
    ("resume", "paused"),
    ("exec", "created"),
    ("exec", "running"),
    ("ps", "created"),
    ("ps", "running"),
    ("ps", "paused"),
    ("ps", "stopped"),
    ("events", "created"),
    ("events", "running"),
    ("events", "paused"),
    ("events", "stopped"),
}
CASES = [(op, status) for op in sorted(ALLOWED) for status in sorted(Status.ALL)]
ALLOWED_CASES = [c for c in CASES if c in EXPECTED]


def test_the_table_covers_every_operation() -> None:
    assert set(ALLOWED) == {op for op, _ in EXPECTED}
    assert {"creating", "created", "running", "paused", "stopped"} == Status.ALL


def test_delete_without_force_takes_a_created_container() -> None:
    # runc's delete.go kills and removes a *created* container without --force (containerd's
    # shim relies on it: its createdState.Delete calls `runc delete` without --force)
    assert ALLOWED["delete"] == {"created", "stopped"}
    check_operation("box", "delete", "created")
    for status in ("creating", "running", "paused"):
        with pytest.raises(FailedPrecondition):
            check_operation("box", "delete", status)


@pytest.mark.parametrize(("operation", "status"), ALLOWED_CASES)
def test_allowed(operation: str, status: str) -> None:
    check_operation("box", operation, status)


@pytest.mark.parametrize(("operation", "status"), [c for c in CASES if c not in EXPECTED])
def test_refused_naming_container_operation_and_status(operation: str, status: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_operation("box-1", operation, status)
    message = info.value.message
    assert "box-1" in message
    assert operation in message
    assert status in message


def test_refusal_says_which_status_is_needed() -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_operation("web", "start", "running")
    assert info.value.message == "container web is running: start needs it to be created"
    with pytest.raises(FailedPrecondition, match="created or running"):
        check_operation("web", "exec", "stopped")
