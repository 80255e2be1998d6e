"""A container's binds, volumes and tmpfs mounts: from the create body to OCI mounts.

Sources, in dockerd's order (a later one for the same destination wins):
``Config.Volumes`` and the image's ``VOLUME`` (anonymous volumes), ``HostConfig.Binds``
(``host:ctr[:opts]`` or ``name:ctr[:opts]``), ``HostConfig.Mounts`` (type bind | volume | tmpfs).

Rules:
- ``parse`` is pure and validates everything first: a bad spec is ``InvalidArgument`` naming the
  value, before anything is made. ``prepare`` then makes what is missing: named volumes on
  demand, anonymous ones, a ``-v`` bind source as a directory (``--mount`` refuses a missing
  source with dockerd's 400).
- Volumes are ``claim``-ed (in use for the store) until the caller ``release``-s them.
- A volume just made (empty) is filled from the image's directory at that path before first
  use, unless ``NoCopy``, as Docker does.
- Binds are ``rbind`` (``ro`` when asked), volume dirs are bind-mounted the same way; tmpfs gets
  ``size``/``mode`` (default 1777) from ``TmpfsOptions``. One mount per destination: a second
  one in ``Binds``/``Mounts``/``Tmpfs`` is ``Duplicate mount point``; an image's VOLUME gives
  way to an explicit mount there.
- A bind's propagation (``-v a:b:rshared``, ``BindOptions.Propagation``; default ``rprivate``)
  goes into its mount options; shared or slave propagation needs the source's mount to be
  shared (or, for slave, a slave) on the host, as dockerd checks, and makes the container's
  root ``rshared``/``rslave`` (``rootfs_propagation``) so that mounts can travel at all.
- ``MountPoint`` rows are what inspect shows as ``Mounts`` and what ``rm -v`` reads to find the
  container's anonymous volumes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

from berth.engine.volumes import DRIVER, VolumeStore, check_name
from berth.errors import InvalidArgument


@dataclass
class MountSpec:
    kind: str  # bind | volume | tmpfs
    source: str  # host path, volume name ("" for anonymous), "" for tmpfs
    target: str
    read_only: bool = False
    from_flag: bool = False  # -v (create a missing bind source) vs --mount (refuse)
    no_copy: bool = False
    tmpfs_size: int = 0
    tmpfs_mode: int = 0
    propagation: str = "rprivate"


PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def _bad(spec: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid mount config for type {spec}: {why}")


def _check_target(target: str, text: str) -> str:
    if not target or not target.startswith("/"):
        raise InvalidArgument(
            f"invalid volume specification: '{text}': mount path must be absolute"
        )
    if os.path.normpath(target) == "/":
        raise InvalidArgument(f"invalid specification: destination can't be '/' in '{text}'")
    return os.path.normpath(target)


def parse_bind(text: str) -> MountSpec:
    """One ``HostConfig.Binds`` entry: ``src:dst[:ro|rw|z|Z|nocopy,...]``."""
    parts = text.split(":")
    if len(parts) == 1:
        return MountSpec("volume", "", _check_target(parts[0], text))
    if len(parts) > 3 or not parts[0]:
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    read_only, no_copy, propagation = False, False, "rprivate"
    for opt in options:
        if opt == "ro":
            read_only = True
        elif opt == "nocopy":
            no_copy = True
        elif opt in PROPAGATIONS:
            propagation = opt
        elif opt not in ("rw", "z", "Z", "copy"):  # z/Z: SELinux labels, none on these hosts
            raise InvalidArgument(f"invalid mode: {opt}")
    target = _check_target(target, text)
    if source.startswith("/"):
        spec = MountSpec("bind", os.path.normpath(source), target, read_only, from_flag=True)
        spec.propagation = propagation
        return spec
    if propagation != "rprivate":
        raise InvalidArgument(f"invalid mode: {propagation} (propagation is for binds only)")
    check_name(source)
    return MountSpec("volume", source, target, read_only, from_flag=True, no_copy=no_copy)


def parse_mount(m: Any) -> MountSpec:
    """One ``HostConfig.Mounts`` entry."""
    if not isinstance(m, dict):
        raise InvalidArgument(f"invalid mount {m!r}: expected an object")
    kind = str(m.get("Type") or "")
    target = str(m.get("Target") or "")
    source = str(m.get("Source") or "")
    if kind not in ("bind", "volume", "tmpfs"):
        raise _bad(f'"{kind}"', f"mount type unknown: {kind!r}")
    if not target:
        raise _bad(f'"{kind}"', "field Target must not be empty")
    if not target.startswith("/"):
        raise _bad(f'"{kind}"', f"invalid mount path: '{target}' mount path must be absolute")
    spec = MountSpec(kind, source, os.path.normpath(target), bool(m.get("ReadOnly")))
    if kind == "bind":
        if not source:
            raise _bad('"bind"', "field Source must not be empty")
        if not source.startswith("/"):
            raise _bad('"bind"', f"invalid mount path: '{source}' mount path must be absolute")
        if not os.path.exists(source):
            raise _bad('"bind"', f"bind source path does not exist: {source}")
        spec.source = os.path.normpath(source)
        propagation = str((m.get("BindOptions") or {}).get("Propagation") or "rprivate")
        if propagation not in PROPAGATIONS:
            raise _bad('"bind"', f"invalid propagation mode: {propagation}")
        spec.propagation = propagation
    elif kind == "volume":
        if source:
            check_name(source)
        spec.no_copy = bool((m.get("VolumeOptions") or {}).get("NoCopy"))
    else:
        if source:
            raise _bad('"tmpfs"', "field Source must not be specified")
        opts = m.get("TmpfsOptions") or {}
        spec.tmpfs_size = int(opts.get("SizeBytes") or 0)
        spec.tmpfs_mode = int(opts.get("Mode") or 0)
        if spec.tmpfs_size < 0:
            raise _bad('"tmpfs"', f"invalid tmpfs size {spec.tmpfs_size}")
    return spec


def parse(body: dict[str, Any], image_volumes: Any) -> list[MountSpec]:
    """Every mount the create body and the image ask for, one per destination."""
    hc = body.get("HostConfig") or {}
    by_target: dict[str, MountSpec] = {}
    declared = dict(image_volumes or {})
    declared.update(body.get("Volumes") or {})
    for target in declared:
        spec = MountSpec("volume", "", _check_target(str(target), str(target)))
        by_target[spec.target] = spec
    explicit = {os.path.normpath(str(t)) for t in hc.get("Tmpfs") or {}}  # --tmpfs
    for text in hc.get("Binds") or []:
        spec = parse_bind(str(text))
        if spec.target in explicit:
            raise InvalidArgument(f"Duplicate mount point: {spec.target}")
        explicit.add(spec.target)
        by_target[spec.target] = spec
    for m in hc.get("Mounts") or []:
        spec = parse_mount(m)
        if spec.target in explicit:
            raise InvalidArgument(f"Duplicate mount point: {spec.target}")
        explicit.add(spec.target)
        by_target[spec.target] = spec
    return list(by_target.values())


def _copy_up(rootfs: str, image_dir: str, data: str) -> None:
    """Fill a new, empty volume from the image's directory at its path (owner and mode too)."""
    real_root = os.path.realpath(rootfs)
    if os.path.realpath(image_dir) != os.path.join(real_root, os.path.relpath(image_dir, rootfs)):
        return  # a symlink on the way: it would resolve on the host, not in the image
    if not os.path.isdir(image_dir) or os.listdir(data):
        return
    shutil.copytree(image_dir, data, symlinks=True, dirs_exist_ok=True)
    st = os.stat(image_dir)
    os.chown(data, st.st_uid, st.st_gid)
    os.chmod(data, st.st_mode & 0o7777)


