"""berth.runtime.rootfs (and init.join_namespaces) against a recording ``Syscalls`` fake.

Rules: nothing here reaches the kernel's mount table, namespaces or device nodes. Every mount,
pivot_root, umount and setns goes to ``fakesys.RecordingSyscalls``; the few ``os`` calls that
would change the host (mknod, chown, chroot, chdir, fchdir) are recorded through an ``os``
stand-in set on the module under test only. The rootfs is a plain directory in ``tmp_path``:
the directories and files the code creates there are real and checked. Cgroups are planned on
fake hierarchy paths; ``Cgroup.plan`` creates nothing.
"""

from __future__ import annotations

import errno
import inspect
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakesys import Call, OsProxy, RecordingSyscalls, recording_os

from berth.errors import BerthError, InvalidArgument
from berth.runtime import init, rootfs
from berth.runtime import syscalls as s
from berth.runtime.cgroups import Cgroup, CgroupLayout, Hierarchy
from berth.spec.config import Spec
from berth.spec.defaults import default_spec

NAMESPACES = {"pid", "network", "ipc", "uts", "mount"}  # the default spec's
CGROUP_BASE = s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC | s.MS_RELATIME
DEVPTS_DATA = "newinstance,ptmxmode=0666,mode=0620,gid=5"
DEFAULT_NODES = (
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
)


@dataclass
class Env:
    tmp: Path
    root: Path  # the container's rootfs
    data: Path  # a host directory to bind
    file: Path  # a host file to bind
    layout: CgroupLayout
    cgroup: Cgroup
    fake: RecordingSyscalls

    @property
    def r(self) -> str:
        return str(self.root)

    def spec(
        self,
        extra_mounts: tuple[dict[str, Any], ...] = (),
        mounts: list[dict[str, Any]] | None = None,
        linux: dict[str, Any] | None = None,
        readonly: bool = True,
    ) -> Spec:
        d = default_spec()
        d["root"] = {"path": self.r, "readonly": readonly}
        if mounts is not None:
            d["mounts"] = mounts
        d["mounts"].extend(extra_mounts)
        d["linux"].update(linux or {})
        return Spec.from_json(d)

    def prepare(
        self, spec: Spec, namespaces: set[str] = NAMESPACES, layout: CgroupLayout | None = None
    ) -> None:
        layout = layout or self.layout
        cgroup = Cgroup.plan(layout, "", "c1")
        rootfs.prepare(
            self.fake,
            spec,
            self.r,
            layout,
            cgroup,
            namespaces,
            before_cgroups=lambda: self.fake.note("before_cgroups"),
        )


def v1_layout(tmp: Path) -> CgroupLayout:
    host = tmp / "host-cgroup"
    return CgroupLayout(
        "v1",
        (
            Hierarchy(1, str(host / "memory"), ("memory",), "memory", "/"),
            Hierarchy(1, str(host / "cpu,cpuacct"), ("cpu", "cpuacct"), "cpu,cpuacct", "/"),
        ),
    )


def v2_layout(tmp: Path) -> CgroupLayout:
    mountpoint = str(tmp / "host-cgroup2")
    return CgroupLayout("v2", (Hierarchy(2, mountpoint, ("memory", "pids"), "", "/user"),))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    root = tmp_path / "bundle" / "rootfs"
    root.mkdir(parents=True)
    data = tmp_path / "hostdata"
    data.mkdir()
    file = tmp_path / "hostfile"
    file.write_text("x")
    layout = v1_layout(tmp_path)
    fake = RecordingSyscalls()
    # mknod/chown would make real nodes (these tests may run as root): record them instead
    monkeypatch.setattr(rootfs, "os", recording_os(fake, stubbed=("mknod", "chown")))
    return Env(tmp_path, root, data, file, layout, Cgroup.plan(layout, "", "c1"), fake)


# --------------------------------------------------------------------------- the fake itself


def test_fake_overrides_every_syscall_with_the_same_signature() -> None:
    public = [n for n, v in vars(s.Syscalls).items() if callable(v) and not n.startswith("_")]
    assert "mount" in public and "setns" in public
    for name in public:
        assert name in vars(RecordingSyscalls), f"RecordingSyscalls lacks {name}: it would run"
        assert inspect.signature(getattr(RecordingSyscalls, name)) == inspect.signature(
            getattr(s.Syscalls, name)
        ), name


