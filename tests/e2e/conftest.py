"""Fixtures of the end-to-end tests: ``berthd``, one private daemon per test module.

It starts ``berthd`` (``berthd_daemon.launch``) on a private socket and data root with
``--cgroup-parent`` set to a session-tagged name, so the leak check watches the containers'
cgroups, and pulls busybox (made locally). At the end it removes whatever containers are
left, stops berthd, then its supervisor (which outlives berthd by design), and checks that no
rootfs mount is left under the data root.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from berthd_daemon import launch, mounts_under
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
        assert not leaked, f"rootfs mounts left: {leaked}"
        shutil.rmtree(home)
