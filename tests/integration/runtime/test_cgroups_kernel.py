"""berth.runtime.cgroups on the real kernel: limits land in the files, and the kernel enforces them.

Rules: root only (marked ``root``). Every cgroup is made below this process's own cgroup in each
hierarchy, named ``berth-test-<random>`` (a root-level name the leak check accepts), and
removed by the ``cgroup`` fixture even when the test fails; every forked child is killed and
reaped by the ``children`` fixture. Children are plain ``os.fork`` children that only sleep,
allocate or fork, and always leave through ``os._exit``.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import leakcheck
from berth.errors import InvalidArgument
from berth.runtime.cgroups import Cgroup, CgroupLayout, detect
from berth.spec.config import CPU, DeviceRule, Memory, Resources

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture
def layout() -> CgroupLayout:
    return detect()


@pytest.fixture
def cgroup(layout: CgroupLayout) -> Iterator[Cgroup]:
    cg = Cgroup.plan(layout, leakcheck.tagged_name("berth-test-") + "/c", "c")
    try:
        cg.create()
        yield cg
    finally:
        try:
            cg.kill_all()
        finally:
            cg.destroy(timeout=5.0)
        leftover = [p for p in cg.paths.values() if os.path.exists(p)]
        assert not leftover, leftover


class Children:
    """Forked children of the test; killed and reaped at teardown."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def fork(self, body: Callable[[], object], gate: bool = False) -> tuple[int, int | None]:
        """Fork a child that runs ``body`` then exits 0 (1 on an exception). With ``gate`` it
        first waits for one byte on a pipe: returns the pipe's write end to release it."""
        r, w = os.pipe() if gate else (-1, -1)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if gate:
                    os.close(w)
                    os.read(r, 1)
                body()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        self.pids.append(pid)
        if gate:
            os.close(r)
            return pid, w
        return pid, None

    def wait(self, pid: int, timeout: float = 10.0) -> int:
        """The child's wait status; fails the test if it does not end in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.remove(pid)
                return status
            time.sleep(0.01)
        raise AssertionError(f"child {pid} still running after {timeout} s")

    def cleanup(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        self.pids.clear()


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.cleanup()


def release(fd: int | None) -> None:
    assert fd is not None
    os.write(fd, b"x")
    os.close(fd)


def cgfile(cg: Cgroup, controller: str, name: str) -> str:
    path = cg.dir_for(controller)
    assert path is not None, f"no {controller} hierarchy"
    return Path(path, name).read_text().strip()


def version_of(cg: Cgroup, controller: str) -> int:
    path = cg.dir_for(controller)
    assert path is not None
    return 2 if Path(path, "cgroup.controllers").exists() else 1


def test_layout_matches_this_process(layout: CgroupLayout) -> None:
    assert layout.mode in ("v1", "v2", "hybrid")
    own = Path("/proc/self/cgroup").read_text()
    for h in layout.hierarchies:
        assert os.path.isdir(h.mountpoint)
        assert f":{h.own_path}\n" in own
        if h.version == 1:
            assert h.mount_options == ",".join(h.controllers)


def test_limits_processes_freeze_kill_and_destroy(cgroup: Cgroup, children: Children) -> None:
    cgroup.apply(
        Resources(memory=Memory(limit=64 * MiB), pids_limit=20, cpu=CPU(quota=50000, period=100000))
    )
    if version_of(cgroup, "memory") == 1:
        assert cgfile(cgroup, "memory", "memory.limit_in_bytes") == str(64 * MiB)
    else:
        assert cgfile(cgroup, "memory", "memory.max") == str(64 * MiB)
    assert cgfile(cgroup, "pids", "pids.max") == "20"
    if version_of(cgroup, "cpu") == 1:
        assert cgfile(cgroup, "cpu", "cpu.cfs_quota_us") == "50000"
        assert cgfile(cgroup, "cpu", "cpu.cfs_period_us") == "100000"
    else:
        assert cgfile(cgroup, "cpu", "cpu.max") == "50000 100000"

    pid, _ = children.fork(lambda: time.sleep(60))
    cgroup.add_process(pid)
    assert cgroup.pids() == [pid]
    stats = cgroup.stats()
    assert stats.pids_current == 1 and stats.pids_limit == 20
    assert stats.memory_limit == 64 * MiB
    assert stats.oom_kills == 0 and not cgroup.oom_killed()

    cgroup.freeze()
    assert cgroup.is_frozen()
    cgroup.thaw()
    assert not cgroup.is_frozen()

    cgroup.kill_all()
    status = children.wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert cgroup.pids() == []

    made = list(cgroup.created)
    assert made
    cgroup.destroy()
    assert cgroup.created == []
    assert not any(os.path.exists(d) for d in made)


def test_oom_kill_is_reported(cgroup: Cgroup, children: Children) -> None:
    # swap = limit: no room to swap out instead of being killed (v1 memsw; v2 swap.max 0)
    cgroup.apply(Resources(memory=Memory(limit=16 * MiB, swap=16 * MiB)))
    hog: list[bytearray] = []

    def allocate() -> None:
        while True:
            hog.append(bytearray(b"\x01") * MiB)  # touches every page

    pid, gate = children.fork(allocate, gate=True)
    cgroup.add_process(pid)
    release(gate)
    status = children.wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert cgroup.oom_killed()
    assert cgroup.stats().oom_kills >= 1


def test_pids_limit_is_enforced(cgroup: Cgroup, children: Children) -> None:
    cgroup.apply(Resources(pids_limit=1))

    def try_fork() -> None:
        try:
            child = os.fork()
        except BlockingIOError:
            os._exit(42)  # EAGAIN: the limit held
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        os._exit(7)

    pid, gate = children.fork(try_fork, gate=True)
    cgroup.add_process(pid)
    release(gate)
    status = children.wait(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 42


def test_kill_all_reaches_every_descendant(cgroup: Cgroup, children: Children) -> None:
    def spawn_tree() -> None:
        for _ in range(5):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        time.sleep(60)

    pid, gate = children.fork(spawn_tree, gate=True)
    cgroup.add_process(pid)
    release(gate)
    deadline = time.monotonic() + 5
    while len(cgroup.pids()) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(cgroup.pids()) == 6
    cgroup.kill_all()
    children.wait(pid)
    deadline = time.monotonic() + 5
    while cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cgroup.pids() == []


def test_devices_allow_list_is_enforced(cgroup: Cgroup, children: Children) -> None:
    devices = cgroup.dir_for("devices")
    if devices is None:
        pytest.skip("no v1 devices controller (cgroup v2 needs eBPF, which Berth skips)")
    cgroup.apply(Resources(devices=(DeviceRule(allow=False), DeviceRule(True, "c", 1, 3, "rw"))))
    assert cgfile(cgroup, "devices", "devices.list") == "c 1:3 rw"

    def open_devices() -> None:
        os.close(os.open("/dev/null", os.O_RDWR))  # c 1:3: allowed
        try:
            os.close(os.open("/dev/zero", os.O_RDONLY))  # c 1:5: denied
        except PermissionError:
            os._exit(42)

    pid, gate = children.fork(open_devices, gate=True)
    cgroup.add_process(pid)
    release(gate)
    status = children.wait(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 42


def test_kernel_refusal_names_the_oci_field(cgroup: Cgroup) -> None:
    with pytest.raises(InvalidArgument) as info:
        cgroup.apply(Resources(cpu=CPU(period=500)))  # below the kernel's 1 ms minimum
    assert str(info.value) == (
        f"linux.resources.cpu.period: 500 refused by the kernel: {os.strerror(errno.EINVAL)}"
    )


def test_memory_limits_raise_and_lower_in_a_valid_order(cgroup: Cgroup) -> None:
    v1 = version_of(cgroup, "memory") == 1
    limit_file = "memory.limit_in_bytes" if v1 else "memory.max"
    for limit, swap in ((32 * MiB, 64 * MiB), (256 * MiB, 512 * MiB), (16 * MiB, 16 * MiB)):
        cgroup.apply(Resources(memory=Memory(limit=limit, swap=swap)))
        assert cgfile(cgroup, "memory", limit_file) == str(limit)
        if v1 and cgroup.dir_for("memory") is not None:
            memsw = Path(str(cgroup.dir_for("memory")), "memory.memsw.limit_in_bytes")
            if memsw.exists():
                assert memsw.read_text().strip() == str(swap)