def test_fake_records_and_fails_on_demand() -> None:
    fake = RecordingSyscalls(clone_result=42)
    fake.fail("mount", errno.EPERM, match=lambda src, target, *_: target == "/b", times=1)
    fake.mount(None, "/a", None, 0, None)
    with pytest.raises(PermissionError):
        fake.mount(None, "/b", None, 0, None)
    fake.mount(None, "/b", None, 0, None)  # times=1: only once
    assert fake.clone(0) == 42
    assert fake.prctl(s.PR_SET_DUMPABLE, 1) == 0
    assert [c.args[1] for c in fake.named("mount")] == ["/a", "/b", "/b"]
    assert fake.calls[-1] == Call("prctl", (s.PR_SET_DUMPABLE, 1, 0, 0, 0))


# --------------------------------------------------------------------------- prepare


def expected_default_mounts(env: Env) -> list[tuple[Any, ...]]:
    r = env.r
    cg = f"{r}/sys/fs/cgroup"
    mem, cpu = (h.mountpoint for h in env.layout.hierarchies)
    return [
        (None, "/", None, s.MS_SLAVE | s.MS_REC, None),
        (None, rootfs._mountpoint_of(r), None, s.MS_PRIVATE, None),
        (r, r, None, s.MS_BIND | s.MS_REC, None),
        ("proc", f"{r}/proc", "proc", 0, None),
        ("tmpfs", f"{r}/dev", "tmpfs", s.MS_NOSUID | s.MS_STRICTATIME, "mode=755,size=65536k"),
        ("devpts", f"{r}/dev/pts", "devpts", s.MS_NOSUID | s.MS_NOEXEC, DEVPTS_DATA),
        (
            "shm",
            f"{r}/dev/shm",
            "tmpfs",
            s.MS_NOSUID | s.MS_NOEXEC | s.MS_NODEV,
            "mode=1777,size=65536k",
        ),
        ("mqueue", f"{r}/dev/mqueue", "mqueue", s.MS_NOSUID | s.MS_NOEXEC | s.MS_NODEV, None),
        (
            "sysfs",
            f"{r}/sys",
            "sysfs",
            s.MS_NOSUID | s.MS_NOEXEC | s.MS_NODEV | s.MS_RDONLY,
            None,
        ),
        # /sys/fs/cgroup on v1 without a cgroup namespace: a tmpfs, each hierarchy's own
        # cgroup bound into it, then everything remounted read-only
        ("tmpfs", cg, "tmpfs", CGROUP_BASE, "mode=755"),
        (f"{mem}/c1", f"{cg}/memory", None, s.MS_BIND, None),
        (None, f"{cg}/memory", None, s.MS_BIND | s.MS_REMOUNT | CGROUP_BASE, None),
        (f"{cpu}/c1", f"{cg}/cpu,cpuacct", None, s.MS_BIND, None),
        (None, f"{cg}/cpu,cpuacct", None, s.MS_BIND | s.MS_REMOUNT | CGROUP_BASE, None),
        (None, f"{cg}/memory", None, s.MS_BIND | s.MS_REMOUNT | s.MS_RDONLY | CGROUP_BASE, None),
        (
            None,
            f"{cg}/cpu,cpuacct",
            None,
            s.MS_BIND | s.MS_REMOUNT | s.MS_RDONLY | CGROUP_BASE,
            None,
        ),
        (None, cg, None, s.MS_REMOUNT | s.MS_RDONLY | CGROUP_BASE, "mode=755"),
    ]


def bind_mounts(env: Env) -> tuple[dict[str, Any], ...]:
    return (
        {"destination": "/data", "type": "bind", "source": str(env.data), "options": ["rbind"]},
        {
            "destination": "/etc/hostfile",
            "type": "bind",
            "source": str(env.file),
            "options": ["bind", "ro"],
        },
    )


def test_prepare_default_spec_mount_sequence(env: Env) -> None:
    env.prepare(env.spec(extra_mounts=bind_mounts(env)))
    r = env.r
    assert env.fake.mounts() == [
        *expected_default_mounts(env),
        (str(env.data), f"{r}/data", None, s.MS_BIND | s.MS_REC, None),
        # "ro" on a bind: the bind, then a remount that applies it
        (str(env.file), f"{r}/etc/hostfile", None, s.MS_BIND, None),
        (None, f"{r}/etc/hostfile", None, s.MS_BIND | s.MS_REMOUNT | s.MS_RDONLY, None),
    ]
    # only mounts (and the recorded callback / os calls) happened: no pivot, umount, setns
    assert {c.name for c in env.fake.calls} == {"mount", "before_cgroups", "os.mknod", "os.chown"}


