"""OCI bundles of the session's busybox rootfs, for the kernel tests of the runtime and the engine.

``BundleFactory(base, rootfs, workdir)(args, edit)`` writes a bundle: ``base`` (runc's default
config, ``runc_default_spec``) with terminal false, the given args and a unique hostname,
``edit(config)`` applied last, and a private copy of the rootfs (owned by ``rootfs_owner``
when given, for user namespaces). Both suites' conftests build their ``bundle`` fixture on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Edit = Callable[[dict[str, Any]], None]


def runc_default_spec(runc: str, where: Path, timeout: float) -> dict[str, Any]:
    """The config.json ``runc spec`` writes (in ``where``)."""
    subprocess.run([runc, "spec"], cwd=where, check=True, timeout=timeout)
    spec: dict[str, Any] = json.loads((where / "config.json").read_text())
    return spec


@dataclass
class Bundle:
    path: Path
    config: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self) -> None:
        """Write ``config`` again after a test changed it."""
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))


class BundleFactory:
    def __init__(self, base: dict[str, Any], rootfs: Path, workdir: Path) -> None:
        self._base = base
        self._rootfs = rootfs
        self._dir = workdir / "bundles"
        self._count = 0

    def __call__(
        self,
        args: Sequence[str] = ("true",),
        edit: Edit | None = None,
        *,
        rootfs: bool = True,
        rootfs_owner: tuple[int, int] | None = None,
    ) -> Bundle:
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
        if rootfs:
            shutil.copytree(self._rootfs, path / "rootfs", symlinks=True)
            if rootfs_owner is not None:
                _chown_tree(path / "rootfs", *rootfs_owner)
        bundle = Bundle(path, config)
        bundle.write()
        return bundle

    def sh(self, script: str, edit: Edit | None = None, **kwargs: Any) -> Bundle:
        """A bundle whose process is ``sh -c script``."""
        return self(["sh", "-c", script], edit, **kwargs)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)
