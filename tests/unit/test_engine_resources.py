"""stats, top and update without a daemon: cgroup readings on fake v1 and v2 trees
(``test_cgroups``' fakes), dockerd's stats documents, ps output filtering, and the update
merge rules with dockerd's messages.

Rules: nothing here touches the real kernel's cgroups; ``top`` runs the host's ``ps`` on this
test's own pid only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_cgroups import FakeHost, FakeKernel, created, hybrid, v2, write  # noqa: F401

from berth.engine import containers_resources as res
from berth.engine import stats
from berth.errors import BerthError, Conflict, InvalidArgument
from berth.runtime import cgroups_stats
from berth.runtime.cgroups import Cgroup

MiB = 1 << 20
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def fill(cg: Cgroup, controller: str, files: dict[str, str]) -> None:
    directory = cg.dir_for(controller)
    assert directory is not None, controller
    for name, text in files.items():
        write(Path(directory, name), text)


# --------------------------------------------------------------------------- cgroup readings


def test_read_v1(hybrid: tuple[FakeHost, FakeKernel]) -> None:  # noqa: F811
    cg = created(*hybrid)
    fill(cg, "cpuacct", {
        "cpuacct.usage": "3000000000\n",
        "cpuacct.usage_percpu": "1000000000 2000000000 \n",
        "cpuacct.stat": "user 150\nsystem 50\n",
    })  # fmt: skip
    fill(cg, "cpu", {"cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 7000\n"})
    fill(cg, "memory", {
        "memory.usage_in_bytes": str(20 * MiB),
        "memory.max_usage_in_bytes": str(30 * MiB),
        "memory.failcnt": "2",
        "memory.limit_in_bytes": str(64 * MiB),
        "memory.stat": "cache 4096\nrss 8192\ntotal_inactive_file 4096\n",
    })  # fmt: skip
    fill(cg, "pids", {"pids.current": "3\n", "pids.max": "20\n"})
    fill(cg, "blkio", {
        "blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\nTotal 300\n",
        "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
    })  # fmt: skip
    got = cgroups_stats.read(cg)
    assert got.cpu == cgroups_stats.CpuUsage(
        total_ns=3_000_000_000,
        user_ns=150 * TICK_NS,
        system_ns=50 * TICK_NS,
        percpu_ns=(1_000_000_000, 2_000_000_000),
        periods=10,
        throttled_periods=4,
        throttled_ns=7000,
    )
    assert got.memory == cgroups_stats.MemoryUsage(
        version=1,
        usage=20 * MiB,
        max_usage=30 * MiB,
        failcnt=2,
        limit=64 * MiB,
        stat={"cache": 4096, "rss": 8192, "total_inactive_file": 4096},
    )
    assert (got.pids_current, got.pids_limit) == (3, 20) and got.io_version == 1
    assert [(e.op, e.value) for e in got.io_service_bytes] == [
        ("Read", 100), ("Write", 200), ("Sync", 300)
    ]  # fmt: skip
    assert [(e.major, e.minor, e.op, e.value) for e in got.io_serviced] == [
        (8, 0, "Read", 1), (8, 0, "Write", 2)
    ]  # fmt: skip


def test_read_v1_unlimited_memory_and_pids(hybrid: tuple[FakeHost, FakeKernel]) -> None:  # noqa: F811
    cg = created(*hybrid)
    fill(cg, "memory", {"memory.usage_in_bytes": "4096"})  # limit: the template's LONG_MAX
    got = cgroups_stats.read(cg)
    assert got.memory.limit == 0 and got.memory.usage == 4096 and got.pids_limit == 0


def test_read_v2(v2: tuple[FakeHost, FakeKernel]) -> None:  # noqa: F811
    cg = created(*v2)
    fill(cg, "cpu", {
        "cpu.stat": "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n"
                    "nr_periods 5\nnr_throttled 2\nthrottled_usec 40\n",
    })  # fmt: skip
    fill(cg, "memory", {
        "memory.current": str(10 * MiB),
        "memory.max": str(48 * MiB),
        "memory.stat": "anon 1024\nfile 2048\ninactive_file 512\n",
        "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        "pids.current": "4",
        "pids.max": "max",
    })  # fmt: skip
    got = cgroups_stats.read(cg)
    assert got.io_version == 2
    assert got.cpu == cgroups_stats.CpuUsage(
        total_ns=3_000_000,
        user_ns=2_000_000,
        system_ns=1_000_000,
        periods=5,
        throttled_periods=2,
        throttled_ns=40_000,
    )
    assert got.memory == cgroups_stats.MemoryUsage(
        version=2, usage=10 * MiB, limit=48 * MiB,
        stat={"anon": 1024, "file": 2048, "inactive_file": 512},
    )  # fmt: skip
    assert (got.pids_current, got.pids_limit) == (4, 0)
    assert [(e.op, e.value) for e in got.io_service_bytes] == [("read", 10), ("write", 20)]
    assert [(e.op, e.value) for e in got.io_serviced] == [("read", 1), ("write", 2)]


def test_read_a_removed_cgroup_gives_zeros(v2: tuple[FakeHost, FakeKernel]) -> None:  # noqa: F811
    cg = created(*v2)
    cg.destroy()
    got = cgroups_stats.read(cg)
    assert got.cpu == cgroups_stats.CpuUsage() and got.pids_current == 0
    assert got.memory.usage == 0 and got.io_service_bytes == ()


# --------------------------------------------------------------------------- documents


def fake_proc(tmp_path: Path, ticks: int) -> str:
    proc = tmp_path / "fakeproc"
    write(proc / "stat", f"cpu  {ticks} 0 0 0 0 0 0 99 0 0\ncpu0 1 0 0 0\ncpu1 1 0 0 0\nintr 5\n")
    write(proc / "meminfo", "MemTotal:        1024 kB\nMemFree: 1 kB\n")
    return str(proc)


def test_system_cpu_usage_sums_seven_fields_in_ns(tmp_path: Path) -> None:
    proc = tmp_path / "p"
    write(proc / "stat", "cpu  1 2 3 4 5 6 7 1000 0 0\ncpu0 1\ncpu1 1\ncpu2 1\nctxt 9\n")
    assert stats.system_cpu_usage(str(proc)) == (28 * TICK_NS, 3)
    assert stats.machine_memory(str(proc)) == 0  # no meminfo


def test_sampler_frames_carry_the_previous_cpu(
    hybrid: tuple[FakeHost, FakeKernel],  # noqa: F811
    tmp_path: Path,
) -> None:
    cg = created(*hybrid)
    fill(cg, "cpuacct", {"cpuacct.usage": "1000", "cpuacct.usage_percpu": "600 400"})
    fill(cg, "memory", {"memory.usage_in_bytes": "8192", "memory.stat": "cache 4096\n"})
    proc = fake_proc(tmp_path, 100)
    sampler = stats.Sampler("/c", "abc", lambda: cg, proc=proc)
    first = sampler.frame()
    assert first["precpu_stats"] == stats.zero_cpu() and first["preread"] == "0001-01-01T00:00:00Z"
    assert first["cpu_stats"]["cpu_usage"]["percpu_usage"] == [600, 400]
    assert first["cpu_stats"]["online_cpus"] == 2
    assert first["memory_stats"]["limit"] == 1024 * 1024  # no limit: the machine's memory
    assert first["memory_stats"]["stats"] == {"cache": 4096}
    assert "max_usage" not in first["memory_stats"] and "networks" not in first
    assert first["name"] == "/c" and first["id"] == "abc" and first["num_procs"] == 0
    fill(cg, "cpuacct", {"cpuacct.usage": str(1000 + 500_000_000)})
    write(Path(proc, "stat"), f"cpu  {100 + 200} 0 0 0 0 0 0\ncpu0 1\ncpu1 1\n")
    second = sampler.frame()
    assert second["precpu_stats"] == first["cpu_stats"] and second["preread"] == first["read"]
    # the docker CLI's CPU %: 0.5 s of CPU over 2 s of the machine's (2 CPUs, 1 s) = 50 %
    cpu, pre = second["cpu_stats"], second["precpu_stats"]
    cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    assert system_delta == 200 * TICK_NS
    assert cpu_delta / system_delta * cpu["online_cpus"] * 100 == pytest.approx(
        500_000_000 / (200 * TICK_NS) * 200
    )


def test_sampler_of_a_stopped_container_is_dockerds_zero_frame(tmp_path: Path) -> None:
    frame = stats.Sampler("/c", "abc", lambda: None, proc=fake_proc(tmp_path, 1)).frame()
    assert frame == stats.empty_frame("/c", "abc")
    assert frame["read"] == "0001-01-01T00:00:00Z" and frame["memory_stats"] == {}
    assert frame["blkio_stats"]["io_service_bytes_recursive"] is None
    json.dumps(frame)


def test_memory_limit_above_the_machine_is_the_machine() -> None:
    mem = cgroups_stats.MemoryUsage(version=2, usage=1, limit=10 * MiB)
    assert stats.memory_stats(mem, machine=4 * MiB)["limit"] == 4 * MiB
    assert stats.memory_stats(mem, machine=40 * MiB)["limit"] == 10 * MiB
    assert stats.memory_stats(cgroups_stats.MemoryUsage(), machine=1) == {}


# --------------------------------------------------------------------------- top


PS_OUTPUT = """\
UID          PID    PPID  C STIME TTY          TIME CMD
root           7       1  0 10:00 ?        00:00:00 sleep 300
root           8       7  0 10:00 ?        00:00:00 other thing
root           9       7  0 10:00 ?        00:00:00 sh -c  a   b
"""


def test_parse_ps_keeps_the_cgroups_rows_and_joins_the_last_column() -> None:
    got = res.parse_ps(PS_OUTPUT, {7, 9})
    assert got["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert got["Processes"] == [
        ["root", "7", "1", "0", "10:00", "?", "00:00:00", "sleep 300"],
        ["root", "9", "7", "0", "10:00", "?", "00:00:00", "sh -c a b"],
    ]


def test_parse_ps_thread_rows_follow_their_process() -> None:
    output = "PID TID CMD\n7 - sleep\n- 7 -\n8 - other\n- 8 -\n"
    assert res.parse_ps(output, {7})["Processes"] == [["7", "-", "sleep"], ["-", "7", "-"]]


def test_parse_ps_needs_a_pid_column() -> None:
    with pytest.raises(BerthError, match="Couldn't find PID field in ps output"):
        res.parse_ps("USER COMMAND\nroot sh\n", {1})


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        ("-o pid,comm", None),
        ("-o pid=PID", None),
        ("-o user=USER", None),
        ("-o ppid=PID", "ppid"),
        ("-o user= PIDX", "user"),
    ],
)
def test_check_ps_args(args: str, refused: str | None) -> None:
    if refused is None:
        res.check_ps_args(args)
    else:
        with pytest.raises(InvalidArgument, match=f'specifying "{refused}=PID.?" is not allowed'):
            res.check_ps_args(args)


def test_top_runs_ps_on_the_given_pids_only() -> None:
    me = os.getpid()
    got = res.top([me], "-o pid,comm")
    assert got["Titles"] == ["PID", "COMMAND"]
    assert [row[0] for row in got["Processes"]] == [str(me)]
    default = res.top([me], "")
    assert default["Titles"][:2] == ["UID", "PID"] and len(default["Processes"]) == 1
    with pytest.raises(BerthError, match=r"^ps: error: "):
        res.top([me], "--no-such-option")


# --------------------------------------------------------------------------- update


def test_merge_update_zero_fields_keep_the_old_values() -> None:
    old = {"Memory": 64 * MiB, "CpuShares": 512, "CpusetCpus": "0", "PidsLimit": 5}
    new = res.merge_update(
        old, {"Memory": 0, "CpuShares": 0, "CpusetCpus": "", "NanoCpus": 10**9}, "c1"
    )
    assert new["Memory"] == 64 * MiB and new["CpuShares"] == 512 and new["CpusetCpus"] == "0"
    assert new["NanoCpus"] == 10**9 and new["PidsLimit"] == 5
    assert new["MemorySwap"] == 128 * MiB  # dockerd's create-time default, now explicit
    assert old == {"Memory": 64 * MiB, "CpuShares": 512, "CpusetCpus": "0", "PidsLimit": 5}
    assert res.merge_update(old, {"PidsLimit": -1}, "c1")["PidsLimit"] == 0


@pytest.mark.parametrize(
    ("old", "body", "message"),
    [
        ({"CpuPeriod": 50000}, {"NanoCpus": 10**9}, "Nano CPUs cannot be updated as CPU Period"),
        ({"CpuQuota": 50000}, {"NanoCpus": 10**9}, "Nano CPUs cannot be updated as CPU Quota"),
        ({"NanoCpus": 10**9}, {"CpuPeriod": 50000}, "CPU Period cannot be updated as NanoCPUs"),
        ({"NanoCpus": 10**9}, {"CpuQuota": 50000}, "CPU Quota cannot be updated as NanoCPUs"),
        (
            {"Memory": 64 * MiB},
            {"Memory": 256 * MiB},
            "Memory limit should be smaller than already set memoryswap limit, "
            "update the memoryswap at the same time",
        ),
        ({}, {"Memory": "64m"}, "cannot unmarshal str into Go struct field UpdateConfig.Memory"),
        ({}, {"RestartPolicy": {"Name": "sometimes"}}, "unknown policy 'sometimes'"),
        (
            {},
            {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}},
            "maximum retry count can only be used with 'on-failure'",
        ),
        (
            {"AutoRemove": True},
            {"RestartPolicy": {"Name": "always"}},
            "Restart policy cannot be updated because AutoRemove is enabled for the container",
        ),
    ],
)
def test_merge_update_refusals(old: dict[str, Any], body: dict[str, Any], message: str) -> None:
    with pytest.raises((InvalidArgument, Conflict)) as refused:
        res.merge_update(old, body, "c1")
    assert message in refused.value.message
    if isinstance(refused.value, Conflict):  # dockerd's conflictingUpdateOptions: a 409
        assert refused.value.message.startswith("Cannot update container c1: ")


def test_merge_update_memory_with_swap_and_restart_policy() -> None:
    new = res.merge_update(
        {"Memory": 64 * MiB},
        {"Memory": 256 * MiB, "MemorySwap": 512 * MiB, "RestartPolicy": {"Name": "always"}},
        "c1",
    )
    assert (new["Memory"], new["MemorySwap"]) == (256 * MiB, 512 * MiB)
    assert new["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}


def test_oci_resources_validate_as_create_does() -> None:
    warnings: list[str] = []
    got = res.oci_resources({"Memory": 64 * MiB, "NanoCpus": 5 * 10**8, "PidsLimit": 20}, warnings)
    assert got["memory"] == {"limit": 64 * MiB, "swap": 128 * MiB}
    assert got["cpu"] == {"quota": 50000, "period": 100000}
    assert got["pids"] == {"limit": 20} and warnings == []
    with pytest.raises(InvalidArgument, match="Minimum memory limit allowed is 6MB"):
        res.oci_resources({"Memory": MiB}, [])
    res.oci_resources({"CpuShares": 1}, warnings)
    assert warnings == ["Changing requested CPUShares of 1 to minimum allowed of 2"]


def test_live_resources_lift_an_old_pids_limit() -> None:
    assert res.live_resources({}, -1).pids_limit == -1
    assert res.live_resources({}, 0).pids_limit == -1
    assert res.live_resources({}, None).pids_limit is None
    assert res.live_resources({"pids": {"limit": 4}}, 4).pids_limit == 4
    assert res.live_resources({"devices": [{"allow": False}]}, None).devices == ()


def test_write_bundle_resources_keeps_the_devices_rules(tmp_path: Path) -> None:
    devices = [{"allow": False, "access": "rwm"}]
    spec = {"ociVersion": "1.2.0", "linux": {"resources": {"devices": devices}}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    res.write_bundle_resources(str(tmp_path), {"pids": {"limit": 3}})
    got = json.loads((tmp_path / "config.json").read_text())
    assert got["linux"]["resources"] == {"pids": {"limit": 3}, "devices": devices}
    assert got["ociVersion"] == "1.2.0"


def test_sampler_on_cgroup_v2_omits_the_v1_only_fields(
    v2: tuple[FakeHost, FakeKernel],  # noqa: F811
    tmp_path: Path,
) -> None:
    cg = created(*v2)
    fill(cg, "cpu", {"cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\n"})
    fill(cg, "memory", {"memory.current": "4096", "memory.max": str(512 * 1024)})
    frame = stats.Sampler("/c", "abc", lambda: cg, proc=fake_proc(tmp_path, 7)).frame()
    assert frame["cpu_stats"]["cpu_usage"] == {
        "total_usage": 5000, "usage_in_kernelmode": 2000, "usage_in_usermode": 3000
    }  # fmt: skip
    assert frame["memory_stats"] == {"usage": 4096, "stats": {}, "limit": 512 * 1024}
    assert frame["pids_stats"] == {}  # pids.current 0, pids.max "max"
    fill(cg, "memory", {"io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n"})
    blkio = stats.Sampler("/c", "abc", lambda: cg, proc=fake_proc(tmp_path, 7)).frame()[
        "blkio_stats"
    ]
    assert blkio["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "read", "value": 10},
        {"major": 8, "minor": 0, "op": "write", "value": 20},
    ]
    assert blkio["io_serviced_recursive"] is None  # dockerd reports bytes only on v2


def test_apply_live_puts_the_old_limits_back_when_the_kernel_refuses_one(
    hybrid: tuple[FakeHost, FakeKernel],  # noqa: F811
) -> None:
    cg = created(*hybrid)
    old_hc = {"Memory": 64 * MiB}
    cg.apply(res.live_resources(res.oci_resources(old_hc, []), None))
    pids = Path(str(cg.dir_for("pids")), "pids.max")
    pids.unlink()
    pids.mkdir()  # the pids write fails, after the memory one went through
    new = res.oci_resources({"Memory": 100 * MiB, "MemorySwap": 200 * MiB, "PidsLimit": 5}, [])
    with pytest.raises(InvalidArgument, match="pids"):
        res.apply_live(cg, new, 5, old_hc)
    memory = Path(str(cg.dir_for("memory")))
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(128 * MiB)
