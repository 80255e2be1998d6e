"""Restart policies as values: dockerd's 400s, the decision on an exit, the back-off."""

from __future__ import annotations

from typing import Any

import pytest

from berth.engine.containers_restart import Backoff, RestartPolicy
from berth.engine.containers_state import Record
from berth.errors import InvalidArgument


def _policy(name: str, count: int = 0, **host: Any) -> dict[str, Any]:
    return {"RestartPolicy": {"Name": name, "MaximumRetryCount": count}, **host}


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            _policy("always", 2),
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        (
            _policy("no", -1),
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            " and cannot be negative",
        ),
        (
            _policy("on-failure", -1),
            "invalid restart policy: maximum retry count cannot be negative",
        ),
        (
            _policy("sometimes"),
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always',"
            " 'on-failure', or 'unless-stopped'",
        ),
        (
            _policy("always", AutoRemove=True),
            "can't create 'AutoRemove' container with restart policy",
        ),
        (_policy("on-failure", 3, AutoRemove=True), "can't create 'AutoRemove' container"),
    ],
)
def test_invalid_policies_get_dockerds_messages(host: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        RestartPolicy.validate(host)
    assert e.value.message.startswith(message)


def test_valid_policies() -> None:
    assert RestartPolicy.validate({}) == RestartPolicy("no", 0)
    assert RestartPolicy.validate(_policy("", 5)) == RestartPolicy("no", 5)  # pre-25 clients
    assert RestartPolicy.validate(_policy("no", AutoRemove=True)).none
    assert RestartPolicy.validate(_policy("on-failure", 2)) == RestartPolicy("on-failure", 2)
    assert RestartPolicy.of(_policy("unless-stopped")).name == "unless-stopped"


def test_which_exits_restart() -> None:
    always, unless = RestartPolicy("always"), RestartPolicy("unless-stopped")
    on_failure, capped = RestartPolicy("on-failure"), RestartPolicy("on-failure", 2)
    assert always.on_exit(0, manually_stopped=True, restart_count=99)
    assert unless.on_exit(0, manually_stopped=False, restart_count=0)
    assert not unless.on_exit(1, manually_stopped=True, restart_count=0)
    assert on_failure.on_exit(1, False, 1000) and not on_failure.on_exit(0, False, 0)
    assert capped.on_exit(1, False, 1) and not capped.on_exit(1, False, 2)
    assert not RestartPolicy("no").on_exit(1, False, 0)


def test_backoff_doubles_caps_and_resets_after_a_long_run() -> None:
    b = Backoff()
    assert [b.next(0.1) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    for _ in range(20):
        b.next(0.0)
    assert b.delay == 60.0
    assert b.next(10.0) == 0.1  # ran 10 s: back to the first delay
    b.reset()
    assert b.next(0.0) == 0.1


def test_record_keeps_the_manual_stop_and_shows_restarting() -> None:
    rec = Record("a" * 64, "/web", "2026-01-01T00:00:00Z", "sha256:x", "busybox", {}, {})
    rec.manually_stopped = True
    rec.state.update(Status="restarting", Running=True, Restarting=True, ExitCode=3)
    rec.state["FinishedAt"] = "2026-01-01T00:00:10Z"
    back = Record.from_json(rec.to_json())
    assert back.manually_stopped and back.restarting and not back.has_process
    assert back.status_text(now=1767225615.0) == "Restarting (3) 5 seconds ago"