def test_prepare_parent_mount_is_an_ancestor_of_the_rootfs(env: Env) -> None:
    env.prepare(env.spec())
    parent = env.fake.mounts()[1][1]
    assert parent == "/" or (env.r + "/").startswith(parent.rstrip("/") + "/")


def test_prepare_mount_targets_are_inside_the_rootfs(env: Env) -> None:
    env.prepare(env.spec(extra_mounts=bind_mounts(env)))
    targets = [m[1] for m in env.fake.mounts()[2:]]
    assert targets
    for target in targets:
        assert target == env.r or target.startswith(env.r + "/"), target


def test_prepare_creates_the_mount_targets(env: Env) -> None:
    env.prepare(env.spec(extra_mounts=bind_mounts(env)))
    for sub in (
        "proc",
        "dev",
        "dev/pts",
        "dev/shm",
        "dev/mqueue",
        "sys",
        "sys/fs/cgroup",
        "sys/fs/cgroup/memory",
        "sys/fs/cgroup/cpu,cpuacct",
        "data",
    ):
        assert (env.root / sub).is_dir(), sub
    # a file bound gets a file to be bound on
    target = env.root / "etc" / "hostfile"
    assert target.is_file() and not target.is_symlink()
    assert target.read_text() == ""  # created empty, never a copy of the source


def test_before_cgroups_runs_once_right_before_the_first_cgroup_mount(env: Env) -> None:
    env.prepare(env.spec(extra_mounts=bind_mounts(env)))
    calls = env.fake.calls
    assert [c.name for c in calls].count("before_cgroups") == 1
    i = calls.index(Call("before_cgroups", ()))
    assert calls[i - 1].name == "mount" and calls[i - 1].args[2] == "sysfs"
    assert calls[i + 1] == Call(
        "mount", ("tmpfs", f"{env.r}/sys/fs/cgroup", "tmpfs", CGROUP_BASE, "mode=755")
    )


def test_before_cgroups_not_called_without_a_cgroup_mount(env: Env) -> None:
    env.prepare(env.spec(mounts=[{"destination": "/proc", "type": "proc", "source": "proc"}]))
    assert not env.fake.named("before_cgroups")


@pytest.mark.parametrize(
    ("propagation", "first"),
    [
        ("", s.MS_SLAVE | s.MS_REC),
        ("rslave", s.MS_SLAVE | s.MS_REC),
        ("private", s.MS_PRIVATE),
        ("rprivate", s.MS_PRIVATE | s.MS_REC),
        # shared/unbindable are applied by finish(); until then the host must not see ours
        ("shared", s.MS_SLAVE | s.MS_REC),
        ("rshared", s.MS_SLAVE | s.MS_REC),
        ("unbindable", s.MS_SLAVE | s.MS_REC),
    ],
)
def test_prepare_first_call_sets_root_propagation(env: Env, propagation: str, first: int) -> None:
    env.prepare(env.spec(mounts=[], linux={"rootfsPropagation": propagation}))
    assert env.fake.mounts()[0] == (None, "/", None, first, None)


def test_prepare_cgroup_namespace_mounts_cgroupfs_itself(env: Env) -> None:
    env.prepare(env.spec(), namespaces=NAMESPACES | {"cgroup"})
    cg = f"{env.r}/sys/fs/cgroup"
    cgroup_mounts = [m for m in env.fake.mounts() if m[1].startswith(cg)]
    assert cgroup_mounts[:3] == [
        ("tmpfs", cg, "tmpfs", CGROUP_BASE, "mode=755"),
        ("cgroup", f"{cg}/memory", "cgroup", CGROUP_BASE, "memory"),
        ("cgroup", f"{cg}/cpu,cpuacct", "cgroup", CGROUP_BASE, "cpu,cpuacct"),
    ]


def test_prepare_cgroup_namespace_refused_falls_back_to_a_bind(env: Env) -> None:
    env.fake.fail("mount", errno.EPERM, match=lambda src, *_: src == "cgroup")
    env.prepare(env.spec(), namespaces=NAMESPACES | {"cgroup"})
    cg = f"{env.r}/sys/fs/cgroup"
    mem = env.layout.hierarchies[0].mountpoint
    mounts = env.fake.mounts()
    i = mounts.index(("cgroup", f"{cg}/memory", "cgroup", CGROUP_BASE, "memory"))
    assert mounts[i + 1] == (f"{mem}/c1", f"{cg}/memory", None, s.MS_BIND, None)


