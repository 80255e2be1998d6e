"""The other verbs: pause/resume, ps, kill --all, delete of a created container, events
--stats, spec and features.

Rules: as in the rest of the suite, only runc's command line and formats are used, and every
container is force-deleted (and leak-checked) by the ``runtime`` fixture. Freezing is proved
from the outside: the freezer cgroup says FROZEN and a counter the container writes stops
advancing, and advances again after resume.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_extra import alive, detached, wait_for, writable
from runtime_suite import BINARIES, container_cgroups

pytestmark = pytest.mark.root

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; usleep 2000; done"


def running(runtime: Any, bundle: Any, args: list[str], edit: Any = None) -> tuple[str, int, Any]:
    b = bundle(args, edit)
    cid = runtime.new_id()
    created = runtime.create(b, cid)
    assert created.returncode == 0, created.stderr
    started = runtime.start(cid)
    assert started.returncode == 0, started.stderr
    return cid, runtime.state(cid)["pid"], b


def exec_detached(runtime: Any, cid: str, workdir: Path, *args: str) -> int:
    pid_file = workdir / f"exec-{time.monotonic_ns()}.pid"
    done = detached(runtime, "exec", "-d", "--pid-file", str(pid_file), cid, *args)
    assert done.returncode == 0, done.stderr
    return int(pid_file.read_text())


def counter(b: Any) -> int:
    try:
        return int((b.rootfs / "tmp" / "counter").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def freezer_state(cid: str) -> str | None:
    for path in container_cgroups(cid):
        if (path / "freezer.state").exists():
            return (path / "freezer.state").read_text().strip()
        if (path / "cgroup.freeze").exists():  # cgroup v2
            return "FROZEN" if (path / "cgroup.freeze").read_text().strip() == "1" else "THAWED"
    return None


# --------------------------------------------------------------------------- pause / resume


def test_pause_freezes_and_resume_thaws(runtime, bundle):
    cid, _init, b = running(runtime, bundle, ["sh", "-c", COUNTER], writable)
    assert wait_for(lambda: counter(b) > 3), "the counter never started"

    paused = runtime("pause", cid)
    assert paused.returncode == 0, paused.stderr
    assert runtime.state(cid)["status"] == "paused"
    assert freezer_state(cid) == "FROZEN"
    frozen_at = counter(b)
    time.sleep(0.2)
    assert counter(b) == frozen_at, "the container made progress while paused"

    resumed = runtime("resume", cid)
    assert resumed.returncode == 0, resumed.stderr
    assert runtime.state(cid)["status"] == "running"
    assert freezer_state(cid) == "THAWED"
    assert wait_for(lambda: counter(b) > frozen_at + 3), "the counter did not advance again"


def test_pause_of_a_paused_and_resume_of_a_running_container_fail(runtime, bundle):
    cid, _init, _b = running(runtime, bundle, ["sleep", "30"])
    with thawed_at_exit(cid):
        assert runtime("resume", cid).returncode != 0
        assert runtime("pause", cid).returncode == 0
        assert runtime("pause", cid).returncode != 0
        assert runtime.state(cid)["status"] == "paused"
        assert runtime("resume", cid).returncode == 0
        assert runtime.state(cid)["status"] == "running"


def test_a_paused_container_can_be_force_deleted(runtime, bundle):
    cid, init, _b = running(runtime, bundle, ["sleep", "30"])
    with thawed_at_exit(cid):
        assert runtime("pause", cid).returncode == 0
        try:
            deleted = runtime("delete", "--force", cid, timeout=1.5)
        except subprocess.TimeoutExpired:
            deleted = None
        assert deleted is not None, "delete --force of a paused container hung (killed at 1.5 s)"
        assert deleted.returncode == 0, deleted.stderr
        assert wait_for(lambda: not alive(init), 1.0), "the paused init survived delete --force"
        assert runtime.leftovers(cid) == []


@contextlib.contextmanager
def thawed_at_exit(cid: str) -> Iterator[None]:
    """Thaw the container's freezer cgroup on the way out if a runtime left it frozen: a
    frozen process cannot die, so the fixture's delete --force could not clean it up."""
    try:
        yield
    finally:
        for path in container_cgroups(cid):
            state = path / "freezer.state"
            if state.exists() and state.read_text().strip() != "THAWED":
                state.write_text("THAWED")
            elif (path / "cgroup.freeze").exists():
                (path / "cgroup.freeze").write_text("0")


# --------------------------------------------------------------------------- ps


def test_ps_json_lists_the_init_and_an_execd_process(runtime, bundle, rt_workdir):
    cid, init, _b = running(runtime, bundle, ["sleep", "30"])
    extra = exec_detached(runtime, cid, rt_workdir, "sleep", "31")
    done = runtime("ps", "--format", "json", cid)
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout)
    assert sorted(pids) == sorted([init, extra]), (pids, init, extra)


def test_ps_table_has_a_pid_column(runtime, bundle):
    cid, init, _b = running(runtime, bundle, ["sleep", "30"])
    done = runtime("ps", cid)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    column = header.split().index("PID")
    assert [int(row.split()[column]) for row in rows] == [init], done.stdout


