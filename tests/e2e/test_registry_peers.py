"""Berth's registry judged by real peers: skopeo copies images to and from it (``oci:``,
``docker-archive:``, ``docker://``), podman pulls from and pushes to it, with and without
authentication (htpasswd Basic, and the token flow).

Rules: the registry runs as ``berth registry serve`` (the real CLI) on a free 127.0.0.1 port
with its root in a temp dir, stopped with SIGTERM at the end (it must exit 0 and leave no
ingest file). Images come from Berth's own busybox (berth.image.base), saved as an OCI
layout and a docker-archive. podman gets private everything (private_podman); it only pulls
and pushes (nothing runs), with ``--tls-verify=false`` for the plain-HTTP registry.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from private_podman import Podman, private_podman

from berth.image import archive, base
from berth.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.peer]

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
BERTH = Path(sys.executable).parent / "berth"
BUSYBOX = "docker.io/library/busybox:latest"
TIMEOUT = 120


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"registry exited {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"registry did not listen on {port}: {log.read_text()}")


def _stop(registry: Registry) -> None:
    registry.proc.send_signal(signal.SIGTERM)
    try:
        code = registry.proc.wait(20)
    except subprocess.TimeoutExpired:
        registry.proc.kill()
        registry.proc.wait()
        raise AssertionError("registry ignored SIGTERM") from None
    text = registry.log.read_text(errors="replace")
    assert code == 0, text
    assert "Traceback" not in text, text
    ingest = registry.root / "content" / "ingest"
    assert not ingest.is_dir() or not os.listdir(ingest)


def _serve(home: Path, port: int, *flags: str, netns_of: int | None = None) -> Iterator[Registry]:
    """``berth registry serve`` on 127.0.0.1:``port`` (in the network namespace of the
    process ``netns_of``, if given)."""
    home.mkdir(exist_ok=True)
    root = home / "root"
    log = home / "registry.log"
    enter = ["nsenter", f"--net=/proc/{netns_of}/ns/net", "--"] if netns_of else []
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*enter, str(BERTH), "registry", "serve", "--addr", f"127.0.0.1:{port}",
             "--root", str(root), *flags],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    registry = Registry(f"127.0.0.1:{port}", root, proc, log)
    try:
        if netns_of is None:
            _wait_listening(port, proc, log)
        else:  # not reachable from here: its log says when it listens
            deadline = time.monotonic() + 20
            while "registry serving" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.05)
        yield registry
    finally:
        _stop(registry)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox as an OCI layout (``layout``) and a docker-archive (``busybox.tar``)."""
    home = tmp_path_factory.mktemp("regimg")
    store = ImageStore(str(home / "store"), "copy")
    base.busybox_image(store)
    archive.save(store, ["busybox"], home / "layout", "oci")
    with open(home / "busybox.tar", "wb") as f:
        archive.save(store, ["busybox"], f, "docker")
    return home


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _serve(tmp_path_factory.mktemp("reg-open"), _free_port())


@pytest.fixture(scope="module")
def auth_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("reg-auth")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode()
    (home / "htpasswd").write_text(f"alice:$2y${hashed[4:]}\n")
    return home


@pytest.fixture(scope="module")
def basic_registry(auth_files: Path) -> Iterator[Registry]:
    htpasswd = str(auth_files / "htpasswd")
    yield from _serve(auth_files / "basic", _free_port(), "--htpasswd", htpasswd)