@pytest.mark.parametrize("cgroupns", [False, True])
def test_prepare_cgroup_v2(env: Env, cgroupns: bool) -> None:
    layout = v2_layout(env.tmp)
    env.prepare(env.spec(), NAMESPACES | ({"cgroup"} if cgroupns else set()), layout)
    cg = f"{env.r}/sys/fs/cgroup"
    remount_ro = (None, cg, None, s.MS_BIND | s.MS_REMOUNT | s.MS_RDONLY | CGROUP_BASE, None)
    if cgroupns:
        expected = [("cgroup2", cg, "cgroup2", CGROUP_BASE, None), remount_ro]
    else:
        # the caller's parent cgroup ("/" for own_path "/user") + the container id
        host = f"{layout.hierarchies[0].mountpoint}/c1"
        expected = [
            (host, cg, None, s.MS_BIND, None),
            (None, cg, None, s.MS_BIND | s.MS_REMOUNT | CGROUP_BASE, None),
            remount_ro,
        ]
    assert [m for m in env.fake.mounts() if m[1] == cg] == expected
    assert not (env.root / "sys" / "fs" / "cgroup" / "host-cgroup2").exists()


def test_prepare_without_network_or_ipc_namespace_binds_sys_and_mqueue(env: Env) -> None:
    env.prepare(env.spec(), namespaces={"pid", "mount"})
    r = env.r
    flags = s.MS_NOSUID | s.MS_NOEXEC | s.MS_NODEV
    mounts = env.fake.mounts()
    assert [m for m in mounts if m[1] in (f"{r}/sys", f"{r}/dev/mqueue")] == [
        ("/dev/mqueue", f"{r}/dev/mqueue", None, s.MS_BIND, None),
        (None, f"{r}/dev/mqueue", None, s.MS_BIND | s.MS_REMOUNT | flags, None),
        ("/sys", f"{r}/sys", None, s.MS_BIND | s.MS_REC, None),
        (None, f"{r}/sys", None, s.MS_BIND | s.MS_REMOUNT | flags | s.MS_RDONLY, None),
    ]
    assert not [m for m in mounts if m[2] in ("sysfs", "mqueue")]


def test_prepare_recursive_and_propagation_options(env: Env) -> None:
    extra = (
        {
            "destination": "/data",
            "type": "bind",
            "source": str(env.data),
            "options": ["rbind", "rro", "rnosuid", "rshared"],
        },
    )
    env.prepare(env.spec(mounts=[], extra_mounts=extra))
    target = f"{env.r}/data"
    assert env.fake.calls[-2:] == [
        Call(
            "mount_setattr_recursive",
            (target, s.MOUNT_ATTR_RDONLY | s.MOUNT_ATTR_NOSUID, 0),
        ),
        Call("mount", (None, target, None, s.MS_SHARED | s.MS_REC, None)),
    ]


def test_prepare_symlink_to_host_path_resolves_inside_the_rootfs(env: Env) -> None:
    outside = env.tmp / "outside"
    outside.mkdir()
    (env.root / "evil").symlink_to("/etc")
    (env.root / "sneaky").symlink_to(str(outside))  # absolute, to a real dir outside
    (env.root / "dotdot").symlink_to("../../../../../../../../outside")
    mounts = [
        {"destination": dest, "type": "tmpfs", "source": "tmpfs"}
        for dest in ("/evil", "/sneaky/inner", "/dotdot/inner")
    ]
    env.prepare(env.spec(mounts=mounts))
    r = env.r
    assert [m[1] for m in env.fake.mounts()[3:]] == [
        f"{r}/etc",
        f"{r}{outside}/inner",
        f"{r}/outside/inner",
    ]
    assert list(outside.iterdir()) == []  # nothing created outside the rootfs
    assert (env.root / "etc").is_dir()
    assert (env.root / str(outside).lstrip("/") / "inner").is_dir()
    assert (env.root / "outside" / "inner").is_dir()


