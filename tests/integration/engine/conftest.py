"""Fixtures for the engine's kernel tests: OCI bundles of the session's busybox rootfs
(``tests/bundles.py``, shared with the runtime suite) and a supervisor per test. Container
ids must come from ``leakcheck.tagged_name()`` so the session's leak check watches their
cgroups.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from supervisors import Sup

from bundles import BundleFactory, runc_default_spec


@pytest.fixture(scope="session")
def engine_base_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """runc's default config.json (`runc spec`), captured once per session."""
    runc = shutil.which("runc") or "/usr/sbin/runc"
    return runc_default_spec(runc, tmp_path_factory.mktemp("engine-spec"), 30)


@pytest.fixture
def engine_workdir() -> Iterator[Path]:
    """A short per-test dir in /tmp (unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="berth-eng-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bundle(
    engine_base_spec: dict[str, Any], busybox_rootfs: Path, engine_workdir: Path
) -> BundleFactory:
    return BundleFactory(engine_base_spec, busybox_rootfs, engine_workdir)


@pytest.fixture
def sup(engine_workdir: Path) -> Iterator[Sup]:
    s = Sup(engine_workdir)
    s.start()
    try:
        yield s
    finally:
        s.teardown()
        print(s.log_text())