def prepare(
    specs: list[MountSpec], volumes: VolumeStore, rootfs: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Make what the mounts need; the OCI mounts and the inspect ``Mounts`` rows."""
    oci: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    try:
        for spec in specs:
            _prepare_one(spec, volumes, rootfs, oci, rows)
    except BaseException:
        volumes.release(claimed(rows))
        for name in anonymous_volumes(rows):
            volumes.remove_if_unused(name)
        raise
    return oci, rows


def claimed(rows: list[dict[str, Any]]) -> list[str]:
    """The volumes ``prepare`` claimed (the caller releases them once config.json is written)."""
    return [str(r["Name"]) for r in rows if r.get("Type") == "volume"]


def _prepare_one(
    spec: MountSpec,
    volumes: VolumeStore,
    rootfs: str,
    oci: list[dict[str, Any]],
    rows: list[dict[str, Any]],
) -> None:
    bind_opts = ["rbind", "rprivate", *(["ro"] if spec.read_only else [])]
    if spec.kind == "tmpfs":
        opts = ["noexec", "nosuid", "nodev", "rprivate", f"mode={spec.tmpfs_mode or 0o1777:o}"]
        if spec.tmpfs_size:
            opts.append(f"size={spec.tmpfs_size}")
        if spec.read_only:
            opts.append("ro")
        oci.append({"destination": spec.target, "type": "tmpfs", "source": "tmpfs",
                    "options": opts})  # fmt: skip
        rows.append({"Type": "tmpfs", "Source": "", "Destination": spec.target, "Mode": "",
                     "RW": not spec.read_only, "Propagation": ""})  # fmt: skip
        return
    if spec.kind == "bind":
        if not os.path.exists(spec.source) and spec.from_flag:
            os.makedirs(spec.source, mode=0o755, exist_ok=True)
        _check_source_propagation(spec.source, spec.propagation)
        opts = ["rbind", spec.propagation, *(["ro"] if spec.read_only else [])]
        oci.append({"destination": spec.target, "type": "bind", "source": spec.source,
                    "options": opts})  # fmt: skip
        rows.append({"Type": "bind", "Source": spec.source, "Destination": spec.target,
                     "Mode": "ro" if spec.read_only else "", "RW": not spec.read_only,
                     "Propagation": spec.propagation})  # fmt: skip
        return
    volume, made = volumes.claim(spec.source or None)
    if made and not spec.no_copy:
        _copy_up(rootfs, os.path.join(rootfs, spec.target.lstrip("/")), volume.mountpoint)
    oci.append({"destination": spec.target, "type": "bind", "source": volume.mountpoint,
                "options": bind_opts})  # fmt: skip
    rows.append({"Type": "volume", "Name": volume.name, "Source": volume.mountpoint,
                 "Destination": spec.target, "Driver": DRIVER,
                 "Mode": "z" if spec.from_flag else "", "RW": not spec.read_only,
                 "Propagation": "", "Anonymous": volume.anonymous})  # fmt: skip


def _mount_of(path: str) -> tuple[str, list[str]]:
    """The mount point holding ``path`` in berthd's mount table and its optional fields
    (``shared:N``, ``master:N``)."""
    best, fields = "/", []
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            point = parts[4].replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fields = point, parts[6 : parts.index("-")]
    return best, fields


def _check_source_propagation(source: str, propagation: str) -> None:
    """dockerd's checks: a shared bind needs a shared source mount, a slave one a shared or
    slave source mount."""
    if propagation in ("shared", "rshared"):
        point, fields = _mount_of(source)
        if not any(f.startswith("shared:") for f in fields):
            raise InvalidArgument(
                f"path {source} is mounted on {point} but it is not a shared mount"
            )
    elif propagation in ("slave", "rslave"):
        point, fields = _mount_of(source)
        if not any(f.startswith(("shared:", "master:")) for f in fields):
            raise InvalidArgument(
                f"path {source} is mounted on {point} but it is not a shared or slave mount"
            )


def rootfs_propagation(oci_mounts: list[dict[str, Any]]) -> str | None:
    """``rshared`` or ``rslave`` for the container's root when a bind needs it, else None."""
    wanted = {o for m in oci_mounts for o in m.get("options") or []}
    if wanted & {"shared", "rshared"}:
        return "rshared"
    if wanted & {"slave", "rslave"}:
        return "rslave"
    return None


def inspect_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as inspect shows them (without Berth's own ``Anonymous`` key)."""
    return [{k: v for k, v in r.items() if k != "Anonymous"} for r in rows]


def anonymous_volumes(rows: list[dict[str, Any]]) -> list[str]:
    return [str(r["Name"]) for r in rows if r.get("Type") == "volume" and r.get("Anonymous")]
