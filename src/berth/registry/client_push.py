"""``push``: images of the image store to a registry, as they are stored.

Steps: ``push`` names the repository (its first progress line, as dockerd's), then
``tagged_images`` says what ``name[:tag]`` means (one tag, or every tag of the repository when
none is given; "An image does not exist locally with the tag: …" otherwise); it pings and
authenticates once, then for each image uploads its layers a few at a time
(``DEFAULT_PARALLEL``) and its config, then puts its manifest under the tag.

Rules:
- The manifest, config and layers go as stored, byte for byte, so the registry's digests
  are the store's (``docker pull`` of the result gets the same image id and manifest digest).
- A blob the registry has is not sent (``HEAD`` 200: "Layer already exists"). One that another
  repository of the same registry has (an image of the store referenced there has it) is
  mounted (``POST …/uploads/?mount=&from=``; 201: "Mounted from <repo>"); a registry that
  answers 202 instead starts an upload, which is used. Otherwise one ``POST`` opens an upload
  and one ``PUT`` with the digest sends the whole blob, streamed from the content store with
  its ``Content-Length`` (a monolithic upload).
- Progress ids are the layers' diffIDs cut to 12 digits, as dockerd's; the config has none.
  The manifest's line is "<tag>: digest: sha256:… size: N" and a ``Pushed`` result per tag.
- File reads run in worker threads; nothing here writes to the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import BinaryIO

from yarl import URL

from berth.errors import InvalidArgument, NotFound
from berth.image import digest as digests
from berth.image import reference
from berth.image.reference import Reference
from berth.image.store import Image, ImageStore
from berth.registry.client import Event, Progress, Registry, Throttle, in_thread, no_progress
from berth.registry.client_pull import run_all
from berth.registry.credentials import AuthConfig
from berth.spec import image as spec
from berth.spec.value import value

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 5  # dockerd's max-concurrent-uploads
READ_CHUNK = 1 << 20


@value
class Pushed:
    tag: str
    digest: str
    size: int


def tagged_images(store: ImageStore, ref: Reference) -> list[tuple[Reference, Image]]:
    """The (tag reference, image) pairs a push of ``ref`` sends: its tag, or every tag of its
    repository when ``ref`` has no tag. Blocking (store reads)."""
    if ref.digest:
        raise InvalidArgument(f"cannot push a digest reference: {ref.familiar()}")
    if ref.tag:
        image = store.get(str(ref))
        if image is None:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name()}")
        return [(ref, image)]
    found: list[tuple[Reference, Image]] = []
    for row in store.list():
        image = store.resolve(row.id)
        for text in image.references:
            parsed = reference.parse_normalized(text)
            if parsed.name == ref.name and parsed.tag and not parsed.digest:
                found.append((parsed, image))
    if not found:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name()}")
    return sorted(found, key=lambda pair: pair[0].tag)


def mount_sources(store: ImageStore, target: Reference) -> dict[str, str]:
    """Blob digest -> another repository of the same registry that has it (per the store's
    references). Blocking (store reads)."""
    sources: dict[str, str] = {}
    for row in store.list():
        image = store.resolve(row.id)
        for text in image.references:
            parsed = reference.parse_normalized(text)
            if parsed.domain != target.domain or parsed.path == target.path:
                continue
            for blob in (image.manifest.config, *image.manifest.layers):
                sources.setdefault(blob.digest, parsed.path)
    return sources


async def _file_chunks(stream: BinaryIO, report: Throttle) -> AsyncIterator[bytes]:
    sent = 0
    try:
        while chunk := await in_thread(stream.read, READ_CHUNK):
            sent += len(chunk)
            report(sent)
            yield chunk
    finally:
        stream.close()


async def upload_blob(
    registry: Registry,
    store: ImageStore,
    desc: spec.Descriptor,
    ident: str,
    mount_from: str | None,
    progress: Progress,
) -> None:
    """Make ``desc``'s blob exist in the registry's repository (see the module rules)."""

    def say(status: str) -> None:
        if ident:
            progress(Event(ident, status))

    head = await registry.request("HEAD", registry.url(f"blobs/{desc.digest}"), ok=(200, 404))
    head.release()
    if head.status == 200:
        say("Layer already exists")
        return
    location = ""
    if mount_from:
        url = URL(registry.url("blobs/uploads/")).with_query(
            {"mount": desc.digest, "from": mount_from}
        )
        started = await registry.request("POST", url, ok=(201, 202))
        started.release()
        if started.status == 201:
            say(f"Mounted from {mount_from}")
            return
        location = started.headers.get("Location", "")
    if not location:
        started = await registry.request("POST", registry.url("blobs/uploads/"), ok=(202,))
        started.release()
        location = started.headers.get("Location", "")
    if not location:
        raise InvalidArgument(f"{registry.base}: upload of {desc.digest} started with no Location")
    target = str(URL(registry.base).join(URL(location, encoded=True)))
    target += ("&" if "?" in target else "?") + f"digest={desc.digest.replace(':', '%3A')}"
    stream = await asyncio.to_thread(store.content.open, desc.digest)
    report = Throttle(progress, ident, "Pushing", desc.size) if ident else lambda _n: None
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
    done = await registry.request(
        "PUT",
        URL(target, encoded=True),
        headers=headers,
        data=_file_chunks(stream, report),  # type: ignore[arg-type]
        ok=(201,),
    )
    done.release()
    say("Pushed")


async def push(
    store: ImageStore,
    target: Reference,
    auth: AuthConfig | None = None,
    insecure: Iterable[str] = (),
    progress: Progress = no_progress,
    parallel: int = DEFAULT_PARALLEL,
) -> list[Pushed]:
    """Push what ``target`` names (``tagged_images``); what each tag's manifest became in the
    registry. The first event names the repository, before anything is looked up (dockerd's
    order: a missing image or refused credentials end the stream that line began)."""
    progress(Event("", f"The push refers to repository [{target.familiar_name()}]"))
    images = await asyncio.to_thread(tagged_images, store, target)
    sources = await asyncio.to_thread(mount_sources, store, target)
    wanted = {b.digest for _, i in images for b in (i.manifest.config, *i.manifest.layers)}
    pull_from = sorted({sources[d] for d in wanted if d in sources})
    registry = Registry(
        target.domain, target.path, auth, insecure, ("pull", "push"), pull_from, "blobs/uploads/"
    )
    results: list[Pushed] = []
    async with registry:
        done: set[str] = set()
        for ref, image in images:
            results.append(
                await _push_image(registry, store, ref, image, sources, done, progress, parallel)
            )
    return results


async def _push_image(
    registry: Registry,
    store: ImageStore,
    ref: Reference,
    image: Image,
    sources: dict[str, str],
    done: set[str],
    progress: Progress,
    parallel: int,
) -> Pushed:
    manifest = image.manifest
    pairs = list(zip(manifest.layers, image.diff_ids, strict=True))[::-1]  # top first
    todo = [(layer, digests.short(diff)) for layer, diff in pairs if layer.digest not in done]
    for _layer, ident in todo:
        progress(Event(ident, "Preparing"))
    for _layer, ident in todo[parallel:]:
        progress(Event(ident, "Waiting"))
    slots = asyncio.Semaphore(max(1, parallel))

    async def one(desc: spec.Descriptor, ident: str) -> None:
        async with slots:
            await upload_blob(registry, store, desc, ident, sources.get(desc.digest), progress)
        done.add(desc.digest)

    await run_all([one(layer, ident) for layer, ident in todo])
    if manifest.config.digest not in done:
        config = manifest.config
        await upload_blob(registry, store, config, "", sources.get(config.digest), progress)
        done.add(config.digest)
    body = await asyncio.to_thread(store.content.read_bytes, image.manifest_digest)
    media_type = manifest.media_type or spec.OCI_MANIFEST
    put = await registry.request(
        "PUT",
        registry.url(f"manifests/{ref.tag}"),
        headers={"Content-Type": media_type},
        data=body,
        ok=(201,),
    )
    put.release()
    announced = put.headers.get("Docker-Content-Digest", image.manifest_digest)
    if announced != image.manifest_digest:
        raise InvalidArgument(
            f"{ref.familiar()}: the registry stored the manifest as {announced}, "
            f"expected {image.manifest_digest}"
        )
    progress(Event("", f"{ref.tag}: digest: {image.manifest_digest} size: {len(body)}"))
    log.info("pushed %s (manifest %s)", ref, image.manifest_digest)
    return Pushed(ref.tag, image.manifest_digest, len(body))