def test_prepare_symlink_loop_is_refused(env: Env) -> None:
    (env.root / "loop").symlink_to("/loop")
    mounts = [{"destination": "/loop/x", "type": "tmpfs", "source": "tmpfs"}]
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        env.prepare(env.spec(mounts=mounts))
    assert len(env.fake.mounts()) == 3  # propagation, parent, rootfs bind: nothing more


def test_prepare_bind_remount_refused_keeps_the_locked_flags(env: Env) -> None:
    # in a user namespace the kernel refuses a remount that would clear a locked flag: the
    # remount is retried with the flags the mount already has (except ro, which is wanted)
    target = f"{env.r}/data"
    env.fake.fail(
        "mount", errno.EPERM, match=lambda src, t, *_: src is None and t == target, times=1
    )
    extra = (
        {
            "destination": "/data",
            "type": "bind",
            "source": str(env.data),
            "options": ["rbind", "ro", "nosuid"],
        },
    )
    env.prepare(env.spec(mounts=[], extra_mounts=extra), namespaces={"mount"})
    ro = s.MS_BIND | s.MS_REMOUNT | s.MS_RDONLY | s.MS_NOSUID
    locked = rootfs._locked_flags(target) & ~s.MS_RDONLY
    assert [m for m in env.fake.mounts() if m[1] == target] == [
        (str(env.data), target, None, s.MS_BIND | s.MS_REC, None),
        (None, target, None, ro, None),
        (None, target, None, ro | locked, None),
    ]


def test_before_cgroups_precedes_the_first_of_several_cgroup_mounts(env: Env) -> None:
    second = {
        "destination": "/cg2",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime"],
    }
    env.prepare(env.spec(extra_mounts=(second,)))
    names = [c.name for c in env.fake.calls]
    first = names.index("before_cgroups")
    assert env.fake.calls[first + 1].args[1] == f"{env.r}/sys/fs/cgroup"


def test_prepare_bind_source_must_be_absolute_and_exist(env: Env) -> None:
    relative = {"destination": "/x", "type": "bind", "source": "rel/dir", "options": ["bind"]}
    with pytest.raises(InvalidArgument, match=r"^mounts\[0\]\.source: .*must be absolute"):
        env.prepare(env.spec(mounts=[relative]))
    missing = {**relative, "source": str(env.tmp / "nope")}
    with pytest.raises(InvalidArgument, match=r"^mounts\[1\]\.source: .*does not exist"):
        env.prepare(env.spec(mounts=[{"destination": "/proc", "type": "proc"}, missing]))


def test_prepare_mount_failure_names_the_mount(env: Env) -> None:
    env.fake.fail("mount", errno.EPERM, match=lambda src, *_: src == "shm")
    with pytest.raises(BerthError, match=r"^mounts\[3\] \(/dev/shm\): "):
        env.prepare(env.spec())
    assert env.fake.mounts()[-1][0] == "shm"  # stopped there


def test_prepare_unknown_filesystem_is_invalid_argument(env: Env) -> None:
    env.fake.fail("mount", errno.ENODEV, match=lambda src, *_: src == "mqueue")
    with pytest.raises(InvalidArgument, match=r"^mounts\[4\]\.type: .*'mqueue'"):
        env.prepare(env.spec())


def test_prepare_devpts_retries_without_gid_when_unmapped(env: Env) -> None:
    env.fake.fail("mount", errno.EOVERFLOW, match=lambda src, *_: src == "devpts", times=1)
    env.prepare(env.spec())
    devpts = [m for m in env.fake.mounts() if m[2] == "devpts"]
    flags = s.MS_NOSUID | s.MS_NOEXEC
    assert devpts == [
        ("devpts", f"{env.r}/dev/pts", "devpts", flags, DEVPTS_DATA),
        ("devpts", f"{env.r}/dev/pts", "devpts", flags, "newinstance,ptmxmode=0666,mode=0620"),
    ]


# --------------------------------------------------------------------------- devices


