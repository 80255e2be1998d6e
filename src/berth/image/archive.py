"""Images on and off a machine with no registry: ``docker save`` tarballs and OCI image
layouts, both directions (a container's filesystem as a tar, ``docker export``, is ``export``).

What ``load`` reads (a tar stream, plain or gzip, or a directory):
- ``docker save`` before Docker 25 and podman's docker-archive: ``manifest.json`` (``Config``,
  ``RepoTags``, ``Layers`` as paths in the archive), the config as ``<hex>.json``, layers as
  ``<id>/layer.tar`` or ``<hex>.tar`` (symlinks and hard links between them are followed), an
  optional ``repositories`` file (tags by top layer id, used when an entry has no RepoTags).
- An OCI image layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``): names from each
  index entry's ``io.containerd.image.name`` annotation, else ``org.opencontainers.image.ref.name``
  (a full reference, or a bare tag that goes on ``repository`` when the caller gives one, and is
  left untagged otherwise); a nested index is resolved to the host's platform.
- Docker 25+'s ``docker save``, which is both at once: manifests come from ``index.json`` (kept as
  they are, so manifest digests survive) and ``manifest.json``'s RepoTags are merged in.

What ``save`` writes: ``format="docker"`` is Docker 25's layout, which is also an OCI layout —
``blobs/sha256/<hex>`` (layers, configs, manifests as stored), ``index.json`` (one entry per
tag: ``io.containerd.image.name`` the full reference, ``org.opencontainers.image.ref.name`` the
tag), ``manifest.json`` (paths into ``blobs/``), ``repositories`` and ``oci-layout`` — so docker,
podman and OCI tools all read it. RepoTags are written fully qualified, as podman writes them
(docker reads both forms; podman would read ``busybox:latest`` as ``localhost/busybox``).
``format="oci"`` is the OCI layout alone, with the full reference as ``ref.name`` (unique within
a layout, as skopeo and umoci need, and what podman's oci-archive writes), to a tar stream or a
directory (an existing layout there is added to; entries of the same name are replaced).

Rules:
- One pass over the archive: every file that is not small JSON metadata streams into the
  content store; a ``blobs/<alg>/<hex>`` file must hash to its name (``InvalidArgument`` naming
  the file otherwise). A gzip or zstd layer is decompressed once more, from the store, for its
  diffID; a Docker-format layer gets the media type its magic says (tar, gzip or zstd).
- Everything is checked before any reference is added: configs against their digests (a
  ``<hex>.json`` config must hash to ``<hex>``), sizes against descriptors, each layer's diffID
  against the config's ``rootfs.diff_ids``, every name. A refused archive adds no image and no
  reference; blobs it already wrote are unreferenced and go at the next ``gc``.
- Layers of a Docker-format image get a manifest written here with OCI media types and the
  digests of the layer files as stored; it is deterministic (the same tarball, the same digest).
- ``load`` returns what docker prints after "Loaded image:": familiar references
  (``busybox:latest``), or the id of an image that came without a name.
- A layout directory is written blob by blob (tmp + fsync + rename) and ``index.json`` last, so
  a reader never sees an index naming a blob that is not there.
- Imports ``berth.spec``, ``berth.errors`` and this package only; stdlib only (zstd layers are
  read through ``layers.ZstdReader``, which imports ``zstandard`` when one is seen).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import platform
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from typing import Any, BinaryIO, Literal, cast

from berth.errors import InvalidArgument, NotFound
from berth.image import digest as digests
from berth.image import layers, reference
from berth.image.content import Info
from berth.image.store import Image, ImageStore, encode
from berth.spec import image as spec
from berth.spec.value import value

log = logging.getLogger(__name__)

Format = Literal["docker", "oci"]
Source = BinaryIO | str | os.PathLike[str]

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
LAYOUT_VERSION = "1.0.0"
METADATA_MAX = 16 << 20  # bytes of one JSON metadata file read into memory
_METADATA_NAMES = frozenset(
    {"manifest.json", "repositories", "index.json", "oci-layout", "json", "VERSION"}
)
_CHUNK = 1 << 20
_MAX_LINKS = 16
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# --------------------------------------------------------------------------- load


@value
class _Pending:
    """An image checked and ready to add."""

    manifest: bytes
    config: bytes
    refs: list[str]


def _clean(name: str) -> str:
    """An archive member name as a key: relative, normalised, ``""`` for the root."""
    return posixpath.normpath("/" + name).lstrip("/")


def _blob_name_digest(name: str) -> str | None:
    """The digest a ``blobs/<alg>/<hex>`` name promises, or None for other names."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    text = f"{parts[1]}:{parts[2]}"
    try:
        return digests.validate(text)
    except InvalidArgument as e:
        raise InvalidArgument(f"{name}: not a blob name ({e})") from None


