"""podman on private everything, for the end-to-end tests that drive it.

Rules: one temp dir holds its storage (vfs driver: no storage mounts), run root, tmp dir
(state and the file events log), network config and volume dirs; its container cgroups go
under a parent named with the session's tag (leakcheck.tagged_name). ``private_podman()``
yields one and, even on failure, waits for podman's helpers (conmon, the cleanup process) to
exit, resets the storage, removes the dir and the cgroups, and fails naming anything it had
to force. Per DESIGN.md podman's default ulimits exceed this host's hard limits: runs pass
``ULIMITS``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import leakcheck

PODMAN = shutil.which("podman") or "/usr/bin/podman"
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
TIMEOUT = 60.0


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

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
        return proc.stdout


def processes_using(path: str) -> list[int]:
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


def mounts_under(path: str) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(path)]


def remove_cgroup_tree(name: str) -> list[str]:
    """rmdir ``/<name>`` and everything below it in every hierarchy; return failures."""
    failures = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.split()[0] not in ("cgroup", "cgroup2"):
            continue
        top = Path(left.split()[4]) / name
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _s, _f in os.walk(top)), key=lambda p: -len(p.parts))
        for d in dirs:
            try:
                d.rmdir()
            except OSError as exc:
                failures.append(f"{d}: {exc}")
    return failures


@contextlib.contextmanager
def private_podman(runtime: str) -> Iterator[Podman]:
    home = Path(tempfile.mkdtemp(prefix="berth-podman-", dir="/tmp"))
    pm = Podman(runtime, home, leakcheck.tagged_name("test") + "-podman")
    try:
        yield pm
    finally:
        problems = []
        deadline = time.monotonic() + 10
        while processes_using(str(home)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in processes_using(str(home)):
            problems.append(f"podman helper {pid} still running; killed it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        reset = pm("system", "reset", "--force")
        if reset.returncode != 0:
            problems.append(f"podman system reset: {reset.stderr.strip()}")
        mounted = mounts_under(str(home))
        problems.extend(f"mount left under the podman home: {m}" for m in mounted)
        if not mounted:
            shutil.rmtree(home, ignore_errors=True)
        problems.extend(remove_cgroup_tree(pm.cgroup_parent))
        assert not problems, "\n".join(problems)
