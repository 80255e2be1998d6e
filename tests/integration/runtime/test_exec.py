"""``exec``: a second process in a running container, in its namespaces and cgroup.

Rules: every container runs ``sleep`` as its init and is force-deleted by the ``runtime``
fixture, which kills whatever was exec'd into it too (it lives in the container's pid
namespace and cgroup). A detached exec writes to files, never to a pipe of the test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers_extra import alive, detached, ns, proc_cgroup, wait_for

pytestmark = pytest.mark.root


def running(runtime: Any, bundle: Any, edit: Any = None) -> tuple[str, int, Any]:
    """A started ``sleep 30`` container: (id, init pid, bundle)."""
    b = bundle(["sleep", "30"], edit)
    cid = runtime.new_id()
    created = runtime.create(b, cid)
    assert created.returncode == 0, created.stderr
    started = runtime.start(cid)
    assert started.returncode == 0, started.stderr
    return cid, runtime.state(cid)["pid"], b


def test_exec_runs_inside_the_container(runtime, bundle):
    cid, _init, b = running(runtime, bundle)
    done = runtime("exec", cid, "sh", "-c", "echo $$; hostname")
    assert done.returncode == 0, done.stderr
    pid, hostname = done.stdout.split()
    assert 1 < int(pid) < 100, f"pid {pid} is not one of the container's pid namespace"
    assert hostname == b.config["hostname"]


@pytest.mark.parametrize("status", [0, 7, 255])
def test_exec_passes_the_exit_status_through(runtime, bundle, status):
    cid, _init, _b = running(runtime, bundle)
    done = runtime("exec", cid, "sh", "-c", f"exit {status}")
    assert done.returncode == status, done.stderr


def test_exec_with_a_process_file(runtime, bundle, rt_workdir):
    cid, _init, _b = running(runtime, bundle)
    process = {
        "terminal": False,
        "user": {"uid": 1000, "gid": 1001, "additionalGids": [1002]},
        "args": ["sh", "-c", 'echo "$FOO"; pwd; id -u; id -g; id -G'],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FOO=from process.json"],
        "cwd": "/tmp",
    }
    path = rt_workdir / "process.json"
    path.write_text(json.dumps(process))
    done = runtime("exec", "-p", str(path), cid)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["from process.json", "/tmp", "1000", "1001", "1001 1002"]


def test_exec_flags_set_env_cwd_and_user(runtime, bundle):
    cid, _init, _b = running(runtime, bundle)
    done = runtime(
        "exec", "--env", "FOO=bar", "--cwd", "/etc", "--user", "65534:65534",
        cid, "sh", "-c", 'echo "$FOO"; pwd; id -u; id -g',
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["bar", "/etc", "65534", "65534"]


CAP_SYS_CHROOT = 1 << 18


@pytest.mark.parametrize("inheritable", [False, True], ids=["no-inheritable", "inheritable"])
def test_exec_cap_no_new_privs_and_additional_gids(runtime, bundle, inheritable):
    """``--cap`` adds to the bounding, effective and permitted sets, never to the inheritable
    one (CVE-2022-29162; so never to the ambient one either, which needs it), whatever the
    config's inheritable set; ``--no-new-privs``; ``-g`` repeated adds each group."""

    def edit(config: dict[str, Any]) -> None:
        config["process"]["noNewPrivileges"] = False
        if inheritable:
            config["process"]["capabilities"]["inheritable"] = ["CAP_KILL"]

    cid, _init, _b = running(runtime, bundle, edit)
    done = runtime(
        "exec", "--cap", "CAP_SYS_CHROOT", "--no-new-privs", "-g", "10", "-g", "20",
        cid, "cat", "/proc/self/status",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = dict(line.split(":", 1) for line in done.stdout.splitlines())
    masks = {k: int(status[k], 16) for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb")}
    assert all(masks[k] & CAP_SYS_CHROOT for k in ("CapBnd", "CapEff", "CapPrm")), masks
    assert masks["CapInh"] == (1 << 5 if inheritable else 0), masks  # CAP_KILL, as configured
    assert not masks["CapAmb"] & CAP_SYS_CHROOT, masks
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Groups"].split() == ["10", "20"], status["Groups"]
    plain = runtime("exec", cid, "cat", "/proc/self/status")  # the flags were for that exec only
    assert (
        "NoNewPrivs:\t0" in plain.stdout
        and not int(dict(line.split(":", 1) for line in plain.stdout.splitlines())["CapEff"], 16)
        & CAP_SYS_CHROOT
    )


def test_detached_exec_returns_at_once_and_writes_its_pid(runtime, bundle, rt_workdir):
    cid, init, _b = running(runtime, bundle)
    pid_file = rt_workdir / "exec.pid"
    begin = time.monotonic()
    done = detached(runtime, "exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "30")
    took = time.monotonic() - begin
    assert done.returncode == 0, done.stderr
    assert took < 1.0, f"exec -d took {took:.2f}s: it waited for the process?"
    pid = int(pid_file.read_text().strip())
    assert pid != init and alive(pid)
    assert ns(pid, "pid") == ns(init, "pid")
    assert ns(pid, "mnt") == ns(init, "mnt")
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0030\x00"


def test_the_execd_process_is_in_the_containers_cgroup(runtime, bundle, rt_workdir):
    cid, init, _b = running(runtime, bundle)
    pid_file = rt_workdir / "exec.pid"
    done = detached(runtime, "exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "30")
    assert done.returncode == 0, done.stderr
    pid = int(pid_file.read_text().strip())
    assert proc_cgroup(pid) == proc_cgroup(init)
    assert cid in proc_cgroup(pid)


def test_exec_of_a_missing_program_fails(runtime, bundle):
    cid, _init, _b = running(runtime, bundle)
    done = runtime("exec", cid, "/no/such/program")
    assert done.returncode != 0
    assert runtime.state(cid)["status"] == "running"


def test_exec_into_a_stopped_container_fails(runtime, bundle):
    b = bundle(["true"])
    cid = runtime.new_id()
    assert runtime.create(b, cid).returncode == 0
    assert runtime.start(cid).returncode == 0
    runtime.wait_status(cid, "stopped")
    done = runtime("exec", cid, "true")
    assert done.returncode != 0
    assert runtime.state(cid)["status"] == "stopped"


def test_exec_into_an_unknown_container_fails(runtime):
    done = runtime("exec", runtime.new_id(), "true")
    assert done.returncode != 0


def test_detached_exec_outlives_the_command_and_dies_with_the_container(
    runtime, bundle, rt_workdir
):
    cid, _init, _b = running(runtime, bundle)
    pid_file = rt_workdir / "exec.pid"
    done = detached(runtime, "exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "30")
    assert done.returncode == 0, done.stderr
    pid = int(pid_file.read_text().strip())
    assert alive(pid)
    assert runtime.kill(cid, "KILL").returncode == 0
    # the kernel kills the rest of the pid namespace as its init dies (the init itself then
    # waits for the exec'd zombie, whose parent is the host's pid 1, to be reaped)
    assert wait_for(lambda: not alive(pid), 1.0), "the exec'd process outlived the init"
