"""berthd's pause on the kernel: the engine freezes a supervisor's container with the
runtime's verbs on the supervisor's record (``containers_admin``), the supervisor then reports
it paused and nothing in it runs; the runtime's kill of all its processes may leave it frozen,
so the engine resumes it after a signal that stops it; a resume of a container that is not
paused has nothing to do. The supervisor is ``test_supervisor``'s fixture (one per test)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from supervisors import Sup

import leakcheck
from berth.engine import containers_admin
from berth.engine.containers import ContainerManager

pytestmark = pytest.mark.root

TICKS = "while true; do echo tick; sleep 0.02; done"


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _grows(path: Path, timeout: float = 5.0) -> bool:
    first = _lines(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _lines(path) > first:
            return True
        time.sleep(0.02)
    return False


def test_the_engine_freezes_and_thaws_a_supervisors_container(
    sup: Sup, bundle: Any, engine_workdir: Path
) -> None:
    b = bundle.sh(TICKS)
    cid = leakcheck.tagged_name()
    log_path = engine_workdir / "c.log"
    c = sup.client()
    c.create(cid, str(b.path), str(log_path))
    manager = cast("ContainerManager", SimpleNamespace(supervisor_root=sup.root))
    assert _grows(log_path)

    containers_admin._freezer(manager, "pause", cid)
    assert c.state(cid).status == "paused"
    time.sleep(0.3)  # what it wrote before the freeze reaches the log
    frozen = _lines(log_path)
    time.sleep(0.3)
    assert _lines(log_path) == frozen

    containers_admin._freezer(manager, "resume", cid)
    assert c.state(cid).status == "running"
    assert _grows(log_path)
    containers_admin._freezer(manager, "resume", cid)  # not paused: nothing to do

    containers_admin._freezer(manager, "pause", cid)
    c.kill(cid, signal.SIGKILL, all=True)
    # the runtime's kill --all thaws and freezes again: the processes may or may not have
    # died in between; the engine's resume after a stopping signal works either way
    assert c.state(cid).status in ("paused", "stopped")
    containers_admin._freezer(manager, "resume", cid)
    assert c.wait(cid).exit_code == 137
    containers_admin._freezer(manager, "resume", cid)  # stopped: nothing to do
    c.delete(cid)
