"""The supervisor on the kernel: busybox containers created in it, their logs, their exits.

Every test starts its own supervisor (detached, as berthd starts it) on temp paths and, in
teardown, force-deletes every container it knows, stops it, and makes sure it is gone; the
leak check then sees no process, cgroup or mount left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from supervisors import Sup, wait_gone

import leakcheck
from berth.engine import supervisor_client as sc
from berth.engine import supervisor_protocol as p
from berth.errors import BerthError, Conflict, FailedPrecondition, NotFound
from berth.runtime import store

pytestmark = pytest.mark.root

MiB = 1024 * 1024
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
# a container that runs until the test creates /tmp/go in its rootfs, then exits with $1
GATED = "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo released; exit {code}"


def _wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _log_entries(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _release(b: Any) -> None:
    (b.rootfs / "tmp" / "go").touch()


def _memory_limit(limit: int) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["linux"].setdefault("resources", {})["memory"] = {"limit": limit, "swap": limit}

    return edit


# --------------------------------------------------------------------------- logs and exits


def test_output_goes_to_a_json_file_log_and_wait_returns_the_exit_code(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    script = (
        "echo out1; echo err1 >&2; echo out2;"
        " head -c 40000 /dev/zero | tr '\\0' a; echo; printf partial; exit 3"
    )
    b = bundle.sh(script)
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    info = c.create(cid, str(b.path), log_path)
    assert info.id == cid and info.pid > 0 and info.started_at
    exit_ = c.wait(cid)
    assert (exit_.exit_code, exit_.oom_killed, exit_.known) == (3, False, True)
    assert RFC3339_NANO.match(exit_.finished_at)
    # durable before anyone heard of it
    saved = json.loads(Path(sup.root, cid, "exit.json").read_text())
    assert saved["exit_code"] == 3 and saved["finished_at"] == exit_.finished_at

    entries = _log_entries(log_path)
    assert all(set(e) == {"log", "stream", "time"} for e in entries)
    assert all(RFC3339_NANO.match(e["time"]) for e in entries)
    out = [e["log"] for e in entries if e["stream"] == "stdout"]
    err = [e["log"] for e in entries if e["stream"] == "stderr"]
    assert err == ["err1\n"]
    # docker's json-file: a 40000-byte line is three entries, 16 KiB, 16 KiB and the rest
    assert out == ["out1\n", "out2\n", "a" * 16384, "a" * 16384, "a" * 7232 + "\n", "partial"]
    # the raw line is docker's, field for field
    first = Path(log_path).read_text().splitlines()[0]
    assert re.match(r'^\{"log":"out1\\n","stream":"stdout","time":"[^"]+Z"\}$', first)

    state = c.state(cid)
    assert state.status == "stopped" and state.exit == exit_
    assert c.wait(cid) == exit_  # again, at once
    c.delete(cid)
    with pytest.raises(NotFound):
        c.state(cid)
    assert not os.path.exists(os.path.join(sup.root, cid))


def test_created_then_started_with_stdin_written_by_the_client(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh("read line; echo got $line; exit 0")
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    info = c.create(cid, str(b.path), log_path, start=False, stdin=True)
    assert (info.status, info.stdin, info.started_at) == ("created", True, "")
    started = c.start(cid)
    assert started.status == "running" and started.started_at
    c.write_stdin(cid, b"hello\n", eof=True)
    assert c.wait(cid).exit_code == 0
    assert [e["log"] for e in _log_entries(log_path)] == ["got hello\n"]
    c.delete(cid)


def test_an_oom_killed_container_reports_137_and_oom_killed(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"], _memory_limit(32 * MiB)
    )
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    exit_ = c.wait(cid)
    assert (exit_.exit_code, exit_.oom_killed) == (137, True)
    c.delete(cid)


def test_kill_and_force_delete_of_a_running_container_record_its_exit(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=0))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    with pytest.raises(FailedPrecondition):
        c.delete(cid)  # running
    c.kill(cid, signal.SIGKILL)
    exit_ = c.wait(cid)
    assert (exit_.exit_code, exit_.oom_killed) == (137, False)
    with pytest.raises(FailedPrecondition):
        c.kill(cid, signal.SIGTERM)  # stopped

    b2 = bundle.sh(GATED.format(code=0))
    cid2 = leakcheck.tagged_name()
    c.create(cid2, str(b2.path), str(engine_workdir / "c2.log"))
    with pytest.raises(Conflict):
        c.create(cid2, str(b2.path), str(engine_workdir / "c2.log"))
    c.delete(cid2, force=True)
    assert [i.id for i in c.list()] == [cid]
    c.delete(cid)


# --------------------------------------------------------------------------- the daemon's restarts


def test_a_new_client_finds_the_running_container_and_its_exit(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=7))
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    with sc.Client(sup.socket) as first:
        first.create(cid, str(b.path), log_path)
    # the "restarted daemon"
    c = sup.client()
    (info,) = c.list()
    assert (info.id, info.status, info.log_path) == (cid, "running", log_path)
    _release(b)
    assert c.wait(cid).exit_code == 7
    assert [e["log"] for e in _log_entries(log_path)] == ["released\n"]
    c.delete(cid)


_WAITER = """
import sys
from berth.engine import supervisor_client as sc
with sc.Client(sys.argv[1]) as c:
    print("waiting", flush=True)
    c.wait(sys.argv[2])
