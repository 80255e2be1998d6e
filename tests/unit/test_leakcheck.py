"""Tests of the leak check (tests/leakcheck.py and the guard in tests/conftest.py).

Rules: parsers and the diff are tested on sample text. The end-to-end tests run a nested
pytest, with a copy of our conftest, inside `unshare --mount --net` so that the mounts and
interfaces it leaks on purpose live in namespaces that die with it; the cgroup and processes
it leaks on purpose are removed here, in ``finally``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import leakcheck
from leakcheck import (
    CgroupMembership,
    Leak,
    MountEntry,
    ProcStat,
    Snapshot,
    cgroup_hierarchies,
    diff,
    environ_has,
    format_report,
    new_mounts_under,
    parse_mountinfo,
    parse_net_dev,
    parse_proc_cgroup,
    parse_proc_stat,
    session_processes,
)

TESTS_DIR = Path(__file__).resolve().parents[1]

MOUNTINFO = textwrap.dedent(
    """\
    22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw
    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
    40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
    42 31 0:38 / /sys/fs/cgroup/unified2 rw,relatime - cgroup2 cgroup2 rw,nsdelegate
    50 22 0:40 / /tmp/with\\040space rw shared:5 master:2 - tmpfs my\\011src rw
    51 22 0:4 net:[4026532000] /run/netns/berth-x rw - nsfs nsfs rw
    garbage line
    """
)

PROC_CGROUP = textwrap.dedent(
    """\
    9:name=systemd:/
    4:memory:/process_api/abc
    1:cpu,cpuacct:/
    0::/berth/inner
    """
)


def test_parse_mountinfo_fields_escapes_and_optional_fields() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert len(entries) == 9  # the garbage line is skipped
    root = entries[0]
    assert (root.mount_id, root.parent_id, root.mount_point, root.fstype) == (22, 1, "/", "ext4")
    tmp = next(e for e in entries if e.mount_id == 50)
    assert tmp.mount_point == "/tmp/with space"
    assert tmp.source == "my\tsrc"
    assert tmp.fstype == "tmpfs"  # optional fields "shared:5 master:2" skipped
    ns = next(e for e in entries if e.fstype == "nsfs")
    assert ns.root == "net:[4026532000]"
    assert entries[2].super_options == ("rw", "cpu", "cpuacct")


def test_parse_proc_cgroup() -> None:
    assert parse_proc_cgroup(PROC_CGROUP + "bad\n") == [
        CgroupMembership(9, ("name=systemd",), "/"),
        CgroupMembership(4, ("memory",), "/process_api/abc"),
        CgroupMembership(1, ("cpu", "cpuacct"), "/"),
        CgroupMembership(0, (), "/berth/inner"),
    ]


def test_cgroup_hierarchies_pair_mounts_with_own_cgroup_v1_and_v2() -> None:
    hs = cgroup_hierarchies(parse_mountinfo(MOUNTINFO), parse_proc_cgroup(PROC_CGROUP))
    by_mount = {h.mount_point: h for h in hs}
    # The second mount of the same cgroup2 device is the same hierarchy: listed once.
    assert set(by_mount) == {
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
    }
    assert by_mount["/sys/fs/cgroup/memory"].own_dir == "/sys/fs/cgroup/memory/process_api/abc"
    assert by_mount["/sys/fs/cgroup/cpu,cpuacct"].own_dir == "/sys/fs/cgroup/cpu,cpuacct"
    assert by_mount["/sys/fs/cgroup/systemd"].own_dir == "/sys/fs/cgroup/systemd"
    assert by_mount["/sys/fs/cgroup/unified"].own_dir == "/sys/fs/cgroup/unified/berth/inner"
    assert by_mount["/sys/fs/cgroup/unified"].version == 2


def test_cgroup_hierarchies_respect_the_mount_root() -> None:
    # A cgroup mount whose root is a sub-cgroup (as inside a cgroup namespace or a container).
    mounts = parse_mountinfo(
        "35 31 0:32 /process_api /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "36 31 0:33 /elsewhere /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    )
    membership = parse_proc_cgroup("4:memory:/process_api/abc\n5:pids:/mine\n")
    hs = {h.mount_point: h for h in cgroup_hierarchies(mounts, membership)}
    assert hs["/sys/fs/cgroup/memory"].own_dir == "/sys/fs/cgroup/memory/abc"
    assert hs["/sys/fs/cgroup/pids"].own_dir is None  # not visible under that mount


def test_parse_net_dev() -> None:
    text = (
        "Inter-|   Receive\n"
        " face |bytes    packets\n"
        "    lo:    3193      29    0\n"
        "veth-berth1:       0       0\n"
    )
    assert parse_net_dev(text) == {"lo", "veth-berth1"}


def test_parse_proc_stat_with_awkward_comm() -> None:
    fields = " ".join(["S", "42"] + ["0"] * 17 + ["98765"] + ["0"] * 10)
    s = parse_proc_stat(f"1234 (a) b (c)) {fields}")
    assert s == ProcStat(pid=1234, comm="a) b (c)", state="S", ppid=42, start_time=98765)


def test_parse_proc_stat_of_this_process() -> None:
    s = parse_proc_stat(Path("/proc/self/stat").read_text())
    assert s.pid == os.getpid()
    assert s.ppid == os.getppid()
    assert s.start_time > 0


def test_environ_has_matches_whole_entries_only() -> None:
    block = b"PATH=/bin\0BERTH_TEST_SESSION=abc\0X=1\0"
    assert environ_has(block, "BERTH_TEST_SESSION=abc")
    assert not environ_has(block, "BERTH_TEST_SESSION=ab")
    assert not environ_has(b"XBERTH_TEST_SESSION=abc\0", "BERTH_TEST_SESSION=abc")


def _stat(pid: int, ppid: int, state: str = "S", start: int = 100) -> ProcStat:
    return ProcStat(pid, f"p{pid}", state, ppid, start)


def test_session_processes_descendants_marker_and_exclusions() -> None:
    stats = [
        _stat(1, 0),
        _stat(10, 1),  # the session root (pytest)
        _stat(11, 10),  # child
        _stat(12, 11),  # grandchild
        _stat(13, 10, state="Z"),  # zombie child: dead, not a leak
        _stat(20, 1),  # reparented orphan carrying the marker
        _stat(21, 1),  # unrelated
    ]
    got = session_processes(stats, 10, has_marker=lambda pid: pid == 20)
    assert set(got) == {(11, 100), (12, 100), (20, 100)}
    assert "descends from pid 10" in got[(12, 100)][1]
    assert "carries BERTH_TEST_SESSION" in got[(20, 100)][1]


def _mount(mid: int, point: str, fstype: str = "tmpfs") -> MountEntry:
    return MountEntry(mid, 1, "0:99", "/", point, fstype, fstype, ("rw",))


def test_diff_reports_only_what_is_new() -> None:
    proc_old = (_stat(11, 10), "descends from pid 10")
    proc_new = (_stat(11, 10, start=200), "descends from pid 10")  # pid reused: a new process
    before = Snapshot(
        mounts={1: _mount(1, "/")},
        cgroups=frozenset({"/sys/fs/cgroup/memory/me/old"}),
        netns=frozenset({"old"}),
        interfaces=frozenset({"lo", "eth0"}),
        processes={(11, 100): proc_old},
        own_namespaces={"mnt": "mnt:[1]", "net": "net:[2]"},
        ns_fds=frozenset({(5, "net:[2]")}),
    )
    after = Snapshot(
        mounts={2: _mount(2, "/tmp/x/m"), 3: _mount(3, "/run/netns/b", "nsfs")},
        cgroups=frozenset({"/sys/fs/cgroup/memory/me/new"}),
        netns=frozenset({"old", "b"}),
        interfaces=frozenset({"lo", "veth0"}),
        processes={(11, 200): proc_new},
        own_namespaces={"mnt": "mnt:[9]", "net": "net:[2]"},
        ns_fds=frozenset({(5, "net:[2]"), (7, "net:[8]")}),
    )
    leaks = diff(before, after)
    kinds = [leak.kind for leak in leaks]
    assert sorted(kinds) == sorted(
        ["mount", "netns", "cgroup", "netns", "interface", "process", "namespace", "fd"]
    )
    text = "\n".join(map(str, leaks))
    assert "mount: tmpfs tmpfs on /tmp/x/m (mount id 2)" in text
    assert "netns: nsfs nsfs on /run/netns/b" in text
    assert "netns: /run/netns/b" in text
    assert "cgroup: /sys/fs/cgroup/memory/me/new" in text
    assert "interface: veth0" in text
    assert "pid 11 (p11" in text
    assert "moved from mnt:[1] to mnt:[9]" in text
    assert "fd 7 open on net:[8]" in text
    assert diff(after, after) == []
    assert diff(after, before) != []  # the other direction shows the old ones as "new"


def test_format_report_and_new_mounts_under() -> None:
    before = Snapshot(mounts={1: _mount(1, "/")})
    after = Snapshot(
        mounts={
            1: _mount(1, "/"),
            2: _mount(2, "/tmp/base/a"),
            3: _mount(3, "/tmp/base/a/b"),
            4: _mount(4, "/tmp/basement"),
        }
    )
    assert new_mounts_under(before, after, "/tmp/base") == ["/tmp/base/a/b", "/tmp/base/a"]
    report = format_report(diff(before, after), "title")
    assert report.startswith("title: 3 leaked resource(s)\n  mount: ")
    assert "another session" in report
    assert "another" not in format_report([Leak("process", "pid 1")], "t")


def test_checker_sees_a_child_process_come_and_go() -> None:
    checker = leakcheck.Checker(marker=uuid.uuid4().hex, root_pid=os.getpid())
    before = checker.snapshot()
    child = subprocess.Popen(["sleep", "30"])
    try:
        leaks = diff(before, checker.snapshot())
        assert [leak.kind for leak in leaks] == ["process"]
        assert f"pid {child.pid} (sleep" in leaks[0].what
    finally:
        child.kill()
        child.wait()
    assert checker.leaks_since(before, grace=1.0) == []


def test_session_marker_is_exported_to_children() -> None:
    marker = os.environ.get(leakcheck.MARKER_VAR)
    assert marker
    out = subprocess.run(
        ["sh", "-c", f"echo ${leakcheck.MARKER_VAR}"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == marker


def test_runtime_root_is_an_empty_private_dir(runtime_root: Path) -> None:
    assert runtime_root.is_dir()
    assert list(runtime_root.iterdir()) == []
    assert runtime_root.stat().st_mode & 0o777 == 0o700
    assert len(str(runtime_root)) < 60


def test_busybox_rootfs_has_a_shell(busybox_rootfs: Path) -> None:
    assert (busybox_rootfs / "bin" / "busybox").is_file()
    assert os.readlink(busybox_rootfs / "bin" / "sh") == "/bin/busybox"
    assert (busybox_rootfs / "etc" / "passwd").read_text().startswith("root:")


# --------------------------------------------------------------------------- end to end

INNER_TESTS = textwrap.dedent(
    """\
    import os
    import subprocess
    from pathlib import Path

    import pytest

    OUT = Path(os.environ["LEAK_OUT"])


    def _start_time(pid):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[19]


    def _leak_process(name):
        p = subprocess.Popen(["sleep", "300"], start_new_session=True)
        (OUT / name).write_text(f"{p.pid} {_start_time(p.pid)}")


    @pytest.mark.root
    def test_leaks_a_process():
        _leak_process("pid-marked")


    @pytest.mark.root
    def test_leaks_a_mount(tmp_path):
        (tmp_path / "m").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "berth-leak", str(tmp_path / "m")], check=True)


    @pytest.mark.root
    def test_leaks_an_interface():
        subprocess.run(
            ["ip", "link", "add", "berthleak0", "type", "veth", "peer", "name", "berthleak1"],
            check=True,
        )


    @pytest.mark.root
    def test_leaks_a_cgroup():
        os.mkdir(os.environ["LEAK_CGROUP"])


    @pytest.mark.root
    def test_cleans_up(tmp_path):
        (tmp_path / "m").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "berth-ok", str(tmp_path / "m")], check=True)
        subprocess.run(["umount", str(tmp_path / "m")], check=True)
        subprocess.run(["sleep", "0.01"], check=True)


    def test_unmarked_leak_is_left_to_the_session_check():
        _leak_process("pid-unmarked")
        # An orphan: reparented away from pytest, found only by the marker in its environment.
        out = subprocess.run(
            ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
            capture_output=True, text=True, check=True,
        )
        pid = int(out.stdout)
        (OUT / "pid-orphan").write_text(f"{pid} {_start_time(pid)}")
    """
)

CLEAN_TESTS = textwrap.dedent(
    """\
    import subprocess

    import pytest


    @pytest.fixture(scope="session")
    def daemon():
        p = subprocess.Popen(["sleep", "300"])
        yield p
        p.kill()
        p.wait()


    @pytest.mark.root
    def test_uses_a_session_daemon(daemon):
        assert daemon.poll() is None


    @pytest.mark.root
    def test_again(daemon):
        add = ["ip", "link", "add", "berthok0", "type", "veth", "peer", "name", "berthok1"]
        subprocess.run(add, check=True)
        subprocess.run(["ip", "link", "del", "berthok0"], check=True)
    """
)

SESSION_ONLY_LEAK = textwrap.dedent(
    """\
    import os
    import subprocess
    from pathlib import Path

    import pytest


    @pytest.fixture(scope="session")
    def leaky():
        yield
        # Leaks after every per-test check has run: only the session check can see it.
        p = subprocess.Popen(["sleep", "300"], start_new_session=True)
        start = Path(f"/proc/{p.pid}/stat").read_text().rpartition(") ")[2].split()[19]
        Path(os.environ["LEAK_OUT"], "pid-session").write_text(f"{p.pid} {start}")


    def test_passes(leaky):
        pass
    """
)


def _writable_own_cgroup() -> str | None:
    """This process's cgroup dir, preferring one below a hierarchy root (the subtree walk)."""
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    membership = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    dirs = [h for h in cgroup_hierarchies(mounts, membership) if h.own_dir is not None]
    dirs.sort(key=lambda h: h.own_dir == h.mount_point)
    for h in dirs:
        if h.own_dir is not None and os.access(h.own_dir, os.W_OK):
            return h.own_dir
    return None