def test_prepare_mknods_default_and_configured_devices(env: Env) -> None:
    fuse = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600}
    fuse |= {"uid": 1, "gid": 2}
    env.prepare(env.spec(linux={"devices": [fuse]}))
    r = env.r
    expected = []
    for path, major, minor in DEFAULT_NODES:
        expected += [
            Call("os.mknod", (f"{r}{path}", stat.S_IFCHR | 0o666, os.makedev(major, minor))),
            Call("os.chown", (f"{r}{path}", 0, 0)),
        ]
    expected += [
        Call("os.mknod", (f"{r}/dev/fuse", stat.S_IFCHR | 0o600, os.makedev(10, 229))),
        Call("os.chown", (f"{r}/dev/fuse", 1, 2)),
    ]
    assert env.fake.named("os.mknod", "os.chown") == expected
    # devices come after every configured mount
    names = [c.name for c in env.fake.calls]
    assert max(i for i, n in enumerate(names) if n == "mount") < names.index("os.mknod")
    # and /dev gets its symlinks
    assert os.readlink(env.root / "dev" / "fd") == "/proc/self/fd"
    assert os.readlink(env.root / "dev" / "stderr") == "/proc/self/fd/2"
    assert os.readlink(env.root / "dev" / "ptmx") == "pts/ptmx"


def test_prepare_without_fresh_dev_makes_only_configured_devices(env: Env) -> None:
    fuse = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}
    proc = {"destination": "/proc", "type": "proc", "source": "proc"}
    env.prepare(env.spec(mounts=[proc], linux={"devices": [fuse]}))
    assert [c.args[0] for c in env.fake.named("os.mknod")] == [f"{env.r}/dev/fuse"]
    assert not (env.root / "dev" / "fd").is_symlink()


def test_prepare_in_user_namespace_binds_host_device_nodes(env: Env) -> None:
    env.prepare(env.spec(), namespaces=NAMESPACES | {"user"})
    r = env.r
    assert not env.fake.named("os.mknod", "os.chown")
    device_mounts = [m for m in env.fake.mounts() if m[0] in {p for p, _, _ in DEFAULT_NODES}]
    assert device_mounts == [(p, f"{r}{p}", None, s.MS_BIND, None) for p, _, _ in DEFAULT_NODES]
    for path, _, _ in DEFAULT_NODES:
        target = env.root / path.lstrip("/")
        assert target.is_file()  # an empty file to bind the node on


