"""Containers in berthd, driven by the real clients: the docker CLI 28 and docker-py.

The module fixture ``berthd`` (``conftest``) starts a private berthd with a session-tagged
``--cgroup-parent`` and pulls busybox. Each test removes the containers it made. At the end
the fixture removes whatever is left, stops berthd, then its supervisor (which outlives berthd
by design), and checks that no rootfs mount is left under the data root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from berthd_process import launch as _launch
from berthd_process import mounts_under as _mounts_under
from test_berthd_images import DOCKER, Daemon, stop_daemon, stop_supervisor

import leakcheck

pytestmark = [pytest.mark.root, pytest.mark.peer]


def _inspect(berthd: Daemon, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(berthd.docker("inspect", ref).stdout)[0]
    return doc


def _no_containers(berthd: Daemon) -> None:
    assert berthd.docker("ps", "-aq").stdout.split() == []


# --------------------------------------------------------------------------- docker CLI


def test_run_rm_prints_and_exits_zero(berthd: Daemon) -> None:
    proc = berthd.docker("run", "--rm", "busybox", "echo", "hi")
    assert proc.stdout == "hi\n"
    _no_containers(berthd)
    assert not _mounts_under(str(berthd.data_root))


def test_run_env_workdir_user_hostname(berthd: Daemon) -> None:
    proc = berthd.docker("run", "--rm", "-e", "A=1", "-w", "/made/here", "-u", "1000:1000",
                         "--hostname", "box", "busybox", "sh", "-c",
                         "echo $A; pwd; id -u; hostname")  # fmt: skip
    assert proc.stdout == "1\n/made/here\n1000\nbox\n"
    _no_containers(berthd)


def test_loopback_is_up_with_network_none(berthd: Daemon) -> None:
    """As with dockerd: a container talks to itself on 127.0.0.1 (here busybox nc through lo).
    The listener's stdin stays open a while: at its EOF busybox nc may quit before it reads."""
    script = (
        "ip -o link show lo; sleep 1 | nc -l -p 7000 & sleep 0.2;"
        " echo ping | nc -w 1 127.0.0.1 7000"
    )
    proc = berthd.docker("run", "--rm", "--network", "none", "busybox", "sh", "-c", script)
    link, _, answer = proc.stdout.partition("\n")
    assert ",UP" in link and "ping" in answer, proc.stdout


