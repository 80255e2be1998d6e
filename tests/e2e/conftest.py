"""Fixtures shared by the e2e modules that drive berthd.

``berthd`` (module scope): a private berthd (``berthd_process.launch``) in a network namespace
of its own (its bridges and veths never touch the host's), on its own socket and
data root with ``--cgroup-parent`` set to a session-tagged name, so the leak check watches its
containers' cgroups; busybox pulled (made locally). At the end it removes whatever containers
are left, stops berthd, then its supervisor (which outlives berthd by design), checks berthd
exited 0 with no traceback in its log and that no mount is left under the data root, and
removes the dir. ``test_berthd_images`` has its own ``berthd`` (no containers, no mounts).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from berthd_process import launch, mounts_under
from test_berthd_images import Daemon, stop_daemon, stop_supervisor

import leakcheck


@pytest.fixture(scope="module")
def berthd() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="berthd-ctr-"))
    parent = leakcheck.tagged_name()
    data_root = home / "root"
    try:
        daemon = Daemon(home, str(home / "berth.sock"), data_root, launch(home, parent))
        try:
            daemon.docker("pull", "busybox")
            yield daemon
        finally:
            if daemon.proc.poll() is None:
                left = daemon.docker("ps", "-aq", check=False).stdout.split()
                if left:
                    daemon.docker("rm", "-f", *left, check=False)
            code = stop_daemon(daemon)  # and the supervisor
            text = (home / "berthd.log").read_text(errors="replace")
            assert code == 0, f"berthd exited {code}:\n{text}"
            assert "Traceback" not in text, text
    finally:
        stop_supervisor(data_root)
        leaked = mounts_under(str(data_root))
        assert not leaked, f"mounts left: {leaked}"
        shutil.rmtree(home)