class _Archive:
    """What one pass over an archive found: metadata bytes, blobs now in the store, links."""

    def __init__(self, store: ImageStore, label: str) -> None:
        self.store = store
        self.label = label
        self.files: dict[str, bytes] = {}
        self.blobs: dict[str, Info] = {}
        self.links: dict[str, str] = {}
        self._layers: dict[str, tuple[str, str]] = {}  # digest -> (diffID, media type)

    def error(self, text: str) -> InvalidArgument:
        return InvalidArgument(f"{self.label}: {text}")

    # -- reading the archive

    def add_file(self, name: str, stream: BinaryIO, size: int) -> None:
        base = posixpath.basename(name)
        if not name.startswith("blobs/") and (base in _METADATA_NAMES or base.endswith(".json")):
            if size > METADATA_MAX:
                raise self.error(f"{name}: {size} bytes is too big for image metadata")
            self.files[name] = stream.read()
            return
        expected = _blob_name_digest(name)
        try:
            with self.store.content.writer(expected) as writer:
                while chunk := stream.read(_CHUNK):
                    writer.write(chunk)
            info = writer.commit()
        except InvalidArgument as e:
            raise self.error(f"{name}: refused: {e}") from None
        self.blobs[name] = info

    def add_link(self, name: str, target: str) -> None:
        self.links[name] = _clean(target)

    # -- looking things up

    def resolve(self, name: str) -> str:
        name = _clean(name)
        for _ in range(_MAX_LINKS):
            target = self.links.get(name)
            if target is None:
                return name
            name = target
        raise self.error(f"{name}: too many levels of links")

    def has(self, name: str) -> bool:
        real = self.resolve(name)
        return real in self.files or real in self.blobs

    def read(self, name: str, what: str) -> bytes:
        real = self.resolve(name)
        if real in self.files:
            return self.files[real]
        blob = self.blobs.get(real)
        if blob is None:
            raise self.error(f"{what}: {name!r} is not in the archive")
        if blob.size > METADATA_MAX:
            raise self.error(f"{what}: {name}: {blob.size} bytes is too big for image metadata")
        return self.store.content.read_bytes(blob.digest)

    def json(self, name: str, what: str) -> Any:
        try:
            return json.loads(self.read(name, what))
        except ValueError as e:
            raise self.error(f"{what}: {name} is not valid JSON: {e}") from None

    def blob(self, name: str, what: str) -> Info:
        blob = self.blobs.get(self.resolve(name))
        if blob is None:
            raise self.error(f"{what}: {name!r} is not in the archive")
        return blob

    def by_descriptor(self, desc: spec.Descriptor, what: str) -> bytes:
        """A small blob an OCI descriptor names, size checked."""
        size = self.check_size(desc, what)
        if size > METADATA_MAX:
            raise self.error(f"{what}: {desc.digest}: {size} bytes is too big for metadata")
        return self.store.content.read_bytes(desc.digest)

    def check_size(self, desc: spec.Descriptor, what: str) -> int:
        try:
            size = self.store.content.info(desc.digest).size
        except NotFound:
            raise self.error(f"{what}: blob {desc.digest} is not in the archive") from None
        if size != desc.size:
            raise self.error(
                f"{what}: blob {desc.digest} has {size} bytes, the descriptor says {desc.size}"
            )
        return size

    def diff_id(self, digest: str) -> str:
        """The digest of the layer's uncompressed tar."""
        return self._layer(digest)[0]

    def layer_media_type(self, digest: str) -> str:
        """The OCI layer media type of the blob's content: tar, tar+gzip or tar+zstd."""
        return self._layer(digest)[1]

    def _layer(self, digest: str) -> tuple[str, str]:
        if digest not in self._layers:
            self._layers[digest] = self._compute_layer(digest)
        return self._layers[digest]

    def _compute_layer(self, digest: str) -> tuple[str, str]:
        with self.store.content.open(digest) as f:
            magic = f.read(4)
            f.seek(0)
            if magic.startswith(_ZSTD_MAGIC):
                try:
                    reader = cast("BinaryIO", layers.ZstdReader(f))
                    return digests.of_stream(reader)[0], spec.OCI_LAYER_ZSTD
                except layers.ZstdDataError as e:
                    raise self.error(f"layer {digest}: not valid zstd: {e}") from None
            if not magic.startswith(_GZIP_MAGIC):
                return digest, spec.OCI_LAYER
            try:
                with gzip.GzipFile(fileobj=f, mode="rb") as unzipped:
                    return digests.of_stream(cast("BinaryIO", unzipped))[0], spec.OCI_LAYER_GZIP
            except (OSError, EOFError, zlib.error) as e:
                raise self.error(f"layer {digest}: not valid gzip: {e}") from None


