"""podman drives the runtime end to end: runc (the reference) and berth-runtime, same test.

Rules: podman runs on private storage (tests/e2e/private_podman.py says how, and cleans up);
the image is a tar of the busybox rootfs, imported locally, and --pull never keeps podman off
the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from private_podman import ULIMITS, Podman, private_podman

pytestmark = [pytest.mark.root, pytest.mark.peer]

REPO = Path(__file__).resolve().parents[2]
RUNTIMES = {
    "runc": shutil.which("runc") or "/usr/sbin/runc",
    "berth": str(REPO / ".venv" / "bin" / "berth-runtime"),
}
IMAGE = "localhost/berth-busybox:test"


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


@pytest.fixture(params=list(RUNTIMES))
def podman(request: pytest.FixtureRequest, podman_busybox_rootfs: Path) -> Iterator[Podman]:
    with private_podman(RUNTIMES[request.param]) as pm:
        with tarfile.open(pm.home / "rootfs.tar", "w") as tar:
            tar.add(podman_busybox_rootfs, arcname=".")
        imported = pm("import", str(pm.home / "rootfs.tar"), IMAGE)
        assert imported.returncode == 0, imported.stderr
        yield pm


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
