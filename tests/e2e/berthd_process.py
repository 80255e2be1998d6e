"""A private berthd for the e2e tests that run containers (``conftest.berthd``) or restart the
daemon: its command line with a session-tagged ``--cgroup-parent``, and the rootfs mounts it
may have left under its data root.

Rules: everything lives under the ``home`` dir the caller made (data root ``home/root``,
socket ``home/berth.sock``, log ``home/berthd.log``, appended to across restarts).
berthd runs in a network namespace of its own (``lo`` up), never the host's: its bridges,
veths and forwarding sysctl stay there. A relaunch joins the namespace of the supervisor the
previous berthd left running (found by the peer credentials of its socket), so the bridges
and the containers' veths are still there; with no supervisor a new namespace is made. The
namespace has no pin: it goes when the supervisor (and berthd) have ended.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

from test_berthd_images import _wait_for_socket

BERTHD = str(Path(sys.executable).parent / "berthd")

# Run argv[2:] in the network namespace at argv[1], or in a new one with lo up when it is "".
_IN_NETNS = """
import os, sys
from berth.runtime.loopback import bring_up
from berth.runtime.syscalls import CLONE_NEWNET, Syscalls
calls = Syscalls()
if sys.argv[1]:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    calls.setns(fd, CLONE_NEWNET)
    os.close(fd)
else:
    calls.unshare(CLONE_NEWNET)
    bring_up()
os.execv(sys.argv[2], sys.argv[2:])
"""


def _supervisor_netns(data_root: Path) -> str:
    """The network namespace of the supervisor serving ``data_root`` ("" when none answers)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(data_root / "run" / "supervisor.sock"))
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return ""
    finally:
        probe.close()
    pid = struct.unpack("3i", creds)[0]
    return f"/proc/{pid}/ns/net"


def mounts_under(directory: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(directory + "/")]


def launch(home: Path, parent: str) -> subprocess.Popen[bytes]:
    log = open(home / "berthd.log", "ab")  # noqa: SIM115  (the child holds it)
    netns = _supervisor_netns(home / "root")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _IN_NETNS,
            netns,
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
