"""berth.runtime.cgroups on a fake cgroup tree: layout detection, path rules, limit writes.

Rules: nothing here touches the real kernel. Each test builds a fake /proc (mountinfo, cgroup)
and fake hierarchies in a temp dir; a ``FakeKernel`` stands in for cgroupfs where a plain
directory behaves differently: ``mkdir`` fills the new cgroup with its hierarchy's files
(``cpuset.cpus`` empty, ``cgroup.procs`` ...) and ``rmdir`` removes a cgroup with its files but
refuses (EBUSY) one that has sub-cgroups or processes. A plain file keeps only the last write,
so the order of writes is checked on the sans-IO translation functions instead.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from berth.errors import FailedPrecondition, InvalidArgument, Unavailable, Unsupported
from berth.runtime import cgroups, cgroups_v1, cgroups_v2
from berth.runtime.cgroups import Cgroup, CgroupLayout, Hierarchy, detect
from berth.spec.config import CPU, DeviceRule, Memory, Resources

OWN_MEMORY = "/process_api/824be4334caf89e753b62d7452a6302f"

# This machine's hybrid layout: v1 controllers (cpu and cpuacct on separate mounts), a named
# systemd hierarchy, and cgroup2 at unified carrying only hugetlb.
HYBRID_MOUNTS = {
    "cpu": "cpu",
    "cpuacct": "cpuacct",
    "cpuset": "cpuset",
    "memory": "memory",
    "devices": "devices",
    "freezer": "freezer",
    "blkio": "blkio",
    "pids": "pids",
}
V1_FILES = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.memsw.limit_in_bytes": "9223372036854771712",
        "memory.soft_limit_in_bytes": "9223372036854771712",
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
    },
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.bfq.weight": "100"},
    "pids": {"pids.max": "max", "pids.current": "0"},
}
V2_FILES = {
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.subtree_control": "",
    "cgroup.kill": "",
    "cgroup.max.depth": "max",
}
V2_CONTROLLER_FILES = {
    "memory": {
        "memory.max": "max",
        "memory.high": "max",
        "memory.low": "0",
        "memory.swap.max": "max",
    },
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max"},
    "io": {"io.weight": "default 100"},
}


def write(path: Path | str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


class FakeHost:
    """A fake /proc and cgroup mounts under ``base``; ``layout()`` runs the real detect()."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.proc = base / "proc"
        self.cg = base / "sys" / "fs" / "cgroup"
        self.mountinfo: list[str] = []
        self.membership: list[str] = []
        self.files: dict[str, dict[str, str]] = {}  # mountpoint -> files a new cgroup gets

    def mount(self, fstype: str, where: Path, options: str, root: str = "/") -> None:
        where.mkdir(parents=True, exist_ok=True)
        n = 30 + len(self.mountinfo)
        escaped = str(where).replace(" ", "\\040")
        self.mountinfo.append(
            f"{n} 23 0:{n} {root} {escaped} rw,nosuid shared:{n} - {fstype} {fstype} {options}"
        )

    def save(self) -> None:
        write(self.proc / "self" / "mountinfo", "\n".join(self.mountinfo) + "\n")
        write(self.proc / "self" / "cgroup", "\n".join(self.membership) + "\n")

    def layout(self) -> CgroupLayout:
        self.save()
        return detect(str(self.proc))


def hybrid_host(base: Path) -> FakeHost:
    host = FakeHost(base)
    for i, (name, options) in enumerate(HYBRID_MOUNTS.items(), start=1):
        where = host.cg / name
        host.mount("cgroup", where, f"rw,{options}")
        own = OWN_MEMORY if name == "memory" else "/"
        host.membership.insert(0, f"{i}:{name}:{own}")
        host.files[str(where)] = {"cgroup.procs": "", **V1_FILES.get(name, {})}
        write(where / "cgroup.procs", "")
        for file in V1_FILES.get(name, {}):
            if file.startswith("cpuset."):
                write(where / file, "0-1" if file == "cpuset.cpus" else "0")
    host.mount("cgroup", host.cg / "systemd", "rw,name=systemd")
    host.membership.insert(0, "9:name=systemd:/")
    host.mount("cgroup2", host.cg / "unified", "rw")
    host.membership.append("0::/")
    write(host.cg / "unified" / "cgroup.controllers", "hugetlb\n")
    write(host.cg / "unified" / "cgroup.subtree_control", "")
    host.files[str(host.cg / "unified")] = {"cgroup.procs": "", **V2_FILES}
    (host.cg / "memory" / OWN_MEMORY.strip("/")).mkdir(parents=True)
    return host


