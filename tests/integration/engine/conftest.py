"""Fixtures for the engine's kernel tests: OCI bundles of the session's busybox rootfs.

The minimal part of tests/integration/runtime/conftest.py (runc's default config.json with
the process replaced, a private copy of the rootfs per bundle), so that engine tests need not
import another suite's conftest. Container ids must come from ``leakcheck.tagged_name()`` so
the session's leak check watches their cgroups.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from supervisors import Sup

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="session")
def engine_base_spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """runc's default config.json (`runc spec`), captured once per session."""
    where = tmp_path_factory.mktemp("engine-spec")
    runc = shutil.which("runc") or "/usr/sbin/runc"
    subprocess.run([runc, "spec"], cwd=where, check=True, timeout=30)
    spec: dict[str, Any] = json.loads((where / "config.json").read_text())
    return spec


@pytest.fixture
def engine_workdir() -> Iterator[Path]:
    """A short per-test dir in /tmp (unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="berth-eng-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Bundle:
    path: Path
    config: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


class BundleFactory:
    """``bundle(args, edit)``: runc's default config with terminal false, the given args, a
    unique hostname and ``edit(config)`` applied last, and a private copy of the rootfs."""

    def __init__(self, base: dict[str, Any], rootfs: Path, workdir: Path) -> None:
        self._base = base
        self._rootfs = rootfs
        self._dir = workdir / "bundles"
        self._count = 0

    def __call__(self, args: Sequence[str] = ("true",), edit: Edit | None = None) -> Bundle:
        self._count += 1
        path = self._dir / f"b{self._count}"
        path.mkdir(parents=True)
        path.chmod(0o711)
        config = json.loads(json.dumps(self._base))
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["hostname"] = f"box-{uuid.uuid4().hex[:8]}"
        if edit is not None:
            edit(config)
        shutil.copytree(self._rootfs, path / "rootfs", symlinks=True)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return Bundle(path, config)

    def sh(self, script: str, edit: Edit | None = None) -> Bundle:
        return self(["sh", "-c", script], edit)


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
