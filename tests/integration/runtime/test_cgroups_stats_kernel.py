"""berth.runtime.cgroups_stats on the real kernel (hybrid here): what a process in a cgroup
uses shows in the readings, and the top/stats views of the engine agree with it.

Rules: root only; the cgroup and the children come from ``test_cgroups_kernel``'s fixtures
(a session-tagged cgroup below our own, removed at teardown; children killed and reaped).
"""

from __future__ import annotations

import os
import time

import pytest
from test_cgroups_kernel import Children, cgroup, children, layout, release  # noqa: F401

from berth.engine import containers_resources
from berth.engine.stats import Sampler
from berth.runtime import cgroups_stats
from berth.runtime.cgroups import Cgroup
from berth.spec.config import CPU, Memory, Resources

pytestmark = pytest.mark.root

MiB = 1 << 20


def _burn_and_hold() -> None:
    """Half a second of CPU, 8 MiB touched, then sleep until killed."""
    deadline = time.process_time() + 0.5
    while time.process_time() < deadline:
        pass
    block = bytearray(8 * MiB)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(60)


def test_readings_follow_a_process(cgroup: Cgroup, children: Children) -> None:  # noqa: F811
    cgroup.apply(
        Resources(memory=Memory(limit=64 * MiB), pids_limit=9, cpu=CPU(quota=50000, period=100000))
    )
    pid, gate = children.fork(_burn_and_hold, gate=True)
    cgroup.add_process(pid)
    release(gate)
    deadline = time.monotonic() + 20
    while (got := cgroups_stats.read(cgroup)).memory.usage < 8 * MiB:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert got.cpu.total_ns >= 400_000_000  # the half second burnt (in the cgroup)
    if got.cpu.percpu_ns:  # v1
        assert sum(got.cpu.percpu_ns) == pytest.approx(got.cpu.total_ns, rel=0.05)
    assert got.cpu.user_ns > 0
    assert got.cpu.periods > 0  # the quota is on: CFS counts periods
    assert got.memory.limit == 64 * MiB and got.memory.usage <= 64 * MiB
    assert got.memory.stat  # memory.stat was read
    assert (got.pids_current, got.pids_limit) == (1, 9)

    frame = Sampler("/t", "t", lambda: cgroup).frame()
    assert frame["memory_stats"]["limit"] == 64 * MiB
    assert frame["pids_stats"] == {"current": 1, "limit": 9}
    assert frame["cpu_stats"]["online_cpus"] >= 1

    listing = containers_resources.top(cgroup.pids(), "-o pid,comm")
    assert [row[0] for row in listing["Processes"]] == [str(pid)]
    assert os.getpid() not in cgroup.pids()
