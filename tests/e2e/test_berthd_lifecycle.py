"""Events, restart policies, pause/unpause and rename in berthd, driven by the docker CLI 28
and docker-py, on a private berthd (the ``berthd`` fixture of ``test_berthd_containers``, one
per module; the daemon-restart test has one of its own). Each test removes its containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_berthd_containers import _client, _inspect, own_berthd
from test_berthd_images import DOCKER, Daemon

pytestmark = [pytest.mark.root, pytest.mark.peer]

LOOP = "trap 'exit 143' TERM; while true; do echo tick; sleep 0.05; done"


def _until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _events(d: Daemon, since: float, *args: str) -> list[dict[str, Any]]:
    out = d.docker(
        "events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}",
        "--format", "{{json .}}", *args,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _state(d: Daemon, name: str) -> dict[str, Any]:
    state: dict[str, Any] = _inspect(d, name)["State"]
    return state


# --------------------------------------------------------------------------- events


def test_events_since_until_and_filters(berthd: Daemon) -> None:
    since = time.time()
    berthd.docker("run", "--name", "ev-one", "--label", "team=a", "busybox", "sh", "-c", "exit 3",
                  check=False)  # fmt: skip
    cid = _inspect(berthd, "ev-one")["Id"]
    berthd.docker("rm", "ev-one")
    berthd.docker("tag", "busybox", "ev-tagged:1")
    berthd.docker("rmi", "ev-tagged:1")
    archive = str(berthd.home / "ev-busybox.tar")
    berthd.docker("save", "-o", archive, "busybox")
    berthd.docker("load", "-i", archive)
    os.unlink(archive)
    rows = _events(berthd, since)
    container = [r["Action"] for r in rows if r["Type"] == "container"]
    assert container == ["create", "attach", "start", "die", "destroy"], rows
    die = next(r for r in rows if r["Action"] == "die")
    assert die["id"] == cid and die["status"] == "die" and die["from"] == "busybox"
    assert die["Actor"]["Attributes"] == {
        "exitCode": "3", "execDuration": die["Actor"]["Attributes"]["execDuration"],
        "image": "busybox", "name": "ev-one", "team": "a",
    }  # fmt: skip
    assert die["scope"] == "local" and die["time"] == die["timeNano"] // 10**9
    image = [(r["Action"], r["Actor"]["Attributes"]["name"]) for r in rows if r["Type"] == "image"]
    image_id = berthd.docker("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    assert image == [("tag", "ev-tagged:1"), ("untag", image_id), ("save", image_id),
                     ("load", image_id)], image  # fmt: skip
    only_die = _events(berthd, since, "--filter", "event=die")
    assert [r["Action"] for r in only_die] == ["die"]
    by_label = _events(berthd, since, "--filter", "label=team=a", "--filter", "type=container")
    assert len(by_label) == 5
    assert _events(berthd, since, "--filter", "container=nosuch") == []
    bad = berthd.docker("events", "--since", "100", "--until", "50", check=False)
    assert bad.returncode == 1 and "`since` time (100" in bad.stderr
    assert "cannot be after `until` time (50" in bad.stderr


def test_an_oom_kill_is_an_oom_event_before_die(berthd: Daemon) -> None:
    since = time.time()
    proc = berthd.docker("run", "--rm", "--name", "ev-oom", "--memory", "32m", "busybox",
                         "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1",
                         check=False)  # fmt: skip
    assert proc.returncode == 137, proc.stderr
    rows = _events(berthd, since, "--filter", "container=ev-oom")
    assert [r["Action"] for r in rows] == ["create", "attach", "start", "oom", "die", "destroy"]
    assert rows[4]["Actor"]["Attributes"]["exitCode"] == "137"


def test_docker_py_streams_events_while_a_container_runs(berthd: Daemon) -> None:
    client = _client(berthd)
    try:
        stream = client.events(
            decode=True, filters={"container": "ev-py"}, until=int(time.time()) + 30
        )
        c = client.containers.run("busybox", ["sh", "-c", "sleep 0.3"], name="ev-py", detach=True)
        seen = []
        for ev in stream:
            seen.append(ev["Action"])
            if ev["Action"] == "die":
                break
        stream.close()
        assert seen == ["create", "start", "die"]
        c.remove()
    finally:
        client.close()


# --------------------------------------------------------------------------- restart policies


def test_on_failure_retries_then_stays_exited(berthd: Daemon) -> None:
    since = time.time()
    berthd.docker("run", "-d", "--name", "rp-fail", "--restart", "on-failure:2", "busybox", "false")
    _until(lambda: _state(berthd, "rp-fail")["Status"] == "exited")
    time.sleep(0.5)  # no further restart
    doc = _inspect(berthd, "rp-fail")
    assert doc["RestartCount"] == 2 and doc["State"]["Status"] == "exited"
    assert doc["State"]["ExitCode"] == 1
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    actions = [r["Action"] for r in _events(berthd, since, "--filter", "container=rp-fail")]
    assert actions == ["create", "start", "die", "start", "die", "start", "die"]
    berthd.docker("rm", "rp-fail")


def test_always_comes_back_after_an_outside_kill_until_docker_stop(berthd: Daemon) -> None:
    berthd.docker("run", "-d", "--name", "rp-always", "--restart", "always",
                  "busybox", "sh", "-c", LOOP)  # fmt: skip
    first = _state(berthd, "rp-always")["Pid"]
    os.kill(first, signal.SIGKILL)  # from outside: not a user's stop
    _until(lambda: _state(berthd, "rp-always")["Pid"] not in (0, first))
    doc = _inspect(berthd, "rp-always")
    assert doc["RestartCount"] == 1 and doc["State"]["Status"] == "running"
    assert doc["State"]["ExitCode"] == 0 and doc["State"]["Running"]
    berthd.docker("stop", "-t", "1", "rp-always")
    time.sleep(0.5)
    state = _state(berthd, "rp-always")
    assert state["Status"] == "exited" and not state["Restarting"]
    berthd.docker("start", "rp-always")  # a user's start: the count starts again
    assert _inspect(berthd, "rp-always")["RestartCount"] == 0
    berthd.docker("kill", "rp-always")  # a user's kill stops it for good too
    time.sleep(0.5)
    assert _state(berthd, "rp-always")["Status"] == "exited"
    berthd.docker("rm", "rp-always")


def test_restarting_shows_in_ps_and_stop_cancels_it(berthd: Daemon) -> None:
    berthd.docker("run", "-d", "--name", "rp-loop", "--restart", "always",
                  "busybox", "sh", "-c", "exit 5")  # fmt: skip
    # the back-off doubles (0.1, 0.2, 0.4 … s): after 6 restarts it waits 3.2 s, long enough
    # for the checks below to see it waiting
    _until(
        lambda: (
            _inspect(berthd, "rp-loop")["RestartCount"] >= 6
            and _state(berthd, "rp-loop")["Restarting"]
        )
    )
    state = _state(berthd, "rp-loop")
    assert state["Status"] == "restarting" and state["Running"] and state["Pid"] == 0
    rows = berthd.docker("ps", "--format", "{{.Names}} {{.Status}}").stdout
    assert "rp-loop Restarting (5)" in rows, rows
    refused = berthd.docker("rm", "rp-loop", check=False)
    assert "You cannot remove a restarting container" in refused.stderr
    waiting = subprocess.Popen(
        [DOCKER, "-H", berthd.url, "wait", "rp-loop"], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)  # its request is in before the stop
        berthd.docker("stop", "rp-loop")
        assert waiting.communicate(timeout=15)[0] == "5\n"  # the stop ended the wait
    finally:
        waiting.kill()
        waiting.wait()
    state = _state(berthd, "rp-loop")
    assert state["Status"] == "exited" and not state["Running"] and not state["Restarting"]
    assert _inspect(berthd, "rp-loop")["RestartCount"] >= 1
    berthd.docker("start", "rp-loop")
    _until(lambda: _state(berthd, "rp-loop")["Restarting"])
    berthd.docker("rm", "-f", "rp-loop")  # a restarting container goes with -f
    assert "rp-loop" not in berthd.docker("ps", "-a", "--format", "{{.Names}}").stdout


def test_invalid_restart_policies_are_400(berthd: Daemon) -> None:
    import docker

    client = _client(berthd)
    try:
        cases = [
            ({"Name": "on-failure", "MaximumRetryCount": -1}, False, "cannot be negative"),
            ({"Name": "always", "MaximumRetryCount": 3}, False, "only be used with 'on-failure'"),
            ({"Name": "sometimes"}, False, "unknown policy 'sometimes'"),
            ({"Name": "always"}, True, "can't create 'AutoRemove' container with restart policy"),
        ]
        for policy, auto_remove, message in cases:
            with pytest.raises(docker.errors.APIError) as e:
                client.api.create_container(
                    "busybox",
                    "true",
                    host_config=client.api.create_host_config(
                        restart_policy=policy, auto_remove=auto_remove
                    ),
                )
            assert e.value.status_code == 400 and message in str(e.value.explanation)
        assert client.containers.list(all=True) == []  # nothing half-created
    finally:
        client.close()


def test_daemon_restart_brings_always_back_but_not_a_stopped_unless_stopped() -> None:
    with own_berthd("berthd-pol-") as (d, relaunch):
        for name, policy in (("always", "always"), ("unless", "unless-stopped")):
            d.docker("run", "-d", "--name", name, "--restart", policy, "busybox", "sh", "-c", LOOP)
            d.docker("stop", "-t", "0", name)
        d.docker("run", "-d", "--name", "crashes", "--restart", "unless-stopped",
                 "busybox", "sh", "-c", "sleep 1; exit 7")  # fmt: skip
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0
        time.sleep(1.5)  # "crashes" exits while no berthd listens
        relaunch()
        assert _state(d, "always")["Status"] == "running"  # always: even after a user's stop
        assert _state(d, "unless")["Status"] == "exited"
        _until(lambda: _inspect(d, "crashes")["RestartCount"] >= 1)
        d.docker("rm", "-f", "always", "unless", "crashes")


# --------------------------------------------------------------------------- pause, rename


def _log_lines(d: Daemon, name: str) -> int:
    return len(d.docker("logs", name).stdout.splitlines())


def test_pause_freezes_and_unpause_thaws(berthd: Daemon) -> None:
    berthd.docker("run", "-d", "--name", "pz", "busybox", "sh", "-c", LOOP)
    _until(lambda: _log_lines(berthd, "pz") > 0)
    berthd.docker("pause", "pz")
    state = _state(berthd, "pz")
    assert state["Paused"] and state["Status"] == "paused" and state["Running"]
    row = berthd.docker("ps", "--filter", "status=paused", "--format", "{{.Names}} {{.Status}}")
    assert row.stdout.startswith("pz Up") and "(Paused)" in row.stdout
    time.sleep(0.3)  # what it wrote before the freeze reaches the log
    frozen = _log_lines(berthd, "pz")
    time.sleep(0.5)
    assert _log_lines(berthd, "pz") == frozen  # nothing runs
    again = berthd.docker("pause", "pz", check=False)
    assert again.returncode == 1 and "is already paused" in again.stderr
    busy = berthd.docker("rm", "pz", check=False)
    assert "You cannot remove a paused container" in busy.stderr
    assert "Unpause and then stop the container" in busy.stderr
    berthd.docker("unpause", "pz")
    assert _state(berthd, "pz")["Status"] == "running"
    _until(lambda: _log_lines(berthd, "pz") > frozen)
    not_paused = berthd.docker("unpause", "pz", check=False)
    assert not_paused.returncode == 1 and "is not paused" in not_paused.stderr
    berthd.docker("pause", "pz")
    berthd.docker("stop", "-t", "5", "pz")  # thawed after the signal: it ends on SIGTERM
    state = _state(berthd, "pz")
    assert state["Status"] == "exited" and not state["Paused"] and state["ExitCode"] == 143
    stopped = berthd.docker("pause", "pz", check=False)
    assert stopped.returncode == 1 and "is not running" in stopped.stderr
    berthd.docker("start", "pz")
    berthd.docker("pause", "pz")
    since = time.time()
    berthd.docker("kill", "pz")
    state = _state(berthd, "pz")
    assert state["Status"] == "exited" and not state["Paused"] and state["ExitCode"] == 137
    actions = [r["Action"] for r in _events(berthd, since, "--filter", "container=pz")]
    assert actions == ["kill", "die"], actions  # as dockerd 20.10 shows it
    berthd.docker("start", "pz")
    berthd.docker("pause", "pz")
    berthd.docker("rm", "-f", "pz")  # a paused container goes with -f
    assert "pz" not in berthd.docker("ps", "-a", "--format", "{{.Names}}").stdout


def test_rename(berthd: Daemon) -> None:
    import docker

    since = time.time()
    berthd.docker("create", "--name", "rn-old", "busybox", "true")
    berthd.docker("create", "--name", "rn-other", "busybox", "true")
    cid = _inspect(berthd, "rn-old")["Id"]
    berthd.docker("rename", "rn-old", "rn-new")
    assert _inspect(berthd, "rn-new")["Name"] == "/rn-new"
    assert "No such container: rn-old" in berthd.docker("rm", "rn-old", check=False).stderr
    rename = _events(berthd, since, "--filter", "event=rename")
    assert rename[0]["Actor"]["Attributes"]["oldName"] == "/rn-old"
    assert rename[0]["Actor"]["Attributes"]["name"] == "rn-new"
    client = _client(berthd)
    try:
        with pytest.raises(docker.errors.APIError) as e:
            client.api.rename(cid, "rn-other")
        assert e.value.status_code == 409
        assert 'The container name "/rn-other" is already in use' in str(e.value.explanation)
        with pytest.raises(docker.errors.APIError) as e:
            client.api.rename(cid, "bad name!")
        assert e.value.status_code == 400 and "Invalid container name" in str(e.value.explanation)
        with pytest.raises(docker.errors.APIError) as e:
            client.api.rename(cid, "rn-new")
        assert e.value.status_code == 400
        client.api.rename(cid, "rn-py")
        assert client.containers.get(cid).name == "rn-py"
    finally:
        client.close()
    berthd.docker("rm", "rn-py", "rn-other")


def test_cgroup_parent_goes_when_the_last_container_goes_in_any_order(berthd: Daemon) -> None:
    """Two containers at once, the first one made removed first: once neither runs, the
    ``--cgroup-parent`` dirs are gone too (the runtime alone keeps a parent it found busy)."""
    first = berthd.docker("run", "-d", "busybox", "sleep", "60").stdout.strip()
    second = berthd.docker("run", "-d", "busybox", "sleep", "60").stdout.strip()
    pid = int(berthd.docker("inspect", "-f", "{{.State.Pid}}", second).stdout)
    with open(f"/proc/{pid}/cgroup", encoding="ascii") as f:
        memory = next(line for line in f if ":memory:" in line or line.startswith("0::"))
    parent_dir = (
        "/sys/fs/cgroup/"
        + ("memory" if ":memory:" in memory else "unified")
        + os.path.dirname(memory.strip().split(":", 2)[2])
    )
    assert os.path.isdir(parent_dir), parent_dir
    berthd.docker("rm", "-f", first)
    assert os.path.isdir(parent_dir)  # the second still runs there
    berthd.docker("rm", "-f", second)
    assert not os.path.exists(parent_dir), parent_dir
