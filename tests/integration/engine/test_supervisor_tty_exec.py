"""The supervisor's terminals, resizes and execs on the kernel, with busybox bundles.

Each test uses ``test_supervisor``'s private supervisor fixture (its teardown force-deletes
every container and stops it; the leak check sees nothing left).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from supervisors import Sup
from test_supervisor import GATED, _log_entries, _release, _wait_for

import leakcheck
from berth.engine import supervisor_client as sc
from berth.errors import BerthError, Conflict

pytestmark = pytest.mark.root


def _terminal(config: dict[str, Any]) -> None:
    config["process"]["terminal"] = True
    config["process"]["consoleSize"] = {"height": 30, "width": 100}


def _log_text(path: str) -> str:
    entries = _log_entries(path)
    assert {e["stream"] for e in entries} <= {"stdout"}
    return "".join(e["log"] for e in entries)


def _process(config: dict[str, Any], args: list[str], **changes: Any) -> dict[str, Any]:
    proc: dict[str, Any] = json.loads(json.dumps(config["process"]))
    proc.update({"args": args, "terminal": False, **changes})
    return proc


def _collect(c: sc.Client) -> tuple[dict[str, bytes], int]:
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for event in c.exec_events():
        if isinstance(event, int):
            return out, event
        out[event[0]] += event[1]
    raise AssertionError("no exit event")


# --------------------------------------------------------------------------- terminals


def test_a_terminal_container_logs_raw_stdout_with_crlf_and_reads_stdin(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle(["sh", "-c", "tty; stty size; read line; echo got $line; exit 4"], _terminal)
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    c.create(cid, str(b.path), log_path, stdin=True)
    _wait_for(lambda: "30 100" in _log_text(log_path))  # a terminal echoes input at once
    c.write_stdin(cid, b"hello\n")
    assert c.wait(cid).exit_code == 4
    text = _log_text(log_path)
    # the terminal echoes what was typed; every line ends in \r\n as on a terminal
    assert text == "/dev/pts/0\r\n30 100\r\nhello\r\ngot hello\r\n"
    c.delete(cid)


def test_resize_sets_the_terminal_size_and_survives_an_in_place_restart(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; stty size; read x; echo [$x]"
    b = bundle(["sh", "-c", script], _terminal)
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    c.create(cid, str(b.path), log_path, stdin=True)
    c.restart()  # the master is handed over with the pipes
    c = sup.client()
    c.resize(cid, 44, 132)
    _release(b)
    _wait_for(lambda: "44 132" in _log_text(log_path))
    c.write_stdin(cid, b"typed\n")
    assert c.wait(cid).exit_code == 0
    assert _log_text(log_path).endswith("typed\r\n[typed]\r\n")
    c.delete(cid)


def test_resize_of_a_container_without_a_terminal_is_a_conflict(sup: Sup, bundle: Any) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(Path(b.path) / "log"))
    with pytest.raises(Conflict, match="has no terminal"):
        c.resize(cid, 10, 10)
    c.delete(cid, force=True)


# --------------------------------------------------------------------------- execs


def test_an_exec_streams_its_output_to_its_connection_and_reports_its_exit(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    c.create(cid, str(b.path), log_path)
    proc = _process(
        b.config, ["sh", "-c", "echo out $E; pwd; id -u; echo err >&2; cat; exit 5"],
        env=["E=1", "PATH=/bin"], cwd="/tmp", user={"uid": 1000, "gid": 1000},
    )  # fmt: skip
    ex = sup.client()
    pid = ex.exec(cid, "e1", proc, stdin=True, attach=True)
    assert pid > 0
    c.write_stdin(cid, b"from stdin\n", eof=True, exec_id="e1")
    out, code = _collect(ex)
    assert code == 5
    assert out == {"stdout": b"out 1\n/tmp\n1000\nfrom stdin\n", "stderr": b"err\n"}
    assert c.exec_state(cid, "e1") == {"running": False, "pid": pid, "exit_code": 5}
    assert Path(log_path).read_text() == ""  # an exec's output is not the container's
    # the supervisor joined the container's pid namespace only for the fork: its next
    # children (the next containers' inits) are born in its own again
    ns = Path(f"/proc/{sup.pid()}/ns")
    assert os.readlink(ns / "pid_for_children") == os.readlink(ns / "pid")
    _release(b)
    assert c.wait(cid).exit_code == 0
    c.delete(cid)


def test_an_exec_with_a_terminal_and_one_whose_connection_dropped(sup: Sup, bundle: Any) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(Path(b.path) / "log"))
    proc = _process(b.config, ["sh", "-c", "tty; read x; stty size; exit 7"], terminal=True)
    ex = sup.client()
    ex.exec(cid, "t1", proc, stdin=True, attach=True)
    events = ex.exec_events()
    first = next(events)  # the terminal echoes input at once: type after `tty` printed
    assert first == ("stdout", b"/dev/pts/0\r\n")
    c.resize(cid, 12, 34, exec_id="t1")
    c.write_stdin(cid, b"go\n", exec_id="t1")
    out, code = _collect(ex)
    assert code == 7
    assert out["stdout"] == b"go\r\n12 34\r\n" and out["stderr"] == b""

    dropped = sup.client()
    dropped.exec(cid, "d1", _process(b.config, ["sh", "-c", "sleep 0.3; exit 9"]), attach=True)
    dropped.close()
    _wait_for(lambda: c.exec_state(cid, "d1")["exit_code"] == 9)
    c.delete(cid, force=True)


def test_an_exec_that_cannot_start_answers_runcs_error(sup: Sup, bundle: Any) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(Path(b.path) / "log"))
    with pytest.raises(BerthError, match="executable file not found"):
        c.exec(cid, "x1", _process(b.config, ["nonexistent"]))
    c.kill(cid, 9)
    c.wait(cid)
    with pytest.raises(Conflict, match="not running"):
        c.exec(cid, "x2", _process(b.config, ["true"]))
    c.delete(cid)


def test_an_execs_output_waits_for_a_slow_connection(sup: Sup, bundle: Any) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(Path(b.path) / "log"))
    size = 8 << 20
    ex = sup.client()
    proc = _process(b.config, ["sh", "-c", f"head -c {size} /dev/zero; exit 3"])
    ex.exec(cid, "big", proc, attach=True)
    time.sleep(0.5)  # the client reads nothing: the supervisor stops reading the pipe
    assert c.exec_state(cid, "big")["running"] is True  # blocked writing, not ended
    out, code = _collect(ex)
    assert (code, len(out["stdout"]), set(out["stdout"])) == (3, size, {0})
    c.delete(cid, force=True)


def test_execs_survive_an_in_place_restart(sup: Sup, bundle: Any) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(Path(b.path) / "log"))
    c.exec(cid, "done", _process(b.config, ["sh", "-c", "exit 4"]))
    _wait_for(lambda: c.exec_state(cid, "done")["exit_code"] == 4)
    ex = sup.client()
    ex.exec(cid, "reads", _process(b.config, ["sh", "-c", "read x; echo $x; exit 5"]),
            stdin=True, attach=True)  # fmt: skip
    c.restart()  # the attached client is disconnected; the exec's pipes are handed over
    c = sup.client()
    assert c.exec_state(cid, "done")["exit_code"] == 4
    assert c.exec_state(cid, "reads")["running"] is True
    c.write_stdin(cid, b"still here\n", exec_id="reads")  # its stdin pipe came along
    _wait_for(lambda: c.exec_state(cid, "reads")["exit_code"] == 5)
    c.delete(cid, force=True)