def test_device_creation_failure_names_the_field(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, *args: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    monkeypatch.setattr(rootfs, "os", OsProxy({"mknod": refuse}))
    with pytest.raises(BerthError, match=r"^linux\.devices: Operation not permitted .*/dev/null"):
        env.prepare(env.spec())


# --------------------------------------------------------------------------- finish


@pytest.fixture
def after_pivot(tmp_path: Path) -> dict[str, Path]:
    """Absolute paths as finish() sees them after pivot_root, made in tmp_path."""
    paths = {
        "masked_dir": tmp_path / "proc" / "acpi",
        "masked_file": tmp_path / "proc" / "kcore",
        "masked_missing": tmp_path / "proc" / "nope",
        "ro_dir": tmp_path / "proc" / "sys",
        "ro_file": tmp_path / "proc" / "sysrq-trigger",
        "ro_missing": tmp_path / "proc" / "gone",
    }
    paths["masked_dir"].mkdir(parents=True)
    paths["masked_file"].write_text("")
    paths["ro_dir"].mkdir()
    paths["ro_file"].write_text("")
    return paths


def finish_spec(p: dict[str, Path], readonly: bool, propagation: str = "") -> Spec:
    d = default_spec()
    d["root"] = {"path": "rootfs", "readonly": readonly}
    d["linux"]["maskedPaths"] = [str(p[k]) for k in ("masked_dir", "masked_file", "masked_missing")]
    d["linux"]["readonlyPaths"] = [str(p[k]) for k in ("ro_dir", "ro_file", "ro_missing")]
    if propagation:
        d["linux"]["rootfsPropagation"] = propagation
    return Spec.from_json(d)


def test_finish_masks_readonly_paths_root_and_propagation(after_pivot: dict[str, Path]) -> None:
    p = {k: str(v) for k, v in after_pivot.items()}
    fake = RecordingSyscalls()
    # the kernel's answer for a path that does not exist: skipped
    fake.fail("mount", errno.ENOENT, match=lambda src, target, *_: target == p["masked_missing"])
    rootfs.finish(fake, finish_spec(after_pivot, readonly=True, propagation="shared"))
    ro = s.MS_BIND | s.MS_REMOUNT | s.MS_REC | s.MS_RDONLY
    locked_dir = rootfs._locked_flags(p["ro_dir"])
    locked_file = rootfs._locked_flags(p["ro_file"])
    assert fake.mounts() == [
        ("tmpfs", p["masked_dir"], "tmpfs", s.MS_RDONLY, None),
        ("/dev/null", p["masked_file"], None, s.MS_BIND, None),
        ("/dev/null", p["masked_missing"], None, s.MS_BIND, None),  # refused, ignored
        (p["ro_dir"], p["ro_dir"], None, s.MS_BIND | s.MS_REC, None),
        (None, p["ro_dir"], None, ro | locked_dir, None),
        (p["ro_file"], p["ro_file"], None, s.MS_BIND | s.MS_REC, None),
        (None, p["ro_file"], None, ro | locked_file, None),
        # ro_missing: not there, not touched
        (None, "/", None, ro | rootfs._locked_flags("/"), None),
        (None, "/", None, s.MS_SHARED, None),
    ]
    assert [c.name for c in fake.calls] == ["mount"] * 9


def test_finish_writable_root_without_propagation(after_pivot: dict[str, Path]) -> None:
    fake = RecordingSyscalls()
    rootfs.finish(fake, finish_spec(after_pivot, readonly=False))
    assert all(m[1] != "/" for m in fake.mounts())


@pytest.mark.parametrize(
    ("propagation", "flag"),
    [("rshared", s.MS_SHARED | s.MS_REC), ("unbindable", s.MS_UNBINDABLE), ("slave", s.MS_SLAVE)],
)
def test_finish_applies_root_propagation_last(
    after_pivot: dict[str, Path], propagation: str, flag: int
) -> None:
    fake = RecordingSyscalls()
    rootfs.finish(fake, finish_spec(after_pivot, readonly=False, propagation=propagation))
    assert fake.mounts()[-1] == (None, "/", None, flag, None)


def test_finish_mask_refused_names_the_field(after_pivot: dict[str, Path]) -> None:
    fake = RecordingSyscalls()
    fake.fail("mount", errno.EPERM, match=lambda src, *_: src == "/dev/null")
    with pytest.raises(BerthError, match=r"^linux\.maskedPaths: .*/proc/kcore: "):
        rootfs.finish(fake, finish_spec(after_pivot, readonly=True))


def test_finish_readonly_refused_names_the_field(after_pivot: dict[str, Path]) -> None:
    fake = RecordingSyscalls()
    fake.fail("mount", errno.EPERM, match=lambda src, *_: src == str(after_pivot["ro_dir"]))
    with pytest.raises(BerthError, match=r"^linux\.readonlyPaths: .*/proc/sys: "):
        rootfs.finish(fake, finish_spec(after_pivot, readonly=True))


# --------------------------------------------------------------------------- pivot


@pytest.fixture
def pivot_os(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingSyscalls]:
    """rootfs.os records chdir/fchdir/chroot (fchdir as the path of its fd) and close."""
    fake = RecordingSyscalls()
    opened: dict[int, str] = {}

    def open_(path: str, flags: int, *rest: Any) -> int:
        fd = os.open(path, flags, *rest)
        opened[fd] = path
        return fd

    def close(fd: int) -> None:
        fake.note("os.close", opened.get(fd, fd))
        os.close(fd)
        opened.pop(fd, None)

    monkeypatch.setattr(
        rootfs,
        "os",
        OsProxy(
            {
                "open": open_,
                "close": close,
                "fchdir": lambda fd: fake.note("os.fchdir", opened[fd]),
                "chdir": lambda path: fake.note("os.chdir", path),
                "chroot": lambda path: fake.note("os.chroot", path),
            }
        ),
    )
    yield fake
    leaked = list(opened)
    for fd in leaked:
        os.close(fd)
    assert not leaked, "pivot left file descriptors open"


def test_pivot_root(tmp_path: Path, pivot_os: RecordingSyscalls) -> None:
    rootfs.pivot(pivot_os, str(tmp_path), no_pivot=False)
    assert pivot_os.calls == [
        Call("os.fchdir", (str(tmp_path),)),
        Call("pivot_root", (".", ".")),
        Call("os.fchdir", ("/",)),  # the old root, stacked under the new one
        Call("mount", (None, ".", None, s.MS_SLAVE | s.MS_REC, None)),
        Call("umount2", (".", s.MNT_DETACH)),
        Call("os.chdir", ("/",)),
        Call("os.close", ("/",)),
        Call("os.close", (str(tmp_path),)),
    ]


def test_pivot_root_failure_closes_its_fds(tmp_path: Path, pivot_os: RecordingSyscalls) -> None:
    pivot_os.fail("pivot_root", errno.EINVAL)
    with pytest.raises(OSError, match="pivot_root"):
        rootfs.pivot(pivot_os, str(tmp_path), no_pivot=False)
    assert [c.name for c in pivot_os.calls] == ["os.fchdir", "pivot_root", "os.close", "os.close"]


def test_no_pivot_moves_and_chroots(tmp_path: Path, pivot_os: RecordingSyscalls) -> None:
    rootfs.pivot(pivot_os, str(tmp_path), no_pivot=True)
    assert pivot_os.calls == [
        Call("os.chdir", (str(tmp_path),)),
        Call("mount", (str(tmp_path), "/", None, s.MS_MOVE, None)),
        Call("os.chroot", (".",)),
        Call("os.chdir", ("/",)),
    ]


# --------------------------------------------------------------------------- join_namespaces


@pytest.fixture
def ns_fds(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RecordingSyscalls, dict[str, int]]]:
    """One /dev/null fd per namespace type; init.os records close."""
    fake = RecordingSyscalls()
    fds = {ns: os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for ns in init.JOIN_ORDER}
    names = {fd: ns for ns, fd in fds.items()}

    def close(fd: int) -> None:
        fake.note("os.close", names[fd])
        os.close(fd)

    monkeypatch.setattr(init, "os", OsProxy({"close": close}))
    yield fake, fds
    closed = {c.args[0] for c in fake.named("os.close")}
    for ns, fd in fds.items():
        if ns not in closed:
            os.close(fd)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


