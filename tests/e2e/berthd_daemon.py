"""A private berthd for the end-to-end tests: ``launch`` starts one on its own data root,
socket and ``--cgroup-parent`` (a leak-check tagged name); ``mounts_under`` lists the mounts
left under a directory. The module-scoped ``berthd`` fixture of this directory's conftest
uses them and removes everything at its end."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_berthd_images import _wait_for_socket


def _berthd_path() -> str:
    import sys

    return str(Path(sys.executable).parent / "berthd")


def mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(directory + "/")]


def launch(home: Path, parent: str) -> subprocess.Popen[bytes]:
    log = open(home / "berthd.log", "ab")  # noqa: SIM115  (the child holds it)
    proc = subprocess.Popen(
        [
            _berthd_path(),
            "--data-root",
            str(home / "root"),
            "--host",
            f"unix://{home / 'berth.sock'}",
            "--cgroup-parent",
            parent,
            "--debug",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        _wait_for_socket(str(home / "berth.sock"), proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc
