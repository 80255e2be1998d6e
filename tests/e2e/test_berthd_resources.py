"""stats, top and update in berthd, driven by the real clients: the docker CLI 28 and docker-py.

The private berthd is the ``berthd`` module fixture of tests/e2e/conftest.py (its own socket,
data root and session-tagged ``--cgroup-parent``, so the leak check watches the containers'
cgroups). Each test removes the containers it made. The cgroup files are read through the
container init's ``/proc/<pid>/cgroup``, so the test checks what the kernel really has.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_berthd_containers import _client, _inspect
from test_berthd_images import Daemon

pytestmark = [pytest.mark.root, pytest.mark.peer]

MiB = 1 << 20
BURN = ["sh", "-c", "while :; do :; done"]


@pytest.fixture(scope="module", autouse=True)
def cgroup_parent_holder(berthd: Daemon) -> Iterator[None]:
    """A container that lives as long as this module: it makes the daemon's shared
    --cgroup-parent and takes it away at the end. Otherwise whichever test first starts a
    container makes the parent, and the per-test leak check sees it appear (it goes only
    with the container that made it, or at daemon stop)."""
    berthd.docker("run", "-d", "--name", "parent-holder", "busybox", "sleep", "3600")
    yield
    berthd.docker("rm", "-f", "parent-holder", check=False)


@pytest.fixture
def names(berthd: Daemon) -> Iterator[list[str]]:
    """Names of the containers a test makes; removed at teardown."""
    made: list[str] = []
    yield made
    if made:
        berthd.docker("rm", "-f", *made, check=False)


def _run(berthd: Daemon, names: list[str], name: str, *args: str) -> str:
    names.append(name)
    return berthd.docker("run", "-d", "--name", name, *args).stdout.strip()


def _cgroup_file(berthd: Daemon, ref: str, controller: str, file: str) -> str:
    """A cgroup v1 file of the container's init (this host is hybrid)."""
    pid = _inspect(berthd, ref)["State"]["Pid"]
    with open(f"/proc/{pid}/cgroup", encoding="ascii") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                with open(f"/sys/fs/cgroup/{controllers}{path}/{file}", encoding="ascii") as g:
                    return g.read().strip()
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def _percent(text: str) -> float:
    return float(text.rstrip("%"))


# --------------------------------------------------------------------------- stats


def test_stats_no_stream_cpu_memory_pids(berthd: Daemon, names: list[str]) -> None:
    _run(berthd, names, "burner", "--cpus", "0.5", "--memory", "64m", "busybox", *BURN)
    _run(berthd, names, "idler", "--memory", "32m", "busybox", "sleep", "300")
    time.sleep(1.5)  # the burner reaches its quota
    started = time.monotonic()
    rows = berthd.docker(
        "stats", "--no-stream", "--format",
        "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}|{{.PIDs}}", "burner", "idler",
    ).stdout.splitlines()  # fmt: skip
    assert time.monotonic() - started >= 1.0  # two samples, a second apart, for precpu
    by_name = {row.split("|")[0]: row.split("|")[1:] for row in rows}
    cpu, mem, _mem_pct, pids = by_name["burner"]
    # --cpus 0.5: about 50 % (one CPU is 100 %) on a quiet machine, never much above the
    # quota; the two shared cores here can leave it less
    assert 5.0 <= _percent(cpu) <= 60.0, rows
    usage, limit = mem.split(" / ")
    assert limit == "64MiB" and usage.endswith(("KiB", "MiB")), rows
    assert pids == "1", rows
    cpu, mem, _mem_pct, pids = by_name["idler"]
    assert _percent(cpu) < 5.0 and mem.endswith("/ 32MiB") and pids == "1", rows


def test_stats_stopped_container_is_zeros(berthd: Daemon, names: list[str]) -> None:
    names.append("stopped")
    berthd.docker("create", "--name", "stopped", "busybox", "true")
    row = berthd.docker(
        "stats", "--no-stream", "--format", "{{.CPUPerc}} {{.MemUsage}} {{.PIDs}}", "stopped"
    ).stdout.strip()
    assert row == "0.00% 0B / 0B 0", row


