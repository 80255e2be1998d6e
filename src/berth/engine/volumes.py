"""Named local volumes, laid out as dockerd's ``local`` driver lays them out.

Layout::

    <data_root>/volumes/<name>/_data        what the container sees
    <data_root>/volumes/<name>/volume.json  {"Labels", "Options", "CreatedAt", "Anonymous"}

Rules:
- A name is ``[a-zA-Z0-9][a-zA-Z0-9_.-]+`` (dockerd's rule); no name means a random 64-hex one,
  an anonymous volume. Creating an existing name returns the existing volume (dockerd does not
  refuse it). Only the ``local`` driver exists.
- The record is written last, atomically: a directory without ``volume.json`` is a half-made
  volume and is not listed.
- A volume is in use while some container's ``config.json`` bind-mounts its ``_data``; the
  container's bundle is the only truth (no second list to drift after a crash or restart).
  Removing a volume in use is dockerd's 409 ``volume is in use - [ids]``.
- A container being created holds its volumes (``claim`` ... ``release``) until its
  ``config.json`` is written; removal and prune skip a held volume as in use. Claims and
  removals take one lock, so a prune never deletes a volume a create just picked.
- Driver options are the ``local`` driver's: ``type``, ``device`` and ``o`` (what mount(8)
  takes: ``--opt type=tmpfs --opt device=tmpfs --opt o=size=64m``), checked at create. Such a
  volume's ``_data`` is mounted when a container first claims it and stays mounted until the
  volume is removed; removal unmounts first and refuses to delete anything while the mount is
  still there (a bind of a host directory must never be emptied by an rmtree).
- Blocking (file system) calls: the API runs them in worker threads.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from berth.engine.containers_rootfs import is_mount_point, unmount
from berth.engine.paths import Paths
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound

DRIVER = "local"
RECORD = "volume.json"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Claims of creates in progress: (volumes root, name) -> how many; guarded by _LOCK, which
# removals hold from their in-use check to the rmtree.
_LOCK = threading.Lock()
_CLAIMS: dict[tuple[str, str], int] = {}


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class Volume:
    name: str
    mountpoint: str
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False

    def to_json(self, users: int | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "CreatedAt": _rfc3339(self.created),
            "Driver": DRIVER,
            "Labels": self.labels or None,
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": self.options or None,
            "Scope": "local",
        }
        if users is not None:
            doc["UsageData"] = {"RefCount": users, "Size": _size(self.mountpoint)}
        return doc


def _size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


LOCAL_OPTIONS = ("type", "device", "o")


def check_options(options: Mapping[str, str]) -> None:
    """The local driver's options, as dockerd checks them at create."""
    for key in options:
        if key not in LOCAL_OPTIONS:
            raise InvalidArgument(f'create: invalid option: "{key}"')
    if options and not options.get("type"):
        raise InvalidArgument('create: missing required option: "type"')
    if options.get("type") and not options.get("device"):
        raise InvalidArgument('create: missing required option: "device"')


def _mount_device(volume: Volume) -> None:
    """Mount what the volume's options name on its ``_data`` (once)."""
    from berth.runtime import mountopts
    from berth.runtime.syscalls import LINUX, MS_BIND

    kind, device = volume.options.get("type", ""), volume.options.get("device", "")
    if not kind or is_mount_point(volume.mountpoint):
        return
    parsed = mountopts.parse(tuple(volume.options.get("o", "").split(",")))
    flags = parsed.flags | (MS_BIND if kind == "bind" else 0)
    try:
        LINUX.mount(device, volume.mountpoint, kind, flags, parsed.data or None)
    except OSError as e:
        raise BerthError(
            f"error while mounting volume '{volume.mountpoint}': failed to mount local volume: "
            f"mount {device}:{volume.mountpoint}, flags: {flags:#x}, data: {parsed.data}: "
            f"{e.strerror or e}"
        ) from None


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path"
        )