def v2_host(base: Path, own: str = "/user.slice/user-0.slice/session-1.scope") -> FakeHost:
    host = FakeHost(base)
    host.mount("cgroup2", host.cg, "rw,nsdelegate,memory_recursiveprot")
    host.membership.append(f"0::{own}")
    controllers = "cpuset cpu io memory hugetlb pids rdma misc"
    write(host.cg / "cgroup.controllers", controllers + "\n")
    write(host.cg / "cgroup.subtree_control", "")
    d = host.cg
    for part in own.strip("/").split("/"):
        d = d / part
        write(d / "cgroup.controllers", controllers + "\n")
        write(d / "cgroup.subtree_control", "")
    files = {"cgroup.procs": "", "cgroup.controllers": controllers + "\n", **V2_FILES}
    for per in V2_CONTROLLER_FILES.values():
        files.update(per)
    host.files[str(host.cg)] = files
    return host


class FakeKernel:
    """cgroupfs semantics for mkdir/rmdir below the fake host's cgroup tree."""

    def __init__(self, host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
        self.host = host
        self.real_mkdir, self.real_rmdir = os.mkdir, os.rmdir
        self.fail_mkdir: set[str] = set()
        monkeypatch.setattr(os, "mkdir", self.mkdir)
        monkeypatch.setattr(os, "rmdir", self.rmdir)

    def _template(self, path: str) -> dict[str, str] | None:
        for mountpoint, files in self.host.files.items():
            if path.startswith(mountpoint + "/"):
                return files
        return None

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777, **kw: object) -> None:
        p = os.fspath(path)
        if p in self.fail_mkdir:
            raise OSError(errno.ENOSPC, "No space left on device", p)
        self.real_mkdir(p, mode)
        for name, text in (self._template(p) or {}).items():
            Path(p, name).write_text(text)

    def rmdir(self, path: str | os.PathLike[str], **kw: object) -> None:
        p = os.fspath(path)
        if self._template(p) is None or not os.path.isdir(p):
            self.real_rmdir(p)
            return
        if any(e.is_dir() for e in os.scandir(p)) or Path(p, "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy", p)
        for e in os.scandir(p):
            os.unlink(e.path)
        self.real_rmdir(p)


@pytest.fixture
def hybrid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeHost, FakeKernel]:
    host = hybrid_host(tmp_path)
    return host, FakeKernel(host, monkeypatch)


@pytest.fixture
def v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeHost, FakeKernel]:
    host = v2_host(tmp_path)
    return host, FakeKernel(host, monkeypatch)


def by_mount(layout: CgroupLayout) -> dict[str, Hierarchy]:
    return {Path(h.mountpoint).name: h for h in layout.hierarchies}


def read(path: str | Path) -> str:
    return Path(path).read_text()


# --------------------------------------------------------------------------- detect


def test_the_calling_process_layout_is_read_once_per_membership(tmp_path: Path) -> None:
    host = v2_host(tmp_path, own="/a")
    first = host.layout()
    (host.proc / "self" / "mountinfo").unlink()  # a second read of it would fail
    assert detect(str(host.proc)) is first
    host.membership = ["0::/b"]  # moved to another cgroup: read anew
    write(host.proc / "self" / "cgroup", "0::/b\n")
    with pytest.raises(Unavailable, match="mountinfo"):
        detect(str(host.proc))
    host.save()
    assert detect(str(host.proc)).hierarchies[0].own_path == "/b"


