"""Images made on this machine, with no registry: the built-in base images, ``docker import``
of a root filesystem tar, and ``docker commit`` of a container's changes.

Rules:
- ``busybox`` is the host's busybox-static as a one-layer image tagged
  ``docker.io/library/busybox:latest`` with Cmd ``["sh"]``: ``/bin/busybox``, one symlink to it
  per applet (``busybox --list-full``), ``/etc/passwd``, ``group``, ``hostname`` and the usual
  directories, as ``tools/busybox_rootfs.py`` lays them out. The layer tar is written straight
  from these (no tree on disk) and is deterministic: sorted entries, numeric root ownership,
  one fixed mtime (``BASE_EPOCH``), no user names, PAX only where needed. The config's
  ``created`` is that same time, so the layer digest and the image id are the same on every
  machine with the same busybox binary, and building it again is a no-op.
- ``debian:bookworm`` is built by ``debian.debian_image`` (debootstrap from Debian's package
  archive, as the official images are made) the first time it is asked for; once tagged in
  the store it is returned as it is.
- ``import_rootfs`` keeps the tar as given (plain or gzip), reading it once: the bytes go into
  the content store while the uncompressed stream is hashed for the diffID and parsed as a tar
  (a malformed archive is ``InvalidArgument`` and leaves no blob).
- ``commit_container`` diffs an overlay upper dir (``layers.diff_to_layer``) into an
  uncompressed layer on top of the parent image's layers; copy snapshots keep no diff, so it
  is ``Unsupported`` there.
- Imports ``berth.spec``, ``berth.errors`` and this package only; stdlib only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import platform
import subprocess
import tarfile
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from berth.errors import InvalidArgument, NotFound, Unavailable, Unsupported
from berth.image import reference
from berth.image.layers import diff_to_layer
from berth.spec import image as spec
from berth.spec.value import replace

if TYPE_CHECKING:
    from berth.image.store import Image, ImageStore

BUSYBOX = "/bin/busybox"
BUSYBOX_REF = "docker.io/library/busybox:latest"
DEBIAN_REF = "docker.io/library/debian:bookworm"
BASE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: every mtime of a base layer, and its created
BASE_CREATED = "2024-01-01T00:00:00Z"
DIRECTORIES = (
    "bin",
    "dev",
    "etc",
    "home",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "usr/bin",
    "usr/sbin",
    "var",
)
ETC_FILES = {
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "busybox\n",
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
}
_CHUNK = 1 << 20


def base_image(
    store: ImageStore, name: str, progress: Callable[[str], None] | None = None
) -> Image:
    """The built-in base image ``name`` (``busybox``, ``busybox:latest``, …), made if needed;
    ``debian:bookworm`` takes minutes the first time (``progress`` gets its output lines)."""
    ref = str(reference.parse(name))
    if ref == BUSYBOX_REF:
        return busybox_image(store)
    if ref == DEBIAN_REF:
        existing = store.get(ref)
        if existing is not None:
            return existing
        from berth.image.debian import debian_image

        return debian_image(store, "bookworm", progress=progress)
    raise NotFound(f"no built-in base image {name!r} (there are: busybox, debian:bookworm)")


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    """The applet paths busybox installs (``bin/sh``, ``usr/bin/env``, …), sorted."""
    if not os.access(busybox, os.X_OK):
        raise Unavailable(f"{busybox} is missing: install the Debian package busybox-static")
    listed = subprocess.run(
        [busybox, "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    return sorted({a.strip("/") for a in listed if a.strip("/") and ".." not in a.split("/")})


def busybox_layer(out: BinaryIO, busybox: str = BUSYBOX) -> None:
    """Write the busybox root filesystem as a deterministic uncompressed layer tar."""
    applets = [a for a in busybox_applets(busybox) if a != "bin/busybox"]
    dirs = set(DIRECTORIES)
    for path in applets:
        parent = os.path.dirname(path)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    entries: dict[str, tarfile.TarInfo] = {}
    for d in dirs:
        entries[d] = _info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
    for path in applets:
        link = _info(path, tarfile.SYMTYPE, 0o777)
        link.linkname = "/bin/busybox"
        entries[path] = link
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            if name == "bin/busybox":
                continue
            tar.addfile(entries[name])
            if name == "bin":
                with open(busybox, "rb") as f:
                    info = _info("bin/busybox", tarfile.REGTYPE, 0o755)
                    info.size = os.fstat(f.fileno()).st_size
                    tar.addfile(info, f)
            if name == "etc":
                for etc_name, text in sorted(ETC_FILES.items()):
                    data = text.encode()
                    info = _info(etc_name, tarfile.REGTYPE, 0o644)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, BASE_EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def busybox_image(store: ImageStore, busybox: str = BUSYBOX, ref: str = BUSYBOX_REF) -> Image:
    """The busybox base image, built from ``busybox`` and tagged ``ref`` (idempotent)."""
    with store.content.writer() as writer:
        busybox_layer(cast("BinaryIO", writer), busybox)
    blob = writer.commit()
    config = spec.ImageConfig(
        architecture=_host_architecture(),
        os="linux",
        created=BASE_CREATED,
        rootfs=spec.RootFS(diff_ids=(blob.digest,)),
        config=spec.ContainerConfig(
            env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
            cmd=("sh",),
        ),
        history=(
            spec.History(created=BASE_CREATED, created_by=f"berth: busybox-static {busybox}"),
            spec.History(created=BASE_CREATED, created_by='CMD ["sh"]', empty_layer=True),
        ),
    )
    return store.write_image(config, [blob.descriptor(spec.OCI_LAYER)], ref)


def _host_architecture() -> str:
    """The OCI architecture name of this machine (``amd64``, ``arm64``, …)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(
        machine, machine
    )