def _run_inner(tmp_path: Path, tests: str, cgroup: str = "") -> subprocess.CompletedProcess[str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    project = tmp_path / "inner"
    project.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(TESTS_DIR / "conftest.py", project / "conftest.py")
    (project / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    root: needs root\n    peer: runs a peer\n"
    )
    (project / "test_inner.py").write_text(tests)
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR), LEAK_OUT=str(out), LEAK_CGROUP=cgroup)
    env["BERTH_LEAKCHECK_GRACE"] = "0.2"
    cmd = ["unshare", "--mount", "--propagation", "private", "--net", sys.executable, "-m"]
    cmd += ["pytest", "-p", "no:cacheprovider", "-q", f"--basetemp={tmp_path / 'base'}"]
    return subprocess.run(
        cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _kill_recorded(out: Path) -> None:
    """Kill the sleeps the inner run leaked on purpose, if they are still the same processes."""
    for f in out.glob("pid-*"):
        pid_text, _, start = f.read_text().partition(" ")
        pid = int(pid_text)
        try:
            stat = parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            continue
        if stat.comm == "sleep" and (not start or str(stat.start_time) == start):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.root
def test_leaking_inner_run_fails_and_names_every_leak(tmp_path: Path) -> None:
    own = _writable_own_cgroup()
    if own is None:
        pytest.skip("no writable own cgroup to leak into")
    cgroup = os.path.join(own, leakcheck.tagged_name("test") + "-leakcheck")
    try:
        result = _run_inner(tmp_path, INNER_TESTS, cgroup)
    finally:
        _kill_recorded(tmp_path / "out")
        if os.path.isdir(cgroup):
            os.rmdir(cgroup)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    # Per-test attribution: each marked leaking test errors in teardown, naming its leak.
    assert "ERROR at teardown of test_leaks_a_process" in text
    assert "ERROR at teardown of test_leaks_a_mount" in text
    assert "ERROR at teardown of test_leaks_an_interface" in text
    assert "ERROR at teardown of test_leaks_a_cgroup" in text
    assert "teardown of test_cleans_up" not in text
    # The session check lists everything still there at the end.
    assert "berth leak check" in text
    assert "(sleep, " in text and "descends from pid" in text
    assert "tmpfs berth-leak on " in text
    assert "interface: berthleak0" in text
    assert "interface: berthleak1" in text
    assert f"cgroup: {cgroup}" in text
    assert "detached " in text  # the leaked mount under the inner temp dir
    assert "carries BERTH_TEST_SESSION" in text  # the orphan, found by the marker
    assert text.count("(sleep, ") >= 4  # per-test, plus three sleeps at session end


@pytest.mark.root
def test_leak_after_all_tests_passed_still_makes_pytest_exit_nonzero(tmp_path: Path) -> None:
    try:
        result = _run_inner(tmp_path, SESSION_ONLY_LEAK)
    finally:
        _kill_recorded(tmp_path / "out")
    text = result.stdout + result.stderr
    assert "1 passed" in text
    assert result.returncode == 1, text
    assert "carries BERTH_TEST_SESSION" in text or "descends from pid" in text
    assert "FAILED: the berth leak check found leaks" in text


@pytest.mark.root
def test_clean_inner_run_passes(tmp_path: Path) -> None:
    result = _run_inner(tmp_path, CLEAN_TESTS)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "berth leak check" not in text


def test_a_changed_device_mode_is_a_leak(tmp_path: Path) -> None:
    node = tmp_path / "null"
    node.write_text("")
    node.chmod(0o666)
    before = leakcheck.Snapshot(device_modes=leakcheck.device_modes([str(node)]))
    node.chmod(0o755)
    after = leakcheck.Snapshot(device_modes=leakcheck.device_modes([str(node)]))
    leaks = leakcheck.diff(before, after)
    assert [leak.kind for leak in leaks] == ["device"]
    assert "100666 to 100755" in leaks[0].what
    assert leakcheck.diff(after, after) == []
