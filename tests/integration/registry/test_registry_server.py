"""Berth's registry server over real sockets (127.0.0.1): the distribution spec's endpoints,
every error code with its status, uploads of every kind, paging, referrers, delete and gc.

Rules: one server per module (no authentication), each test in its own repository names so
they do not see each other; requests made with ``requests`` as any client would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from registry_server import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    Server,
    error_code,
    make_image,
    push_blob,
    push_image,
    running,
    sha256,
)

from berth.registry.server import ServerConfig
from berth.registry.storage import RegistryStorage

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("registry")
    with running(ServerConfig(root=str(root))) as s:
        yield s


def _ingest_files(server: Server) -> list[str]:
    ingest = Path(server.config.root) / "content" / "ingest"
    return os.listdir(ingest) if ingest.is_dir() else []


def _blob_file(server: Server, digest: str) -> Path:
    return Path(server.config.root, "content", "blobs", *digest.split(":"))


def test_base_check(server: Server) -> None:
    response = server("GET", "/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert response.json() == {}


def test_monolithic_upload_then_head_get_and_range(server: Server) -> None:
    data = os.urandom(5000)
    digest = sha256(data)
    response = push_blob(server, "mono/a", data)
    assert response.headers["Location"] == f"/v2/mono/a/blobs/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest
    head = server("HEAD", f"/v2/mono/a/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "5000"
    assert head.headers["Docker-Content-Digest"] == digest
    got = server("GET", f"/v2/mono/a/blobs/{digest}")
    assert got.status_code == 200 and got.content == data
    part = server("GET", f"/v2/mono/a/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["Content-Range"] == "bytes 100-199/5000"
    bad = server("GET", f"/v2/mono/a/blobs/{digest}", headers={"Range": "bytes=6000-7000"})
    assert bad.status_code == 416
    # the bytes are stored once, read-only, and not visible from another repository
    assert _blob_file(server, digest).stat().st_mode & 0o777 == 0o444
    other = server("GET", f"/v2/mono/b/blobs/{digest}")
    assert other.status_code == 404 and error_code(other) == "BLOB_UNKNOWN"


def test_empty_blob(server: Server) -> None:
    empty = sha256(b"")
    pushed = server("POST", f"/v2/empty/blobs/uploads/?digest={empty}", data=b"")
    assert pushed.status_code == 201, pushed.text
    got = server("GET", f"/v2/empty/blobs/{empty}")
    assert got.status_code == 200 and got.content == b""
    assert got.headers["Content-Length"] == "0"


def test_post_then_put_upload(server: Server) -> None:
    data = os.urandom(3000)
    started = server("POST", "/v2/postput/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    assert location.startswith("/v2/postput/blobs/uploads/")
    assert started.headers["Range"] == "0-0"
    assert started.headers["Docker-Upload-UUID"] in location
    done = server("PUT", f"{location}?digest={sha256(data)}", data=data)
    assert done.status_code == 201, done.text
    assert server("GET", f"/v2/postput/blobs/{sha256(data)}").content == data


def test_chunked_upload_in_order_and_out_of_order(server: Server) -> None:
    data = os.urandom(30000)
    location = server("POST", "/v2/chunked/blobs/uploads/").headers["Location"]

    def patch(start: int, end: int) -> object:
        return server(
            "PATCH",
            location,
            data=data[start : end + 1],
            headers={"Content-Range": f"{start}-{end}", "Content-Type": "application/octet-stream"},
        )

    first = patch(0, 9999)
    assert first.status_code == 202  # type: ignore[attr-defined]
    assert first.headers["Range"] == "0-9999"  # type: ignore[attr-defined]
    skipped = patch(20000, 29999)  # out of order: the upload has 10000 bytes
    assert skipped.status_code == 416  # type: ignore[attr-defined]
    assert error_code(skipped) == "RANGE_INVALID"  # type: ignore[arg-type]
    assert skipped.headers["Range"] == "0-9999"  # type: ignore[attr-defined]
    again = patch(0, 9999)  # a resend of what is there is out of order too
    assert again.status_code == 416  # type: ignore[attr-defined]
    assert patch(10000, 19999).status_code == 202  # type: ignore[attr-defined]
    status = server("GET", location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-19999"
    # a PATCH without Content-Range appends (streamed), then the last chunk comes with the PUT
    streamed = server("PATCH", location, data=data[20000:25000])
    assert streamed.status_code == 202 and streamed.headers["Range"] == "0-24999"
    final = server(
        "PUT",
        f"{location}?digest={sha256(data)}",
        data=data[25000:],
        headers={"Content-Range": "25000-29999"},
    )
    assert final.status_code == 201, final.text
    assert server("GET", f"/v2/chunked/blobs/{sha256(data)}").content == data
    assert server("GET", location).status_code == 404  # the session is over


def test_bad_content_range_and_short_chunk(server: Server) -> None:
    location = server("POST", "/v2/badrange/blobs/uploads/").headers["Location"]
    bad = server("PATCH", location, data=b"abc", headers={"Content-Range": "zero-two"})
    assert bad.status_code == 400 and error_code(bad) == "BLOB_UPLOAD_INVALID"
    short = server("PATCH", location, data=b"abc", headers={"Content-Range": "0-9"})
    assert short.status_code == 400 and error_code(short) == "SIZE_INVALID"
    assert server("DELETE", location).status_code == 204


def test_corrupted_blob_is_refused_and_leaves_nothing(server: Server) -> None:
    data = os.urandom(4096)
    claimed = sha256(b"something else")
    mono = server("POST", f"/v2/corrupt/blobs/uploads/?digest={claimed}", data=data)
    assert mono.status_code == 400 and error_code(mono) == "DIGEST_INVALID"
    location = server("POST", "/v2/corrupt/blobs/uploads/").headers["Location"]
    server("PATCH", location, data=data)
    final = server("PUT", f"{location}?digest={claimed}")
    assert final.status_code == 400 and error_code(final) == "DIGEST_INVALID"
    gone = server("GET", location)
    assert gone.status_code == 404 and error_code(gone) == "BLOB_UPLOAD_UNKNOWN"
    for digest in (claimed, sha256(data)):
        assert server("HEAD", f"/v2/corrupt/blobs/{digest}").status_code == 404
        assert not _blob_file(server, digest).exists()
    assert _ingest_files(server) == []
    no_digest = server("POST", "/v2/corrupt/blobs/uploads/").headers["Location"]
    missing = server("PUT", no_digest, data=b"x")
    assert missing.status_code == 400 and error_code(missing) == "DIGEST_INVALID"


def test_interrupted_upload_leaves_nothing(server: Server) -> None:
    data = os.urandom(2 << 20)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /v2/cut/blobs/uploads/?digest={sha256(data)} HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[: 1 << 20]
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while _ingest_files(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ingest_files(server) == []
    assert server("HEAD", f"/v2/cut/blobs/{sha256(data)}").status_code == 404
    assert not _blob_file(server, sha256(data)).exists()


def test_upload_cancel(server: Server) -> None:
    location = server("POST", "/v2/cancel/blobs/uploads/").headers["Location"]
    server("PATCH", location, data=b"partial")
    assert _ingest_files(server) != []
    assert server("DELETE", location).status_code == 204
    assert _ingest_files(server) == []
    again = server("DELETE", location)
    assert again.status_code == 404 and error_code(again) == "BLOB_UPLOAD_UNKNOWN"
    other = server("GET", "/v2/cancel/blobs/uploads/not-an-upload")
    assert other.status_code == 404 and error_code(other) == "BLOB_UPLOAD_UNKNOWN"


def test_concurrent_uploads(server: Server) -> None:
    shared = os.urandom(300_000)
    own = [os.urandom(200_000) for _ in range(6)]

    def chunked(data: bytes) -> int:
        location = server("POST", "/v2/concurrent/blobs/uploads/").headers["Location"]
        for start in range(0, len(data), 65536):
            piece = data[start : start + 65536]
            end = start + len(piece) - 1
            response = server("PATCH", location, data=piece,
                              headers={"Content-Range": f"{start}-{end}"})  # fmt: skip
            assert response.status_code == 202, response.text
        code: int = server("PUT", f"{location}?digest={sha256(data)}").status_code
        return code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(chunked, [shared] * 6 + own))
    assert codes == [201] * 12
    for data in [shared, *own]:
        assert server("GET", f"/v2/concurrent/blobs/{sha256(data)}").content == data
    assert _ingest_files(server) == []


def test_cross_repository_mount(server: Server) -> None:
    data = os.urandom(1000)
    push_blob(server, "mount/source", data)
    digest = sha256(data)
    mounted = server("POST", f"/v2/mount/target/blobs/uploads/?mount={digest}&from=mount/source")
    assert mounted.status_code == 201
    assert mounted.headers["Location"] == f"/v2/mount/target/blobs/{digest}"
    assert server("GET", f"/v2/mount/target/blobs/{digest}").content == data
    unknown = sha256(b"not there")
    fallback = server("POST", f"/v2/mount/target/blobs/uploads/?mount={unknown}&from=mount/source")
    assert fallback.status_code == 202  # an upload session instead
    assert server("DELETE", fallback.headers["Location"]).status_code == 204


def test_blob_errors_and_delete(server: Server) -> None:
    bad = server("GET", "/v2/errs/blobs/sha256:nothex")
    assert bad.status_code == 400 and error_code(bad) == "DIGEST_INVALID"
    unknown = server("GET", f"/v2/errs/blobs/{sha256(b'?')}")
    assert unknown.status_code == 404 and error_code(unknown) == "BLOB_UNKNOWN"
    head = server("HEAD", f"/v2/errs/blobs/{sha256(b'?')}")
    assert head.status_code == 404 and head.content == b""
    name = server("GET", "/v2/Upper/Case/blobs/" + sha256(b"?"))
    assert name.status_code == 400 and error_code(name) == "NAME_INVALID"
    method = server("PUT", f"/v2/errs/blobs/{sha256(b'?')}")
    assert method.status_code == 405 and error_code(method) == "UNSUPPORTED"
    nowhere = server("GET", "/v2/errs/unknown-endpoint")
    assert nowhere.status_code == 404
    data = os.urandom(100)
    push_blob(server, "errs", data)
    assert server("DELETE", f"/v2/errs/blobs/{sha256(data)}").status_code == 202
    after = server("GET", f"/v2/errs/blobs/{sha256(data)}")
    assert after.status_code == 404 and error_code(after) == "BLOB_UNKNOWN"
    twice = server("DELETE", f"/v2/errs/blobs/{sha256(data)}")
    assert twice.status_code == 404


def test_manifests_by_tag_and_digest(server: Server) -> None:
    image = make_image("m")
    pushed = push_image(server, "manifests/oci", image, "v1")
    assert pushed.headers["Docker-Content-Digest"] == image.digest
    assert pushed.headers["Location"] == f"/v2/manifests/oci/manifests/{image.digest}"
    for reference in ("v1", image.digest):
        got = server("GET", f"/v2/manifests/oci/manifests/{reference}")
        assert got.status_code == 200
        assert got.content == image.manifest
        assert got.headers["Content-Type"] == image.media_type
        assert got.headers["Docker-Content-Digest"] == image.digest
        head = server("HEAD", f"/v2/manifests/oci/manifests/{reference}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(image.manifest))
    docker = make_image("d", media_type=DOCKER_MANIFEST)
    push_image(server, "manifests/docker", docker, "latest")
    got = server("GET", "/v2/manifests/docker/manifests/latest")
    assert got.headers["Content-Type"] == DOCKER_MANIFEST
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}]}
    ).encode()  # fmt: skip
    put = server(
        "PUT", "/v2/manifests/oci/manifests/multi", data=index, headers={"Content-Type": OCI_INDEX}
    )
    assert put.status_code == 201, put.text
    assert server("GET", "/v2/manifests/oci/manifests/multi").content == index
    by_digest = server(
        "PUT", f"/v2/manifests/oci/manifests/{sha256(index)}", data=index,
        headers={"Content-Type": OCI_INDEX},
    )  # fmt: skip
    assert by_digest.status_code == 201
    docker_list = json.dumps(
        {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": docker.digest, "size": len(docker.manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}]}
    ).encode()  # fmt: skip
    listed = server("PUT", "/v2/manifests/docker/manifests/list", data=docker_list,
                    headers={"Content-Type": DOCKER_LIST})  # fmt: skip
    assert listed.status_code == 201, listed.text
    got = server("GET", "/v2/manifests/docker/manifests/list")
    assert got.headers["Content-Type"] == DOCKER_LIST and got.content == docker_list


def test_manifest_sent_in_pieces(server: Server) -> None:
    image = make_image("pieces", layers=40)  # a manifest of a few KB
    for blob in image.blobs:
        push_blob(server, "pieces", blob)

    def slowly() -> Iterator[bytes]:
        for i in range(0, len(image.manifest), 500):
            yield image.manifest[i : i + 500]
            time.sleep(0.01)

    put = server("PUT", "/v2/pieces/manifests/v1", data=slowly(),
                 headers={"Content-Type": image.media_type})  # fmt: skip
    assert put.status_code == 201, put.text
    assert server("GET", "/v2/pieces/manifests/v1").content == image.manifest


def test_manifest_errors(server: Server) -> None:
    image = make_image("e")
    headers = {"Content-Type": image.media_type}
    missing = server("PUT", "/v2/merr/manifests/v1", data=image.manifest, headers=headers)
    assert missing.status_code == 400 and error_code(missing) == "MANIFEST_BLOB_UNKNOWN"
    for blob in image.blobs:
        push_blob(server, "merr", blob)
    garbage = server("PUT", "/v2/merr/manifests/v1", data=b"{not json", headers=headers)
    assert garbage.status_code == 400 and error_code(garbage) == "MANIFEST_INVALID"
    no_layers = json.loads(image.manifest)
    del no_layers["layers"]
    invalid = server("PUT", "/v2/merr/manifests/v1", data=json.dumps(no_layers), headers=headers)
    assert invalid.status_code == 400 and error_code(invalid) == "MANIFEST_INVALID"
    assert "layers" in invalid.json()["errors"][0]["message"]
    wrong = server(
        "PUT", f"/v2/merr/manifests/{sha256(b'other')}", data=image.manifest, headers=headers
    )
    assert wrong.status_code == 400 and error_code(wrong) == "DIGEST_INVALID"
    mismatch = server(
        "PUT", "/v2/merr/manifests/v1", data=image.manifest,
        headers={"Content-Type": DOCKER_MANIFEST},
    )  # fmt: skip
    assert mismatch.status_code == 400 and error_code(mismatch) == "MANIFEST_INVALID"
    bad_tag = server("PUT", "/v2/merr/manifests/-bad", data=image.manifest, headers=headers)
    assert bad_tag.status_code == 400 and error_code(bad_tag) == "TAG_INVALID"
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": image.media_type, "digest": sha256(b"absent"), "size": 10}]}
    ).encode()  # fmt: skip
    dangling = server(
        "PUT", "/v2/merr/manifests/idx", data=index, headers={"Content-Type": OCI_INDEX}
    )
    assert dangling.status_code == 404 and error_code(dangling) == "MANIFEST_UNKNOWN"
    unknown = server("GET", "/v2/merr/manifests/nope")
    assert unknown.status_code == 404 and error_code(unknown) == "MANIFEST_UNKNOWN"
    bad_digest = server("GET", "/v2/merr/manifests/sha256:123")
    assert bad_digest.status_code == 400 and error_code(bad_digest) == "DIGEST_INVALID"
    big = server("PUT", "/v2/merr/manifests/big", data=b" " * (5 << 20), headers=headers)
    assert big.status_code == 413


def test_delete_manifest(server: Server) -> None:
    image = make_image("del")
    push_image(server, "deleting", image, "a")
    server("PUT", "/v2/deleting/manifests/b", data=image.manifest,
           headers={"Content-Type": image.media_type})  # fmt: skip
    untag = server("DELETE", "/v2/deleting/manifests/b")
    assert untag.status_code == 202
    assert server("GET", "/v2/deleting/manifests/b").status_code == 404
    assert server("GET", "/v2/deleting/manifests/a").status_code == 200
    deleted = server("DELETE", f"/v2/deleting/manifests/{image.digest}")
    assert deleted.status_code == 202
    for reference in ("a", image.digest):
        gone = server("GET", f"/v2/deleting/manifests/{reference}")
        assert gone.status_code == 404 and error_code(gone) == "MANIFEST_UNKNOWN"
    assert server("GET", "/v2/deleting/tags/list").json()["tags"] == []
    again = server("DELETE", f"/v2/deleting/manifests/{image.digest}")
    assert again.status_code == 404 and error_code(again) == "MANIFEST_UNKNOWN"


def _follow(server: Server, path: str, key: str) -> tuple[list[str], int]:
    found: list[str] = []
    pages = 0
    next_path: str | None = path
    while next_path:
        response = server("GET", next_path)
        assert response.status_code == 200, response.text
        found.extend(response.json()[key])
        pages += 1
        link = response.headers.get("Link")
        next_path = link.split(";")[0].strip("<>") if link else None
        if link:
            assert link.endswith('rel="next"')
    return found, pages


def test_tags_list_paging(server: Server) -> None:
    image = make_image("tags")
    push_image(server, "paging", image, "t000")
    tags = [f"t{i:03d}" for i in range(101)]
    for tag in tags[1:]:
        put = server("PUT", f"/v2/paging/manifests/{tag}", data=image.manifest,
                     headers={"Content-Type": image.media_type})  # fmt: skip
        assert put.status_code == 201
    whole = server("GET", "/v2/paging/tags/list")
    assert whole.json() == {"name": "paging", "tags": tags}
    assert "Link" not in whole.headers
    found, pages = _follow(server, "/v2/paging/tags/list?n=10", "tags")
    assert found == tags and pages == 11
    after = server("GET", "/v2/paging/tags/list?n=5&last=t050").json()["tags"]
    assert after == ["t051", "t052", "t053", "t054", "t055"]
    assert server("GET", "/v2/paging/tags/list?n=0").json()["tags"] == []
    for bad in ("-1", "ten"):
        response = server("GET", f"/v2/paging/tags/list?n={bad}")
        assert response.status_code == 400
        assert error_code(response) == "PAGINATION_NUMBER_INVALID"
    unknown = server("GET", "/v2/never/pushed/tags/list")
    assert unknown.status_code == 404 and error_code(unknown) == "NAME_UNKNOWN"


def test_catalog_paging(server: Server) -> None:
    for i in range(5):
        push_blob(server, f"catalog/r{i}", os.urandom(10))
    everything = server("GET", "/v2/_catalog").json()["repositories"]
    assert [f"catalog/r{i}" for i in range(5)] == [r for r in everything if r.startswith("cat")]
    assert everything == sorted(everything)
    found, pages = _follow(server, "/v2/_catalog?n=2", "repositories")
    assert found == everything and pages == (len(everything) + 1) // 2


def test_referrers(server: Server) -> None:
    image = make_image("subject")
    push_image(server, "refs", image, "v1")
    subject = {"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest)}
    signature = make_image("sig", subject=subject, artifact_type="application/x.signature")
    sbom = make_image("sbom", subject=subject, artifact_type="application/x.sbom")
    for artifact in (signature, sbom):
        pushed = push_image(server, "refs", artifact, artifact.digest.replace(":", "-"))
        assert pushed.headers["OCI-Subject"] == image.digest
    listed = server("GET", f"/v2/refs/referrers/{image.digest}")
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == OCI_INDEX
    body = listed.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    entries = {m["digest"]: m for m in body["manifests"]}
    assert set(entries) == {signature.digest, sbom.digest}
    assert entries[sbom.digest]["artifactType"] == "application/x.sbom"
    assert entries[sbom.digest]["size"] == len(sbom.manifest)
    filtered = server("GET", f"/v2/refs/referrers/{image.digest}?artifactType=application/x.sbom")
    assert [m["digest"] for m in filtered.json()["manifests"]] == [sbom.digest]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    none = server("GET", f"/v2/refs/referrers/{sha256(b'lonely')}")
    assert none.status_code == 200 and none.json()["manifests"] == []
    bad = server("GET", "/v2/refs/referrers/sha256:xyz")
    assert bad.status_code == 400 and error_code(bad) == "DIGEST_INVALID"
    server("DELETE", f"/v2/refs/manifests/{sbom.digest}")
    after = server("GET", f"/v2/refs/referrers/{image.digest}").json()["manifests"]
    assert [m["digest"] for m in after] == [signature.digest]


def test_gc_removes_only_unreferenced_blobs(tmp_path: Path) -> None:
    with running(ServerConfig(root=str(tmp_path))) as server:
        _gc_removes_only_unreferenced_blobs(server)


def _gc_removes_only_unreferenced_blobs(server: Server) -> None:
    kept = make_image("kept", layers=2)
    dropped = make_image("dropped", layers=2)
    push_image(server, "gc/kept", kept, "v1")
    push_image(server, "gc/dropped", dropped, "v1")
    loose = os.urandom(500)
    push_blob(server, "gc/dropped", loose)
    storage = RegistryStorage(server.config.root)
    assert storage.gc(grace=3600) == []  # everything is fresh: a push could be in progress
    server("DELETE", f"/v2/gc/dropped/manifests/{dropped.digest}")
    berth = Path(sys.executable).parent / "berth"
    proc = subprocess.run(
        [str(berth), "registry", "gc", "--root", server.config.root, "--grace", "0"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    removed = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("deleted")}
    gone = {sha256(b) for b in dropped.blobs} | {dropped.digest, sha256(loose)}
    assert gone <= removed
    for blob in kept.blobs:
        assert server("GET", f"/v2/gc/kept/blobs/{sha256(blob)}").content == blob
    assert server("GET", "/v2/gc/kept/manifests/v1").content == kept.manifest
    for digest in gone:
        assert not _blob_file(server, digest).exists()
        assert server("HEAD", f"/v2/gc/dropped/blobs/{digest}").status_code == 404
