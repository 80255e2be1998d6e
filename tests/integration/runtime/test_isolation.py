"""Isolation, seen from inside the container with busybox probes, for every runtime.

Rules: a probe never changes the host if the protection under test failed: a path is shown
read-only by opening it for appending and writing nothing (``true >> path``; ``true`` and not
``:`` because a failed redirection on a special builtin ends the shell), a syscall is shown
blocked by a harmless call in the container's own tmpfs/rootfs copy. Expectations come from the
bundle's config.json, not from what one runtime happens to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers_extra import ok, sections

pytestmark = pytest.mark.root

# capability numbers from linux/capability.h, for the ones the tests configure
CAP_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_ADMIN": 21,
    "CAP_AUDIT_WRITE": 29,
}


def _mask(caps: list[str]) -> int:
    return sum(1 << CAP_NUMBERS[c] for c in caps)


def _status(text: str) -> dict[str, str]:
    """/proc/<pid>/status as a dict (first occurrence of each key)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key not in fields:
            fields[key] = value.strip()
    return fields


def test_pid1_is_the_container_process(runtime, bundle):
    proc = runtime.run(bundle(["cat", "/proc/self/status"]), runtime.new_id())
    status = _status(ok(proc))
    assert status["Name"] == "cat"
    assert status["Pid"] == "1"
    assert status["PPid"] == "0"


def test_ps_shows_only_the_container_processes(runtime, bundle):
    # our own pid (a host process) must not exist in the container's /proc either
    script = (
        "sleep 30 & until read c < /proc/$!/comm && [ $c = sleep ]; do :; done; "
        f"ps -o pid,comm; test -e /proc/{os.getpid()} && echo HOST; kill $!"
    )
    out = ok(runtime.run(bundle.sh(script), runtime.new_id()))
    assert "HOST" not in out
    rows = [line.split(None, 1) for line in out.splitlines()[1:] if line.strip()]
    commands = sorted(comm.strip() for _pid, comm in rows)
    assert commands == ["ps", "sh", "sleep"], out
    assert ["1", "sh"] in [[pid, comm.strip()] for pid, comm in rows], out


def test_host_mounts_and_interfaces_are_invisible(runtime, bundle):
    b = bundle.sh(
        "echo @@mounts; cat /proc/mounts; echo @@netdev; cat /proc/net/dev; "
        "echo @@iplink; ip -o link"
    )
    out = sections(ok(runtime.run(b, runtime.new_id())))

    # every mount point is the root or one the config asks for (mounts, masked and
    # read-only paths, the cgroup hierarchies under /sys/fs/cgroup)
    allowed = {"/"} | {m["destination"] for m in b.config["mounts"]}
    allowed |= set(b.config["linux"]["maskedPaths"]) | set(b.config["linux"]["readonlyPaths"])
    points = [line.split()[1] for line in out["mounts"].splitlines()]
    unexpected = [p for p in points if p not in allowed and not p.startswith("/sys/fs/cgroup/")]
    assert not unexpected, out["mounts"]
    assert str(b.rootfs) not in points and "/tmp" not in points

    interfaces = [line.split(":")[0].strip() for line in out["netdev"].splitlines()[2:]]
    assert interfaces == ["lo"], out["netdev"]
    links = [line.split(":")[1].strip() for line in out["iplink"].splitlines()]
    assert links == ["lo"], out["iplink"]


def test_hostname_is_the_configs(runtime, bundle):
    b = bundle.sh("hostname; cat /proc/sys/kernel/hostname")
    out = ok(runtime.run(b, runtime.new_id()))
    assert out.split() == [b.config["hostname"]] * 2
    assert os.uname().nodename != b.config["hostname"]


def test_masked_paths_are_masked(runtime, bundle):
    b = bundle(["true"])
    masked: list[str] = b.config["linux"]["maskedPaths"]
    # only paths this kernel has, so the probe proves something: host content must be non-empty
    files = [p for p in masked if Path(p).is_file() and Path(p).read_bytes()]
    dirs = [p for p in masked if Path(p).is_dir() and any(Path(p).iterdir())]
    assert files and "/sys/firmware" in dirs, (files, dirs)
    script = "".join(f'echo "@@{p}"; stat -c "%F %t:%T" {p}; wc -c < {p}; ' for p in files)
    script += "".join(f'echo "@@{p}"; ls -A {p}; ' for p in dirs)
    script += "echo @@mounts; cat /proc/mounts"
    b.config["process"]["args"] = ["sh", "-c", script]
    b.write()
    out = sections(ok(runtime.run(b, runtime.new_id())))
    for p in files:  # a masked file is /dev/null: a char device 1:3 that reads empty
        assert out[p].split("\n")[:2] == ["character special file 1:3", "0"], (p, out[p])
    for p in dirs:  # a masked directory is an empty (read-only) tmpfs
        assert out[p] == "", (p, out[p])
    mounts = {line.split()[1]: line.split()[2] for line in out["mounts"].splitlines()}
    assert mounts.get("/sys/firmware") == "tmpfs", out["mounts"]


