"""The pure parts of execs and healthchecks: exec bodies, the OCI process of an exec, the
healthcheck's defaults and state machine, and how it shows in ``docker ps``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from berth.engine.containers_state import Record, merged_config, now_rfc3339
from berth.engine.execs import ExecConfig, build_process, start_failure_exit_code
from berth.engine.health import Check, next_interval, record_result
from berth.errors import InvalidArgument
from berth.spec.defaults import CAPABILITIES

# --------------------------------------------------------------------------- exec


def test_exec_config_reads_the_clis_body() -> None:
    body = {"User": "", "Privileged": False, "Tty": True, "AttachStdin": True,
            "AttachStderr": True, "AttachStdout": True, "Detach": False, "DetachKeys": "",
            "Env": None, "WorkingDir": "", "Cmd": ["sh"], "ConsoleSize": [40, 120]}  # fmt: skip
    c = ExecConfig.from_json(body)
    assert (c.cmd, c.tty, c.attach_stdin, c.console_size, c.env) == (
        ["sh"], True, True, (40, 120), [],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Cmd": []}, "No exec command specified"),
        ({}, "No exec command specified"),
        ({"Cmd": "ls"}, "Cmd: 'ls' must be a list of strings"),
        ({"Cmd": ["ls"], "WorkingDir": "rel"}, "it needs to be an absolute path"),
        ({"Cmd": ["ls"], "Tty": "yes"}, "Tty: 'yes' must be a boolean"),
        ({"Cmd": ["ls"], "Env": ["=x"]}, "invalid environment variable"),
        ({"Cmd": ["ls"], "ConsoleSize": [1]}, "ConsoleSize"),
        ({"Cmd": ["ls"], "ConsoleSize": [-1, 2]}, "ConsoleSize"),
        ([], "must be a JSON object"),
    ],
)
def test_exec_config_rejects_bad_bodies(body: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ExecConfig.from_json(body)


def test_the_exec_process_is_the_containers_with_the_execs_changes(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nu:x:7:8::/home/u:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("g:x:9:u\n")
    base = {"args": ["sleep"], "env": ["PATH=/bin", "A=1", "HOME=/root"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}, "terminal": False,
            "capabilities": {"bounding": ["CAP_CHOWN"]}}  # fmt: skip
    config = ExecConfig(cmd=["id"], env=["A=2", "B=3"], user="u", working_dir="/w", tty=True,
                        console_size=(10, 20))  # fmt: skip
    proc = build_process(base, str(tmp_path), config)
    assert proc["args"] == ["id"] and proc["cwd"] == "/w" and proc["terminal"] is True
    assert proc["env"] == ["PATH=/bin", "A=2", "B=3", "HOME=/home/u"]
    assert proc["user"] == {"uid": 7, "gid": 8, "additionalGids": [9]}
    assert proc["consoleSize"] == {"height": 10, "width": 20}
    assert proc["capabilities"] == {"bounding": ["CAP_CHOWN"]}
    assert base["args"] == ["sleep"]  # the container's own is untouched
    privileged = build_process(base, str(tmp_path), ExecConfig(cmd=["id"], privileged=True))
    assert privileged["capabilities"]["effective"] == list(CAPABILITIES)
    assert privileged["user"] == {"uid": 0, "gid": 0} and "consoleSize" not in privileged


def test_exit_codes_of_an_exec_that_cannot_start() -> None:
    assert start_failure_exit_code('exec: "x": executable file not found in $PATH') == 127
    assert start_failure_exit_code('exec: "/x": stat /x: no such file or directory') == 127
    assert start_failure_exit_code('exec: "/etc/passwd": permission denied') == 126


# --------------------------------------------------------------------------- healthchecks

MS = 1_000_000


def test_check_kinds_and_defaults() -> None:
    assert Check.of({}) is None
    assert Check.of({"Healthcheck": {"Test": ["NONE"]}}) is None
    assert Check.of({"Healthcheck": {"Test": []}}) is None
    shell = Check.of({"Healthcheck": {"Test": ["CMD-SHELL", "curl -f x || exit 1"]}})
    assert shell == Check(["/bin/sh", "-c", "curl -f x || exit 1"], 30.0, 30.0, 0.0, 5.0, 3)
    cmd = Check.of({"Healthcheck": {"Test": ["CMD", "true", "x"], "Interval": 200 * MS,
                                    "Timeout": 300 * MS, "StartPeriod": 1000 * MS,
                                    "StartInterval": 100 * MS, "Retries": 2}})  # fmt: skip
    assert cmd == Check(["true", "x"], 0.2, 0.3, 1.0, 0.1, 2)


def _result(code: int) -> dict[str, Any]:
    return {"Start": now_rfc3339(), "End": now_rfc3339(), "ExitCode": code, "Output": ""}


def test_health_state_machine() -> None:
    check = Check(["true"], 1.0, 1.0, 10.0, 0.5, 2)
    health: dict[str, Any] = {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert next_interval(health, check, in_start_period=True) == 0.5
    # failures while starting in the start period do not count
    assert record_result(health, check, _result(1), in_start_period=True) == "starting"
    assert health["FailingStreak"] == 0
    assert record_result(health, check, _result(1), in_start_period=False) == "starting"
    assert record_result(health, check, _result(1), in_start_period=False) == "unhealthy"
    assert health["FailingStreak"] == 2
    assert record_result(health, check, _result(0), in_start_period=False) == "healthy"
    assert health["FailingStreak"] == 0
    assert next_interval(health, check, in_start_period=True) == 1.0  # healthy: the interval
    # once healthy, a failure in the start period counts
    assert record_result(health, check, _result(1), in_start_period=True) == "healthy"
    assert health["FailingStreak"] == 1
    for _ in range(4):
        record_result(health, check, _result(1), in_start_period=False)
    assert len(health["Log"]) == 5 and health["Status"] == "unhealthy"


def test_the_images_healthcheck_is_merged_into_the_containers() -> None:
    image = {"Healthcheck": {"Test": ["CMD", "probe"], "Interval": 5, "Retries": 4}}
    assert merged_config({}, image)["Healthcheck"] == image["Healthcheck"]
    mine = merged_config({"Healthcheck": {"Interval": 9}}, image)["Healthcheck"]
    assert mine == {"Test": ["CMD", "probe"], "Interval": 9, "Retries": 4}
    off = merged_config({"Healthcheck": {"Test": ["NONE"]}}, image)["Healthcheck"]
    assert off["Test"] == ["NONE"]
    assert "Healthcheck" not in merged_config({}, {})


def test_ps_status_shows_the_health() -> None:
    rec = Record("a" * 64, "/x", now_rfc3339(), "sha256:" + "b" * 64, "busybox", {}, {})
    rec.state.update(Running=True, Status="running", StartedAt=now_rfc3339())
    now = time.time() + 3
    assert rec.status_text(now) == "Up 3 seconds"
    rec.state["Health"] = {"Status": "starting"}
    assert rec.status_text(now) == "Up 3 seconds (health: starting)"
    rec.state["Health"] = {"Status": "unhealthy"}
    assert rec.status_text(now) == "Up 3 seconds (unhealthy)"
    rec.state["Paused"] = True
    assert rec.status_text(now) == "Up 3 seconds (Paused)"


def test_exec_events_are_the_containers_events_as_dockerd_names_them() -> None:
    from types import SimpleNamespace

    from berth.engine.execs import Exec, ExecManager

    seen: list[tuple[str, dict[str, str]]] = []
    rec = SimpleNamespace(exec_ids=[])
    containers: Any = SimpleNamespace(
        records={"c" * 64: rec},
        emit=lambda r, action, **attrs: seen.append((action, attrs)) if r is rec else None,
    )
    m = ExecManager(containers)
    ex = Exec("e" * 64, "c" * 64, ExecConfig(cmd=["sh", "-c", "exit 3"]))
    m._event("exec_create", ex)
    m._ended(ex, 3)
    m._ended(ex, 3)  # once only
    assert seen == [
        ("exec_create: sh -c exit 3", {"execID": "e" * 64}),
        ("exec_die", {"execID": "e" * 64, "exitCode": "3"}),
    ]
