"""Pull and push through berthd against Debian's docker-registry (the reference registry).

Every registry is ``/usr/bin/docker-registry serve`` on 127.0.0.1 with its own temp storage,
started by the module and stopped at its end; one has htpasswd (bcrypt) auth. berthd is the
shared ``berthd`` fixture (conftest), which runs in a network namespace of its own: the
registries run there (``nsenter``), and so do what else of the test talks to them (curl,
skopeo, a throttling proxy, a push by the library). The ``berth`` CLI and the docker CLI 28
both drive berthd over its unix socket,
with ``DOCKER_CONFIG`` in the daemon's home so they share credentials. Images with layers of
their own are made in Python as OCI layouts and loaded, so a test knows which blobs berthd
has. dockerd (tests/e2e/dockerd.py, its own network namespace) pulls what berth pushed from a
second docker-registry serving the same storage inside its namespace (loopback registries are
insecure for dockerd by default).

What is proven: round trips keep the image id and manifest digest; existing blobs are skipped
(HEAD) and blobs of another repository mounted; a blob tampered with in the registry's storage
fails the pull with nothing left (no image, no partial blob); a pull that failed halfway
resumes with the layers it had; a client that goes away mid-pull leaves nothing half-written;
credentials: docker's messages and exit codes, login/logout with config.json.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt  # htpasswd entries as `htpasswd -B` writes them
import pytest
from test_berth_cli import BERTH, berth
from test_berthd_images import Daemon

from berth.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.peer]

REGISTRY = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0


# --------------------------------------------------------------------------- registries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def enter(netns: str) -> list[str]:
    """The prefix that runs a command in the network namespace at ``netns``."""
    return ["nsenter", f"--net={netns}", "--"]


def http_get(netns: str, url: str, accept: str = "*/*") -> bytes:
    """GET ``url`` from inside ``netns`` (curl there); the body, or AssertionError."""
    done = subprocess.run(
        [*enter(netns), "curl", "-sSf", "-H", f"Accept: {accept}", url],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


class Registry:
    """A docker-registry on 127.0.0.1 of the network namespace ``netns`` (berthd's, or
    dockerd's), with its storage under ``home``."""

    def __init__(
        self, home: Path, netns: str, htpasswd: str | None = None, port: int | None = None
    ) -> None:
        self.home = home
        self.netns = netns
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = home / "storage"
        auth = ""
        if htpasswd is not None:
            (home / "htpasswd").write_text(htpasswd)
            auth = f"auth:\n  htpasswd:\n    realm: berth-test\n    path: {home / 'htpasswd'}\n"
        config = home / f"config-{self.port}.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}"
        )
        self.log = home / f"registry-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*enter(netns), REGISTRY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        probe = [*enter(self.netns), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited:\n{self.log.read_text()}")
            code = subprocess.run(
                [*probe, f"http://{self.host}/v2/"], capture_output=True, text=True, check=False
            ).stdout
            if code in ("200", "401"):  # up (401: with auth)
                return
            time.sleep(0.05)
        raise AssertionError(f"docker-registry did not answer:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def blob_path(self, digest: str) -> Path:
        hexa = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"


@contextlib.contextmanager
def running(registry: Registry) -> Iterator[Registry]:
    try:
        registry.wait()
        yield registry
    finally:
        registry.stop()


USER, PASSWORD = "berth", "s3cret-pw"


def netns_of(d: Daemon) -> str:
    """berthd's network namespace (berthd_process runs it in one of its own)."""
    return f"/proc/{d.proc.pid}/ns/net"


@pytest.fixture(scope="module")
def registry(berthd: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running(Registry(tmp_path_factory.mktemp("registry"), netns_of(berthd))) as found:
        yield found


@pytest.fixture(scope="module")
def auth_registry(berthd: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    home = tmp_path_factory.mktemp("auth-registry")
    with running(Registry(home, netns_of(berthd), f"{USER}:{hashed}\n")) as found:
        yield found


# --------------------------------------------------------------------------- helpers


def image_id(d: Daemon, ref: str) -> str:
    return berth(d, "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def no_image(d: Daemon, ref: str) -> bool:
    return berth(d, "inspect", ref, check=False).returncode != 0


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(name: str, size: int, seed: str) -> bytes:
    """An uncompressed layer with one file of ``size`` bytes no other test has."""
    chunk = hashlib.sha256(seed.encode()).digest() * 1024
    data = (chunk * (size // len(chunk) + 1))[:size]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


MEDIA_TYPES = {
    "": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def oci_archive(
    ref: str, layer_sizes: list[int], compressions: list[str] | None = None
) -> tuple[bytes, list[str]]:
    """An OCI layout tar of a fresh image (unique layers, compressed as asked) tagged
    ``ref``; its layer blobs' digests."""
    seed = f"{ref}-{time.time_ns()}"
    tars = [layer_tar(f"f{i}", size, f"{seed}-{i}") for i, size in enumerate(layer_sizes)]
    kinds = compressions or [""] * len(tars)
    layers = [compress(t, kind) for t, kind in zip(tars, kinds, strict=True)]
    digests = [sha(layer) for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": MEDIA_TYPES[kind], "digest": d, "size": len(b)}
                for d, b, kind in zip(digests, layers, kinds, strict=True)
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest),
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": ref},
            }
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps(index).encode(),
        }
        for blob in (*layers, config, manifest):
            files[f"blobs/sha256/{sha(blob)[7:]}"] = blob
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), digests


def load_image(
    d: Daemon, ref: str, layer_sizes: list[int], compressions: list[str] | None = None
) -> list[str]:
    data, digests = oci_archive(ref, layer_sizes, compressions)
    path = d.home / "image.tar"
    path.write_bytes(data)
    berth(d, "load", "-i", str(path))
    path.unlink()
    return digests


def content_dir(d: Daemon) -> Path:
    return d.data_root / "image" / "content"


def ingest_files(d: Daemon) -> list[str]:
    ingest = content_dir(d) / "ingest"
    return sorted(os.listdir(ingest)) if ingest.is_dir() else []


def has_blob(d: Daemon, digest: str) -> bool:
    return (content_dir(d) / "blobs" / "sha256" / digest.removeprefix("sha256:")).is_file()


# --------------------------------------------------------------------------- round trips


def test_berth_push_then_pull_round_trip(berthd: Daemon, registry: Registry) -> None:
    ref = f"{registry.host}/round/busybox:v1"
    berth(berthd, "tag", "busybox", ref)
    original = image_id(berthd, ref)
    pushed = berth(berthd, "push", ref).stdout
    assert f"The push refers to repository [{registry.host}/round/busybox]" in pushed
    assert "Pushed" in pushed
    digest = pushed.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    again = berth(berthd, "push", ref).stdout
    assert "Layer already exists" in again and "Pushed" not in again

    berth(berthd, "rmi", ref)
    pulled = berth(berthd, "pull", ref).stdout
    lines = pulled.splitlines()
    assert lines[0] == "v1: Pulling from round/busybox"
    assert f"Digest: {digest}" in lines
    assert f"Status: Downloaded newer image for {ref}" in lines  # the tag was gone
    assert any(line.endswith(": Already exists") for line in lines), lines  # busybox's layer
    assert lines[-1] == ref
    assert f"Status: Image is up to date for {ref}" in berth(berthd, "pull", ref).stdout
    by_digest = f"{registry.host}/round/busybox@{digest}"
    berth(berthd, "rmi", ref)
    assert berth(berthd, "pull", by_digest).stdout.splitlines()[-1] == by_digest
    assert image_id(berthd, by_digest) == original
    assert berth(berthd, "run", "--rm", by_digest, "echo", "by digest").stdout == "by digest\n"
    berth(berthd, "rmi", by_digest)
    berth(berthd, "pull", ref)
    assert image_id(berthd, ref) == original
    inspect = json.loads(berth(berthd, "inspect", ref).stdout)[0]
    assert f"{registry.host}/round/busybox@{digest}" in inspect["RepoDigests"]
    berth(berthd, "rmi", ref)


def test_docker_cli_push_and_pull_through_berthd(berthd: Daemon, registry: Registry) -> None:
    ref = f"{registry.host}/dockercli/app:1"
    layers = load_image(berthd, ref, [300_000, 200_000])
    original = image_id(berthd, ref)
    pushed = berthd.docker("push", ref).stdout
    assert "Pushed" in pushed and "1: digest: sha256:" in pushed
    # the same blobs to another repository are mounted, not sent
    other = f"{registry.host}/dockercli/copy:1"
    berthd.docker("tag", ref, other)
    mounted = berthd.docker("push", other).stdout
    assert "Mounted from dockercli/app" in mounted, mounted

    berthd.docker("rmi", ref, other)
    assert not any(has_blob(berthd, d) for d in layers)  # rmi's gc took them
    pulled = berthd.docker("pull", ref)
    assert "Pull complete" in pulled.stdout and "Downloaded newer image" in pulled.stdout
    assert pulled.stdout.strip().splitlines()[-1] == ref
    assert image_id(berthd, ref) == original
    assert all(has_blob(berthd, d) for d in layers)
    berthd.docker("rmi", ref)


def test_docker_py_push_and_pull_with_credentials(berthd: Daemon, auth_registry: Registry) -> None:
    import docker

    client = docker.DockerClient(base_url=berthd.url, timeout=60)
    try:
        repo = f"{auth_registry.host}/dockerpy/busybox"
        client.images.get("busybox").tag(repo, "v1")
        creds = {"username": USER, "password": PASSWORD}
        assert client.login(registry=auth_registry.host, **creds)["Status"] == "Login Succeeded"
        lines = list(client.api.push(repo, "v1", stream=True, decode=True, auth_config=creds))
        assert lines[-1]["aux"]["Tag"] == "v1"
        assert lines[-1]["aux"]["Digest"].startswith("sha256:")
        wrong = {"username": USER, "password": "wrong"}
        refused = list(client.api.push(repo, "v1", stream=True, decode=True, auth_config=wrong))
        assert refused[-1]["error"] == "unauthorized: authentication required", refused
        client.images.remove(f"{repo}:v1")
        image = client.images.pull(repo, tag="v1", auth_config=creds)
        assert image.id == client.images.get("busybox").id
        with pytest.raises(docker.errors.APIError, match="unauthorized: authentication required"):
            client.images.pull(repo, tag="v1", auth_config={"username": USER, "password": "no"})
        client.images.remove(f"{repo}:v1")
    finally:
        client.close()


def test_docker_pull_of_missing_tag_and_docker_io(berthd: Daemon, registry: Registry) -> None:
    missing = berthd.docker("pull", f"{registry.host}/nothing/here:v9", check=False)
    assert missing.returncode == 1
    assert "Error response from daemon: manifest for" in missing.stderr
    assert "not found: " in missing.stderr
    hub = berth(berthd, "push", "docker.io/someone/thing:1", check=False)
    assert hub.returncode == 1
    assert "An image does not exist locally with the tag: someone/thing" in hub.stderr
    berth(berthd, "tag", "busybox", "someone/thing:1")
    hub = berth(berthd, "push", "someone/thing:1", check=False)
    assert hub.returncode == 1 and "docker.io is not reachable" in hub.stderr
    berth(berthd, "rmi", "someone/thing:1")


# --------------------------------------------------------------------------- failures


def test_gzip_and_zstd_layers_round_trip(berthd: Daemon, registry: Registry) -> None:
    ref = f"{registry.host}/compressed/app:1"
    layers = load_image(berthd, ref, [3_000_000, 500_000], ["gzip", "zstd"])
    original = image_id(berthd, ref)
    berth(berthd, "push", ref)
    berth(berthd, "rmi", ref)
    pulled = berth(berthd, "pull", ref).stdout
    assert all(f"{d[7:19]}: Pull complete" in pulled for d in layers), pulled
    assert image_id(berthd, ref) == original
    berth(berthd, "rmi", ref)


def test_pull_of_an_index_takes_its_linux_amd64_image(
    berthd: Daemon, registry: Registry, tmp_path: Path
) -> None:
    """A two-platform index (arm64 listed first) pushed by skopeo --all; berth pulls the amd64
    image, and "Digest:" is the index's, what the tag names."""
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        (blobs / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    manifests = []
    config_ids: dict[str, str] = {}
    for arch in ("arm64", "amd64"):
        tar = layer_tar(f"only-{arch}", 10_000, f"{arch}-{time.time_ns()}")
        config = json.dumps(
            {"architecture": arch, "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}
        ).encode()  # fmt: skip
        config_ids[arch] = sha(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
                "layers": [{"mediaType": MEDIA_TYPES[""], **put(tar)}],
            }
        ).encode()
        manifests.append(
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
             "platform": {"architecture": arch, "os": "linux"}}
        )  # fmt: skip
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": manifests}
    ).encode()  # fmt: skip
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", **put(index)}
    top["annotations"] = {"org.opencontainers.image.ref.name": "multi"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    ref = f"{registry.host}/index/app:multi"
    subprocess.run(
        [*enter(registry.netns), "skopeo", "copy", "-q", "--all", "--dest-tls-verify=false",
         f"oci:{layout}:multi", f"docker://{ref}"],
        check=True, timeout=60,
    )  # fmt: skip
    served = http_get(  # skopeo may have rewritten it
        registry.netns,
        f"http://{registry.host}/v2/index/app/manifests/multi",
        "application/vnd.oci.image.index.v1+json",
    )
    assert json.loads(served)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    pulled = berth(berthd, "pull", ref).stdout
    assert f"Digest: {sha(served)}" in pulled.splitlines(), pulled
    inspect = json.loads(berth(berthd, "inspect", ref).stdout)[0]
    assert inspect["Architecture"] == "amd64"
    assert inspect["Id"] == config_ids["amd64"]
    berth(berthd, "rmi", ref)


def test_layer_whose_content_is_not_its_diff_id_is_refused(
    berthd: Daemon, registry: Registry, tmp_path: Path
) -> None:
    """The registry serves what was pushed, byte for byte, but the config lies about the
    layer's diffID (pushed from a store of the test's own, which does not check it)."""
    ref = f"{registry.host}/lying/app:1"
    store = ImageStore(str(tmp_path / "store"), "copy")
    layer = gzip.compress(layer_tar("f", 200_000, f"lying-{time.time_ns()}"))
    store.content.put_bytes(layer)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [sha(b"something else")]}}
    ).encode()  # fmt: skip
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_TYPES["gzip"], "digest": sha(layer),
                        "size": len(layer)}],
        }
    ).encode()  # fmt: skip
    store.add_image(manifest, config, [ref])
    # berth.registry's push, run where the registry is reachable: berthd's namespace
    script = (
        "import asyncio, sys\n"
        "from berth.image import reference\n"
        "from berth.image.store import ImageStore\n"
        "from berth.registry import client_push\n"
        "store = ImageStore(sys.argv[1], 'copy')\n"
        "pushed = asyncio.run(client_push.push(store, reference.parse(sys.argv[2])))\n"
        "print(pushed[0].digest)\n"
    )
    done = subprocess.run(
        [*enter(registry.netns), sys.executable, "-c", script, store.root, ref],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == sha(manifest)
    failed = berth(berthd, "pull", ref, check=False)
    assert failed.returncode == 1
    assert f"filesystem layer verification failed for digest {sha(layer)}" in failed.stderr
    assert f"the config says {sha(b'something else')}" in failed.stderr
    assert no_image(berthd, ref)
    assert not has_blob(berthd, sha(layer))
    assert ingest_files(berthd) == []


# A TCP forwarder (run inside berthd's network namespace): 127.0.0.1:<printed port> to
# 127.0.0.1:<argv[1]>, the answers sent at argv[2] bytes/s.
_PROXY = """
import socket, sys, threading, time
target, rate = int(sys.argv[1]), int(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
def copy(source, sink, pace):
    try:
        while data := source.recv(16384):
            sink.sendall(data)
            if pace:
                time.sleep(len(data) / pace)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
while True:
    client, _ = listener.accept()
    upstream = socket.create_connection(("127.0.0.1", target))
    for args in ((client, upstream, 0), (upstream, client, rate)):
        threading.Thread(target=copy, args=args, daemon=True).start()
"""


class SlowProxy:
    """A forwarder to a registry that sends its answers at ``rate`` bytes/s, so a pull through
    it can be cut while a layer is half written."""

    def __init__(self, registry: Registry, rate: int) -> None:
        self.proc = subprocess.Popen(
            [*enter(registry.netns), sys.executable, "-c", _PROXY, str(registry.port), str(rate)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_tampered_blob_fails_the_pull_and_leaves_nothing(
    berthd: Daemon, registry: Registry
) -> None:
    ref = f"{registry.host}/tamper/app:1"
    layers = load_image(berthd, ref, [100_000, 2_000_000])
    berth(berthd, "push", ref)
    berth(berthd, "rmi", ref)
    path = registry.blob_path(layers[1])
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size, other bytes
    path.chmod(0o644)
    path.write_bytes(bytes(bad))
    proxy = SlowProxy(registry, rate=8 << 20)  # the small layer surely finishes first
    try:
        failed = berth(berthd, "pull", f"127.0.0.1:{proxy.port}/tamper/app:1", check=False)
        assert failed.returncode == 1
        assert f"filesystem layer verification failed for digest {layers[1]}" in failed.stderr
        assert "digest mismatch" in failed.stderr
        assert no_image(berthd, ref)
        assert not has_blob(berthd, layers[1])
        assert ingest_files(berthd) == []
        # fixed in the registry, the pull resumes: the small layer it finished is kept
        path.write_bytes(good)
        resumed = berth(berthd, "pull", ref).stdout
        assert f"{layers[0][7:19]}: Already exists" in resumed, resumed
        assert f"{layers[1][7:19]}: Pull complete" in resumed, resumed
        assert image_id(berthd, ref)
    finally:
        proxy.close()
        path.write_bytes(good)
    berth(berthd, "rmi", ref)


def test_pull_cut_halfway_leaves_nothing_then_resumes(berthd: Daemon, registry: Registry) -> None:
    ref = f"{registry.host}/cut/app:1"
    layers = load_image(berthd, ref, [50_000, 50_000, 20_000_000])
    berth(berthd, "push", ref)
    berth(berthd, "rmi", ref)
    proxy = SlowProxy(registry, rate=8 << 20)
    slow_ref = f"127.0.0.1:{proxy.port}/cut/app:1"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "DOCKER_"))}
    try:
        client = subprocess.Popen(
            [BERTH, "-H", berthd.url, "pull", slow_ref],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 20
        ingest = content_dir(berthd) / "ingest"
        partial = False
        while not partial and time.monotonic() < deadline and client.poll() is None:
            with contextlib.suppress(OSError):
                partial = any(f.stat().st_size > 1 << 20 for f in ingest.iterdir())
            time.sleep(0.02)
        assert partial, "the big layer was never seen half written"
        client.kill()  # the client goes away mid-pull: berthd cancels the pull
        client.wait()
        deadline = time.monotonic() + 10
        while ingest_files(berthd) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest_files(berthd) == []
    finally:
        proxy.close()
    assert no_image(berthd, slow_ref) and no_image(berthd, ref)
    assert not has_blob(berthd, layers[2])
    resumed = berth(berthd, "pull", ref).stdout
    for small in layers[:2]:
        assert f"{small[7:19]}: Already exists" in resumed, resumed
    assert f"{layers[2][7:19]}: Pull complete" in resumed
    assert image_id(berthd, ref)
    berth(berthd, "rmi", ref)


# --------------------------------------------------------------------------- credentials


def test_credentials_with_htpasswd(berthd: Daemon, auth_registry: Registry) -> None:
    host = auth_registry.host
    ref = f"{host}/private/busybox:v1"
    berth(berthd, "tag", "busybox", ref)
    anonymous = berth(berthd, "push", ref, check=False)
    assert anonymous.returncode == 1
    assert "no basic auth credentials" in anonymous.stderr

    wrong = berth(berthd, "login", "-u", USER, "--password-stdin", host, stdin="nope\n",
                  check=False)  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == (
        f"Error response from daemon: login attempt to http://{host}/v2/ failed with status: "
        "401 Unauthorized"
    )
    docker_wrong = berthd.docker("login", "-u", USER, "-p", "nope", host, check=False)
    assert docker_wrong.returncode == 1
    assert wrong.stderr.strip() in docker_wrong.stderr

    ok = berth(berthd, "login", "-u", USER, "--password-stdin", host, stdin=PASSWORD + "\n")
    assert ok.stdout == "Login Succeeded\n"
    config = json.loads((berthd.home / "docker-config" / "config.json").read_text())
    assert config["auths"][host]["auth"]
    assert "v1: digest: sha256:" in berth(berthd, "push", ref).stdout
    berth(berthd, "rmi", ref)
    assert berth(berthd, "pull", ref).stdout.splitlines()[-1] == ref
    # the docker CLI reads what berth stored, and sends it to berthd
    berthd.docker("rmi", ref)
    assert "Status: " in berthd.docker("pull", ref).stdout

    assert berth(berthd, "logout", host).stdout == f"Removing login credentials for {host}\n"
    assert berth(berthd, "logout", host).stdout == f"Not logged in to {host}\n"
    berth(berthd, "rmi", ref)
    refused = berth(berthd, "pull", ref, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f'Error response from daemon: Head "http://{host}/v2/private/busybox/manifests/v1": '
        "no basic auth credentials"
    )
    # the docker CLI's own login goes through berthd's /auth
    docker_ok = berthd.docker("login", "-u", USER, "--password-stdin", host, check=False)
    assert docker_ok.returncode == 1  # stdin is /dev/null: an empty password
    assert (
        berthd.docker("login", "-u", USER, "-p", PASSWORD, host)
        .stdout.strip()
        .endswith("Login Succeeded")
    )
    assert "Status: Downloaded newer image for" in berthd.docker("pull", ref).stdout
    berthd.docker("logout", host)
    berth(berthd, "rmi", ref)


# --------------------------------------------------------------------------- dockerd


def test_dockerd_pulls_what_berth_pushed_and_fails_as_berthd_does(
    berthd: Daemon, registry: Registry, auth_registry: Registry
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import dockerd

    if dockerd.missing() is not None:
        pytest.skip(str(dockerd.missing()))
    ref = f"{registry.host}/fordockerd/busybox:v1"
    berth(berthd, "tag", "busybox", ref)
    berth(berthd, "push", ref)
    ours = image_id(berthd, ref)
    private = f"{auth_registry.host}/fordockerd/private:v1"
    with dockerd.private_dockerd() as docker:
        init = docker._init_pid()
        assert init is not None
        netns = f"/proc/{init}/ns/net"
        subprocess.run([*enter(netns), "ip", "link", "set", "lo", "up"], check=True)  # its lo
        # the same storages, served inside dockerd's network namespace on the same addresses
        twin = Registry(registry.home, netns, port=registry.port)
        htpasswd = (auth_registry.home / "htpasswd").read_text()
        auth_twin = Registry(auth_registry.home, netns, htpasswd, auth_registry.port)
        with running(twin), running(auth_twin):
            pulled = docker("pull", ref)
            assert pulled.returncode == 0, pulled.stderr + docker.logs()
            assert docker.ok("image", "inspect", "--format", "{{.Id}}", ref).strip() == ours
            out = docker.ok("run", "--rm", "--network", "none", ref, "echo", "from berth")
            assert out == "from berth\n"
            # and berth pulls what dockerd pushes (Docker v2 schema 2, as dockerd writes it)
            back = f"{registry.host}/fromdockerd/busybox:v1"
            docker.ok("tag", ref, back)
            docker.ok("push", back)
            manifest = json.loads(
                http_get(
                    netns,
                    f"http://{registry.host}/v2/fromdockerd/busybox/manifests/v1",
                    "application/vnd.docker.distribution.manifest.v2+json",
                )
            )
            assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
            assert berth(berthd, "pull", back).stdout.splitlines()[-1] == back
            assert image_id(berthd, back) == ours
            berth(berthd, "rmi", back)
            # the docker CLI prints the same errors with either daemon behind it
            for args in (
                ("pull", private),
                ("pull", f"{registry.host}/fordockerd/busybox:nosuchtag"),
                ("push", f"{registry.host}/fordockerd/nosuchimage:v1"),
                ("login", "-u", USER, "-p", "wrong", auth_registry.host),
            ):
                theirs, mine = docker(*args), berthd.docker(*args, check=False)
                assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
                assert theirs.returncode == 1
    berth(berthd, "rmi", ref)


# --------------------------------------------------------------------------- the token flow


@pytest.fixture(scope="module")
def token_registry(berthd: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Berth's own registry (``berth registry serve``) with the Bearer token flow, its realm on
    itself, in berthd's network namespace; its host:port."""
    home = tmp_path_factory.mktemp("token-registry")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (home / "htpasswd").write_text(f"{USER}:{hashed}\n")
    host = f"127.0.0.1:{free_port()}"
    log = home / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*enter(netns_of(berthd)), BERTH, "registry", "serve", "--addr", host,
             "--root", str(home / "root"), "--htpasswd", str(home / "htpasswd"),
             "--token-realm", f"http://{host}/token"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "registry serving" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        yield host
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()


def test_bearer_token_flow_against_berths_registry(berthd: Daemon, token_registry: str) -> None:
    host = token_registry
    ref = f"{host}/tokens/busybox:v1"
    berth(berthd, "tag", "busybox", ref)
    anonymous = berth(berthd, "push", ref, check=False)
    assert anonymous.returncode == 1 and "unauthorized" in anonymous.stderr, anonymous.stderr
    wrong = berth(berthd, "login", "-u", USER, "-p", "wrong", host, check=False)
    assert wrong.returncode == 1 and "Error response from daemon: " in wrong.stderr
    ok = berth(berthd, "login", "-u", USER, "--password-stdin", host, stdin=PASSWORD)
    assert ok.stdout == "Login Succeeded\n"
    pushed = berth(berthd, "push", ref).stdout
    assert "v1: digest: sha256:" in pushed, pushed
    other = f"{host}/tokens/copy:v1"  # a mount needs pull on tokens/busybox in the token
    berth(berthd, "tag", ref, other)
    assert "Mounted from tokens/busybox" in berth(berthd, "push", other).stdout
    berth(berthd, "rmi", ref, other)
    assert berth(berthd, "pull", ref).stdout.splitlines()[-1] == ref
    assert image_id(berthd, ref) == image_id(berthd, "busybox")
    berth(berthd, "logout", host)
    berth(berthd, "rmi", ref)