def test_docker_py_stats(berthd: Daemon, names: list[str]) -> None:
    _run(berthd, names, "pystats", "--memory", "48m", "--pids-limit", "7", "busybox", *BURN)
    client = _client(berthd)
    try:
        c = client.containers.get("pystats")
        doc: dict[str, Any] = c.stats(stream=False)
        assert doc["id"] == c.id and doc["name"] == "/pystats"
        assert doc["read"] > doc["preread"] > "2000", (doc["read"], doc["preread"])
        cpu, pre = doc["cpu_stats"], doc["precpu_stats"]
        assert cpu["cpu_usage"]["total_usage"] > pre["cpu_usage"]["total_usage"] > 0
        assert cpu["system_cpu_usage"] > pre["system_cpu_usage"] > 0
        assert cpu["online_cpus"] == os.cpu_count()
        assert len(cpu["cpu_usage"]["percpu_usage"]) >= 1  # cgroup v1 here
        mem = doc["memory_stats"]
        assert mem["limit"] == 48 * MiB and 0 < mem["usage"] <= mem["max_usage"]
        assert "total_inactive_file" in mem["stats"]
        assert doc["pids_stats"] == {"current": 1, "limit": 7}
        assert "io_service_bytes_recursive" in doc["blkio_stats"]
        frames = c.stats(stream=True, decode=True)
        first, second = next(frames), next(frames)
        frames.close()
        deadline = time.monotonic() + 5  # the daemon stops sampling for a client that left
        while f"stats of {c.id} end" not in (berthd.home / "berthd.log").read_text():
            assert time.monotonic() < deadline, "the stream outlived its client"
            time.sleep(0.1)
        assert first["precpu_stats"]["cpu_usage"]["total_usage"] == 0
        assert second["precpu_stats"] == first["cpu_stats"]
        assert second["preread"] == first["read"]
        both = client.api._get(
            client.api._url("/containers/{0}/stats", c.id), params={"stream": 1, "one-shot": 1}
        )
        assert both.status_code == 400
        one = c.stats(stream=False, one_shot=True)
        assert one["precpu_stats"]["cpu_usage"]["total_usage"] == 0
        assert one["cpu_stats"]["cpu_usage"]["total_usage"] > 0
        c.kill()
        c.wait(timeout=30)
        zero = c.stats(stream=False)
        assert zero["read"] == "0001-01-01T00:00:00Z" and zero["memory_stats"] == {}
        assert zero["cpu_stats"]["cpu_usage"]["total_usage"] == 0
        frames = c.stats(stream=True, decode=True)
        assert next(frames)["read"] == "0001-01-01T00:00:00Z"  # zeros, streamed
        c.remove()
        started = time.monotonic()
        assert len(list(frames)) <= 2  # the stream ends with the container
        assert time.monotonic() - started < 5
    finally:
        client.close()


# --------------------------------------------------------------------------- top


