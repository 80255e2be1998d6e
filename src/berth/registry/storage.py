"""The registry's storage: blobs in Berth's content store, repositories as small link files.

Layout under the registry root::

    <root>/content/blobs/<alg>/<hex>                 every blob and manifest, once (shared)
    <root>/content/ingest/<random>                   uploads in progress
    <root>/repositories/<name>/_blobs/<alg>/<hex>    empty file: the blob is in this repository
    <root>/repositories/<name>/_manifests/<alg>/<hex>  JSON: the manifest's media type, size,
                                                     artifactType, subject (the referrers API)
    <root>/repositories/<name>/_tags/<tag>           the digest the tag points at

Rules:
- Bytes only ever reach ``content`` through its writer (ingest -> verify size and digest ->
  atomic rename), so a blob the registry serves always matches its digest; a failed or
  abandoned upload leaves nothing a client can see (its ingest file is removed, nothing is
  linked). Links are written after the blob is committed; every link and tag file is written
  atomically (tmp + fsync + rename), so a crash leaves either the old or the new state.
- A repository sees only what is linked into it: a blob pushed to one repository is not
  readable from another until it is pushed or mounted there (the bytes are stored once).
- Repository names and tags follow the distribution spec's grammar (``NAME``, ``TAG``); a name
  component starts with a letter or digit, so it never collides with the ``_`` directories.
- Uploads live in this process's memory (the writer holds the running hash, sha256 unless
  the upload was started with a ``?digest=`` of another algorithm); an upload idle
  longer than ``UPLOAD_IDLE`` is aborted by ``reap_uploads``. A restart loses open uploads,
  and ``gc`` removes their ingest files.
- ``gc`` keeps every manifest linked anywhere, what those manifests reference, and whatever
  was written or linked within ``grace`` seconds (a push in progress: blobs before their
  manifest); it removes the rest: blob links, then the unreferenced blobs themselves.
- Errors are ``berth.errors`` kinds naming the repository, digest or tag; the HTTP server maps
  them to the distribution spec's codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from berth.errors import InvalidArgument, NotFound
from berth.image import digest as digests
from berth.image.content import ContentStore, Writer
from berth.spec import image as spec

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
NAME_MAX = 255
UPLOAD_IDLE = 3600.0  # seconds an upload may sit untouched before it is aborted
GC_GRACE = 3600.0  # seconds a fresh blob or link is safe from gc (a push in progress)
MANIFEST_MAX = 4 << 20  # bytes: the size registries commonly accept for a manifest


class DigestMismatch(InvalidArgument):
    """The bytes are not those the digest names."""


class MissingBlob(NotFound):
    """A manifest references a blob the repository does not have."""


class MissingManifest(NotFound):
    """An index references a manifest the repository does not have."""


def check_name(name: str) -> str:
    if len(name) > NAME_MAX or NAME.fullmatch(name) is None:
        raise InvalidArgument(
            f"invalid repository name {name!r}: expected lowercase components "
            f"[a-z0-9] joined by '.', '_', '__' or '-', separated by '/', "
            f"{NAME_MAX} characters at most"
        )
    return name


def check_tag(tag: str) -> str:
    if TAG.fullmatch(tag) is None:
        raise InvalidArgument(
            f"invalid tag {tag!r}: expected [a-zA-Z0-9_][a-zA-Z0-9._-], 128 characters at most"
        )
    return tag


def is_tag(reference: str) -> bool:
    return ":" not in reference


@dataclass(frozen=True)
class ManifestInfo:
    """What the registry remembers about a manifest linked into a repository."""

    digest: str
    media_type: str
    size: int
    artifact_type: str = ""
    subject: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mediaType": self.media_type, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.subject:
            out["subject"] = self.subject
        if self.annotations:
            out["annotations"] = self.annotations
        return out

    @staticmethod
    def from_json(digest: str, data: dict[str, object]) -> ManifestInfo:
        annotations = data.get("annotations") or {}
        return ManifestInfo(
            digest=digest,
            media_type=str(data["mediaType"]),
            size=int(str(data["size"])),
            artifact_type=str(data.get("artifactType") or ""),
            subject=str(data.get("subject") or ""),
            annotations=dict(annotations) if isinstance(annotations, dict) else {},
        )

    def descriptor(self) -> spec.Descriptor:
        return spec.Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            annotations=self.annotations,
            artifact_type=self.artifact_type or None,
        )


@dataclass(frozen=True)
class ParsedManifest:
    """A manifest or index checked on its way in, with what it references."""

    document: spec.Manifest | spec.Index
    media_type: str
    blobs: tuple[str, ...]  # config and layers (must be in the repository)
    children: tuple[str, ...]  # an index's manifests (must be in the repository)


def parse_manifest(body: bytes, content_type: str) -> ParsedManifest:
    """Check a pushed manifest; InvalidArgument naming the field at fault."""
    if len(body) > MANIFEST_MAX:
        raise InvalidArgument(f"manifest is {len(body)} bytes, more than {MANIFEST_MAX}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"manifest is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidArgument("manifest: expected a JSON object")
    declared = data.get("mediaType")
    content_type = content_type.split(";", 1)[0].strip()
    if data.get("schemaVersion") == 1:
        raise InvalidArgument("manifest: schema 1 manifests are not supported")
    generic = ("", "application/json", "application/octet-stream")
    if isinstance(declared, str) and declared != content_type and content_type not in generic:
        raise InvalidArgument(
            f"manifest: mediaType {declared!r} does not match Content-Type {content_type!r}"
        )
    media_type = declared if isinstance(declared, str) and declared else content_type
    if media_type in spec.INDEX_TYPES or (not declared and "manifests" in data):
        index = spec.Index.from_json(data)
        return ParsedManifest(
            index,
            media_type if media_type in spec.INDEX_TYPES else spec.OCI_INDEX,
            (),
            tuple(m.digest for m in index.manifests),
        )
    if media_type and media_type not in spec.MANIFEST_TYPES:
        raise InvalidArgument(f"manifest: unsupported media type {media_type!r}")
    manifest = spec.Manifest.from_json(data)
    blobs = (manifest.config.digest, *(layer.digest for layer in manifest.layers))
    return ParsedManifest(manifest, media_type or spec.OCI_MANIFEST, blobs, ())


def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _digest_path(base: str, digest: str) -> str:
    parsed = digests.parse(digest)
    return os.path.join(base, parsed.algorithm, parsed.hex)


def _list_digests(base: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    for algorithm in digests.ALGORITHMS:
        try:
            entries = list(os.scandir(os.path.join(base, algorithm)))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.name.startswith("."):
                yield f"{algorithm}:{entry.name}", entry


class Upload:
    """One blob upload session: a content-store writer fed chunk by chunk."""

    def __init__(self, name: str, writer: Writer) -> None:
        self.id = str(uuid.uuid4())
        self.name = name
        self.writer = writer
        self.touched = time.monotonic()
        self.busy = False  # a request is streaming into it

    @property
    def offset(self) -> int:
        return self.writer.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writer.write(data)
        self.touched = time.monotonic()


class RegistryStorage:
    def __init__(self, root: str) -> None:
        self.root = root
        self.content = ContentStore(os.path.join(root, "content"))
        self.repositories = os.path.join(root, "repositories")
        self._uploads: dict[str, Upload] = {}
        os.makedirs(self.repositories, exist_ok=True)

    # ------------------------------------------------------------------ repositories

    def _repo(self, name: str) -> str:
        return os.path.join(self.repositories, check_name(name))

    def repository_exists(self, name: str) -> bool:
        repo = self._repo(name)
        return os.path.isdir(os.path.join(repo, "_blobs")) or os.path.isdir(
            os.path.join(repo, "_manifests")
        )

    def require_repository(self, name: str) -> None:
        if not self.repository_exists(name):
            raise NotFound(f"repository {name} is not known to this registry")

    def catalog(self) -> list[str]:
        """Every repository with a blob or a manifest, sorted."""
        found: list[str] = []
        for directory, subdirs, _files in os.walk(self.repositories):
            if "_blobs" in subdirs or "_manifests" in subdirs:
                found.append(os.path.relpath(directory, self.repositories))
            subdirs[:] = [d for d in subdirs if not d.startswith("_")]
        found.sort()
        return found

    # ------------------------------------------------------------------ blobs

    def _blob_link(self, name: str, digest: str) -> str:
        return _digest_path(os.path.join(self._repo(name), "_blobs"), digest)

    def has_blob(self, name: str, digest: str) -> bool:
        return os.path.exists(self._blob_link(name, digest)) and self.content.exists(digest)

    def blob_path(self, name: str, digest: str) -> str:
        """The file of a blob (or manifest) linked into ``name``; NotFound otherwise."""
        if not (self.has_blob(name, digest) or self._has_manifest_link(name, digest)):
            raise NotFound(f"blob {digest} is not in repository {name}")
        return self.content.path(digest)

    def link_blob(self, name: str, digest: str) -> None:
        link = self._blob_link(name, digest)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        fd = os.open(link, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(fd)
        os.utime(link)  # a fresh link is safe from gc for its grace period

    def mount_blob(self, name: str, digest: str, source: str) -> bool:
        """Link a blob of ``source`` into ``name``; False if ``source`` has no such blob."""
        if not self.has_blob(source, digest):
            return False
        self.link_blob(name, digest)
        return True

    def delete_blob(self, name: str, digest: str) -> None:
        if not _unlink(self._blob_link(name, digest)):
            raise NotFound(f"blob {digest} is not in repository {name}")

    # ------------------------------------------------------------------ uploads

    def start_upload(self, name: str, expected_digest: str | None = None) -> Upload:
        check_name(name)
        upload = Upload(name, self.content.writer(expected_digest))
        self._uploads[upload.id] = upload
        return upload

    def upload(self, name: str, upload_id: str) -> Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.name != name:
            raise NotFound(f"upload {upload_id} is not in progress in repository {name}")
        return upload

    def finish_upload(self, upload: Upload, digest: str) -> str:
        """Verify the upload against ``digest``, commit and link it; the upload is gone after
        this, whatever happens (a failed one leaves nothing behind)."""
        self._uploads.pop(upload.id, None)
        writer = upload.writer
        try:
            digests.validate(digest)
        except InvalidArgument:
            writer.abort()
            raise
        if writer.expected_digest is not None and writer.expected_digest != digest:
            writer.abort()
            raise DigestMismatch(
                f"digest mismatch: the upload was started for {writer.expected_digest}, "
                f"finished with {digest}"
            )
        writer.expected_digest = digest
        try:
            info = writer.commit()  # aborts (removes the ingest file) on a mismatch
        except InvalidArgument as e:
            raise DigestMismatch(e.message) from None
        self.link_blob(upload.name, info.digest)
        return info.digest

    def cancel_upload(self, upload: Upload) -> None:
        self._uploads.pop(upload.id, None)
        upload.writer.abort()

    def reap_uploads(self, idle: float = UPLOAD_IDLE) -> list[str]:
        """Abort uploads untouched for ``idle`` seconds; their ids."""
        cutoff = time.monotonic() - idle
        stale = [u for u in self._uploads.values() if u.touched < cutoff]
        for upload in stale:
            self.cancel_upload(upload)
        return [u.id for u in stale]

    def close(self) -> None:
        """Abort every open upload (server shutdown): no ingest file stays behind."""
        for upload in list(self._uploads.values()):
            self.cancel_upload(upload)

    # ------------------------------------------------------------------ manifests and tags

    def _manifest_link(self, name: str, digest: str) -> str:
        return _digest_path(os.path.join(self._repo(name), "_manifests"), digest)

    def _has_manifest_link(self, name: str, digest: str) -> bool:
        return os.path.exists(self._manifest_link(name, digest))

    def _tag_file(self, name: str, tag: str) -> str:
        return os.path.join(self._repo(name), "_tags", check_tag(tag))

    def resolve(self, name: str, reference: str) -> ManifestInfo:
        """The manifest a tag or digest names in ``name``; NotFound otherwise."""
        if is_tag(reference):
            try:
                with open(self._tag_file(name, reference), encoding="ascii") as f:
                    digest = f.read().strip()
            except FileNotFoundError:
                raise NotFound(f"manifest {name}:{reference} is not known") from None
        else:
            digest = digests.validate(reference)
        try:
            with open(self._manifest_link(name, digest), "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"manifest {name}@{digest} is not known") from None
        return ManifestInfo.from_json(digest, data)

    def manifest_bytes(self, info: ManifestInfo) -> bytes:
        return self.content.read_bytes(info.digest)

    def put_manifest(
        self, name: str, reference: str, body: bytes, content_type: str
    ) -> tuple[ManifestInfo, ParsedManifest]:
        """Check, store and link a manifest, then point the tag at it (a tag reference).

        InvalidArgument for a bad document (DigestMismatch: a digest reference that is not the
        body's); MissingBlob/MissingManifest naming the first reference ``name`` lacks.
        """
        check_name(name)
        if is_tag(reference):
            check_tag(reference)
        else:
            digests.validate(reference)
        parsed = parse_manifest(body, content_type)
        algorithm = digests.SHA256 if is_tag(reference) else digests.parse(reference).algorithm
        digest = digests.of_bytes(body, algorithm)
        if not is_tag(reference) and digest != reference:
            raise DigestMismatch(f"digest mismatch: the body is {digest}, not {reference}")
        for blob in parsed.blobs:
            if not self.has_blob(name, blob):
                raise MissingBlob(f"blob {blob} is not in repository {name}")
        for child in parsed.children:
            if not self._has_manifest_link(name, child):
                raise MissingManifest(f"manifest {child} is not in repository {name}")
        document = parsed.document
        artifact_type = document.artifact_type or ""
        if not artifact_type and isinstance(document, spec.Manifest):
            artifact_type = document.config.media_type
        info = ManifestInfo(
            digest=digest,
            media_type=parsed.media_type,
            size=len(body),
            artifact_type=artifact_type,
            subject=document.subject.digest if document.subject is not None else "",
            annotations=dict(document.annotations),
        )
        self.content.put_bytes(body, digest)
        _write_atomic(self._manifest_link(name, digest), json.dumps(info.to_json()).encode())
        if is_tag(reference):
            _write_atomic(self._tag_file(name, reference), digest.encode())
        return info, parsed

    def delete_manifest(self, name: str, reference: str) -> None:
        """A tag: untag. A digest: unlink the manifest and every tag pointing at it."""
        if is_tag(reference):
            if not _unlink(self._tag_file(name, reference)):
                raise NotFound(f"manifest {name}:{reference} is not known")
            return
        digest = digests.validate(reference)
        if not _unlink(self._manifest_link(name, digest)):
            raise NotFound(f"manifest {name}@{digest} is not known")
        for tag, target in self._tag_targets(name):
            if target == digest:
                _unlink(self._tag_file(name, tag))

    def _tag_targets(self, name: str) -> list[tuple[str, str]]:
        tags_dir = os.path.join(self._repo(name), "_tags")
        found = []
        try:
            entries = list(os.scandir(tags_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                with open(entry.path, encoding="ascii") as f:
                    found.append((entry.name, f.read().strip()))
            except FileNotFoundError:
                continue
        return found

    def tags(self, name: str) -> list[str]:
        self.require_repository(name)
        return sorted(tag for tag, _target in self._tag_targets(name))

    def manifests(self, name: str) -> list[ManifestInfo]:
        found = []
        for digest, entry in _list_digests(os.path.join(self._repo(name), "_manifests")):
            try:
                with open(entry.path, "rb") as f:
                    found.append(ManifestInfo.from_json(digest, json.load(f)))
            except FileNotFoundError:
                continue
        return found

    def referrers(self, name: str, subject: str, artifact_type: str = "") -> list[ManifestInfo]:
        """Manifests in ``name`` whose ``subject`` is ``subject``, sorted by digest."""
        digests.validate(subject)
        return sorted(
            (
                m
                for m in self.manifests(name)
                if m.subject == subject and (not artifact_type or m.artifact_type == artifact_type)
            ),
            key=lambda m: m.digest,
        )

    # ------------------------------------------------------------------ garbage collection

    def gc(self, grace: float = GC_GRACE) -> list[str]:
        """Remove what no manifest references (see the module docstring); the blobs deleted."""
        cutoff = time.time() - grace
        keep: set[str] = set()
        links: list[tuple[str, str, float]] = []  # (blob link path, digest, mtime)
        for repo in self.catalog():
            base = self._repo(repo)
            for info in self.manifests(repo):
                keep.add(info.digest)
                keep.update(self._referenced(info.digest))
            for digest, entry in _list_digests(os.path.join(base, "_blobs")):
                with contextlib.suppress(FileNotFoundError):
                    links.append((entry.path, digest, entry.stat().st_mtime))
        for _path, digest, mtime in links:
            if mtime >= cutoff:
                keep.add(digest)
        for blob in self.content.list():
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.content.path(blob.digest)).st_mtime >= cutoff:
                    keep.add(blob.digest)
        for path, digest, _mtime in links:
            if digest not in keep:
                _unlink(path)
        return self.content.gc(keep)

    def _referenced(self, digest: str) -> list[str]:
        try:
            data = json.loads(self.content.read_bytes(digest))
        except (NotFound, ValueError):
            return []
        found = []
        if isinstance(data, dict):
            config = data.get("config")
            for entry in [config, *(data.get("layers") or []), *(data.get("manifests") or [])]:
                if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                    found.append(entry["digest"])
        return found