def test_readonly_paths_refuse_writes(runtime, bundle):
    # files writable by root on the host, under the config's read-only paths
    b = bundle(["true"])
    readonly: list[str] = b.config["linux"]["readonlyPaths"]
    candidates = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/domainname",
        "/proc/irq/default_smp_affinity",
        "/proc/sysrq-trigger",
    ]
    probes = [
        p
        for p in candidates
        if Path(p).exists() and any(p.startswith(r + "/") or p == r for r in readonly)
    ]
    assert len(probes) >= 2, probes
    # open for appending, write nothing, close: harmless even if the protection failed
    script = "".join(f'echo "@@{p}"; true >> {p} && echo OPENED; ' for p in probes)
    script += "echo @@mounts; cat /proc/mounts"
    b.config["process"]["args"] = ["sh", "-c", script]
    b.write()
    proc = runtime.run(b, runtime.new_id())
    out = sections(ok(proc))
    for p in probes:
        assert "OPENED" not in out[p], p
        assert f"can't create {p}: Read-only file system" in proc.stderr, proc.stderr
    options = {line.split()[1]: line.split()[3].split(",") for line in out["mounts"].splitlines()}
    for r in readonly:
        if Path(r).exists():
            assert "ro" in options.get(r, []), (r, out["mounts"])


DEFAULT_CAPS = None  # the config's own lists (runc spec: AUDIT_WRITE, KILL, NET_BIND_SERVICE)
FEW_CAPS = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_CHROOT"]


@pytest.mark.parametrize("caps", [DEFAULT_CAPS, FEW_CAPS], ids=["spec-default", "custom"])
def test_dropped_capabilities_are_gone(runtime, bundle, caps):
    def edit(config: dict[str, Any]) -> None:
        if caps is not None:
            config["process"]["capabilities"] = {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            }

    b = bundle(["cat", "/proc/self/status"], edit)
    configured = b.config["process"]["capabilities"]
    status = _status(ok(runtime.run(b, runtime.new_id())))
    assert int(status["CapBnd"], 16) == _mask(configured["bounding"])
    assert int(status["CapEff"], 16) == _mask(configured["effective"])
    assert int(status["CapPrm"], 16) == _mask(configured["permitted"])
    assert int(status["CapInh"], 16) == _mask(configured.get("inheritable", []))
    assert not int(status["CapEff"], 16) & (1 << CAP_NUMBERS["CAP_SYS_ADMIN"])
    if caps is not None:
        assert int(status["CapAmb"], 16) == 0


def test_seccomp_blocks_what_the_profile_blocks(runtime, bundle):
    def writable(config: dict[str, Any]) -> None:
        config["root"]["readonly"] = False

    def with_profile(config: dict[str, Any]) -> None:
        writable(config)
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
        }

    script = "mkdir /tmp/x && echo MADE; touch /tmp/y && echo TOUCHED"
    blocked = runtime.run(bundle.sh(script, with_profile), runtime.new_id())
    assert "MADE" not in blocked.stdout
    assert "TOUCHED" in blocked.stdout  # everything else is allowed
    assert "Operation not permitted" in blocked.stderr, blocked.stderr
    # control: the same probe without the profile makes the directory
    free = runtime.run(bundle.sh(script, writable), runtime.new_id())
    assert "MADE" in ok(free)


def test_process_user_cwd_env_and_rlimits(runtime, bundle):
    def edit(config: dict[str, Any]) -> None:
        process = config["process"]
        process["user"] = {"uid": 1234, "gid": 2345, "additionalGids": [3456, 4567], "umask": 0o27}
        process["cwd"] = "/tmp"
        process["env"] = ["PATH=/bin:/sbin:/usr/bin", "GREETING=hello world"]
        process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]

    script = (
        "id -u; id -g; grep Groups: /proc/self/status; pwd; "
        'echo "$GREETING"; ulimit -n; ulimit -Hn; umask; env'
    )
    out = ok(runtime.run(bundle.sh(script, edit), runtime.new_id())).splitlines()
    assert out[:8] == [
        "1234",
        "2345",
        "Groups:\t3456 4567 ",
        "/tmp",
        "hello world",
        "321",
        "654",
        "0027",
    ], out
    env = {line.partition("=")[0] for line in out[8:]}
    assert {"PATH", "GREETING"} <= env
    assert "TERM" not in env  # only the configured environment (sh adds PWD/SHLVL itself)


def test_user_namespace_shows_the_mapping(runtime, bundle):
    host_base = 100000

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": host_base, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": host_base, "size": 65536}]

    b = bundle.sh(
        "echo @@uid; cat /proc/self/uid_map; echo @@gid; cat /proc/self/gid_map; "
        "echo @@id; id -u; stat -c %u /bin/busybox",
        edit,
        rootfs_owner=(host_base, host_base),
    )
    out = sections(ok(runtime.run(b, runtime.new_id())))
    assert out["uid"].split() == ["0", str(host_base), "65536"]
    assert out["gid"].split() == ["0", str(host_base), "65536"]
    assert out["id"].split() == ["0", "0"]  # root inside, host_base outside
    assert os.readlink("/proc/self/ns/user").startswith("user:[")