class VolumeStore:
    """The volumes under one directory, and which containers (by bundle) use them."""

    def __init__(self, root: str, containers_dir: str) -> None:
        self.root = root
        self.containers_dir = containers_dir

    @staticmethod
    def under(paths: Paths) -> VolumeStore:
        """The daemon's volumes: ``<data_root>/volumes``."""
        return VolumeStore(os.path.join(paths.data_root, "volumes"), paths.containers)

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def data_path(self, name: str) -> str:
        return os.path.join(self._dir(name), "_data")

    def create(
        self,
        name: str | None = None,
        driver: str | None = None,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> tuple[Volume, bool]:
        """The volume (made if missing) and whether this call made it."""
        if driver not in (None, "", DRIVER):
            raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        anonymous = not name
        if not name:
            name = secrets.token_hex(32)
        check_name(name)
        check_options(options or {})
        try:
            return self.get(name), False
        except NotFound:
            pass
        directory = self._dir(name)
        os.makedirs(self.data_path(name), mode=0o755, exist_ok=True)
        os.chmod(directory, 0o701)
        record = {
            "Labels": dict(labels or {}),
            "Options": dict(options or {}),
            "CreatedAt": time.time(),
            "Anonymous": anonymous,
        }
        tmp = os.path.join(directory, RECORD + ".tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(directory, RECORD))
        return self.get(name), True

    def claim(self, name: str | None) -> tuple[Volume, bool]:
        """``create`` for a container being made: held in use until ``release``."""
        with _LOCK:
            volume, made = self.create(name)
            _mount_device(volume)
            key = (self.root, volume.name)
            _CLAIMS[key] = _CLAIMS.get(key, 0) + 1
        return volume, made

    def release(self, names: list[str]) -> None:
        with _LOCK:
            for name in names:
                key = (self.root, name)
                _CLAIMS[key] = _CLAIMS.get(key, 1) - 1
                if _CLAIMS[key] <= 0:
                    del _CLAIMS[key]

    def get(self, name: str) -> Volume:
        path = os.path.join(self._dir(name), RECORD)
        try:
            with open(path) as f:
                record = json.load(f)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise NotFound(f"get {name}: no such volume") from None
        return Volume(
            name=name,
            mountpoint=self.data_path(name),
            created=float(record.get("CreatedAt") or 0),
            labels=dict(record.get("Labels") or {}),
            options=dict(record.get("Options") or {}),
            anonymous=bool(record.get("Anonymous")),
        )

    def volumes(self) -> list[Volume]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                out.append(self.get(name))
            except NotFound:
                continue
        return out

    def users(self) -> dict[str, list[str]]:
        """Volume name -> ids of the containers whose config.json mounts it."""
        prefix = self.root.rstrip("/") + "/"
        found: dict[str, list[str]] = {}
        try:
            cids = sorted(os.listdir(self.containers_dir))
        except FileNotFoundError:
            return found
        for cid in cids:
            try:
                with open(os.path.join(self.containers_dir, cid, "config.json")) as f:
                    spec = json.load(f)
            except (OSError, ValueError):
                continue
            for mount in spec.get("mounts") or []:
                source = str(mount.get("source") or "")
                if source.startswith(prefix) and source.endswith("/_data"):
                    name = source[len(prefix) : -len("/_data")]
                    users = found.setdefault(name, [])
                    if cid not in users:
                        users.append(cid)
        return found

    def remove(self, name: str, force: bool = False) -> bool:
        """Whether it was there (``force``: a missing volume is no error)."""
        try:
            volume = self.get(name)
        except NotFound:
            if force:
                return False
            raise
        with _LOCK:
            users = self.users().get(name)
            if users or (self.root, name) in _CLAIMS:
                held = ", ".join(users or ["a container being created"])
                raise Conflict(f"remove {name}: volume is in use - [{held}]")
            if is_mount_point(volume.mountpoint):
                unmount(volume.mountpoint)
                if is_mount_point(volume.mountpoint):
                    raise BerthError(f"remove {name}: {volume.mountpoint} is still mounted")
            shutil.rmtree(self._dir(name))
        return True

    def remove_if_unused(self, name: str) -> bool:
        try:
            return self.remove(name)
        except (NotFound, Conflict):
            return False