@pytest.fixture(scope="module")
def token_registry(auth_files: Path) -> Iterator[Registry]:
    port = _free_port()  # the realm names this very registry's token endpoint
    yield from _serve(
        auth_files / "token", port, "--htpasswd", str(auth_files / "htpasswd"),
        "--token-realm", f"http://127.0.0.1:{port}/token",
    )  # fmt: skip


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [SKOPEO, "--insecure-policy", *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc


def _inspect(ref: str, *flags: str) -> dict[str, object]:
    raw = skopeo("inspect", "--tls-verify=false", *flags, "--raw", ref).stdout
    document: dict[str, object] = json.loads(raw)
    return document


def test_skopeo_copies_to_and_from_berths_registry(
    open_registry: Registry, images: Path, tmp_path: Path
) -> None:
    host = open_registry.host
    skopeo("copy", "--dest-tls-verify=false", f"oci:{images / 'layout'}:{BUSYBOX}",
           f"docker://{host}/library/busybox:oci")  # fmt: skip
    skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{images / 'busybox.tar'}",
           f"docker://{host}/library/busybox:archive")  # fmt: skip
    tags = json.loads(skopeo("list-tags", "--tls-verify=false",
                             f"docker://{host}/library/busybox").stdout)  # fmt: skip
    assert sorted(tags["Tags"]) == ["archive", "oci"]
    for tag in ("oci", "archive"):
        ref = f"docker://{host}/library/busybox:{tag}"
        manifest = _inspect(ref)
        out = tmp_path / tag
        skopeo("copy", "--src-tls-verify=false", ref, f"oci:{out}:busybox")
        index = json.loads((out / "index.json").read_text())
        pulled = index["manifests"][0]["digest"]
        # what came back is what the registry holds (a Docker manifest becomes an OCI one in
        # an oci: layout: the same config and layers)
        blob = json.loads((out / "blobs" / "sha256" / pulled.removeprefix("sha256:")).read_bytes())
        if manifest["mediaType"] == blob["mediaType"]:
            assert blob == manifest
        assert blob["config"]["digest"] == manifest["config"]["digest"]  # type: ignore[index]
        layers = manifest["layers"]
        assert isinstance(layers, list) and layers
        assert [layer["digest"] for layer in blob["layers"]] == [x["digest"] for x in layers]
        for layer in layers:
            assert (out / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).is_file()
    archive_out = tmp_path / "back.tar"
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/library/busybox:oci",
           f"docker-archive:{archive_out}:busybox:back")  # fmt: skip
    fresh = ImageStore(str(tmp_path / "fresh"), "copy")
    with open(archive_out, "rb") as f:
        loaded = archive.load(fresh, f)
    assert loaded == ["busybox:back"]
    # registry to registry, within this registry (skopeo may mount the blobs across)
    source, mirror = f"docker://{host}/library/busybox:oci", f"docker://{host}/mirror/busybox:oci"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", source, mirror)
    assert _inspect(mirror) == _inspect(source)


