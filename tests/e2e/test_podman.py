"""podman drives the runtime end to end: runc (the reference) and berth-runtime, same test.

Rules: podman gets private everything, under one temp dir: storage (--root, vfs driver, so
no storage mounts), run root, tmp dir (its state and the file events log), network config and
volume dirs; its container cgroups go under a cgroup parent named with the session's tag
(leakcheck.tagged_name) that the test removes. The image is a tar of the busybox rootfs,
imported locally, and --pull never keeps podman off the network. Per DESIGN.md, podman's
default ulimits exceed this host's hard limits, so the run passes its own. Teardown waits for
podman's helpers (conmon and the cleanup process it spawns) to exit, resets the storage and
removes the dir and the cgroups, even on failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import leakcheck

pytestmark = [pytest.mark.root, pytest.mark.peer]

REPO = Path(__file__).resolve().parents[2]
PODMAN = shutil.which("podman") or "/usr/bin/podman"
RUNTIMES = {
    "runc": shutil.which("runc") or "/usr/sbin/runc",
    "berth": str(REPO / ".venv" / "bin" / "berth-runtime"),
}
IMAGE = "localhost/berth-busybox:test"
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def podman_busybox_rootfs(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Path:
    """tests/conftest.py's ``busybox_rootfs``, or one built here while that does not exist."""
    try:
        return Path(request.getfixturevalue("busybox_rootfs"))
    except pytest.FixtureLookupError:
        spec = importlib.util.spec_from_file_location(
            "busybox_rootfs", REPO / "tools" / "busybox_rootfs.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        target = tmp_path_factory.mktemp("podman-busybox") / "rootfs"
        return Path(module.build_busybox_rootfs(str(target)))


@dataclass
class Podman:
    runtime: str
    home: Path
    cgroup_parent: str

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        home = self.home
        return subprocess.run(
            [
                PODMAN,
                "--root", str(home / "storage"),
                "--runroot", str(home / "run"),
                "--tmpdir", str(home / "tmp"),
                "--network-config-dir", str(home / "networks"),
                "--volumepath", str(home / "volumes"),
                "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs",
                "--events-backend", "file",
                "--runtime", self.runtime,
                *args,
            ],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )  # fmt: skip


def _processes_using(path: str) -> list[int]:
    """Live processes whose command line mentions ``path`` (podman, conmon, cleanup)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _cgroup_mounts() -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.split()[0] in ("cgroup", "cgroup2"):
            points.append(Path(left.split()[4]))
    return points


def _remove_cgroup_tree(name: str) -> list[str]:
    """rmdir ``/<name>`` and everything below it in every hierarchy; return failures."""
    failures = []
    for mount in _cgroup_mounts():
        top = mount / name
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _s, _f in os.walk(top)), key=lambda p: -len(p.parts))
        for d in dirs:
            try:
                d.rmdir()
            except OSError as exc:
                failures.append(f"{d}: {exc}")
    return failures


@pytest.fixture(params=list(RUNTIMES))
def podman(request: pytest.FixtureRequest, podman_busybox_rootfs: Path) -> Iterator[Podman]:
    home = Path(tempfile.mkdtemp(prefix="berth-podman-", dir="/tmp"))
    pm = Podman(RUNTIMES[request.param], home, leakcheck.tagged_name("test") + "-podman")
    try:
        with tarfile.open(home / "rootfs.tar", "w") as tar:
            tar.add(podman_busybox_rootfs, arcname=".")
        imported = pm("import", str(home / "rootfs.tar"), IMAGE)
        assert imported.returncode == 0, imported.stderr
        yield pm
    finally:
        problems = []
        deadline = time.monotonic() + 10
        while _processes_using(str(home)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _processes_using(str(home)):
            problems.append(f"podman helper {pid} still running; killed it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        reset = pm("system", "reset", "--force")
        if reset.returncode != 0:
            problems.append(f"podman system reset: {reset.stderr.strip()}")
        mounted = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(home))
        ]
        problems.extend(f"mount left under the podman home: {m}" for m in mounted)
        if not mounted:
            shutil.rmtree(home, ignore_errors=True)
        problems.extend(_remove_cgroup_tree(pm.cgroup_parent))
        assert not problems, "\n".join(problems)


def _run(podman: Podman, *command: str) -> subprocess.CompletedProcess[str]:
    return podman(
        "run", "--rm", "--network", "none", "--pull", "never", *ULIMITS,
        "--cgroup-parent", "/" + podman.cgroup_parent,
        IMAGE, *command,
    )  # fmt: skip


def test_podman_runs_a_busybox_container(podman):
    proc = _run(podman, "echo", "hello")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello\n"
    left = podman("ps", "--all", "--quiet")
    assert left.returncode == 0 and left.stdout == "", left  # --rm removed it


def test_podman_container_is_isolated_and_reports_its_exit_status(podman):
    proc = _run(podman, "sh", "-c", "echo $$; hostname; exit 3")
    assert proc.returncode == 3, proc.stderr
    pid, hostname = proc.stdout.split()
    assert pid == "1"
    assert hostname != os.uname().nodename