# --------------------------------------------------------------------------- kill --all


def test_kill_all_kills_every_process(runtime, bundle, rt_workdir):
    cid, init, _b = running(runtime, bundle, ["sleep", "30"])
    extras = [exec_detached(runtime, cid, rt_workdir, "sleep", str(31 + i)) for i in range(2)]
    assert all(alive(pid) for pid in [init, *extras])
    assert sorted(cgroup_procs(cid)) == sorted([init, *extras])
    killed = runtime("kill", "--all", cid, "KILL")
    assert killed.returncode == 0, killed.stderr
    assert wait_for(lambda: not any(alive(pid) for pid in extras), 1.0)
    # every task has left the cgroup; the init itself lingers (state S) until the exec'd
    # zombies, reparented to the host's pid 1, are reaped -- that can take a second here
    assert wait_for(lambda: cgroup_procs(cid) == [], 1.0), cgroup_procs(cid)


def cgroup_procs(cid: str) -> list[int]:
    """The pids in the container's pids cgroup (v1), else its first cgroup."""
    paths = container_cgroups(cid)
    path = next((p for p in paths if (p / "pids.current").exists()), paths[0])
    return [int(pid) for pid in (path / "cgroup.procs").read_text().split()]


def test_kill_sends_the_named_signal_to_the_init(runtime, bundle):
    script = "trap 'echo got-usr1 > /tmp/sig; exit 0' USR1; while :; do usleep 10000; done"
    cid, _init, b = running(runtime, bundle, ["sh", "-c", script], writable)
    time.sleep(0.05)  # let the shell install its trap
    assert runtime.kill(cid, "USR1").returncode == 0
    runtime.wait_status(cid, "stopped")
    assert (b.rootfs / "tmp" / "sig").read_text() == "got-usr1\n"


# --------------------------------------------------------------------------- delete


def test_delete_of_a_created_container_without_force(runtime, bundle):
    b = bundle(["sleep", "30"])
    cid = runtime.new_id()
    assert runtime.create(b, cid).returncode == 0
    init = runtime.state(cid)["pid"]
    deleted = runtime.delete(cid, force=False)
    assert deleted.returncode == 0, deleted.stderr
    assert runtime.state_raw(cid).returncode != 0
    assert wait_for(lambda: not alive(init), 2.0)
    assert runtime.leftovers(cid) == []


def test_delete_of_a_running_container_without_force_fails(runtime, bundle):
    cid, init, _b = running(runtime, bundle, ["sleep", "30"])
    assert runtime.delete(cid, force=False).returncode != 0
    assert runtime.state(cid)["status"] == "running" and alive(init)


# --------------------------------------------------------------------------- events


def test_events_stats_prints_one_json_line(runtime, bundle):
    """Asked of berth-runtime; runc prints the same shape (a superset), so both run it."""
    cid, _init, _b = running(runtime, bundle, ["sleep", "30"])
    done = runtime("events", "--stats", cid, timeout=5)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip().splitlines()
    assert len(out) == 1, done.stdout
    event = json.loads(out[0])
    assert event["type"] == "stats" and event["id"] == cid
    data = event["data"]
    assert isinstance(data["memory"]["usage"]["usage"], int)
    assert data["memory"]["usage"]["usage"] > 0
    assert isinstance(data["cpu"]["usage"]["total"], int)
    assert data["cpu"]["usage"]["total"] > 0
    assert data["pids"]["current"] == 1


# --------------------------------------------------------------------------- spec, features


@pytest.mark.parametrize("rootless", [False, True], ids=["default", "rootless"])
def test_spec_writes_runcs_default_config(runtime, rt_workdir, rootless):
    flags = ["--rootless"] if rootless else []
    dirs = {}
    for name, binary in (("peer", BINARIES["runc"]), ("ours", runtime.binary)):
        where = rt_workdir / f"spec-{name}"
        where.mkdir()
        subprocess.run(
            [binary, "spec", *flags], cwd=where, check=True, timeout=10, capture_output=True
        )
        dirs[name] = where
    ours = json.loads((dirs["ours"] / "config.json").read_text())
    theirs = json.loads((dirs["peer"] / "config.json").read_text())
    assert ours == theirs


def test_spec_with_bundle_and_an_existing_config(runtime, rt_workdir, base_spec):
    where = rt_workdir / "specdir"
    where.mkdir()
    done = runtime("spec", "--bundle", str(where))
    assert done.returncode == 0, done.stderr
    assert json.loads((where / "config.json").read_text()) == base_spec
    again = runtime("spec", "--bundle", str(where))
    assert again.returncode != 0, "spec overwrote an existing config.json"


def test_features_prints_the_supported_oci_versions(runtime):
    done = runtime("features")
    assert done.returncode == 0, done.stderr
    features = json.loads(done.stdout)
    for key in ("ociVersionMin", "ociVersionMax"):
        major, minor, *_ = features[key].split(".")
        assert major == "1" and minor.isdigit(), features[key]
    assert set(features["hooks"]) >= {
        "prestart", "createRuntime", "createContainer", "startContainer", "poststart",
        "poststop",
    }  # fmt: skip
