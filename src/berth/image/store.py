"""The image store the engine uses: images, references, unpacking into snapshots, disk use.

Layout under the root the caller hands in::

    <root>/content/       the ContentStore: manifests, configs and layers, by digest
    <root>/snapshots/     the Snapshotter: one committed snapshot per chain id, one active
                          snapshot per container (overlay; copy when overlay is unavailable)
    <root>/images.json    the references database (``store_db``: why one file, its rules)
    <root>/lock           flock'd around every read-modify-write of images.json

Rules:
- An image is identified as Docker does, by its id: the digest of its config. Its record holds
  the digest of its manifest (one manifest per id: adding another manifest for the same config
  replaces it and moves its references) and when it was added. References are normalised
  (``docker.io/library/busybox:latest``, or ``name@sha256:…``) and map to a manifest digest.
  Manifests, configs and layers live in the content store; the store never rewrites them.
- An image without references is dangling (``<none>:<none>``): retagging leaves the old image
  dangling, as Docker does. ``remove`` by reference untags and deletes the image when its last
  reference goes; by id it untags everything (Conflict when the references span several
  repositories and not forced). An image ``in_use`` is never deleted: without force that is a
  Conflict, with force its references go and the image stays, dangling.
- Nothing but ``gc`` deletes blobs or committed snapshots: ``gc`` keeps what some image or
  container still needs. It must not run while a pull, load or build is writing blobs for an
  image not yet added (the engine serialises them); ``prune`` ends with a ``gc``.
- ``unpack`` applies each layer into its own snapshot, checking its diffID against the config;
  a mismatch or any failure leaves no snapshot behind.
- Sizes are bytes of content (manifest, config, layer blobs as stored), as Docker reports with
  its containerd store; a layer shared by images counts once in totals.
- Errors are Berth's: NotFound says "No such image: <ref>" as docker does.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from berth.errors import Conflict, InvalidArgument, NotFound
from berth.image import digest as digests
from berth.image import reference
from berth.image.content import ContentStore
from berth.image.layers import Whiteouts, apply_layer
from berth.image.snapshots import Mode, Mount, Snapshotter, chain_id
from berth.image.store_db import Db, DbFile
from berth.spec import image as spec
from berth.spec.value import field, replace, value

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")
_CHUNK = 1 << 20
InUse = Callable[[str], bool]


@value
class Image:
    """One image as the engine sees it; ``repo_tags``/``repo_digests`` in docker's familiar
    form (``busybox:latest``, ``busybox@sha256:…``)."""

    id: str
    manifest_digest: str
    manifest: spec.Manifest
    config: spec.ImageConfig
    created: str  # RFC 3339, the config's (or when it was added, if the config has none)
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0  # manifest + config + layer blobs
    references: tuple[str, ...] = ()  # normalised: docker.io/library/busybox:latest

    @property
    def short_id(self) -> str:
        return digests.short(self.id)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return self.config.rootfs.diff_ids

    @property
    def chain_id(self) -> str | None:
        return chain_id(self.diff_ids) if self.diff_ids else None


@value
class ImageSummary:
    """A row of ``docker images`` (the API's ImageSummary)."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: int  # unix seconds
    size: int
    shared_size: int
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "ParentId": "",
            "RepoTags": list(self.repo_tags),
            "RepoDigests": list(self.repo_digests),
            "Created": self.created,
            "Size": self.size,
            "SharedSize": self.shared_size,
            "VirtualSize": self.size,
            "Labels": dict(self.labels),
            "Containers": -1,
        }


@value
class HistoryEntry:
    """A row of ``docker history``: ``id`` is ``<missing>`` except on the top entry."""

    id: str
    created: int
    created_by: str
    tags: tuple[str, ...]
    size: int
    comment: str

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Created": self.created,
            "CreatedBy": self.created_by,
            "Tags": list(self.tags),
            "Size": self.size,
            "Comment": self.comment,
        }


@value
class ImageUsage:
    """One image in ``docker system df -v``."""

    id: str
    repo_tags: tuple[str, ...]
    size: int
    shared_size: int  # bytes of blobs other images use too
    unique_size: int


@value
class DiskUsage:
    images: tuple[ImageUsage, ...]
    total_size: int  # every blob some image references, each counted once
    reclaimable: int  # bytes of blobs only dangling images reference