def load(store: ImageStore, source: Source, repository: str | None = None) -> list[str]:
    """``docker load``: the images of a ``docker save`` tarball or an OCI image layout (a tar
    stream, plain or gzip, or the path of such a tar or of a directory) into ``store``; the
    references loaded (familiar form) and the ids of images loaded without a name.
    ``repository`` names images whose layout gives only a bare tag. See the module docstring
    for the formats and the checks."""
    if repository is not None:
        reference.parse_normalized(repository)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                archive = _read_tar(store, f)
        elif os.path.isdir(path):
            archive = _read_dir(store, path)
        else:
            raise NotFound(f"load: {path}: no such file or directory")
    else:
        archive = _read_tar(store, source)
    pending = _interpret(archive, repository)
    loaded: list[str] = []
    for image in pending:
        added = store.add_image(image.manifest, image.config, image.refs)
        loaded.extend(reference.familiar(r) for r in image.refs)
        if not image.refs:
            loaded.append(added.id)
        log.info("loaded image %s from %s (%s)", added.short_id, archive.label, image.refs)
    return loaded


def _read_tar(store: ImageStore, stream: BinaryIO) -> _Archive:
    archive = _Archive(store, "image archive")
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                name = _clean(member.name)
                if not name or member.isdir():
                    continue
                if member.issym():
                    archive.add_link(name, posixpath.join(posixpath.dirname(name), member.linkname))
                elif member.islnk():
                    archive.add_link(name, member.linkname)
                elif member.isreg():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    archive.add_file(name, cast("BinaryIO", extracted), member.size)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InvalidArgument(f"image archive: not a valid (gzip) tar archive: {e}") from e
    return archive


