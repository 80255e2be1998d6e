"""``pull``: an image from a registry into the image store, as ``docker load`` would add it.

Steps: ping and authenticate (``client.Registry``); fetch the manifest the tag or digest names
(OCI and Docker v2 schema 2 manifests and indexes are asked for; an index gives its
linux/amd64 entry); fetch the config; fetch the layers a few at a time
(``DEFAULT_PARALLEL``), each streamed into the content store; then ``ImageStore.add_image``
with the manifest and config bytes as the registry served them — the same record, id and
manifest digest as a load of the same image.

Rules:
- Every byte is verified: a document against the digest asked for (a digest reference) or the
  one the registry announced (``Docker-Content-Digest``), every blob by the content store's
  writer against its descriptor's digest and size, and every layer fetched against the
  config's diffID (decompressed as it arrives, as ``docker load`` checks it), before the blob
  is committed. A mismatch is an error naming the digest.
- A blob already complete in the content store is not fetched again ("Already exists"): a
  pull that failed halfway resumes with the layers it had finished.
- A failure leaves no image, no reference and no partial blob: a writer that does not finish
  drops its ingest file, and the other downloads are cancelled (their files dropped too).
  Whole blobs fetched before the failure stay, unreferenced, for the next attempt (or gc).
- Blob bytes are written and hashed in worker threads, a MiB at a time: the event loop only
  moves network data. Store calls run in threads too. A cancelled download waits for its
  write in flight before dropping the ingest file (``client.in_thread``).
- Progress events use dockerd's words and ids (a layer's blob digest, 12 hex digits):
  "Pulling fs layer", "Waiting", "Downloading" (with bytes), "Verifying Checksum",
  "Download complete", "Pull complete", "Already exists".
- Layers that are not distributable (foreign layers) and artifacts that are not images are
  refused with ``Unsupported``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Coroutine, Iterable
from typing import IO, Any, cast

from berth.errors import InvalidArgument, NotFound, Unsupported
from berth.image import digest as digests
from berth.image.content import Writer
from berth.image.reference import Reference
from berth.image.store import Image, ImageStore
from berth.registry.client import (
    Event,
    Progress,
    Registry,
    Throttle,
    in_thread,
    next_chunk,
    no_progress,
    read_body,
)
from berth.registry.credentials import AuthConfig
from berth.spec import image as spec
from berth.spec.value import value

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 3  # dockerd's max-concurrent-downloads
DOCUMENT_MAX = 4 << 20  # bytes of a manifest, an index or a config
WRITE_CHUNK = 1 << 20
PLATFORM = ("linux", "amd64")
ACCEPT = ", ".join(
    (spec.OCI_MANIFEST, spec.DOCKER_MANIFEST, spec.OCI_INDEX, spec.DOCKER_MANIFEST_LIST)
)


@value
class Pulled:
    image: Image
    digest: str  # what the tag named: the manifest's, or the index's when it was one
    fresh: bool  # the reference named another image (or none) before


def short(digest: str) -> str:
    return digests.short(digest)


async def fetch_manifest(registry: Registry, reference: str) -> tuple[bytes, str, str]:
    """(bytes, media type, digest) of the manifest or index ``reference`` (a tag or digest)
    names, verified (see the module rules)."""
    url = registry.url(f"manifests/{reference}")
    response = await registry.request("GET", url, headers={"Accept": ACCEPT})
    body = await read_body(response, DOCUMENT_MAX + 1)
    if len(body) > DOCUMENT_MAX:
        raise InvalidArgument(f"manifest {reference}: more than {DOCUMENT_MAX} bytes")
    actual = digests.of_bytes(body)
    expected = reference if digests.is_digest(reference) else ""
    expected = expected or response.headers.get("Docker-Content-Digest", "")
    if expected and digests.is_digest(expected):
        algorithm = digests.parse(expected).algorithm
        actual = digests.of_bytes(body, algorithm)
        if actual != expected:
            raise InvalidArgument(
                f"manifest verification failed for digest {expected}: the registry sent {actual}"
            )
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    return body, media_type, actual


def parse_document(body: bytes, media_type: str, what: str) -> spec.Manifest | spec.Index:
    try:
        data = json.loads(body)
    except ValueError as e:
        raise InvalidArgument(f"{what}: not valid JSON: {e}") from None
    if isinstance(data, dict) and "mediaType" not in data and media_type in spec.INDEX_TYPES:
        return spec.Index.from_json(data, what)
    if isinstance(data, dict) and data.get("schemaVersion") == 1:
        raise Unsupported(f"{what}: Docker image manifest v1 (schema 1) is not supported")
    return spec.parse_document(data)


async def fetch_blob_bytes(registry: Registry, desc: spec.Descriptor, what: str) -> bytes:
    """A small blob (a config), verified against its descriptor."""
    if desc.size > DOCUMENT_MAX:
        raise InvalidArgument(f"{what} {desc.digest}: {desc.size} bytes is too big")
    response = await registry.request("GET", registry.url(f"blobs/{desc.digest}"))
    body = await read_body(response, desc.size + 1)
    actual = digests.of_bytes(body, digests.parse(desc.digest).algorithm)
    if len(body) != desc.size or actual != desc.digest:
        raise InvalidArgument(
            f"{what} verification failed for digest {desc.digest}: got {len(body)} bytes "
            f"with digest {actual}"
        )
    return body


class _Hashing:
    """A file-like sink that only hashes what is written to it."""

    def __init__(self) -> None:
        self.hasher = digests.Hasher()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return len(data)


class DiffIdHasher:
    """The diffID (digest of the uncompressed tar) of a layer blob fed piece by piece, in
    bounded memory: gzip (every member) and zstd (every frame) are decompressed as they come."""

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self.sink = _Hashing()
        self._gzip: Any = None
        self._zstd: Any = None
        self._errors: tuple[type[Exception], ...] = (zlib.error,)
        if compression == "gzip":
            self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif compression == "zstd":
            import zstandard  # only zstd layers pay for the import

            self._zstd = zstandard.ZstdDecompressor().stream_writer(cast("IO[bytes]", self.sink))
            self._errors = (zstandard.ZstdError,)

    def update(self, data: bytes) -> None:
        try:
            if self._gzip is not None:
                self._feed_gzip(data)
            elif self._zstd is not None:
                self._zstd.write(data)
            else:
                self.sink.write(data)
        except self._errors as e:
            raise InvalidArgument(f"not valid {self.compression}: {e}") from None

    def _feed_gzip(self, data: bytes) -> None:
        pending = data
        while pending:
            if self._gzip.eof:  # another gzip member follows the one that ended
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.sink.write(self._gzip.decompress(pending, WRITE_CHUNK))
            pending = self._gzip.unused_data if self._gzip.eof else self._gzip.unconsumed_tail

    def digest(self) -> str:
        if self._zstd is not None:
            self._zstd.flush()
        elif self._gzip is not None and not self._gzip.eof:
            raise InvalidArgument("not valid gzip: the stream ends early")
        return self.sink.hasher.digest()


async def download_blob(
    registry: Registry,
    store: ImageStore,
    desc: spec.Descriptor,
    diff_id: str,
    progress: Progress,
) -> None:
    """Stream a layer into the content store, verified against its digest, size and the
    config's diffID; nothing is left if it fails."""
    ident = short(desc.digest)
    writer: Writer = store.content.writer(desc.digest, desc.size)
    compression = spec.layer_compression(desc.media_type)
    unpacked = DiffIdHasher(compression) if compression else None
    if unpacked is None and desc.digest != diff_id:  # a plain tar is its own diffID
        raise InvalidArgument(
            f"layer {desc.digest} is an uncompressed tar, but the config says diffID {diff_id}"
        )

    def write(data: bytes) -> None:
        writer.write(data)
        if unpacked is not None:
            unpacked.update(data)

    def commit() -> None:
        if unpacked is not None:
            actual = unpacked.digest()
            if actual != diff_id:
                raise InvalidArgument(f"its content has diffID {actual}, the config says {diff_id}")
        writer.commit()

    try:
        response = await registry.request("GET", registry.url(f"blobs/{desc.digest}"))
        try:
            report = Throttle(progress, ident, "Downloading", desc.size)
            buffer = bytearray()
            received = 0
            chunks = response.content.iter_chunked(WRITE_CHUNK)
            while chunk := await next_chunk(response, chunks):
                buffer += chunk
                received += len(chunk)
                if len(buffer) >= WRITE_CHUNK:
                    await in_thread(write, bytes(buffer))
                    buffer.clear()
                report(received)
            if buffer:
                await in_thread(write, bytes(buffer))
        finally:
            response.release()
        progress(Event(ident, "Verifying Checksum"))
        try:
            await in_thread(commit)
        except InvalidArgument as e:
            raise InvalidArgument(
                f"filesystem layer verification failed for digest {desc.digest}: {e.message}"
            ) from None
    except BaseException:
        writer.abort()  # drops the ingest file (quick: close and unlink)
        raise
    progress(Event(ident, "Download complete"))