@value
class GcReport:
    blobs: tuple[str, ...]
    snapshots: tuple[str, ...]
    reclaimed: int  # bytes of the removed blobs


@value
class PruneReport:
    deleted: tuple[str, ...]  # image ids
    untagged: tuple[str, ...]  # familiar references
    reclaimed: int


def overlay_available() -> bool:
    """Overlay snapshots need the overlay filesystem and root (whiteouts are device nodes)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            return any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        return False


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def unix_seconds(rfc3339: str) -> int:
    """``2024-01-02T03:04:05.123456789Z`` (any fraction, ``Z`` or an offset) -> unix seconds;
    0 for an empty or unreadable time."""
    text = rfc3339.strip().replace("z", "Z")
    head, dot, rest = text.partition(".")
    if dot:  # drop the fraction (nanoseconds are too long for fromisoformat)
        zone = rest.lstrip("0123456789")
        text = head + zone
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return int(parsed.timestamp())


def encode(document: dict[str, Any]) -> bytes:
    """Canonical bytes of a document Berth writes: compact, key order as ``to_json`` gives."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _no_such_image(text: str) -> NotFound:
    try:
        shown = reference.parse(text).familiar()
    except InvalidArgument:
        shown = text
    return NotFound(f"No such image: {shown}")


class ImageStore:
    """Images under ``root``; see the module docstring."""

    def __init__(self, root: str, snapshot_mode: Mode | None = None) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.content = ContentStore(os.path.join(self.root, "content"))
        mode: Mode = snapshot_mode or ("overlay" if overlay_available() else "copy")
        self.snapshots = Snapshotter(os.path.join(self.root, "snapshots"), mode)
        self._db = DbFile(self.root)
        self.db_path = self._db.path
        self._configs: dict[str, spec.ImageConfig] = {}
        self._manifests: dict[str, spec.Manifest] = {}

    # -- documents

    def _manifest(self, digest: str) -> spec.Manifest:
        found = self._manifests.get(digest)
        if found is None:
            found = spec.Manifest.from_json(json.loads(self.content.read_bytes(digest)))
            self._manifests[digest] = found
        return found

    def _config(self, image_id: str) -> spec.ImageConfig:
        found = self._configs.get(image_id)
        if found is None:
            found = spec.ImageConfig.from_json(json.loads(self.content.read_bytes(image_id)))
            self._configs[image_id] = found
        return found

    def _image(self, db: Db, image_id: str) -> Image:
        rec = db.images[image_id]
        manifest = self._manifest(rec["manifest"])
        config = self._config(image_id)
        refs = [reference.parse_normalized(r) for r in db.refs_of(image_id)]
        tags = tuple(r.familiar() for r in refs if r.tag and not r.digest)
        names = sorted({r.familiar_name() for r in refs})
        repo_digests = tuple(f"{name}@{rec['manifest']}" for name in names)
        return Image(
            id=image_id,
            manifest_digest=rec["manifest"],
            manifest=manifest,
            config=config,
            created=config.created or rec.get("added", ""),
            repo_tags=tags,
            repo_digests=repo_digests,
            size=sum(size for _, size in _blobs(manifest, rec["manifest"], self.content)),
            references=tuple(str(r) for r in refs),
        )

    # -- adding and naming images

    def add_image(
        self, manifest_bytes: bytes, config_bytes: bytes, refs: Sequence[str] = ()
    ) -> Image:
        """Record an image whose layer blobs are already in content; tag it with ``refs``.

        The manifest and config are checked (config digest, one diffID per layer, every layer
        blob present with its size) and written into content as given."""
        try:
            manifest = spec.Manifest.from_json(json.loads(manifest_bytes))
            config = spec.ImageConfig.from_json(json.loads(config_bytes))
        except ValueError as e:
            raise InvalidArgument(f"image manifest or config is not valid JSON: {e}") from e
        config_digest = digests.of_bytes(config_bytes)
        if manifest.config.digest != config_digest:
            raise InvalidArgument(
                f"manifest config.digest {manifest.config.digest} does not match the config "
                f"given ({config_digest})"
            )
        if len(manifest.layers) != len(config.rootfs.diff_ids):
            raise InvalidArgument(
                f"manifest has {len(manifest.layers)} layers but the config's rootfs.diff_ids "
                f"has {len(config.rootfs.diff_ids)}"
            )
        for i, layer in enumerate(manifest.layers):
            spec.layer_compression(layer.media_type)
            if not self.content.exists(layer.digest):
                raise NotFound(f"layers[{i}]: blob {layer.digest} is not in the content store")
            if self.content.info(layer.digest).size != layer.size:
                raise InvalidArgument(f"layers[{i}]: blob {layer.digest} size differs")
        parsed = [reference.parse(r) for r in refs]
        manifest_digest = digests.of_bytes(manifest_bytes)
        for ref in parsed:  # ``name@digest`` only for this very manifest (a pull by digest)
            if ref.digest and (ref.tag or ref.digest != manifest_digest):
                raise InvalidArgument(f"refusing to create a tag with a digest reference: {ref}")
        self.content.put_bytes(config_bytes, config_digest)
        self.content.put_bytes(manifest_bytes, manifest_digest)
        with self._db.locked() as db:
            old = db.images.get(config_digest)
            if old is not None and old["manifest"] != manifest_digest:
                for name, target in db.refs.items():
                    if target == old["manifest"]:
                        db.refs[name] = manifest_digest
            added = old["added"] if old is not None else now_rfc3339()
            db.images[config_digest] = {**(old or {}), "manifest": manifest_digest, "added": added}
            for ref in parsed:
                db.refs[str(ref)] = manifest_digest
            if parsed:
                db.images[config_digest]["last_tag_time"] = now_rfc3339()
            image = self._image(db, config_digest)
        log.info("image %s added (manifest %s)", image.short_id, manifest_digest)
        return image

    def write_image(
        self,
        config: spec.ImageConfig,
        layers: Sequence[spec.Descriptor],
        ref: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Image:
        """Write ``config`` and an OCI manifest for ``layers`` (already in content) and add
        the image, tagged ``ref`` when given."""
        config_bytes = encode(config.to_json())
        manifest = spec.Manifest(
            config=spec.Descriptor(
                spec.OCI_CONFIG, digests.of_bytes(config_bytes), len(config_bytes)
            ),
            layers=tuple(layers),
            annotations=dict(annotations or {}),
        )
        return self.add_image(encode(manifest.to_json()), config_bytes, [ref] if ref else [])

    def _find(self, db: Db, text: str) -> str:
        """The id ``text`` names, by Docker's rules: an id (``sha256:<hex>`` or its hex), a
        reference (``name``, ``name:tag``, ``name@digest``), else an unambiguous id prefix."""
        if not isinstance(text, str) or not text:
            raise InvalidArgument(f"image reference {text!r}: empty")
        if digests.is_digest(text):
            if text in db.images:
                return text
            raise _no_such_image(text)
        ref: reference.Reference | None = None
        with contextlib.suppress(InvalidArgument):
            ref = reference.parse(text)
        if ref is not None:
            by_manifest = db.id_of_manifest()
            target = db.refs.get(str(ref))
            if target is not None and target in by_manifest:
                return by_manifest[target]
            if ref.digest and ref.digest in by_manifest:
                image_id = by_manifest[ref.digest]
                names = {reference.parse_normalized(r).name for r in db.refs_of(image_id)}
                if ref.name in names:
                    return image_id
        prefix = text.removeprefix("sha256:")
        if prefix and len(prefix) <= 64 and set(prefix) <= _HEX:
            matches = [i for i in db.images if i[len("sha256:") :].startswith(prefix)]
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {text}")
        if ref is None:
            reference.parse(text)  # the error naming what is wrong with it
        raise _no_such_image(text)

    def resolve(self, ref_or_id: str) -> Image:
        db = self._db.read()
        return self._image(db, self._find(db, ref_or_id))

    def get(self, ref_or_id: str) -> Image | None:
        try:
            return self.resolve(ref_or_id)
        except NotFound:
            return None

    def tag(self, image_ref_or_id: str, new_ref: str) -> Image:
        """Point ``new_ref`` at the image (``docker tag``); the image it named before, if any,
        keeps its other references or becomes dangling."""
        target = reference.parse(new_ref)
        if target.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {new_ref}")
        with self._db.locked() as db:
            image_id = self._find(db, image_ref_or_id)
            db.refs[str(target)] = db.images[image_id]["manifest"]
            db.images[image_id]["last_tag_time"] = now_rfc3339()
            image = self._image(db, image_id)
        log.info("image %s tagged %s", image.short_id, target)
        return image

    def untag(self, ref: str) -> str:
        """Remove one reference; the id of the image it named. The image stays (dangling if
        that was its last reference): ``remove`` is what deletes images."""
        parsed = reference.parse(ref)
        with self._db.locked() as db:
            manifest = db.refs.pop(str(parsed), None)
            if manifest is None:
                raise _no_such_image(ref)
            image_id = db.id_of_manifest().get(manifest, "")
        log.info("untagged %s (image %s)", parsed, image_id)
        return image_id

    # -- reading

    def list(self, dangling: bool | None = None) -> builtins.list[ImageSummary]:
        """Every image, newest first; ``dangling`` True/False keeps only (un)tagged ones."""
        db = self._db.read()
        images = [self._image(db, i) for i in db.images]
        counts = _blob_counts(images, self.content)
        rows = []
        for image in images:
            if dangling is not None and dangling != (not image.references):
                continue
            shared = sum(
                size
                for d, size in _blobs(image.manifest, image.manifest_digest, self.content)
                if counts[d] > 1
            )
            rows.append(
                ImageSummary(
                    id=image.id,
                    repo_tags=image.repo_tags,
                    repo_digests=image.repo_digests,
                    created=unix_seconds(image.created),
                    size=image.size,
                    shared_size=shared,
                    labels=dict(image.config.config.labels),
                )
            )
        rows.sort(key=lambda r: (-r.created, r.id))
        return rows

    def inspect(self, ref_or_id: str) -> dict[str, Any]:
        """``docker image inspect``'s document."""
        image = self.resolve(ref_or_id)
        config = image.config
        last = self._db.read().images[image.id].get("last_tag_time", "")
        comment = config.history[-1].comment if config.history else ""
        return {
            "Id": image.id,
            "RepoTags": list(image.repo_tags),
            "RepoDigests": list(image.repo_digests),
            "Parent": "",
            "Comment": comment,
            "Created": image.created,
            "DockerVersion": "",
            "Author": config.author,
            "Config": _docker_config(config.config),
            "Architecture": config.architecture,
            "Variant": config.variant or None,
            "Os": config.os,
            "Size": image.size,
            "GraphDriver": {"Name": self.snapshots.mode, "Data": None},
            "RootFS": {"Type": config.rootfs.type, "Layers": list(config.rootfs.diff_ids)},
            "Metadata": {"LastTagTime": last or "0001-01-01T00:00:00Z"},
            "Descriptor": {
                "mediaType": image.manifest.media_type or spec.OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": self.content.info(image.manifest_digest).size,
            },
        }

    def history(self, ref_or_id: str) -> builtins.list[HistoryEntry]:
        """``docker history``: the config's history, newest first, with each layer's size."""
        image = self.resolve(ref_or_id)
        layers = iter(image.manifest.layers)
        rows = []
        for entry in image.config.history:
            size = 0
            if not entry.empty_layer:
                layer = next(layers, None)
                size = layer.size if layer is not None else 0
            rows.append(
                HistoryEntry(
                    id="<missing>",
                    created=unix_seconds(entry.created),
                    created_by=entry.created_by,
                    tags=(),
                    size=size,
                    comment=entry.comment,
                )
            )
        rows.reverse()
        if rows:
            rows[0] = replace(rows[0], id=image.id, tags=image.repo_tags)
        return rows

    # -- removing

    def remove(
        self, ref_or_id: str, force: bool = False, in_use: InUse | None = None
    ) -> builtins.list[dict[str, str]]:
        """``docker rmi``: ``[{"Untagged": ref}, …, {"Deleted": id}]`` as the API answers."""
        used = in_use or (lambda _id: False)
        out: builtins.list[dict[str, str]] = []
        with self._db.locked() as db:
            image_id = self._find(db, ref_or_id)
            refs = db.refs_of(image_id)
            named = self._named_reference(db, ref_or_id, refs)
            if named is not None and len(refs) > 1:
                del db.refs[named]
                return [{"Untagged": reference.familiar(named)}]
            if named is None and not force:
                repos = {reference.parse_normalized(r).name for r in refs}
                if len(repos) > 1:
                    raise Conflict(
                        f"conflict: unable to delete {digests.short(image_id)} (must be forced)"
                        " - image is referenced in multiple repositories"
                    )
            if used(image_id):
                if not force:
                    raise Conflict(
                        f"conflict: unable to delete {digests.short(image_id)} (must be forced)"
                        " - image is being used by running container"
                    )
                for ref in refs:
                    del db.refs[ref]
                    out.append({"Untagged": reference.familiar(ref)})
                return out
            for ref in refs:
                del db.refs[ref]
                out.append({"Untagged": reference.familiar(ref)})
            del db.images[image_id]
            out.append({"Deleted": image_id})
        log.info("image %s deleted", digests.short(image_id))
        return out

    @staticmethod
    def _named_reference(db: Db, text: str, refs: builtins.list[str]) -> str | None:
        """The stored reference ``text`` names, if it names one (rather than an id)."""
        if digests.is_digest(text):
            return None
        with contextlib.suppress(InvalidArgument):
            normalized = str(reference.parse(text))
            if normalized in refs:
                return normalized
        return None

    def prune(self, dangling_only: bool = True, in_use: InUse | None = None) -> PruneReport:
        """``docker image prune [-a]``: delete dangling (or all unused) images, then ``gc``."""
        used = in_use or (lambda _id: False)
        deleted: builtins.list[str] = []
        untagged: builtins.list[str] = []
        with self._db.locked() as db:
            for image_id in sorted(db.images):
                refs = db.refs_of(image_id)
                if (dangling_only and refs) or used(image_id):
                    continue
                for ref in refs:
                    del db.refs[ref]
                    untagged.append(reference.familiar(ref))
                del db.images[image_id]
                deleted.append(image_id)
        report = self.gc()
        return PruneReport(tuple(deleted), tuple(untagged), report.reclaimed)

    def gc(self) -> GcReport:
        """Delete blobs and committed snapshots no image (or container snapshot) needs."""
        with self._db.locked() as db:
            keep: set[str] = set()
            chains: set[str] = set()
            for image_id, rec in db.images.items():
                manifest = self._manifest(rec["manifest"])
                keep.update(d for d, _ in _blobs(manifest, rec["manifest"], None))
                diff_ids = self._config(image_id).rootfs.diff_ids
                chains.update(chain_id(diff_ids[: i + 1]) for i in range(len(diff_ids)))
            sizes = {info.digest: info.size for info in self.content.list()}
            blobs = self.content.gc(keep)
            removed = self._gc_snapshots(chains)
        for d in blobs:
            self._manifests.pop(d, None)
            self._configs.pop(d, None)
        reclaimed = sum(sizes.get(d, 0) for d in blobs)
        return GcReport(tuple(blobs), tuple(removed), reclaimed)

    def _gc_snapshots(self, chains: set[str]) -> builtins.list[str]:
        infos = self.snapshots.list()
        parents = {i.key: i.parent for i in infos}
        keep = set()
        for info in infos:  # an active snapshot keeps its whole chain
            key: str | None = info.key if info.kind == "committed" and info.key in chains else None
            if info.kind == "active":
                key = info.parent
            while key is not None and key not in keep:
                keep.add(key)
                key = parents.get(key)
        doomed = [i.key for i in infos if i.kind == "committed" and i.key not in keep]
        removed: builtins.list[str] = []
        while doomed:  # children first: a parent cannot go while a child names it
            child_of = {parents.get(k) for k in doomed}
            leaves = [k for k in doomed if k not in child_of]
            for key in leaves:
                self.snapshots.remove(key)
                removed.append(key)
            doomed = [k for k in doomed if k not in leaves]
        return removed

    def disk_usage(self) -> DiskUsage:
        """``docker system df -v`` for images: a blob used by several images is shared, and
        counted once in the total."""
        db = self._db.read()
        images = [self._image(db, i) for i in sorted(db.images)]
        counts = _blob_counts(images, self.content)
        sizes: dict[str, int] = {}
        rows = []
        live: set[str] = set()
        for image in images:
            blobs = _blobs(image.manifest, image.manifest_digest, self.content)
            sizes.update(blobs)
            shared = sum(size for d, size in blobs if counts[d] > 1)
            rows.append(
                ImageUsage(image.id, image.repo_tags, image.size, shared, image.size - shared)
            )
            if image.references:
                live.update(d for d, _ in blobs)
        reclaimable = sum(size for d, size in sizes.items() if d not in live)
        return DiskUsage(tuple(rows), sum(sizes.values()), reclaimable)

    # -- snapshots

    def unpack(self, image: Image) -> str | None:
        """Apply the image's layers into committed snapshots (those already there are kept);
        the top chain id (None for an image without layers)."""
        diff_ids = image.config.rootfs.diff_ids
        parent: str | None = None
        whiteouts: Whiteouts = "overlay" if self.snapshots.mode == "overlay" else "delete"
        for i, (layer, diff_id) in enumerate(zip(image.manifest.layers, diff_ids, strict=True)):
            chain = chain_id(diff_ids[: i + 1])
            try:
                self.snapshots.stat(chain)
            except NotFound:
                work = self.snapshots.prepare_layer(parent)
                try:
                    with self.content.open(layer.digest) as blob:
                        stats = apply_layer(blob, work, whiteouts=whiteouts)
                    if stats.diff_id != diff_id:
                        raise InvalidArgument(
                            f"layer {i} ({layer.digest}) of image {image.short_id}: its content "
                            f"has diffID {stats.diff_id}, the config says {diff_id}"
                        )
                    if stats.digest != layer.digest:
                        raise InvalidArgument(
                            f"layer {i} ({layer.digest}) of image {image.short_id}: the blob "
                            f"read back as {stats.digest}"
                        )
                except BaseException:
                    self.snapshots.abort(work)
                    raise
                self.snapshots.commit(work, chain)
                log.debug("image %s: layer %d unpacked as %s", image.short_id, i, chain)
            parent = chain
        return parent

    def container_mounts(self, image: Image, container_key: str) -> builtins.list[Mount]:
        """The mounts of the container's writable snapshot on the image (made on first call)."""
        top = self.unpack(image)
        try:
            info = self.snapshots.stat(container_key)
        except NotFound:
            return self.snapshots.active(container_key, top)
        if info.kind != "active" or info.parent != top:
            raise Conflict(f"snapshot {container_key!r} exists on another image")
        return self.snapshots.mounts(container_key)

    def remove_container(self, container_key: str) -> None:
        self.snapshots.remove(container_key)

    # -- new images made here

    def import_rootfs(
        self,
        tar_stream: BinaryIO,
        ref: str | None = None,
        config_overrides: spec.ContainerConfig | None = None,
        comment: str = "",
    ) -> Image:
        """``docker import``: a root filesystem tar (plain or gzip, kept as given) as a
        one-layer image, tagged ``ref`` when given (``base.import_rootfs``)."""
        from berth.image import base

        return base.import_rootfs(self, tar_stream, ref, config_overrides, comment)

    def commit_container(
        self,
        container_key: str,
        parent_image: Image,
        ref: str | None = None,
        changes: spec.ContainerConfig | None = None,
        comment: str = "",
        author: str = "",
        created_by: str = "",
    ) -> Image:
        """``docker commit``: the container's upper dir as a new layer on ``parent_image``;
        ``changes`` replaces the image's container config when given (``base.commit``)."""
        from berth.image import base

        return base.commit_container(
            self, container_key, parent_image, ref, changes, comment, author, created_by
        )


# --------------------------------------------------------------------------- helpers


def _blobs(
    manifest: spec.Manifest, manifest_digest: str, content: ContentStore | None
) -> builtins.list[tuple[str, int]]:
    """(digest, size) of each blob of an image: manifest, config, layers (sizes as stored)."""
    out = [(manifest_digest, content.info(manifest_digest).size if content else 0)]
    out.append((manifest.config.digest, manifest.config.size))
    out.extend((layer.digest, layer.size) for layer in manifest.layers)
    return out


def _blob_counts(images: Sequence[Image], content: ContentStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for image in images:
        for d in {d for d, _ in _blobs(image.manifest, image.manifest_digest, content)}:
            counts[d] = counts.get(d, 0) + 1
    return counts


def _docker_config(config: spec.ContainerConfig) -> dict[str, Any]:
    """The container config as docker inspect shows it (every key present)."""
    out: dict[str, Any] = {
        "User": "",
        "Env": None,
        "Cmd": None,
        "Entrypoint": None,
        "WorkingDir": "",
        "Labels": None,
    }
    out.update(config.to_json())
    return out