def test_skopeo_over_tls(images: Path, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(certs / "ca.crt")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    serving = _serve(
        tmp_path / "tls", _free_port(),
        "--tls-cert", str(certs / "ca.crt"), "--tls-key", str(tmp_path / "key.pem"),
    )  # fmt: skip
    with contextlib.closing(serving):  # closing it stops the registry
        registry = next(serving)
        target = f"docker://{registry.host}/tls/busybox:v1"
        source = f"oci:{images / 'layout'}:{BUSYBOX}"
        untrusted = skopeo("copy", source, target, check=False)  # verified against system CAs
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
        skopeo("copy", "--dest-cert-dir", str(certs), source, target)
        skopeo("copy", "--src-cert-dir", str(certs), target, f"oci:{tmp_path / 'out'}:x")
        assert (tmp_path / "out" / "index.json").is_file()


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    with private_podman(RUNC) as pm:
        yield pm


def test_podman_pulls_and_pushes(open_registry: Registry, images: Path, podman: Podman) -> None:
    host = open_registry.host
    skopeo("copy", "--dest-tls-verify=false", f"oci:{images / 'layout'}:{BUSYBOX}",
           f"docker://{host}/podman/busybox:v1")  # fmt: skip
    podman.ok("pull", "--tls-verify=false", f"{host}/podman/busybox:v1")
    podman.ok("tag", f"{host}/podman/busybox:v1", f"{host}/podman/pushed:v2")
    podman.ok("push", "--tls-verify=false", f"{host}/podman/pushed:v2")
    pushed = _inspect(f"docker://{host}/podman/pushed:v2")
    original = _inspect(f"docker://{host}/podman/busybox:v1")
    config_of = lambda m: m["config"]["digest"]  # noqa: E731
    assert config_of(pushed) == config_of(original)  # the same image, whatever the encoding
    podman.ok("rmi", "--all", "--force")
    podman.ok("pull", "--tls-verify=false", f"{host}/podman/pushed:v2")
    listed = json.loads(podman.ok("images", "--format", "json"))
    assert any(f"{host}/podman/pushed:v2" in i.get("Names", []) for i in listed)


def test_peers_with_htpasswd_auth(
    basic_registry: Registry, images: Path, podman: Podman, tmp_path: Path
) -> None:
    host = basic_registry.host
    target = f"docker://{host}/private/busybox:v1"
    source = f"oci:{images / 'layout'}:{BUSYBOX}"
    refused = skopeo("copy", "--dest-tls-verify=false", source, target, check=False)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr
    wrong = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:wrong", source,
                   target, check=False)  # fmt: skip
    assert wrong.returncode != 0
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", source, target)
    skopeo("copy", "--src-tls-verify=false", "--src-creds", "alice:s3cret", target,
           f"oci:{tmp_path / 'out'}:x")  # fmt: skip
    podman.ok("pull", "--tls-verify=false", "--creds", "alice:s3cret", f"{host}/private/busybox:v1")
    podman.ok("tag", f"{host}/private/busybox:v1", f"{host}/private/again:v1")
    denied = podman("push", "--tls-verify=false", f"{host}/private/again:v1")
    assert denied.returncode != 0
    podman.ok("push", "--tls-verify=false", "--creds", "alice:s3cret", f"{host}/private/again:v1")


def test_peers_with_the_token_flow(
    token_registry: Registry, images: Path, podman: Podman, tmp_path: Path
) -> None:
    host = token_registry.host
    target = f"docker://{host}/tokens/busybox:v1"
    source = f"oci:{images / 'layout'}:{BUSYBOX}"
    refused = skopeo("copy", "--dest-tls-verify=false", source, target, check=False)
    assert refused.returncode != 0
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", source, target)
    inspected = skopeo("inspect", "--tls-verify=false", "--creds", "alice:s3cret", target)
    assert json.loads(inspected.stdout)["RepoTags"] == ["v1"]
    podman.ok("pull", "--tls-verify=false", "--creds", "alice:s3cret", f"{host}/tokens/busybox:v1")
    podman.ok("tag", f"{host}/tokens/busybox:v1", f"{host}/tokens/copy:v1")
    podman.ok("push", "--tls-verify=false", "--creds", "alice:s3cret", f"{host}/tokens/copy:v1")
    # the peers went through the token endpoint: a Basic request is refused outright
    basic = base64.b64encode(b"alice:s3cret").decode()
    probe = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
         f"Authorization: Basic {basic}", f"http://{host}/v2/tokens/busybox/tags/list"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert probe.stdout == "401"