async def pull(
    store: ImageStore,
    ref: Reference,
    auth: AuthConfig | None = None,
    insecure: Iterable[str] = (),
    progress: Progress = no_progress,
    parallel: int = DEFAULT_PARALLEL,
) -> Pulled:
    """Pull ``ref`` (tagged or by digest) into ``store``; see the module rules."""
    wanted = ref.digest or ref.tag or "latest"
    probe = f"manifests/{wanted}"
    async with Registry(ref.domain, ref.path, auth, insecure, ("pull",), (), probe) as registry:
        try:
            body, media_type, top_digest = await fetch_manifest(registry, wanted)
        except NotFound as e:
            raise NotFound(f"manifest for {ref.familiar()} not found: {e.message}") from None
        progress(Event(ref.tag or ref.digest, f"Pulling from {ref.path}"))
        document = parse_document(body, media_type, f"manifest {wanted}")
        if isinstance(document, spec.Index):
            chosen = spec.pick_manifest(document, *PLATFORM)
            body, media_type, _ = await fetch_manifest(registry, chosen.digest)
            document = parse_document(body, media_type, f"manifest {chosen.digest}")
            if not isinstance(document, spec.Manifest):
                raise InvalidArgument(f"manifest {chosen.digest}: an index inside an index")
        manifest = document
        if manifest.config.media_type not in spec.CONFIG_TYPES:
            raise Unsupported(
                f"{ref.familiar()} is not an image: its config is {manifest.config.media_type}"
            )
        for i, layer in enumerate(manifest.layers):
            if layer.media_type in spec.FOREIGN_LAYER_TYPES or layer.urls:
                raise Unsupported(f"layers[{i}] ({layer.digest}) is not distributable")
            spec.layer_compression(layer.media_type)
        config_bytes = await fetch_blob_bytes(registry, manifest.config, "config")
        config = spec.ImageConfig.from_json(json.loads(config_bytes), "config")
        if len(config.rootfs.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"{ref.familiar()}: {len(manifest.layers)} layers but the config has "
                f"{len(config.rootfs.diff_ids)} diff_ids"
            )
        pairs = list(zip(manifest.layers, config.rootfs.diff_ids, strict=True))
        await _download_layers(registry, store, pairs, progress, parallel)
    # a tag, or name@digest of the manifest kept (an index's is not: its image's is)
    kept = digests.of_bytes(body)
    refs = [f"{ref.name}@{kept}"] if ref.digest else [str(ref)]
    before = await asyncio.to_thread(store.get, refs[0])
    image = await asyncio.to_thread(store.add_image, body, config_bytes, refs)
    log.info("pulled %s as image %s (manifest %s)", ref, image.short_id, image.manifest_digest)
    return Pulled(image, top_digest, before is None or before.id != image.id)


async def _download_layers(
    registry: Registry,
    store: ImageStore,
    layers: Iterable[tuple[spec.Descriptor, str]],
    progress: Progress,
    parallel: int,
) -> None:
    todo: dict[str, tuple[spec.Descriptor, str]] = {}
    for layer, diff_id in layers:
        if layer.digest in todo:
            continue
        if store.content.exists(layer.digest):
            progress(Event(short(layer.digest), "Already exists"))
        else:
            todo[layer.digest] = (layer, diff_id)
            progress(Event(short(layer.digest), "Pulling fs layer"))
    for layer, _ in list(todo.values())[parallel:]:
        progress(Event(short(layer.digest), "Waiting"))
    slots = asyncio.Semaphore(max(1, parallel))

    async def one(desc: spec.Descriptor, diff_id: str) -> None:
        async with slots:
            await download_blob(registry, store, desc, diff_id, progress)
        progress(Event(short(desc.digest), "Pull complete"))

    await run_all([one(desc, diff_id) for desc, diff_id in todo.values()])


async def run_all(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` side by side; the first failure cancels the others and is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except BaseExceptionGroup as failed:
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
