"""Every path berthd uses, from one data root.

Layout::

    <data_root>/image/            the ImageStore (content, snapshots, images.json)
    <data_root>/containers/       one directory per container
    <data_root>/builds/           build contexts and RUN steps' bundles while a build runs
    <data_root>/engine-id         the daemon's persistent id (``docker info`` ID)
    <data_root>/run/              runtime state that dies with the host: sockets, pid files
    <data_root>/run/supervisor.sock   the supervisor's control socket
    <data_root>/run/berthd.pid        the daemon's pid file

Everything hangs off the data root (the run dir included, unlike dockerd's separate exec-root)
so that two daemons with two data roots never share a file. The API socket is not here: it is
what ``--host`` says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATA_ROOT = "/var/lib/berth"
DEFAULT_SOCKET = "/run/berth/berth.sock"


@dataclass(frozen=True)
class Paths:
    data_root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_root", os.path.abspath(self.data_root))

    @property
    def images(self) -> str:
        return os.path.join(self.data_root, "image")

    @property
    def containers(self) -> str:
        return os.path.join(self.data_root, "containers")

    def container(self, container_id: str) -> str:
        return os.path.join(self.containers, container_id)

    @property
    def builds(self) -> str:
        return os.path.join(self.data_root, "builds")

    @property
    def engine_id(self) -> str:
        return os.path.join(self.data_root, "engine-id")

    @property
    def run_dir(self) -> str:
        return os.path.join(self.data_root, "run")

    @property
    def supervisor_socket(self) -> str:
        return os.path.join(self.run_dir, "supervisor.sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.run_dir, "berthd.pid")

    def make(self) -> None:
        """Create the directories (private to root, as dockerd's are)."""
        for path in (self.data_root, self.images, self.containers, self.run_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