"""


def test_a_client_killed_during_wait_loses_nothing(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=4))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    events: list[p.Exit] = []
    subscriber = sc.Client(sup.socket, timeout=30)
    sup.clients.append(subscriber)
    stream = subscriber.subscribe()

    def collect() -> None:
        events.append(next(stream))

    collector = threading.Thread(target=collect)
    waiter = subprocess.Popen(
        [sys.executable, "-c", _WAITER, sup.socket, cid], stdout=subprocess.PIPE, text=True
    )
    try:
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "waiting\n"
        time.sleep(0.1)  # its wait request is in
        collector.start()
        waiter.kill()
        assert waiter.wait(10) == -signal.SIGKILL
    finally:
        waiter.kill()
        waiter.wait()
        if waiter.stdout is not None:
            waiter.stdout.close()
    _release(b)
    exit_ = c.wait(cid)
    assert exit_.exit_code == 4
    collector.join(10)
    assert events == [exit_]
    c.delete(cid)


# --------------------------------------------------------------------------- its own restart


def test_the_supervisor_stops_without_its_containers_and_a_new_one_adopts_them(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=9))
    done = bundle.sh("exit 5")
    cid, done_id = leakcheck.tagged_name(), leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    c.create(done_id, str(done.path), str(engine_workdir / "d.log"))
    assert c.wait(done_id).exit_code == 5
    old_pid = sup.pid()
    c.shutdown()
    wait_gone(old_pid)
    st = store.Store(sup.root)
    assert st.load(cid).init_alive(), "the container died with its supervisor"
    with pytest.raises(sc.Unavailable):
        sc.Client(sup.socket)

    sup.start()
    assert sup.pid() != old_pid
    assert not sc.ensure_started(sup.root, sup.socket, sup.log)  # it answers: not started
    c = sup.client()
    infos = {i.id: i for i in c.list()}
    assert infos[cid].status == "running" and infos[cid].adopted
    assert infos[done_id].exit is not None and infos[done_id].exit.exit_code == 5
    _release(b)
    exit_ = c.wait(cid)
    # not its child: read from /proc while a zombie, else unknown (255), as containerd says
    assert (exit_.exit_code, exit_.known) in ((9, True), (p.UNKNOWN_EXIT_CODE, False))
    assert json.loads(Path(sup.root, cid, "exit.json").read_text())["exit_code"] == exit_.exit_code
    print("adopted exit:", exit_)
    c.delete(cid)
    c.delete(done_id)


def test_a_second_supervisor_on_the_same_root_refuses_to_start(sup: Sup) -> None:
    other_socket = sup.socket + "2"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "berth.engine.supervisor",
            "--root",
            sup.root,
            "--socket",
            other_socket,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert "another supervisor serves" in proc.stderr
    assert not os.path.exists(other_socket)


def test_an_in_place_restart_keeps_children_pipes_and_partial_lines(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(
        "echo before; printf par; " + GATED.format(code=6).replace("echo released", "echo tial")
    )
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    c.create(cid, str(b.path), log_path, stdin=True)
    _wait_for(lambda: Path(log_path).stat().st_size > 0)
    time.sleep(0.1)  # "par" is read and held as a partial line
    pid = sup.pid()
    c.restart()
    c = sup.client()
    assert sup.pid() == pid  # the same process: the containers' parent still
    (info,) = c.list()
    assert (info.status, info.adopted, info.stdin) == ("running", False, True)
    _release(b)
    exit_ = c.wait(cid)
    assert (exit_.exit_code, exit_.known) == (6, True)
    assert [e["log"] for e in _log_entries(log_path)] == ["before\n", "partial\n"]
    assert not os.path.exists(os.path.join(sup.root, "supervisor.handoff.json"))
    c.delete(cid)


def test_stdin_that_is_not_read_does_not_block_the_supervisor(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=0).replace("echo released", "wc -c"))
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    c.create(cid, str(b.path), log_path, stdin=True)
    c.write_stdin(cid, b"x" * (1 * MiB), eof=True)  # far more than a pipe holds
    assert c.state(cid).status == "running"  # answered while the data waits
    _release(b)
    assert c.wait(cid).exit_code == 0
    assert [e["log"] for e in _log_entries(log_path)] == [f"{1 * MiB}\n"]
    c.delete(cid)


def test_the_asyncio_client(sup: Sup, bundle: Any, engine_workdir: Path) -> None:
    import asyncio

    b = bundle.sh("echo hi; exit 2")
    cid = leakcheck.tagged_name()

    async def scenario() -> tuple[p.Info, p.Exit, list[p.Info]]:
        assert not await sc.ensure_started_async(sup.root, sup.socket, sup.log)
        client = sc.AsyncClient(sup.socket)
        try:
            waiting = asyncio.ensure_future(_first_exit(client))
            await asyncio.sleep(0.05)
            info = await client.create(cid, str(b.path), str(engine_workdir / "c.log"))
            exit_ = await client.wait(cid)
            assert await asyncio.wait_for(waiting, 10) == exit_
            listed = await client.list()
            await client.delete(cid)
            return info, exit_, listed
        finally:
            await client.close()

    info, exit_, listed = asyncio.run(scenario())
    assert info.id == cid and exit_.exit_code == 2
    assert [i.id for i in listed] == [cid]


async def _first_exit(client: sc.AsyncClient) -> p.Exit:
    async for exit_ in client.subscribe():
        return exit_
    raise AssertionError("no exit event")


def test_containers_start_with_no_signal_ignored(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    """Python ignores SIGPIPE and SIGXFSZ; a container must not inherit that (runc's don't)."""
    b = bundle(["grep", "SigIgn", "/proc/self/status"])
    cid = leakcheck.tagged_name()
    log_path = str(engine_workdir / "c.log")
    c = sup.client()
    c.create(cid, str(b.path), log_path)
    assert c.wait(cid).exit_code == 0
    # what this test's environment ignores passes through (see test_signals.expected_sigign)
    with open("/proc/self/status") as f:
        ours = next(int(x.split()[1], 16) for x in f if x.startswith("SigIgn:"))
    expected = ours & ~((1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1)))
    assert [e["log"] for e in _log_entries(log_path)] == [f"SigIgn:\t{expected:016x}\n"]
    c.delete(cid)


def test_a_failed_create_answers_runcs_error_and_leaves_nothing(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle(["no-such-program"])
    cid = leakcheck.tagged_name()
    c = sup.client()
    with pytest.raises(BerthError, match='exec: "no-such-program": executable file not found'):
        c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    assert c.list() == []
    assert not os.path.exists(os.path.join(sup.root, cid))


def test_a_crashed_supervisor_is_replaced_and_the_exit_still_recorded(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(GATED.format(code=8))
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    old_pid = sup.pid()
    os.kill(old_pid, signal.SIGKILL)
    wait_gone(old_pid)
    assert store.Store(sup.root).load(cid).init_alive()
    sup.start()  # the stale socket is replaced; the lock died with the old one
    c = sup.client()
    (info,) = c.list()
    assert (info.id, info.status, info.adopted) == (cid, "running", True)
    _release(b)
    exit_ = c.wait(cid)
    assert (exit_.exit_code, exit_.known) in ((8, True), (p.UNKNOWN_EXIT_CODE, False))
    c.delete(cid)


def _children(ppid: int, comm: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == ppid and stat[stat.index("(") + 1 : stat.rindex(")")] == comm:
                out.append(int(name))
    return out


def _zombie_children(ppid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z" and int(fields[1]) == ppid:
                out.append(int(name))
    return out


def test_orphans_reparented_to_the_supervisor_are_reaped(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    """A poststart hook leaves a background process behind: as the subreaper the supervisor
    becomes its parent when the hook exits, and reaps it when it ends."""

    def hook(config: dict[str, Any]) -> None:
        orphan = {"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.3 </dev/null >/dev/null 2>&1 &"]}
        config["hooks"] = {"poststart": [orphan]}

    b = bundle.sh(GATED.format(code=0), hook)
    cid = leakcheck.tagged_name()
    c = sup.client()
    c.create(cid, str(b.path), str(engine_workdir / "c.log"))
    pid = sup.pid()
    assert _children(pid, "sleep"), "the hook's orphan was not reparented to the supervisor"
    time.sleep(0.8)  # the orphan has ended
    assert _zombie_children(pid) == []
    _release(b)
    assert c.wait(cid).exit_code == 0
    c.delete(cid)