def _read_dir(store: ImageStore, root: str) -> _Archive:
    archive = _Archive(store, root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for entry in sorted(dirnames + filenames):
            path = os.path.join(dirpath, entry)
            name = _clean(posixpath.join("" if rel_dir == "." else rel_dir, entry))
            if os.path.islink(path):
                archive.add_link(name, posixpath.join(posixpath.dirname(name), os.readlink(path)))
            elif entry in filenames and os.path.isfile(path):
                with open(path, "rb") as f:
                    archive.add_file(name, f, os.fstat(f.fileno()).st_size)
    return archive


def _host_architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(
        machine, machine
    )


def _interpret(archive: _Archive, repository: str | None) -> list[_Pending]:
    pending: dict[str, _Pending] = {}
    is_oci = archive.has("index.json")
    is_docker = archive.has("manifest.json")
    if not is_oci and not is_docker:
        raise archive.error(
            "not an image archive: it has neither manifest.json (docker save) nor index.json "
            "(OCI image layout)"
        )
    if is_oci:
        if archive.has("oci-layout"):
            layout = archive.json("oci-layout", "oci-layout")
            version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
            if not isinstance(version, str) or not version.startswith("1."):
                raise archive.error(f"oci-layout: imageLayoutVersion {version!r} is not 1.x")
        try:
            index = spec.Index.from_json(archive.json("index.json", "index.json"), "index.json")
        except InvalidArgument as e:
            raise archive.error(str(e)) from None
        for i, desc in enumerate(index.manifests):
            refs = _annotation_refs(archive, desc.annotations, repository, f"manifests[{i}]")
            _oci_entry(archive, desc, refs, f"index.json manifests[{i}]", pending)
    if is_docker:
        entries = archive.json("manifest.json", "manifest.json")
        if not isinstance(entries, list):
            raise archive.error("manifest.json: expected a list of images")
        repositories = _repositories(archive)
        for i, entry in enumerate(entries):
            _docker_entry(archive, entry, f"manifest.json[{i}]", repositories, pending)
    return list(pending.values())


def _parse_ref(archive: _Archive, text: Any, what: str) -> str | None:
    """A normalised tag reference; None for a digest reference (it cannot be a tag)."""
    if not isinstance(text, str):
        raise archive.error(f"{what}: {text!r} is not a reference")
    try:
        parsed = reference.parse(text)
    except InvalidArgument as e:
        raise archive.error(f"{what}: {e}") from None
    return None if parsed.digest else str(parsed)


def _annotation_refs(
    archive: _Archive, annotations: dict[str, str], repository: str | None, what: str
) -> list[str]:
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if name:
        ref = _parse_ref(archive, name, f"{what} {ANNOTATION_IMAGE_NAME}")
        return [ref] if ref else []
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    if not ref_name:
        return []
    if any(c in ref_name for c in "/:@"):
        ref = _parse_ref(archive, ref_name, f"{what} {ANNOTATION_REF_NAME}")
        return [ref] if ref else []
    if repository is None:
        log.warning("%s: %s %r is a bare tag and no repository was given: left untagged",
                    archive.label, what, ref_name)  # fmt: skip
        return []
    ref = _parse_ref(archive, f"{repository}:{ref_name}", f"{what} {ANNOTATION_REF_NAME}")
    return [ref] if ref else []


def _merge(pending: dict[str, _Pending], image_id: str, refs: list[str]) -> bool:
    """Add refs to an image already pending; False if it is not."""
    found = pending.get(image_id)
    if found is None:
        return False
    found.refs.extend(r for r in refs if r not in found.refs)
    return True


def _oci_entry(
    archive: _Archive,
    desc: spec.Descriptor,
    refs: list[str],
    what: str,
    pending: dict[str, _Pending],
) -> None:
    if desc.media_type in spec.INDEX_TYPES:
        data = archive.by_descriptor(desc, what)
        try:
            nested = spec.Index.from_json(json.loads(data), what)
            chosen = spec.pick_manifest(nested, "linux", _host_architecture())
        except (ValueError, InvalidArgument, NotFound) as e:
            raise archive.error(f"{what}: {e}") from None
        _oci_entry(archive, chosen, refs, f"{what} -> {chosen.digest}", pending)
        return
    if desc.media_type and desc.media_type not in spec.MANIFEST_TYPES:
        log.info("%s: %s: %s is not an image, skipped", archive.label, what, desc.media_type)
        return
    manifest_bytes = archive.by_descriptor(desc, what)
    try:
        manifest = spec.Manifest.from_json(json.loads(manifest_bytes), what)
    except (ValueError, InvalidArgument) as e:
        raise archive.error(f"{what}: {e}") from None
    if manifest.config.media_type not in spec.CONFIG_TYPES:
        log.info(
            "%s: %s: an artifact (%s), skipped", archive.label, what, manifest.config.media_type
        )
        return
    config_bytes = archive.by_descriptor(manifest.config, f"{what} config")
    if _merge(pending, manifest.config.digest, refs):
        return
    config = _config(archive, config_bytes, f"{what} config {manifest.config.digest}")
    diff_ids = config.rootfs.diff_ids
    if len(manifest.layers) != len(diff_ids):
        raise archive.error(
            f"{what}: {len(manifest.layers)} layers but the config has {len(diff_ids)} diff_ids"
        )
    for i, (layer, expected) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
        where = f"{what} layers[{i}] ({layer.digest})"
        try:
            spec.layer_compression(layer.media_type)
        except InvalidArgument as e:
            raise archive.error(f"{where}: {e}") from None
        archive.check_size(layer, where)
        actual = archive.diff_id(layer.digest)
        if actual != expected:
            raise archive.error(
                f"{where}: its content has diffID {actual}, the config says {expected}"
            )
    pending[manifest.config.digest] = _Pending(manifest_bytes, config_bytes, list(refs))


def _config(archive: _Archive, data: bytes, what: str) -> spec.ImageConfig:
    try:
        return spec.ImageConfig.from_json(json.loads(data), what)
    except (ValueError, InvalidArgument) as e:
        raise archive.error(f"{what}: {e}") from None


def _repositories(archive: _Archive) -> dict[str, list[str]]:
    """Tags by top layer id from a legacy ``repositories`` file ({repo: {tag: id}})."""
    if not archive.has("repositories"):
        return {}
    data = archive.json("repositories", "repositories")
    by_id: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise archive.error("repositories: expected an object of repositories")
    for repo, tags in data.items():
        if not isinstance(tags, dict):
            raise archive.error(f"repositories.{repo}: expected an object of tags")
        for tag, layer_id in tags.items():
            if isinstance(layer_id, str):
                by_id.setdefault(layer_id, []).append(f"{repo}:{tag}")
    return by_id


def _string_list(archive: _Archive, entry: dict[str, Any], key: str, what: str) -> list[str]:
    items = entry.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise archive.error(f"{what}.{key}: expected a list of strings")
    return items


def _docker_entry(
    archive: _Archive,
    entry: Any,
    what: str,
    repositories: dict[str, list[str]],
    pending: dict[str, _Pending],
) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise archive.error(f"{what}: expected an object with Config, RepoTags and Layers")
    config_path = archive.resolve(entry["Config"])
    config_bytes = archive.read(config_path, f"{what}.Config")
    config_digest = digests.of_bytes(config_bytes)
    stem = posixpath.basename(config_path).removesuffix(".json")
    if len(stem) == 64 and stem != config_digest.removeprefix("sha256:"):
        raise archive.error(
            f"{what}.Config: {entry['Config']} has digest {config_digest}, its name says "
            f"sha256:{stem} (tampered?)"
        )
    layer_paths = _string_list(archive, entry, "Layers", what)
    tags = _string_list(archive, entry, "RepoTags", what)
    if not tags and layer_paths:
        # legacy v1 ids name one image's chain (blob digests in Docker 25's may be shared)
        top_id, _, base = layer_paths[-1].partition("/")
        tags = repositories.get(top_id, []) if base == "layer.tar" else []
    refs = [r for i, t in enumerate(tags) if (r := _parse_ref(archive, t, f"{what}.RepoTags[{i}]"))]
    if _merge(pending, config_digest, refs):
        return
    config = _config(archive, config_bytes, f"{what}.Config ({entry['Config']})")
    diff_ids = config.rootfs.diff_ids
    if len(layer_paths) != len(diff_ids):
        raise archive.error(
            f"{what}: {len(layer_paths)} Layers but the config has {len(diff_ids)} diff_ids"
        )
    layers = []
    for i, (path, expected) in enumerate(zip(layer_paths, diff_ids, strict=True)):
        where = f"{what}.Layers[{i}] ({path})"
        blob = archive.blob(path, where)
        actual = archive.diff_id(blob.digest)
        if actual != expected:
            raise archive.error(
                f"{where}: its content has diffID {actual}, the config says {expected}"
            )
        media_type = archive.layer_media_type(blob.digest)
        layers.append(spec.Descriptor(media_type, blob.digest, blob.size))
    manifest = spec.Manifest(
        config=spec.Descriptor(spec.OCI_CONFIG, config_digest, len(config_bytes)),
        layers=tuple(layers),
    )
    pending[config_digest] = _Pending(encode(manifest.to_json()), config_bytes, refs)


# --------------------------------------------------------------------------- save


class _TarSink:
    """Writes an archive as a tar stream: deterministic headers, parents before children."""

    def __init__(self, stream: BinaryIO) -> None:
        self.tar = tarfile.open(  # noqa: SIM115  (closed by close())
            fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT
        )
        self.dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def _parents(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent and parent not in self.dirs:
            self._parents(parent)
            self.dirs.add(parent)
            self.tar.addfile(self._info(parent, tarfile.DIRTYPE, 0o755))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._parents(name)
        info = self._info(name, tarfile.REGTYPE, 0o644)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def add_blob(self, name: str, store: ImageStore, digest: str) -> None:
        self._parents(name)
        with store.content.open(digest) as f:
            info = self._info(name, tarfile.REGTYPE, 0o644)
            info.size = os.fstat(f.fileno()).st_size
            self.tar.addfile(info, f)

    def close(self) -> None:
        self.tar.close()


class _DirSink:
    """Writes a layout directory: each file tmp + fsync + rename, blobs already there kept."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def has_blob(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, name))

    def _write(self, name: str, write: Any) -> None:
        path = os.path.join(self.root, name)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def add_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda f: f.write(data))

    def add_blob(self, name: str, store: ImageStore, digest: str) -> None:
        if self.has_blob(name):
            return
        with store.content.open(digest) as src:
            self._write(name, lambda f: shutil.copyfileobj(src, f, _CHUNK))

    def close(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _blob_path(digest: str) -> str:
    parsed = digests.parse(digest)
    return f"blobs/{parsed.algorithm}/{parsed.hex}"


def save(store: ImageStore, refs: Sequence[str], out: Source, format: Format = "docker") -> None:
    """``docker save``: the images ``refs`` name (references or ids) as one archive.

    ``format="docker"`` writes Docker 25's layout (also an OCI layout) to the stream ``out``;
    ``format="oci"`` an OCI layout to the stream, or into the directory ``out`` when it is a
    path. An image named by a reference is saved with that tag; one named by id, untagged."""
    if format not in ("docker", "oci"):
        raise InvalidArgument(f"save: format {format!r} is not 'docker' or 'oci'")
    if not refs:
        raise InvalidArgument("save: no images named")
    images: dict[str, tuple[Image, list[reference.Reference]]] = {}
    for text in refs:
        image = store.resolve(text)
        tags = images.setdefault(image.id, (image, []))[1]
        if digests.is_digest(text):
            continue
        with contextlib.suppress(InvalidArgument):
            parsed = reference.parse(text)
            named = str(parsed) in image.references and parsed.tag and not parsed.digest
            if named and parsed not in tags:
                tags.append(parsed)
    existing: list[spec.Descriptor] = []
    sink: _TarSink | _DirSink
    if isinstance(out, str | os.PathLike):
        if format != "oci":
            raise InvalidArgument("save: a directory is written only as an OCI layout")
        root = os.fspath(out)
        existing = _existing_index(root)
        sink = _DirSink(root)
    else:
        sink = _TarSink(out)
    entries: list[spec.Descriptor] = []
    manifest_json: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for image, tags in images.values():
        manifest = image.manifest
        blobs = [*(layer.digest for layer in manifest.layers), manifest.config.digest]
        for digest in [*blobs, image.manifest_digest]:
            if digest not in written:
                written.add(digest)
                sink.add_blob(_blob_path(digest), store, digest)
        desc = spec.Descriptor(
            media_type=manifest.media_type or spec.OCI_MANIFEST,
            digest=image.manifest_digest,
            size=store.content.info(image.manifest_digest).size,
        )
        for tag in tags:
            ref_name = tag.tag if format == "docker" else str(tag)
            annotations = {ANNOTATION_IMAGE_NAME: str(tag), ANNOTATION_REF_NAME: ref_name}
            entries.append(spec.Descriptor(desc.media_type, desc.digest, desc.size,
                                           annotations=annotations))  # fmt: skip
        if not tags:
            entries.append(desc)
        if format == "docker":
            manifest_json.append(
                {
                    "Config": _blob_path(manifest.config.digest),
                    "RepoTags": [str(t) for t in tags],
                    "Layers": [_blob_path(layer.digest) for layer in manifest.layers],
                }
            )
            if manifest.layers:
                top = digests.parse(manifest.layers[-1].digest).hex
                for tag in tags:
                    repositories.setdefault(tag.name, {})[tag.tag] = top
    names = {e.annotations.get(ANNOTATION_REF_NAME) for e in entries} - {None}
    digests_saved = {e.digest for e in entries}
    kept = [
        e
        for e in existing
        if (e.annotations.get(ANNOTATION_REF_NAME) not in names)
        and (ANNOTATION_REF_NAME in e.annotations or e.digest not in digests_saved)
    ]
    index = spec.Index(manifests=(*kept, *entries))
    try:
        sink.add_bytes("oci-layout", encode({"imageLayoutVersion": LAYOUT_VERSION}))
        if format == "docker":
            sink.add_bytes("manifest.json", encode(cast("dict[str, Any]", manifest_json)))
            if repositories:
                sink.add_bytes("repositories", encode(repositories))
        sink.add_bytes("index.json", encode(index.to_json()))
    finally:
        sink.close()
    log.info("saved %d image(s) as %s", len(images), format)


def _existing_index(root: str) -> list[spec.Descriptor]:
    """The entries of a layout already in ``root`` (none for a missing or empty dir)."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    if not names:
        return []
    if "oci-layout" not in names or "index.json" not in names:
        raise InvalidArgument(f"save: {root} is not empty and not an OCI image layout")
    try:
        with open(os.path.join(root, "index.json"), "rb") as f:
            return list(spec.Index.from_json(json.loads(f.read()), "index.json").manifests)
    except ValueError as e:
        raise InvalidArgument(f"save: {root}/index.json is not valid JSON: {e}") from None
