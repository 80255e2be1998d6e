"""Helpers for the registry server's tests: the server on a 127.0.0.1 port in a thread of the
test process, and small OCI images built as bytes.

Rules: ``running(config)`` starts ``berth.registry.server`` on port 0 in its own event loop
thread and stops it (runner cleanup: open uploads aborted) on exit, even on failure. Clients
are plain ``requests`` sessions against ``Server.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests

from berth.registry.server import ServerConfig, bound_port, start

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    url: str
    config: ServerConfig
    session: requests.Session = field(default_factory=requests.Session)

    def __call__(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(config: ServerConfig) -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        try:
            runner = await start(config, "127.0.0.1", 0)
        except BaseException as e:
            box["error"] = e
            ready.set()
            raise
        box["port"] = bound_port(runner)
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    ready.wait(10)
    if "error" in box:
        thread.join(5)
        loop.close()
        raise box["error"]  # type: ignore[misc]
    try:
        yield Server(f"http://127.0.0.1:{box['port']}", config)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def make_image(
    seed: str = "x",
    layers: int = 1,
    layer_size: int = 1000,
    media_type: str = OCI_MANIFEST,
    subject: dict[str, object] | None = None,
    artifact_type: str | None = None,
) -> Image:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
         "config": {"Env": [f"SEED={seed}"]}}
    ).encode()  # fmt: skip
    blobs = [os.urandom(layer_size) for _ in range(layers)]
    docker = media_type == DOCKER_MANIFEST
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                "digest": sha256(b),
                "size": len(b),
            }
            for b in blobs
        ],
    }
    if artifact_type:
        manifest["artifactType"] = artifact_type
    if subject is not None:
        manifest["subject"] = subject
    return Image(config, blobs, json.dumps(manifest).encode(), media_type)


def push_blob(server: Server, name: str, data: bytes) -> requests.Response:
    response = server("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(data)}", data=data)
    assert response.status_code == 201, response.text
    return response


def push_image(server: Server, name: str, image: Image, tag: str) -> requests.Response:
    for blob in image.blobs:
        push_blob(server, name, blob)
    response = server(
        "PUT",
        f"/v2/{name}/manifests/{tag}",
        data=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert response.status_code == 201, response.text
    return response


def error_code(response: requests.Response) -> str:
    code: str = response.json()["errors"][0]["code"]
    return code