# --------------------------------------------------------------------------- import, commit


def import_rootfs(
    store: ImageStore,
    tar_stream: BinaryIO,
    ref: str | None = None,
    config_overrides: spec.ContainerConfig | None = None,
    comment: str = "",
) -> Image:
    """``docker import`` (see ``ImageStore.import_rootfs``)."""
    from berth.image.store import now_rfc3339

    if ref is not None:
        reference.parse(ref)  # a bad name fails before any bytes are read
    with store.content.writer() as writer:
        magic = tar_stream.read(4)
        if magic.startswith((b"BZh", b"\xfd7zX", b"\x28\xb5\x2f\xfd")):
            raise Unsupported("import: only plain or gzip tar archives are supported")
        tee = _Tee(tar_stream, writer, magic)
        gzipped = magic.startswith(b"\x1f\x8b")
        plain: Any = gzip.GzipFile(fileobj=cast("BinaryIO", tee), mode="rb") if gzipped else tee
        hashed = _Hashing(plain)
        try:
            with tarfile.open(fileobj=cast("BinaryIO", hashed), mode="r|") as tar:
                for _member in tar:
                    pass
            while hashed.read(_CHUNK):
                pass
            while tee.read(_CHUNK):
                pass
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise InvalidArgument(f"import: not a valid (gzip) tar archive: {e}") from e
    info = writer.commit()
    media_type = spec.OCI_LAYER_GZIP if gzipped else spec.OCI_LAYER
    created = now_rfc3339()
    config = spec.ImageConfig(
        architecture=_host_architecture(),
        os="linux",
        created=created,
        rootfs=spec.RootFS(diff_ids=(hashed.digest(),)),
        config=config_overrides or spec.ContainerConfig(),
        history=(spec.History(created=created, comment=comment or "Imported from -"),),
    )
    return store.write_image(config, [info.descriptor(media_type)], ref)


def commit_container(
    store: ImageStore,
    container_key: str,
    parent_image: Image,
    ref: str | None = None,
    changes: spec.ContainerConfig | None = None,
    comment: str = "",
    author: str = "",
    created_by: str = "",
) -> Image:
    """``docker commit`` (see ``ImageStore.commit_container``)."""
    from berth.image.store import now_rfc3339

    if store.snapshots.mode != "overlay":
        raise Unsupported(
            f"commit of container snapshot {container_key!r}: needs overlay snapshots "
            "(the copy snapshotter keeps no diff)"
        )
    if ref is not None:
        reference.parse(ref)
    info = store.snapshots.stat(container_key)
    if info.kind != "active":
        raise InvalidArgument(f"snapshot {container_key!r} is not a container's")
    lowers = store.snapshots.lowers(info.parent)
    with store.content.writer() as writer:
        stats = diff_to_layer(info.path, cast("BinaryIO", writer), lowers)
    blob = writer.commit()
    created = now_rfc3339()
    base = parent_image.config
    config = replace(
        base,
        created=created,
        author=author or base.author,
        config=changes if changes is not None else base.config,
        rootfs=spec.RootFS(diff_ids=(*base.rootfs.diff_ids, stats.diff_id)),
        history=(
            *base.history,
            spec.History(created=created, created_by=created_by, author=author, comment=comment),
        ),
    )
    layers = (*parent_image.manifest.layers, blob.descriptor(spec.OCI_LAYER))
    return store.write_image(config, layers, ref)


class _Tee:
    """Reads from ``raw`` (after a ``prefix`` already read), writing every byte to ``sink``."""

    def __init__(self, raw: BinaryIO, sink: Any, prefix: bytes) -> None:
        self._raw, self._sink, self._prefix = raw, sink, prefix

    def read(self, n: int = -1, /) -> bytes:
        if self._prefix:
            cut = len(self._prefix) if n < 0 else n
            data, self._prefix = self._prefix[:cut], self._prefix[cut:]
            if n < 0:
                data += self._raw.read()
        else:
            data = self._raw.read(n)
        if data:
            self._sink.write(data)
        return data


class _Hashing:
    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def read(self, n: int = -1, /) -> bytes:
        data: bytes = self._raw.read(n)
        self._hash.update(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
