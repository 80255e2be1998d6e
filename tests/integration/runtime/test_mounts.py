"""Mounts, the cgroup namespace, the session keyring and the ``--log`` flags, for every runtime.

Rules: as in test_isolation.py, a probe inside the container shows what the runtime did (the
container's own /proc/self/mountinfo, /proc/self/cgroup, /proc/keys) and the expectations come
from the bundle's config or from what runc does with the same bundle. A bind mount's source is
a directory of the test's own work dir, or a host tree mounted read-only; a write a runtime
should have refused lands in that work dir, never elsewhere on the host, and the test checks it
did not land. The ``runtime`` fixture force-deletes and leak-checks every container.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers_extra import ok, sections

pytestmark = pytest.mark.root


class MountEntry:
    """One line of /proc/self/mountinfo: mount point, per-mount and super-block options,
    the optional (propagation) fields and the filesystem type."""

    def __init__(self, line: str) -> None:
        left, right = line.split(" - ", 1)
        fields = left.split()
        self.point = fields[4].replace("\\040", " ")
        self.options = set(fields[5].split(","))
        self.optional = fields[6:]
        self.fstype, _source, super_options = right.split()[:3]
        self.super_options = set(super_options.split(","))

    @property
    def shared(self) -> bool:
        return any(f.startswith("shared:") for f in self.optional)


def _mountinfo(text: str) -> dict[str, MountEntry]:
    """The last (topmost) mount at each point."""
    entries = [MountEntry(line) for line in text.splitlines() if " - " in line]
    return {e.point: e for e in entries}


def _add_mounts(*mounts: dict[str, Any], propagation: str | None = None) -> Any:
    def edit(config: dict[str, Any]) -> None:
        config["root"]["readonly"] = False
        config["mounts"] += list(mounts)
        if propagation is not None:
            config["linux"]["rootfsPropagation"] = propagation

    return edit


# --------------------------------------------------------------------------- mounts


def test_bind_mount_options_and_read_only_remount(runtime, bundle, rt_workdir):
    """A bind mount with ro,nosuid,nodev,noexec: the flags need a remount after the bind
    (the kernel ignores them on MS_BIND), so seeing them proves that remount happened."""
    source = rt_workdir / "bind-source"
    source.mkdir()
    (source / "file").write_text("from the host\n")
    ro = {
        "destination": "/mnt/ro",
        "type": "bind",
        "source": str(source),
        "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
    }
    rw = {"destination": "/mnt/rw", "type": "bind", "source": str(source), "options": ["bind"]}
    b = bundle.sh(
        "echo @@read; cat /mnt/ro/file; echo @@write; true > /mnt/ro/new && echo WROTE; "
        "echo @@rw; echo inside > /mnt/rw/made && echo WROTE; "
        "echo @@mountinfo; cat /proc/self/mountinfo",
        _add_mounts(ro, rw),
    )
    proc = runtime.run(b, runtime.new_id())
    out = sections(ok(proc))
    assert out["read"] == "from the host\n", out
    assert "WROTE" not in out["write"], out
    assert "Read-only file system" in proc.stderr, proc.stderr
    assert not (source / "new").exists()
    assert out["rw"] == "WROTE\n", out  # control: the same source bound without ro is writable
    assert (source / "made").read_text() == "inside\n"
    mounts = _mountinfo(out["mountinfo"])
    assert {"ro", "nosuid", "nodev", "noexec"} <= mounts["/mnt/ro"].options, out["mountinfo"]
    assert "rw" in mounts["/mnt/rw"].options and "ro" not in mounts["/mnt/rw"].options


def test_rbind_brings_the_submounts_and_bind_does_not(runtime, bundle):
    """/sys/fs/cgroup has a mount per hierarchy below it: rbind carries them, bind does not."""
    hierarchies = {e.point for e in _mountinfo(Path("/proc/self/mountinfo").read_text()).values()}
    below = sorted(p for p in hierarchies if p.startswith("/sys/fs/cgroup/"))
    assert below, "this host has no mount below /sys/fs/cgroup"
    common = {"type": "bind", "source": "/sys/fs/cgroup"}
    b = bundle.sh(
        "cat /proc/self/mountinfo",
        _add_mounts(
            {**common, "destination": "/mnt/r", "options": ["rbind", "ro"]},
            {**common, "destination": "/mnt/b", "options": ["bind", "ro"]},
        ),
    )
    mounts = _mountinfo(ok(runtime.run(b, runtime.new_id())))
    inside_r = sorted(p.removeprefix("/mnt/r") for p in mounts if p.startswith("/mnt/r/"))
    assert inside_r == [p.removeprefix("/sys/fs/cgroup") for p in below], sorted(mounts)
    assert not [p for p in mounts if p.startswith("/mnt/b/")], sorted(mounts)
    assert "ro" in mounts["/mnt/r"].options and "ro" in mounts["/mnt/b"].options


def test_tmpfs_data_and_flags(runtime, bundle):
    tmpfs = {
        "destination": "/mnt/small",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "strictatime", "size=1m", "mode=1770"],
    }
    b = bundle.sh(
        "echo @@stat; stat -c %a /mnt/small; echo @@fill; "
        "dd if=/dev/zero of=/mnt/small/big bs=64k count=32 2>&1 >/dev/null; "
        "echo @@exec; cp /bin/busybox /mnt/small/bb 2>/dev/null; /mnt/small/bb true && echo RAN; "
        "echo @@mountinfo; cat /proc/self/mountinfo",
        _add_mounts(tmpfs),
    )
    out = sections(ok(runtime.run(b, runtime.new_id())))
    assert out["stat"].split() == ["1770"], out
    assert "No space left on device" in out["fill"], out  # 2 MiB does not fit in size=1m
    assert "RAN" not in out["exec"], out
    entry = _mountinfo(out["mountinfo"])["/mnt/small"]
    assert entry.fstype == "tmpfs"
    assert {"nosuid", "nodev", "noexec"} <= entry.options, out["mountinfo"]
    assert "relatime" not in entry.options  # strictatime cleared the kernel's default
    assert {"size=1024k", "mode=1770"} <= entry.super_options, out["mountinfo"]


def test_default_spec_filesystems(runtime, bundle):
    """runc's default config mounts proc, a tmpfs /dev, devpts, shm, mqueue, sysfs (read-only
    without a user namespace) and cgroup: each is there with its type."""
    b = bundle(["cat", "/proc/self/mountinfo"])
    mounts = _mountinfo(ok(runtime.run(b, runtime.new_id())))
    for m in b.config["mounts"]:
        entry = mounts.get(m["destination"])
        assert entry is not None, (m, sorted(mounts))
        read_only = "ro" in m.get("options", [])
        if m["type"] == "cgroup" and entry.fstype == "tmpfs":
            # v1 and hybrid hosts: a tmpfs holding one mount per hierarchy, which carry the
            # options (runc leaves the tmpfs itself writable)
            below = [e for p, e in mounts.items() if p.startswith("/sys/fs/cgroup/")]
            assert below and {e.fstype for e in below} <= {"cgroup", "cgroup2"}, sorted(mounts)
            assert all(("ro" in e.options) == read_only for e in below), [
                (e.point, e.options) for e in below
            ]
            continue
        expected_type = "cgroup2" if m["type"] == "cgroup" else m["type"]
        assert entry.fstype == expected_type, (m, entry.fstype)
        assert ("ro" in entry.options) == read_only, (m, entry.options)
    assert mounts["/dev/mqueue"].fstype == "mqueue"
    assert mounts["/sys"].fstype == "sysfs"


@pytest.mark.parametrize("propagation", ["shared", "private"])
def test_mount_propagation_option_and_rootfs_propagation(runtime, bundle, propagation):
    """A mount's propagation option and linux.rootfsPropagation show as mountinfo's
    ``shared:N`` optional field (or its absence)."""
    tmpfs = {
        "destination": "/mnt/prop",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": [propagation],
    }
    b = bundle.sh("cat /proc/self/mountinfo", _add_mounts(tmpfs, propagation=propagation))
    mounts = _mountinfo(ok(runtime.run(b, runtime.new_id())))
    assert mounts["/mnt/prop"].shared == (propagation == "shared"), mounts["/mnt/prop"].optional
    if runtime.name == "runc" and propagation == "shared":
        pytest.xfail("runc 1.1.5 (Debian) leaves / in no peer group with rootfsPropagation shared")
    assert mounts["/"].shared == (propagation == "shared"), mounts["/"].optional


# --------------------------------------------------------------------------- cgroup namespace


def test_cgroup_namespace_shows_the_containers_cgroup_as_the_root(runtime, bundle):
    def edit(config: dict[str, Any]) -> None:
        spaces = config["linux"]["namespaces"]
        if not any(ns["type"] == "cgroup" for ns in spaces):
            spaces.append({"type": "cgroup"})

    cid = runtime.new_id()
    b = bundle(["sh", "-c", "cat /proc/self/cgroup; readlink /proc/self/ns/cgroup"], edit)
    lines = ok(runtime.run(b, cid)).splitlines()
    *memberships, link = lines
    assert link != Path("/proc/self/ns/cgroup").readlink().as_posix(), lines
    # every hierarchy the container was put in is its own root; none names the host's path
    assert memberships and all(line.split(":", 2)[2] == "/" for line in memberships), lines


# --------------------------------------------------------------------------- keyring


@pytest.mark.skipif(not Path("/proc/keys").exists(), reason="kernel without keys")
@pytest.mark.parametrize("new_keyring", [True, False], ids=["new", "no-new-keyring"])
def test_session_keyring_is_named_after_the_container(runtime, bundle, new_keyring):
    """runc joins a new session keyring named ``_ses.<id>`` unless --no-new-keyring
    (/proc/keys is unmasked for the probe: the default spec masks it)."""

    def unmask(config: dict[str, Any]) -> None:
        masked = config["linux"]["maskedPaths"]
        masked[:] = [p for p in masked if p != "/proc/keys"]

    cid = runtime.new_id()
    extra = [] if new_keyring else ["--no-new-keyring"]
    out = ok(runtime.run(bundle(["cat", "/proc/keys"], unmask), cid, extra=extra))
    names = [line.split()[8].rstrip(":") for line in out.splitlines() if " keyring " in line]
    assert (f"_ses.{cid}" in names) == new_keyring, names


# --------------------------------------------------------------------------- --log


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_file_gets_the_error_of_a_failed_create(runtime, bundle, rt_workdir, fmt):
    """``--log FILE --log-format F``: the error of a failed create is a line of FILE, a JSON
    object with level/msg/time or logrus's ``time=… level=error msg=…``."""
    log = rt_workdir / f"runtime-{fmt}.log"
    cid = runtime.new_id()
    runtime.ids.append(cid)  # the fixture's teardown force-deletes and leak-checks it
    b = bundle(rootfs=False)  # config.json names a rootfs that is not there
    proc = runtime("--log", str(log), "--log-format", fmt, "create", "--bundle", str(b.path), cid)
    assert proc.returncode != 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        errors = [r for r in records if r.get("level") == "error"]
        assert errors and all({"msg", "time"} <= set(r) for r in errors), records
        assert "rootfs" in errors[-1]["msg"], errors
    else:
        errors = [line for line in lines if "level=error" in line]
        assert errors and errors[-1].startswith('time="'), lines
        assert "rootfs" in errors[-1] and "msg=" in errors[-1], errors
    assert runtime.leftovers(cid) == []


