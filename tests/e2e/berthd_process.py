"""A private berthd for the e2e tests that run containers (``conftest.berthd``) or restart the
daemon: its command line with a session-tagged ``--cgroup-parent``, and the rootfs mounts it
may have left under its data root.

Rules: everything lives under the ``home`` dir the caller made (data root ``home/root``,
socket ``home/berth.sock``, log ``home/berthd.log``, appended to across restarts).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_berthd_images import _wait_for_socket

BERTHD = str(Path(sys.executable).parent / "berthd")


def mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(directory + "/")]


def launch(home: Path, parent: str) -> subprocess.Popen[bytes]:
    log = open(home / "berthd.log", "ab")  # noqa: SIM115  (the child holds it)
    proc = subprocess.Popen(
        [
            BERTHD,
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