def test_detect_hybrid_uses_v1_and_unified_only_for_what_v1_lacks(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    write(host.cg / "unified" / "cgroup.controllers", "memory hugetlb\n")
    layout = host.layout()
    assert layout.mode == "hybrid"
    h = by_mount(layout)
    assert set(h) == {*HYBRID_MOUNTS, "unified"}  # name=systemd ignored
    assert h["memory"] == Hierarchy(1, str(host.cg / "memory"), ("memory",), "memory", OWN_MEMORY)
    assert h["cpu"].controllers == ("cpu",) and h["cpuacct"].controllers == ("cpuacct",)
    assert h["unified"].version == 2
    assert h["unified"].controllers == ("hugetlb",)  # memory is v1's here
    assert h["unified"].mount_options == "" and h["unified"].own_path == "/"


def test_detect_pure_v1_with_comounted_cpu_cpuacct(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.mount("cgroup", host.cg / "cpu,cpuacct", "rw,cpu,cpuacct")
    host.mount("cgroup", host.cg / "memory", "rw,memory")
    host.mount("cgroup", host.cg / "net_cls", "rw,net_cls")  # not in our cgroup file
    host.membership = ["3:cpu,cpuacct:/a", "2:memory:/b", "1:name=systemd:/c"]
    layout = host.layout()
    assert layout.mode == "v1"
    h = by_mount(layout)
    assert set(h) == {"cpu,cpuacct", "memory"}
    assert h["cpu,cpuacct"].controllers == ("cpu", "cpuacct")
    assert h["cpu,cpuacct"].mount_options == "cpu,cpuacct"
    assert h["cpu,cpuacct"].own_path == "/a"


def test_detect_pure_v2_lists_the_offered_controllers(tmp_path: Path) -> None:
    host = v2_host(tmp_path, own="/user.slice/session-2.scope")
    layout = host.layout()
    assert layout.mode == "v2"
    (h,) = layout.hierarchies
    assert h.version == 2 and h.mountpoint == str(host.cg)
    assert h.controllers == ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
    assert h.own_path == "/user.slice/session-2.scope" and h.mount_options == ""


def test_detect_unescapes_mountpoints_and_keeps_the_mount_root(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.mount("cgroup", tmp_path / "cg root" / "memory", "rw,memory", root="/outer")
    host.membership = ["4:memory:/outer/inner"]
    (h,) = host.layout().hierarchies
    assert h.mountpoint == str(tmp_path / "cg root" / "memory")
    assert h.mount_root == "/outer"
    cg = Cgroup.plan(CgroupLayout("v1", (h,)), "x", "id")
    assert cg.paths[h.mountpoint] == f"{tmp_path}/cg root/memory/inner/x"


def test_detect_without_any_cgroup_mount_is_unsupported(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.membership = ["0::/"]
    with pytest.raises(Unsupported, match="no cgroup hierarchy"):
        host.layout()


# --------------------------------------------------------------------------- plan


def test_plan_default_relative_and_absolute_paths(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    layout = host.layout()
    mem, cpu, uni = (str(host.cg / n) for n in ("memory", "cpu", "unified"))
    default = Cgroup.plan(layout, "", "c1")
    assert default.paths[mem] == f"{mem}{OWN_MEMORY}/c1"  # under our own cgroup
    assert default.paths[cpu] == f"{cpu}/c1"
    assert default.paths[uni] == f"{uni}/c1"
    relative = Cgroup.plan(layout, "./pods//p1/", "c1")
    assert relative.paths[mem] == f"{mem}{OWN_MEMORY}/pods/p1"
    absolute = Cgroup.plan(layout, "/machine/c1", "c1")
    assert absolute.paths[mem] == f"{mem}/machine/c1"  # from the hierarchy root, as runc
    assert absolute.paths[cpu] == f"{cpu}/machine/c1"


def test_plan_v2_relative_goes_under_the_parent_of_our_own_cgroup(tmp_path: Path) -> None:
    host = v2_host(tmp_path, own="/user.slice/session-1.scope")
    cg = Cgroup.plan(host.layout(), "", "c1")
    assert cg.paths == {str(host.cg): f"{host.cg}/user.slice/c1"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../escape", "must not contain '..'"),
        ("/a/../../b", "must not contain '..'"),
        ("system.slice:berth:c1", "slice:prefix:name"),
        ("/", "names no cgroup"),
        (".", "names no cgroup"),
        ("a\nb", "NUL or newline"),
    ],
)
def test_plan_rejects_bad_paths(tmp_path: Path, path: str, message: str) -> None:
    layout = hybrid_host(tmp_path).layout()
    with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath") as info:
        Cgroup.plan(layout, path, "c1")
    assert message in str(info.value)


def test_plan_rejects_an_id_that_cannot_name_a_cgroup(tmp_path: Path) -> None:
    layout = hybrid_host(tmp_path).layout()
    with pytest.raises(InvalidArgument, match="container id"):
        Cgroup.plan(layout, "", "a/b")


def test_json_round_trip_keeps_what_was_created(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, _ = hybrid
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    cg.create()
    again = Cgroup.from_json(cg.to_json())
    assert again.paths == cg.paths and again.created == cg.created
    assert again.to_json() == cg.to_json()
    again.destroy()
    assert not any(os.path.exists(p) for p in cg.paths.values())


def test_from_json_rejects_malformed_state() -> None:
    with pytest.raises(InvalidArgument, match="cgroup state"):
        Cgroup.from_json({"hierarchies": [{"version": 1}]})
    bad = {"version": 1, "mountpoint": "/sys/fs/cgroup/memory", "controllers": [], "path": "/etc"}
    with pytest.raises(InvalidArgument, match="not a cgroup of"):
        Cgroup.from_json({"hierarchies": [bad], "created": []})


# --------------------------------------------------------------------------- create / destroy


def test_create_records_only_what_it_made_and_destroy_removes_only_that(
    hybrid: tuple[FakeHost, FakeKernel],
) -> None:
    host, _ = hybrid
    (host.cg / "pids" / "berth").mkdir()  # a shared parent someone else made
    Path(host.cg / "pids" / "berth" / "cgroup.procs").write_text("")
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    cg.create()
    pids_dir = str(host.cg / "pids" / "berth")
    assert pids_dir not in cg.created
    assert f"{pids_dir}/c1" in cg.created
    assert str(host.cg / "cpu" / "berth") in cg.created
    assert all(os.path.isdir(p) for p in cg.paths.values())
    cg.destroy()
    assert not any(os.path.exists(p) for p in cg.paths.values())
    assert os.path.isdir(pids_dir)  # not ours: kept
    assert not (host.cg / "cpu" / "berth").exists()  # ours: removed
    assert cg.created == []
    cg.destroy()  # idempotent


def test_create_copies_cpuset_down_the_chain(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, _ = hybrid
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    cg.create()
    leaf = cg.paths[str(host.cg / "cpuset")]
    assert read(f"{leaf}/cpuset.cpus") == "0-1" and read(f"{leaf}/cpuset.mems") == "0"
    assert read(host.cg / "cpuset" / "berth" / "cpuset.cpus") == "0-1"
    cg.destroy()


def test_create_failure_removes_what_it_made(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    kernel.fail_mkdir.add(cg.paths[str(host.cg / "cpu")])  # a late hierarchy fails
    with pytest.raises(FailedPrecondition, match="No space left on device"):
        cg.create()
    assert cg.created == []
    for name in HYBRID_MOUNTS:
        base = host.cg / name / (OWN_MEMORY.strip("/") if name == "memory" else "")
        assert not (base / "berth").exists(), name
    assert (host.cg / "memory" / OWN_MEMORY.strip("/")).is_dir()  # pre-existing: kept


def test_create_failure_on_a_file_in_the_way(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, _ = hybrid
    write(host.cg / "unified" / "berth", "not a directory")
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    with pytest.raises(FailedPrecondition, match="unified/berth"):
        cg.create()
    assert not (host.cg / "memory" / OWN_MEMORY.strip("/") / "berth").exists()


def test_create_v2_enables_controllers_in_every_ancestor(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, _ = v2
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    cg.create()
    expected = "+cpu +cpuset +io +memory +pids"
    assert read(host.cg / "cgroup.subtree_control") == expected
    assert read(host.cg / "user.slice" / "user-0.slice" / "cgroup.subtree_control") == expected
    parent = host.cg / "user.slice" / "user-0.slice" / "berth"
    assert read(parent / "cgroup.subtree_control") == expected
    leaf = Path(cg.paths[str(host.cg)])
    assert read(leaf / "cgroup.subtree_control") == ""  # processes live in the leaf
    own = host.cg / "user.slice" / "user-0.slice" / "session-1.scope"
    assert read(own / "cgroup.subtree_control") == ""  # our own cgroup is left alone
    cg.destroy()


def test_create_v2_enable_failure_cleans_up(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, _ = v2
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    os.unlink(host.cg / "user.slice" / "user-0.slice" / "cgroup.subtree_control")
    os.mkdir(host.cg / "user.slice" / "user-0.slice" / "cgroup.subtree_control")  # EISDIR
    with pytest.raises(FailedPrecondition, match="subtree_control"):
        cg.create()
    assert not (host.cg / "user.slice" / "user-0.slice" / "berth").exists()


def test_destroy_retries_busy_then_reports(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, _ = hybrid
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    cg.create()
    pids_leaf = cg.paths[str(host.cg / "pids")]
    write(f"{pids_leaf}/cgroup.procs", "4242\n")  # a process that never leaves
    with pytest.raises(FailedPrecondition, match="processes still in it"):
        cg.destroy(timeout=0.05)
    assert pids_leaf in cg.created  # kept for the next try
    assert not os.path.exists(cg.paths[str(host.cg / "cpu")])
    write(f"{pids_leaf}/cgroup.procs", "")
    cg.destroy()
    assert cg.created == [] and not os.path.exists(pids_leaf)


def test_destroy_removes_sub_cgroups_the_container_made(
    hybrid: tuple[FakeHost, FakeKernel],
) -> None:
    host, kernel = hybrid
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    cg.create()
    leaf = cg.paths[str(host.cg / "memory")]
    kernel.mkdir(f"{leaf}/inner")
    kernel.mkdir(f"{leaf}/inner/deeper")
    cg.destroy()
    assert not os.path.exists(leaf)


# --------------------------------------------------------------------------- apply v1


def created(host: FakeHost, kernel: FakeKernel, path: str = "") -> Cgroup:
    cg = Cgroup.plan(host.layout(), path, "c1")
    cg.create()
    return cg


def test_apply_v1_writes_the_expected_values(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    cg.apply(
        Resources(
            memory=Memory(limit=64 << 20, reservation=32 << 20, swap=128 << 20, swappiness=10),
            cpu=CPU(shares=512, quota=50000, period=100000, cpus="1", mems="0"),
            pids_limit=20,
            blkio_weight=300,
            devices=(DeviceRule(allow=False), DeviceRule(True, "c", 1, 3, "rwm")),
        )
    )

    def f(mount: str, name: str) -> str:
        return read(f"{cg.paths[str(host.cg / mount)]}/{name}")

    assert f("memory", "memory.limit_in_bytes") == str(64 << 20)
    assert f("memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert f("memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert f("memory", "memory.swappiness") == "10"
    assert f("cpu", "cpu.shares") == "512"
    assert f("cpu", "cpu.cfs_quota_us") == "50000"
    assert f("cpu", "cpu.cfs_period_us") == "100000"
    assert f("cpuset", "cpuset.cpus") == "1"
    assert f("pids", "pids.max") == "20"
    assert f("blkio", "blkio.bfq.weight") == "300"  # no blkio.weight: the bfq file
    assert f("devices", "devices.allow") == "c 1:3 rwm"  # the last allow rule written


def test_apply_v1_pids_zero_or_less_means_max(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    cg.apply(Resources(pids_limit=0))
    assert read(f"{cg.paths[str(host.cg / 'pids')]}/pids.max") == "max"


def test_apply_v1_oom_killer_and_unified_map(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    cg.apply(Resources(memory=Memory(disable_oom_killer=True)))
    assert read(f"{cg.paths[str(host.cg / 'memory')]}/memory.oom_control") == "1"
    with pytest.raises(Unsupported, match=r"linux.resources.unified\['memory.high'\].*v1"):
        cg.apply(Resources(unified={"memory.high": "1G"}))


def test_apply_unified_on_pure_v1_is_unsupported(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.mount("cgroup", host.cg / "memory", "rw,memory")
    host.membership = ["1:memory:/"]
    cg = Cgroup.plan(host.layout(), "berth/c1", "c1")
    with pytest.raises(Unsupported, match=r"linux\.resources\.unified"):
        cg.apply(Resources(unified={"memory.high": "1G"}))


def test_apply_blkio_skipped_when_the_kernel_has_no_weight_file(
    hybrid: tuple[FakeHost, FakeKernel],
) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    os.unlink(f"{cg.paths[str(host.cg / 'blkio')]}/blkio.bfq.weight")
    cg.apply(Resources(blkio_weight=300))  # no error, nothing written
    assert not os.path.exists(f"{cg.paths[str(host.cg / 'blkio')]}/blkio.weight")


def test_apply_maps_kernel_refusals_to_the_oci_field(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    limit = f"{cg.paths[str(host.cg / 'memory')]}/memory.limit_in_bytes"
    os.unlink(limit)
    os.mkdir(limit)  # writing it fails with EISDIR: stands in for EINVAL/EBUSY
    with pytest.raises(InvalidArgument) as info:
        cg.apply(Resources(memory=Memory(limit=4096)))
    assert str(info.value) == (
        "linux.resources.memory.limit: 4096 refused by the kernel: Is a directory"
    )
    os.unlink(f"{cg.paths[str(host.cg / 'cpu')]}/cpu.shares")
    with pytest.raises(Unsupported, match=r"linux.resources.cpu.shares: 2.*no cpu.shares"):
        cg.apply(Resources(cpu=CPU(shares=2)))


def test_apply_before_create_says_the_cgroup_is_missing(tmp_path: Path) -> None:
    cg = Cgroup.plan(hybrid_host(tmp_path).layout(), "berth/c1", "c1")
    with pytest.raises(FailedPrecondition, match="does not exist"):
        cg.apply(Resources(pids_limit=5))


def test_apply_checks_everything_before_writing(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    with pytest.raises(InvalidArgument, match=r"memory\.swap"):
        cg.apply(Resources(pids_limit=7, memory=Memory(limit=100 << 20, swap=50 << 20)))
    assert read(f"{cg.paths[str(host.cg / 'pids')]}/pids.max") == "max"


# --------------------------------------------------------------------------- v1 ordering


def reader(files: dict[str, str]) -> Callable[[str, str], str | None]:
    return lambda _controller, name: files.get(name)


MEMSW = {"memory.limit_in_bytes": str(64 << 20), "memory.memsw.limit_in_bytes": str(64 << 20)}


def files_written(writes: list[cgroups_v1.Write]) -> list[tuple[str, str]]:
    return [(w[1], w[2]) for w in writes]


def test_v1_memory_raising_writes_memsw_first() -> None:
    writes, _ = cgroups_v1.memory(Memory(limit=128 << 20, swap=256 << 20), reader(MEMSW))
    assert files_written(writes) == [
        ("memory.memsw.limit_in_bytes", str(256 << 20)),
        ("memory.limit_in_bytes", str(128 << 20)),
    ]


def test_v1_memory_lowering_writes_the_limit_first() -> None:
    writes, _ = cgroups_v1.memory(Memory(limit=16 << 20, swap=32 << 20), reader(MEMSW))
    assert files_written(writes) == [
        ("memory.limit_in_bytes", str(16 << 20)),
        ("memory.memsw.limit_in_bytes", str(32 << 20)),
    ]


def test_v1_memory_unlimited_also_unlimits_swap() -> None:
    writes, _ = cgroups_v1.memory(Memory(limit=-1), reader(MEMSW))
    assert files_written(writes) == [
        ("memory.memsw.limit_in_bytes", "-1"),
        ("memory.limit_in_bytes", "-1"),
    ]


def test_v1_memory_swap_rules() -> None:
    with pytest.raises(InvalidArgument, match=r"below linux\.resources\.memory\.limit"):
        cgroups_v1.memory(Memory(limit=64, swap=32), reader(MEMSW))
    no_memsw = {"memory.limit_in_bytes": "0"}
    with pytest.raises(Unsupported, match="swap accounting is off"):
        cgroups_v1.memory(Memory(limit=64, swap=128), reader(no_memsw))
    writes, notes = cgroups_v1.memory(Memory(limit=64, swap=-1), reader(no_memsw))
    assert files_written(writes) == [("memory.limit_in_bytes", "64")] and notes
    writes, notes = cgroups_v1.memory(Memory(kernel=1 << 20), reader(MEMSW))
    assert writes == [] and "deprecated" in notes[0]


def test_v1_cpu_quota_and_period_can_never_be_refused_midway() -> None:
    writes, _ = cgroups_v1.cpu(CPU(quota=20000, period=50000, burst=1000))
    assert files_written(writes) == [
        ("cpu.cfs_quota_us", "-1"),
        ("cpu.cfs_period_us", "50000"),
        ("cpu.cfs_burst_us", "1000"),
        ("cpu.cfs_quota_us", "20000"),
    ]
    writes, _ = cgroups_v1.cpu(CPU(quota=50000))
    assert files_written(writes) == [("cpu.cfs_quota_us", "50000")]


def test_v1_cpu_idle_and_shares_order() -> None:
    set_idle, _ = cgroups_v1.cpu(CPU(shares=512, idle=1))
    assert files_written(set_idle) == [("cpu.shares", "512"), ("cpu.idle", "1")]
    clear_idle, _ = cgroups_v1.cpu(CPU(shares=512, idle=0))
    assert files_written(clear_idle) == [("cpu.idle", "0"), ("cpu.shares", "512")]


def test_v1_devices_deny_all_then_rules_in_order() -> None:
    rules = (
        DeviceRule(allow=False),
        DeviceRule(allow=True, type="c", major=1, minor=None, access="rw"),
        DeviceRule(allow=False, type="b", major=None, minor=None, access="m"),
        DeviceRule(allow=True, type="c", major=136, minor=5, access="rwm"),
    )
    writes, _ = cgroups_v1.devices(rules)
    assert files_written(writes) == [
        ("devices.deny", "a"),
        ("devices.deny", "a *:* rwm"),
        ("devices.allow", "c 1:* rw"),
        ("devices.deny", "b *:* m"),
        ("devices.allow", "c 136:5 rwm"),
    ]


# --------------------------------------------------------------------------- apply v2


def test_apply_v2_writes_the_expected_values(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    cg.apply(
        Resources(
            memory=Memory(limit=64 << 20, reservation=32 << 20, swap=96 << 20, swappiness=5),
            cpu=CPU(shares=1024, quota=50000, period=100000, burst=1000, cpus="0", idle=0),
            pids_limit=-1,
            blkio_weight=500,
            devices=(DeviceRule(allow=False),),
            unified={"memory.high": "50M", "cgroup.max.depth": "3"},
        )
    )
    leaf = cg.paths[str(host.cg)]

    def f(name: str) -> str:
        return read(f"{leaf}/{name}")

    assert f("memory.max") == str(64 << 20)
    assert f("memory.low") == str(32 << 20)
    assert f("memory.swap.max") == str(32 << 20)  # swap - limit
    assert f("cpu.weight") == "39"  # runc's conversion of 1024 shares
    assert f("cpu.max") == "50000 100000"
    assert f("cpu.max.burst") == "1000"
    assert f("cpu.idle") == "0"
    assert f("cpuset.cpus") == "0"
    assert f("pids.max") == "max"
    assert f("io.weight") == str(1 + (500 - 10) * 9999 // 990)
    assert f("memory.high") == "50M"
    assert f("cgroup.max.depth") == "3"


def test_apply_v2_prefers_bfq_weight(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    leaf = cg.paths[str(host.cg)]
    write(f"{leaf}/io.bfq.weight", "default 100")
    cg.apply(Resources(blkio_weight=500))
    assert read(f"{leaf}/io.bfq.weight") == "500"


def test_apply_v2_unified_key_must_be_a_file_name(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    for key in ("../memory.max", "memory", ".hidden"):
        with pytest.raises(InvalidArgument, match="not a cgroup file name"):
            cg.apply(Resources(unified={key: "1"}))


def test_apply_v2_missing_file_enables_its_controller_then_says_unsupported(
    v2: tuple[FakeHost, FakeKernel],
) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    with pytest.raises(Unsupported, match=r"hugetlb.2MB.max"):
        cg.apply(Resources(unified={"hugetlb.2MB.max": "0"}))
    assert read(host.cg / "cgroup.subtree_control") == "+hugetlb"  # it tried, on every level


def test_v2_conversions() -> None:
    assert cgroups_v2.shares_to_weight(2) == 1
    assert cgroups_v2.shares_to_weight(1) == 1  # clamped, never 0
    assert cgroups_v2.shares_to_weight(262144) == 10000
    assert cgroups_v2.swap_max(None, -1) == -1
    assert cgroups_v2.swap_max(-1, 64) == -1
    assert cgroups_v2.swap_max(0, 64) is None
    assert cgroups_v2.swap_max(None, 64) is None
    assert cgroups_v2.swap_max(100, 64) == 36
    with pytest.raises(InvalidArgument, match="needs a memory limit"):
        cgroups_v2.swap_max(100, None)
    with pytest.raises(InvalidArgument, match="below"):
        cgroups_v2.swap_max(32, 64)


def test_v2_cpu_max_strings() -> None:
    def cpu_max(c: CPU) -> list[str]:
        return [w[2] for w in cgroups_v2.cpu(c)[0] if w[1] == "cpu.max"]

    assert cpu_max(CPU(quota=50000, period=100000)) == ["50000 100000"]
    assert cpu_max(CPU(quota=-1, period=100000)) == ["max 100000"]
    assert cpu_max(CPU(period=20000)) == ["max 20000"]
    assert cpu_max(CPU(quota=30000)) == ["30000"]
    assert cpu_max(CPU(shares=100)) == []
    with pytest.raises(Unsupported, match="realtimeRuntime"):
        cgroups_v2.cpu(CPU(realtime_runtime=1000))


def test_v2_devices_and_v1_only_memory_settings_are_notes() -> None:
    writes, notes = cgroups_v2.devices((DeviceRule(allow=False),))
    assert writes == [] and "eBPF" in notes[0]
    writes, notes = cgroups_v2.memory(Memory(swappiness=10, disable_oom_killer=True), reader({}))
    assert writes == [] and len(notes) == 2


# --------------------------------------------------------------------------- runtime ops


def test_add_process_and_pids_include_sub_cgroups(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    cg.add_process(4242)
    for path in cg.paths.values():
        assert read(f"{path}/cgroup.procs") == "4242"
    pids_leaf = cg.paths[str(host.cg / "pids")]
    kernel.mkdir(f"{pids_leaf}/sub")
    write(f"{pids_leaf}/sub/cgroup.procs", "7\n9\n")
    assert cg.pids() == [7, 9, 4242]


def test_freeze_and_thaw_v1(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)
    state = f"{cg.paths[str(host.cg / 'freezer')]}/freezer.state"
    assert not cg.is_frozen()
    cg.freeze()
    assert read(state) == "FROZEN" and cg.is_frozen()
    cg.thaw()
    assert read(state) == "THAWED" and not cg.is_frozen()


def test_freeze_v2_waits_for_frozen_and_gives_up_thawed(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    leaf = cg.paths[str(host.cg)]
    with pytest.raises(Unavailable, match="not frozen"):
        cg.freeze(timeout=0.05)  # the fake never reports "frozen 1"
    assert read(f"{leaf}/cgroup.freeze") == "0"
    write(f"{leaf}/cgroup.events", "populated 1\nfrozen 1\n")
    cg.freeze()
    assert read(f"{leaf}/cgroup.freeze") == "1" and cg.is_frozen()
    cg.thaw()
    assert read(f"{leaf}/cgroup.freeze") == "0"


def test_kill_all_v2_uses_cgroup_kill(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    cg.kill_all()
    assert read(f"{cg.paths[str(host.cg)]}/cgroup.kill") == "1"


def test_stats_v1(hybrid: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = hybrid
    cg = created(host, kernel)

    def put(mount: str, name: str, text: str) -> None:
        write(f"{cg.paths[str(host.cg / mount)]}/{name}", text)

    put("memory", "memory.usage_in_bytes", "1000\n")
    put("memory", "memory.max_usage_in_bytes", "2000\n")
    put("memory", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    put("cpuacct", "cpuacct.usage", "5000\n")
    put("cpuacct", "cpuacct.usage_user", "3000\n")
    put("cpuacct", "cpuacct.usage_sys", "2000\n")
    put("pids", "pids.current", "3\n")
    assert cg.stats() == cgroups.CgroupStats(
        memory_usage=1000,
        memory_limit=0,  # the page-rounded LONG_MAX of "no limit"
        memory_max_usage=2000,
        cpu_usage_ns=5000,
        cpu_user_ns=3000,
        cpu_system_ns=2000,
        pids_current=3,
        pids_limit=0,
        oom_kills=2,
    )
    assert cg.oom_killed()


def test_stats_v2_and_oom(v2: tuple[FakeHost, FakeKernel]) -> None:
    host, kernel = v2
    cg = created(host, kernel)
    leaf = cg.paths[str(host.cg)]
    assert not cg.oom_killed()
    write(f"{leaf}/memory.current", "4096\n")
    write(f"{leaf}/memory.max", "8192\n")
    write(f"{leaf}/cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 0\n")
    write(f"{leaf}/pids.current", "2\n")
    write(f"{leaf}/pids.max", "20\n")
    write(f"{leaf}/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    stats = cg.stats()
    assert (stats.memory_usage, stats.memory_limit, stats.memory_max_usage) == (4096, 8192, 0)
    assert (stats.cpu_usage_ns, stats.cpu_user_ns, stats.cpu_system_ns) == (10000, 6000, 4000)
    assert (stats.pids_current, stats.pids_limit, stats.oom_kills) == (2, 20, 1)
    assert cg.oom_killed()