def test_exec_joins_the_keyring_named_after_the_container(runtime, bundle):
    """An exec'd process joins the container's keyring (by its name, as root, before it
    becomes uid 1000). /proc/keys shows uid 1000 a keyring of root's only if the process
    possesses it: the keyring grants nothing to other uids."""

    def unmask(config: dict[str, Any]) -> None:
        masked = config["linux"]["maskedPaths"]
        masked[:] = [p for p in masked if p != "/proc/keys"]

    cid = runtime.new_id()
    ok(runtime.run(bundle(["sleep", "30"], unmask), cid, detach=True))
    keys = ok(runtime("exec", "--user", "1000:1000", cid, "cat", "/proc/keys"))
    owners = [line.split()[5] for line in keys.splitlines() if line.endswith(f" _ses.{cid}: empty")]
    assert owners == ["0"], keys


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "quiet"])
def test_debug_adds_debug_records_to_the_log(runtime, bundle, rt_workdir, debug):
    """``--debug`` lets debug records into ``--log``; without it there are none."""
    log = rt_workdir / "runtime-debug.log"
    cid = runtime.new_id()
    runtime.ids.append(cid)  # the fixture's teardown force-deletes and leak-checks it
    b = bundle(["true"])
    flags = ["--debug"] if debug else []
    args = ["--log", str(log), "--log-format", "json", *flags, "run", "--bundle", str(b.path)]
    ok(runtime(*args, cid))
    text = log.read_text() if log.exists() else ""
    levels = {json.loads(line)["level"] for line in text.splitlines() if line.strip()}
    assert ("debug" in levels) == debug, text