def test_run_exit_code_and_inspect(berthd: Daemon) -> None:
    proc = berthd.docker(
        "run", "--name", "three", "busybox", "sh", "-c", "echo err >&2; exit 3", check=False
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == "err\n"
    doc = _inspect(berthd, "three")
    assert doc["Name"] == "/three" and len(doc["Id"]) == 64
    state = doc["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 3 and not state["Running"]
    assert state["FinishedAt"] >= state["StartedAt"] > "2000"
    assert doc["Path"] == "sh" and doc["Args"] == ["-c", "echo err >&2; exit 3"]
    assert doc["HostConfig"]["LogConfig"]["Type"] == "json-file"
    row = berthd.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    assert re.match(r"three Exited \(3\) .* ago", row), row
    assert berthd.docker("logs", "three").stderr == "err\n"
    berthd.docker("rm", "three")
    _no_containers(berthd)


def test_detached_ps_logs_stop_rm(berthd: Daemon) -> None:
    cid = berthd.docker(
        "run", "-d", "--name", "sleeper", "busybox", "sh", "-c", "echo started; exec sleep 30"
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    rows = berthd.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout.splitlines()
    assert len(rows) == 1
    short, name, status = rows[0].split(" ", 2)
    assert short == cid[:12] and name == "sleeper" and status.startswith("Up ")
    doc = _inspect(berthd, cid[:12])
    assert doc["State"]["Running"] and doc["State"]["Pid"] > 0
    deadline = time.monotonic() + 5
    while "started" not in berthd.docker("logs", "sleeper").stdout:
        assert time.monotonic() < deadline, "no log line"
        time.sleep(0.05)
    stamped = berthd.docker("logs", "-t", "sleeper").stdout
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z started\n", stamped), stamped
    refused = berthd.docker("rm", "sleeper", check=False)
    assert refused.returncode == 1
    assert "You cannot remove a running container" in refused.stderr
    started = time.monotonic()
    berthd.docker("stop", "-t", "1", "sleeper")  # sleep as PID 1 ignores SIGTERM: SIGKILL
    assert time.monotonic() - started < 5
    state = _inspect(berthd, "sleeper")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137
    berthd.docker("rm", "sleeper")
    _no_containers(berthd)


def test_name_in_use_is_a_conflict(berthd: Daemon) -> None:
    cid = berthd.docker("create", "--name", "dup", "busybox", "true").stdout.strip()
    again = berthd.docker("run", "--name", "dup", "busybox", "true", check=False)
    assert again.returncode == 125  # run's "daemon error"
    assert (
        f'The container name "/dup" is already in use by container "{cid}". You have to remove'
        " (or rename) that container to be able to reuse that name." in again.stderr
    )
    assert berthd.docker("ps", "-a", "--filter", "status=created", "-q").stdout.split() == [
        cid[:12]
    ]
    berthd.docker("rm", "dup")
    _no_containers(berthd)


def test_creates_at_once_get_one_name_each(berthd: Daemon) -> None:
    """Creates prepare side by side; a name is still given once: of eight creates of "same"
    at once, one gets it and seven get the 409, and eight unnamed ones get eight names."""
    from concurrent.futures import ThreadPoolExecutor

    import docker.errors

    client = _client(berthd)

    def create(name: str | None) -> str:
        try:
            return str(client.containers.create("busybox", "true", name=name).name)
        except docker.errors.APIError as e:
            assert e.status_code == 409, e
            return "409"

    with ThreadPoolExecutor(8) as pool:
        named = list(pool.map(create, ["same"] * 8))
        unnamed = list(pool.map(create, [None] * 8))
    assert sorted(named) == ["409"] * 7 + ["same"]
    assert len(set(unnamed)) == 8 and "409" not in unnamed
    berthd.docker("rm", "same", *unnamed)
    _no_containers(berthd)


def test_missing_image_and_missing_command(berthd: Daemon) -> None:
    missing = berthd.docker("run", "nosuchimage", check=False)
    assert missing.returncode == 125
    assert "Unable to find image 'nosuchimage:latest' locally" in missing.stderr
    assert "pull access denied for nosuchimage" in missing.stderr
    nocmd = berthd.docker("run", "--rm", "busybox", "nosuchcmd", check=False)
    assert nocmd.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in nocmd.stderr
    kept = berthd.docker("run", "--name", "nocmd", "busybox", "nosuchcmd", check=False)
    assert kept.returncode == 127
    state = _inspect(berthd, "nocmd")["State"]
    assert state["ExitCode"] == 127 and "executable file not found" in state["Error"]
    berthd.docker("rm", "nocmd")
    _no_containers(berthd)


def test_stdin_and_filters(berthd: Daemon) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(berthd.home / "docker-config")
    piped = subprocess.run(
        [DOCKER, "-H", berthd.url, "run", "--rm", "-i", "busybox", "cat"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert piped.returncode == 0 and piped.stdout == "hello\n", piped.stderr
    a = berthd.docker("run", "-d", "--name", "a1", "-l", "role=web", "busybox", "sleep", "30")
    b = berthd.docker("run", "--name", "b1", "busybox", "true")
    assert a.returncode == 0 and b.returncode == 0

    def names(*args: str) -> list[str]:
        return sorted(berthd.docker("ps", *args, "--format", "{{.Names}}").stdout.split())

    assert names() == ["a1"]
    assert names("-a") == ["a1", "b1"]
    assert names("-a", "--filter", "status=exited") == ["b1"]
    assert names("-a", "--filter", "label=role=web") == ["a1"]
    assert names("-a", "--filter", "name=b") == ["b1"]
    assert names("-a", "--filter", "ancestor=busybox") == ["a1", "b1"]
    berthd.docker("kill", "a1")
    assert _inspect(berthd, "a1")["State"]["ExitCode"] == 137
    pruned = berthd.docker("container", "prune", "-f").stdout
    assert "Deleted Containers:" in pruned
    _no_containers(berthd)


def test_oom_kill_is_reported(berthd: Daemon) -> None:
    proc = berthd.docker("run", "--name", "oom", "--memory", "32m", "busybox",
                         "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1",
                         check=False)  # fmt: skip
    assert proc.returncode == 137, proc.stderr
    state = _inspect(berthd, "oom")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    berthd.docker("rm", "oom")
    _no_containers(berthd)


def test_pids_limit_stops_a_fork_bomb(berthd: Daemon) -> None:
    """``docker run --pids-limit 8``: the kernel refuses the ninth process; the limit is the
    container's own cgroup's (v1 ``pids/pids.max`` or v2 ``pids.max``)."""
    script = (
        "d=/sys/fs/cgroup/pids; [ -d $d ] || d=/sys/fs/cgroup; read max < $d/pids.max;"
        " (for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done) 2>/dev/null;"
        " read now < $d/pids.current; echo $max $now; exit 0"  # builtins only: no fork left
    )
    proc = berthd.docker("run", "--rm", "--pids-limit", "8", "busybox", "sh", "-c", script)
    # the subshell got 6 sleeps before the kernel refused a 9th process, then ended
    assert proc.stdout == "8 7\n", proc.stdout
    _no_containers(berthd)


def test_restart_and_wait(berthd: Daemon) -> None:
    berthd.docker("run", "-d", "--name", "r1", "busybox", "sleep", "30")
    first = _inspect(berthd, "r1")["State"]["Pid"]
    berthd.docker("restart", "-t", "0", "r1")
    state = _inspect(berthd, "r1")["State"]
    assert state["Running"] and state["Pid"] != first
    berthd.docker("kill", "r1")
    assert berthd.docker("wait", "r1").stdout.strip() == "137"
    berthd.docker("rm", "r1")
    _no_containers(berthd)


def test_logs_follow_info_and_df(berthd: Daemon) -> None:
    berthd.docker("run", "-d", "--name", "f1", "busybox", "sh", "-c",
                  "for i in 1 2 3; do echo line $i; sleep 0.2; done")  # fmt: skip
    started = time.monotonic()
    followed = berthd.docker("logs", "-f", "f1").stdout
    assert followed == "line 1\nline 2\nline 3\n"
    assert time.monotonic() - started < 5
    assert berthd.docker("logs", "--tail", "1", "f1").stdout == "line 3\n"
    info = json.loads(berthd.docker("info", "-f", "{{json .}}").stdout)
    assert info["Containers"] == 1 and info["ContainersStopped"] == 1
    assert info["ContainersRunning"] == 0
    rows = berthd.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}").stdout
    assert "Containers 1" in rows.splitlines()
    berthd.docker("rm", "f1")
    _no_containers(berthd)


@contextlib.contextmanager
def own_berthd(prefix: str) -> Iterator[tuple[Daemon, Callable[[], None]]]:
    """A daemon of the test's own, and a function that starts it again after the test stopped
    it (same data root and cgroup parent); at the end its containers are removed, it and its
    supervisor stop, and no mount or traceback may be left."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    parent = leakcheck.tagged_name()
    d = Daemon(home, str(home / "berth.sock"), home / "root", _launch(home, parent))

    def relaunch() -> None:
        d.proc = _launch(home, parent)

    try:
        d.docker("pull", "busybox")
        yield d, relaunch
    finally:
        if d.proc.poll() is None:
            left = d.docker("ps", "-aq", check=False).stdout.split()
            if left:
                d.docker("rm", "-f", *left, check=False)
        code = stop_daemon(d)
        stop_supervisor(d.data_root)
        leaked = _mounts_under(str(d.data_root))
        log = (home / "berthd.log").read_text(errors="replace")
        shutil.rmtree(home)
    assert code == 0 and not leaked, leaked
    assert "Traceback" not in log, log


def test_daemon_restart_keeps_containers() -> None:
    """berthd stops, then crashes (its supervisor and containers go on); a container that
    exits meanwhile is seen exited on restart, a running one keeps running and stops as usual.
    A daemon of its own, stopped (with its supervisor) by the end of the test."""
    with own_berthd("berthd-rst-") as (d, relaunch):
        d.docker("run", "-d", "--name", "stays", "busybox", "sleep", "30")
        d.docker("run", "-d", "--name", "ends", "busybox", "sh", "-c", "sleep 0.5; exit 4")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0
        time.sleep(1.0)  # "ends" exits while no berthd listens
        relaunch()
        d.proc.kill()  # a crash this time: kill -9 leaves the socket and the pid file
        d.proc.wait()
        relaunch()
        ended = _inspect(d, "ends")["State"]
        assert ended["Status"] == "exited" and ended["ExitCode"] == 4
        stays = _inspect(d, "stays")["State"]
        assert stays["Running"] and stays["Status"] == "running"
        d.docker("stop", "-t", "0", "stays")
        assert _inspect(d, "stays")["State"]["ExitCode"] == 137
        d.docker("rm", "stays", "ends")
        _no_containers(d)
        assert not _mounts_under(str(d.data_root))


# --------------------------------------------------------------------------- docker-py


def _client(berthd: Daemon) -> Any:
    import docker

    return docker.DockerClient(base_url=berthd.url, timeout=60)


def test_docker_py_run_and_detach(berthd: Daemon) -> None:
    client = _client(berthd)
    try:
        assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
        c = client.containers.run("busybox", ["sh", "-c", "echo up; exec sleep 30"], detach=True)
        try:
            c.reload()
            assert c.status == "running" and c.attrs["State"]["Pid"] > 0
            deadline = time.monotonic() + 5
            while b"up" not in c.logs():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert [x.id for x in client.containers.list()] == [c.id]
            c.stop(timeout=1)
            c.reload()
            assert c.status == "exited"
        finally:
            c.remove(force=True)
        assert client.containers.list(all=True) == []
    finally:
        client.close()


def test_docker_py_errors_and_image_in_use(berthd: Daemon) -> None:
    import docker

    client = _client(berthd)
    try:
        with pytest.raises(docker.errors.ContainerError) as failed:
            client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 2"], remove=True)
        assert failed.value.exit_status == 2 and failed.value.stderr == b"oops\n"
        with pytest.raises(docker.errors.NotFound):
            client.containers.get("nosuch")
        c = client.containers.create("busybox", "true", name="holder")
        try:
            with pytest.raises(docker.errors.APIError) as in_use:
                client.images.remove("busybox")
            assert in_use.value.status_code == 409
            c.start()
            assert c.wait(timeout=30) == {"Error": None, "StatusCode": 0}
        finally:
            c.remove(force=True)
        gone = berthd.docker("run", "-d", "--rm", "busybox", "true").stdout.strip()
        deadline = time.monotonic() + 10
        while berthd.docker("ps", "-aq").stdout.strip():
            assert time.monotonic() < deadline, f"{gone} not removed"
            time.sleep(0.05)
    finally:
        client.close()