def test_join_namespaces_user_first_mount_last(
    ns_fds: tuple[RecordingSyscalls, dict[str, int]],
) -> None:
    fake, fds = ns_fds
    join = {"mount": fds["mount"], "user": fds["user"], "network": fds["network"]}
    init.join_namespaces(fake, join)
    assert fake.calls == [
        Call("setns", (fds["user"], s.CLONE_NEWUSER)),
        Call("os.close", ("user",)),
        Call("setns", (fds["network"], s.CLONE_NEWNET)),
        Call("os.close", ("network",)),
        Call("setns", (fds["mount"], s.CLONE_NEWNS)),
        Call("os.close", ("mount",)),
    ]
    assert not any(is_open(fd) for fd in join.values())
    assert is_open(fds["ipc"])  # not asked for: left alone


def test_join_namespaces_every_type_in_order(
    ns_fds: tuple[RecordingSyscalls, dict[str, int]],
) -> None:
    fake, fds = ns_fds
    init.join_namespaces(fake, dict(reversed(fds.items())))
    assert fake.named("setns") == [
        Call("setns", (fds[ns], s.NAMESPACE_FLAGS[ns])) for ns in init.JOIN_ORDER
    ]
    assert init.JOIN_ORDER[0] == "user" and init.JOIN_ORDER[-1] == "mount"
    assert set(init.JOIN_ORDER) == set(s.NAMESPACE_FLAGS) - {"pid"}


def test_join_namespaces_failure_names_the_namespace(
    ns_fds: tuple[RecordingSyscalls, dict[str, int]],
) -> None:
    fake, fds = ns_fds
    fake.fail("setns", errno.EPERM, match=lambda fd, nstype: nstype == s.CLONE_NEWNET)
    join = {"mount": fds["mount"], "user": fds["user"], "network": fds["network"]}
    with pytest.raises(BerthError, match=r"^linux\.namespaces: joining the network namespace: "):
        init.join_namespaces(fake, join)
    assert [c.args[1] for c in fake.named("setns")] == [s.CLONE_NEWUSER, s.CLONE_NEWNET]


@pytest.mark.parametrize("has_kcore", [True, False])
def test_setup_dev_links_core_only_where_the_kernel_has_kcore(
    tmp_path: Path, has_kcore: bool
) -> None:
    """runc's /dev symlinks; /dev/core -> /proc/kcore only when that exists (a kernel built
    without CONFIG_PROC_KCORE has none, and a dangling link is not made)."""
    root = tmp_path / "rootfs"
    (root / "dev" / "pts").mkdir(parents=True)
    kcore = tmp_path / "kcore"
    if has_kcore:
        kcore.write_text("")
    rootfs.setup_dev(str(root), kcore=str(kcore))
    links = {p.name: os.readlink(p) for p in (root / "dev").iterdir() if p.is_symlink()}
    expected = {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
        "ptmx": "pts/ptmx",
    }
    assert links == ({**expected, "core": "/proc/kcore"} if has_kcore else expected)