def test_top_default_and_ps_args(berthd: Daemon, names: list[str]) -> None:
    _run(berthd, names, "topped", "busybox", "sh", "-c", "sleep 301 & exec sleep 302")
    time.sleep(0.3)
    out = berthd.docker("top", "topped").stdout.splitlines()
    assert out[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(line.split(None, 7)[7] for line in out[1:])
    assert commands == ["sleep 301", "sleep 302"], out
    init_pid = _inspect(berthd, "topped")["State"]["Pid"]
    out = berthd.docker("top", "topped", "-o", "pid,comm").stdout.splitlines()
    assert out[0].split() == ["PID", "COMMAND"]
    assert sorted(out[1:])[0].split() in ([str(init_pid), "sleep"], [str(init_pid + 1), "sleep"])
    assert {line.split()[1] for line in out[1:]} == {"sleep"} and len(out) == 3
    bad = berthd.docker("top", "topped", "--no-such-option", check=False)
    assert bad.returncode == 1 and "ps:" in bad.stderr and "error" in bad.stderr.lower()
    names.append("idle")
    berthd.docker("create", "--name", "idle", "busybox", "true")
    stopped = berthd.docker("top", "idle", check=False)
    assert stopped.returncode == 1
    assert re.search(r"Container [0-9a-f]{64} is not running", stopped.stderr), stopped.stderr


def test_docker_py_top(berthd: Daemon, names: list[str]) -> None:
    import docker

    _run(berthd, names, "pytop", "busybox", "sleep", "303")
    client = _client(berthd)
    try:
        c = client.containers.get("pytop")
        listing = c.top(ps_args="-o pid,args")
        assert listing["Titles"] == ["PID", "COMMAND"]
        assert listing["Processes"] == [[str(c.attrs["State"]["Pid"]), "sleep 303"]]
        c.kill()
        c.wait(timeout=30)
        with pytest.raises(docker.errors.APIError) as refused:
            c.top()
        assert refused.value.status_code == 409
    finally:
        client.close()


# --------------------------------------------------------------------------- update


def test_update_limits_live_persists_and_stops_a_fork_bomb(
    berthd: Daemon,
    names: list[str],
) -> None:
    script = (
        "while [ ! -e /go ]; do sleep 0.1; done; i=0; "
        "(while [ $i -lt 40 ]; do sleep 304 & i=$((i+1)); done); echo forked; exec sleep 305"
    )
    _run(berthd, names, "limited", "busybox", "sh", "-c", script)
    assert berthd.docker("update", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "20",
                         "limited").stdout.strip() == "limited"  # fmt: skip
    hc = _inspect(berthd, "limited")["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (64 * MiB, 500_000_000, 20)
    assert _cgroup_file(berthd, "limited", "memory", "memory.limit_in_bytes") == str(64 * MiB)
    assert _cgroup_file(berthd, "limited", "cpu", "cpu.cfs_quota_us") == "50000"
    assert _cgroup_file(berthd, "limited", "cpu", "cpu.cfs_period_us") == "100000"
    assert _cgroup_file(berthd, "limited", "pids", "pids.max") == "20"
    with open(os.path.join(berthd.data_root, "containers", _inspect(berthd, "limited")["Id"],
                           "config.json"), encoding="utf-8") as f:  # fmt: skip
        resources = json.load(f)["linux"]["resources"]
    assert resources["pids"] == {"limit": 20} and resources["memory"]["limit"] == 64 * MiB
    assert resources["devices"], "the devices allow-list is kept"

    rootfs = _inspect(berthd, "limited")["GraphDriver"]["Data"]["MergedDir"]
    open(os.path.join(rootfs, "go"), "w").close()  # the fork bomb goes off
    deadline = time.monotonic() + 20
    while "forked" not in berthd.docker("logs", "limited").stdout:
        assert time.monotonic() < deadline, berthd.docker("logs", "limited").stderr
        time.sleep(0.1)
    # the subshell made 18 sleeps (20 tasks with the shell and itself), failed, and left
    assert "can't fork" in berthd.docker("logs", "limited").stderr
    assert _cgroup_file(berthd, "limited", "pids", "pids.current") == "19"
    assert int(_cgroup_file(berthd, "limited", "pids", "pids.events").split()[1]) >= 1
    assert len(berthd.docker("top", "limited").stdout.splitlines()) == 1 + 19

    berthd.docker("restart", "-t", "0", "limited")  # the limits hold after a restart
    assert _cgroup_file(berthd, "limited", "pids", "pids.max") == "20"
    assert _cgroup_file(berthd, "limited", "memory", "memory.limit_in_bytes") == str(64 * MiB)
    assert _cgroup_file(berthd, "limited", "cpu", "cpu.cfs_quota_us") == "50000"


def test_update_refusals(berthd: Daemon, names: list[str]) -> None:
    import docker

    _run(berthd, names, "swapped", "--memory", "64m", "--memory-swap", "128m",
         "busybox", "sleep", "306")  # fmt: skip
    bad = berthd.docker("update", "--memory", "256m", "swapped", check=False)
    assert bad.returncode == 1
    assert (
        "Memory limit should be smaller than already set memoryswap limit, "
        "update the memoryswap at the same time" in bad.stderr
    ), bad.stderr
    bad = berthd.docker("update", "--memory", "1m", "swapped", check=False)
    assert "Minimum memory limit allowed is 6MB" in bad.stderr, bad.stderr
    bad = berthd.docker("update", "--cpu-period", "50000", "--cpus", "1", "swapped", check=False)
    assert "Conflicting options" in bad.stderr, bad.stderr
    assert _cgroup_file(berthd, "swapped", "memory", "memory.limit_in_bytes") == str(64 * MiB)
    client = _client(berthd)
    try:  # dockerd's statuses: a conflict with the container's settings, a bad value
        with pytest.raises(docker.errors.APIError) as conflict:
            client.api.update_container("swapped", mem_limit="256m")
        assert conflict.value.status_code == 409
        assert "Cannot update container " in conflict.value.explanation
        with pytest.raises(docker.errors.APIError) as bad_value:
            client.api.update_container("swapped", mem_limit="1m")
        assert bad_value.value.status_code == 400
    finally:
        client.close()
    berthd.docker("update", "--memory", "256m", "--memory-swap", "512m", "swapped")
    assert _cgroup_file(berthd, "swapped", "memory", "memory.limit_in_bytes") == str(256 * MiB)
    assert _cgroup_file(berthd, "swapped", "memory", "memory.memsw.limit_in_bytes") == str(
        512 * MiB
    )


def test_docker_py_update_of_a_stopped_container(
    berthd: Daemon,
    names: list[str],
) -> None:
    client = _client(berthd)
    try:
        names.append("later")
        c = client.containers.create("busybox", "sleep 307", name="later")
        policy = {"Name": "on-failure", "MaximumRetryCount": 2}
        answer = c.update(
            mem_limit="40m", mem_reservation="20m", cpu_shares=512, cpuset_cpus="0",
            restart_policy=policy,
        )  # fmt: skip
        assert answer == {"Warnings": []}
        berthd.docker("update", "--pids-limit", "9", "later")  # docker-py has no pids_limit
        c.reload()
        assert c.attrs["HostConfig"]["RestartPolicy"] == policy
        c.start()
        assert _cgroup_file(berthd, "later", "memory", "memory.limit_in_bytes") == str(40 * MiB)
        assert _cgroup_file(berthd, "later", "cpu", "cpu.shares") == "512"
        assert _cgroup_file(berthd, "later", "cpuset", "cpuset.cpus") == "0"
        soft = _cgroup_file(berthd, "later", "memory", "memory.soft_limit_in_bytes")
        assert soft == str(20 * MiB)
        assert _cgroup_file(berthd, "later", "pids", "pids.max") == "9"
        berthd.docker("update", "--pids-limit", "-1", "later")
        assert _cgroup_file(berthd, "later", "pids", "pids.max") == "max"
        c.reload()
        assert c.attrs["HostConfig"]["PidsLimit"] == 0  # "unlimited", as dockerd stores it
    finally:
        client.close()