def test_docker_pushes_to_and_pulls_from_berths_registry(images: Path, tmp_path: Path) -> None:
    """dockerd 20.10 (its own network namespace, where the registry runs too: 127.0.0.1 is
    an insecure registry to dockerd by default) pushes and pulls through the docker CLI."""
    import dockerd

    if dockerd.missing():
        pytest.skip(str(dockerd.missing()))
    with dockerd.private_dockerd() as daemon:
        init = daemon._init_pid()
        assert init is not None
        # the namespace is the test's own (dockerd.py leaves its loopback down)
        subprocess.run(["nsenter", f"--net=/proc/{init}/ns/net", "ip", "link", "set", "lo", "up"],
                       check=True, timeout=30)  # fmt: skip
        serving = _serve(tmp_path / "reg", 5000, netns_of=init)
        with contextlib.closing(serving):
            registry = next(serving)
            daemon.ok("load", "-i", str(images / "busybox.tar"))
            daemon.ok("tag", "busybox:latest", "127.0.0.1:5000/docker/busybox:v1")
            pushed = daemon.ok("push", "127.0.0.1:5000/docker/busybox:v1")
            digest = pushed.strip().splitlines()[-1].split("digest: ")[1].split()[0]
            daemon.ok("rmi", "127.0.0.1:5000/docker/busybox:v1", "busybox:latest")
            daemon.ok("pull", "127.0.0.1:5000/docker/busybox:v1")
            repo_digests = daemon.ok("image", "inspect", "--format", "{{json .RepoDigests}}",
                                     "127.0.0.1:5000/docker/busybox:v1")  # fmt: skip
            assert f"127.0.0.1:5000/docker/busybox@{digest}" in json.loads(repo_digests)
            link = registry.root / "repositories" / "docker" / "busybox" / "_tags" / "v1"
            assert link.read_text() == digest


def _berthd_in_netns(home: Path, *args: str) -> subprocess.Popen[bytes]:
    """berthd in a network namespace of its own with lo up, as berthd_process runs it (its
    bridges and sysctls never reach the host's namespace)."""
    from berthd_process import _IN_NETNS
    from test_berthd_images import BERTHD

    with open(home / "berthd.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _IN_NETNS, "", BERTHD, *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_berthd_serves_the_registry_beside_the_api(images: Path) -> None:
    from test_berthd_images import Daemon, _wait_for_socket, stop_daemon, stop_supervisor

    home = Path(tempfile.mkdtemp(prefix="berthd-reg-"))  # short: the socket path
    sock, data_root = str(home / "berth.sock"), home / "root"
    try:
        proc = _berthd_in_netns(
            home, "--data-root", str(data_root), "--host", f"unix://{sock}",
            "--registry-addr", "127.0.0.1:5000",
        )  # fmt: skip
        daemon = Daemon(home, sock, data_root, proc)
        try:
            _wait_for_socket(sock, proc)
            deadline = time.monotonic() + 20
            while "registry serving" not in (home / "berthd.log").read_text():
                assert time.monotonic() < deadline, (home / "berthd.log").read_text()
                time.sleep(0.05)
            enter = ["nsenter", f"--net=/proc/{proc.pid}/ns/net", SKOPEO, "--insecure-policy"]
            target = "docker://127.0.0.1:5000/daemon/busybox:v1"
            copied = subprocess.run(
                [*enter, "copy", "--dest-tls-verify=false",
                 f"oci:{images / 'layout'}:{BUSYBOX}", target],
                capture_output=True, text=True, timeout=TIMEOUT, check=False,
            )  # fmt: skip
            assert copied.returncode == 0, copied.stderr
            raw = subprocess.run(
                [*enter, "inspect", "--tls-verify=false", "--raw", target],
                capture_output=True, text=True, timeout=TIMEOUT, check=True,
            ).stdout  # fmt: skip
            config = json.loads(raw)["config"]["digest"]
            blob = data_root / "registry" / "content" / "blobs" / "sha256" / config[7:]
            assert blob.is_file()
            assert daemon.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        finally:
            assert stop_daemon(daemon) == 0
        other = home / "other"
        other.mkdir()
        refused = _berthd_in_netns(
            other, "--data-root", str(other / "root"), "--host", f"unix://{other / 'x.sock'}",
            "--registry-addr", "0.0.0.0:5000",
        )  # fmt: skip
        assert refused.wait(60) == 1
        assert "loopback" in (other / "berthd.log").read_text()
        stop_supervisor(other / "root")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_registry_bench_quick_runs() -> None:
    """bench/registry_bench.py --quick end to end, so the script cannot rot (its numbers
    mean nothing at this size)."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "registry_bench.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--quick", "--small", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "blob GETs" in proc.stdout and "small pushes" in proc.stdout
    assert "### Errors" not in proc.stdout and "\nErrors\n" not in proc.stdout
