"""berthd driven by the real clients: the docker CLI 28 (``docker -H unix://…``) and docker-py.

A module fixture starts ``.venv/bin/berthd`` on a private socket and data root in a fresh temp
dir, waits for ``/_ping``, and at the end stops it with SIGTERM (then the supervisor it started)
and checks it exited 0 and removed its socket and pid file, then removes the dir. The CLI gets
its own DOCKER_CONFIG dir (nothing written to ~/.docker). Nothing here mounts: pulls, loads and
removals touch only the content store. The tests run in file order and share the daemon; each
makes the images it needs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.engine import supervisor_client
from berth.image.store import ImageStore

pytestmark = [pytest.mark.root, pytest.mark.peer]

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
BERTHD = str(Path(sys.executable).parent / "berthd")
TIMEOUT = 60.0


@dataclass
class Daemon:
    home: Path
    socket: str
    data_root: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.home / "docker-config")
        proc = subprocess.run(
            [DOCKER, "-H", self.url, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            cwd=self.home,
        )
        if check:
            assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
        return proc

    def store(self) -> ImageStore:
        return ImageStore(str(self.data_root / "image"))


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"berthd exited with {proc.returncode}")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            probe.sendall(b"GET /_ping HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
            if probe.recv(64).startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("berthd did not answer /_ping within 20 s")


def start_daemon(home: Path) -> Daemon:
    sock = str(home / "berth.sock")
    data_root = home / "root"
    log = open(home / "berthd.log", "wb")  # noqa: SIM115  (the child holds it)
    proc = subprocess.Popen(
        [BERTHD, "--data-root", str(data_root), "--host", f"unix://{sock}", "--debug"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        _wait_for_socket(sock, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Daemon(home, sock, data_root, proc)


def stop_daemon(daemon: Daemon) -> int:
    """Stop berthd, then the supervisor it started (which outlives berthd by design)."""
    try:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait()
                raise
    finally:
        stop_supervisor(daemon.data_root)
    return daemon.proc.returncode


def stop_supervisor(data_root: Path) -> None:
    """Shut down the supervisor berthd started for ``data_root``, if it still runs."""
    supervisor = str(data_root / "run" / "supervisor.sock")
    if supervisor_client.answers(supervisor):
        with supervisor_client.Client(supervisor, timeout=30) as client:
            client.shutdown()


@pytest.fixture(scope="module")
def berthd() -> Iterator[Daemon]:
    home = Path(tempfile.mkdtemp(prefix="berthd-e2e-"))  # short: a socket path has 108 bytes
    try:
        daemon = start_daemon(home)
        try:
            yield daemon
        finally:
            code = stop_daemon(daemon)
            log = (home / "berthd.log").read_text(errors="replace")
            assert code == 0, f"berthd exited {code}:\n{log}"
            assert not os.path.exists(daemon.socket), "berthd left its socket"
            assert not (daemon.data_root / "run" / "berthd.pid").exists(), "pid file left"
            assert "Traceback" not in log, log
    finally:
        shutil.rmtree(home)


def _pull_busybox(berthd: Daemon) -> str:
    out = berthd.docker("pull", "busybox").stdout
    assert "busybox:latest" in out
    return berthd.docker("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip()


# --------------------------------------------------------------------------- docker CLI


def test_version_shows_the_server(berthd: Daemon) -> None:
    out = berthd.docker("version").stdout
    assert "Server: Berth" in out
    assert "1.43 (minimum version 1.24)" in out
    assert "API version:       1.43 (downgraded from 1.50)" in out  # the client side
    fmt = berthd.docker("version", "-f", "{{.Server.APIVersion}} {{.Server.Os}}").stdout
    assert fmt.strip() == "1.43 linux"


def test_info_reports_the_daemon(berthd: Daemon) -> None:
    raw = berthd.docker("info", "-f", "{{json .}}").stdout
    info = json.loads(raw)
    assert info["DockerRootDir"] == str(berthd.data_root)
    assert info["Driver"] in ("overlayfs", "native")
    assert info["NCPU"] == len(os.sched_getaffinity(0))
    assert info["KernelVersion"] == os.uname().release
    assert info["CgroupVersion"] in ("1", "2")
    text = berthd.docker("info").stdout
    assert "Server Version: 0.1.0" in text and "Cgroup Driver: cgroupfs" in text


def test_pull_images_inspect_history(berthd: Daemon) -> None:
    out = berthd.docker("pull", "busybox").stdout
    assert "latest: Pulling from library/busybox" in out
    assert "Status: " in out and "docker.io/library/busybox:latest" in out
    image = berthd.store().resolve("busybox")
    rows = berthd.docker(
        "images", "--no-trunc", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"
    ).stdout.splitlines()
    assert f"busybox latest {image.id}" in rows
    short = berthd.docker("images", "-q", "busybox").stdout.strip()
    assert short == image.id.removeprefix("sha256:")[:12]
    doc = json.loads(berthd.docker("image", "inspect", "busybox").stdout)[0]
    assert doc["Id"] == image.id and doc["Size"] == image.size
    assert doc["RepoTags"] == ["busybox:latest"] and doc["Config"]["Cmd"] == ["sh"]
    assert doc["RootFS"]["Layers"] == list(image.diff_ids)
    history = berthd.docker("history", "--no-trunc", "busybox").stdout.splitlines()
    assert history[1].startswith(image.id) and 'CMD ["sh"]' in history[1]
    assert "<missing>" in history[2]
    again = berthd.docker("pull", "busybox").stdout
    assert "Status: Image is up to date for busybox:latest" in again


def test_tag_and_rmi(berthd: Daemon) -> None:
    image_id = _pull_busybox(berthd)
    berthd.docker("tag", "busybox", "mine:1")
    tagged = berthd.docker("image", "inspect", "-f", "{{.Id}}", "mine:1").stdout.strip()
    assert tagged == image_id
    assert berthd.docker("images", "-q", "mine").stdout.strip()
    out = berthd.docker("rmi", "mine:1").stdout
    assert out.strip() == "Untagged: mine:1"
    assert berthd.docker("images", "-q", "mine").stdout.strip() == ""
    assert berthd.store().resolve("busybox").id == image_id


def test_save_rmi_load(berthd: Daemon) -> None:
    image_id = _pull_busybox(berthd)
    tarball = berthd.home / "busybox.tar"
    berthd.docker("save", "busybox", "-o", str(tarball))
    assert tarball.stat().st_size > 1 << 20
    out = berthd.docker("rmi", "busybox").stdout
    assert "Untagged: busybox:latest" in out and f"Deleted: {image_id}" in out
    assert berthd.docker("images", "-q").stdout.strip() == ""
    out = berthd.docker("load", "-i", str(tarball)).stdout
    assert "Loaded image: busybox:latest" in out
    assert berthd.store().resolve("busybox").id == image_id
    tarball.unlink()


def test_import_filters_and_prune(berthd: Daemon) -> None:
    busybox_id = _pull_busybox(berthd)
    rootfs = berthd.home / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    out = berthd.docker(
        "import", "-m", "from a test", "--change", 'CMD ["/hello"]', "--change", "LABEL t=1",
        str(rootfs), "imported:1",
    ).stdout  # fmt: skip
    imported_id = out.strip()
    doc = json.loads(berthd.docker("image", "inspect", "imported:1").stdout)[0]
    assert doc["Id"] == imported_id and doc["Comment"] == "from a test"
    assert doc["Config"]["Cmd"] == ["/hello"] and doc["Config"]["Labels"] == {"t": "1"}

    def ids(*flags: str) -> set[str]:
        return set(berthd.docker("images", "-q", "--no-trunc", *flags).stdout.split())

    assert ids("--filter", "label=t=1") == {imported_id}
    assert ids("--filter", "reference=imp*") == {imported_id}
    assert busybox_id in ids("--filter", "reference=busybox")
    berthd.docker("tag", "busybox", "imported:1")  # imported's only tag moves: it dangles
    assert ids("--filter", "dangling=true") == {imported_id}
    out = berthd.docker("image", "prune", "-f").stdout
    assert f"deleted: {imported_id}" in out and "Total reclaimed space" in out
    assert imported_id not in ids("-a")
    berthd.docker("rmi", "imported:1")
    rootfs.unlink()


def test_system_df(berthd: Daemon) -> None:
    image = berthd.store().resolve(_pull_busybox(berthd))
    rows = berthd.docker("system", "df", "--format", "{{.Type}}|{{.TotalCount}}").stdout
    counts = dict(line.split("|") for line in rows.splitlines())
    assert counts["Images"] == str(len(berthd.store().list()))
    assert counts["Containers"] == "0"
    verbose = berthd.docker("system", "df", "-v").stdout
    assert image.short_id in verbose


def test_errors_have_dockers_words_and_exit_codes(berthd: Daemon) -> None:
    inspect = berthd.docker("image", "inspect", "nosuch", check=False)
    assert inspect.returncode == 1 and "No such image: nosuch" in inspect.stderr
    rmi = berthd.docker("rmi", "nosuch", check=False)
    assert rmi.returncode == 1
    assert "Error response from daemon: No such image: nosuch:latest" in rmi.stderr
    pull = berthd.docker("pull", "alpine", check=False)
    assert pull.returncode == 1 and "pull access denied for alpine" in pull.stderr
    bad_filter = berthd.docker("images", "--filter", "nosuch=1", check=False)
    assert bad_filter.returncode == 1 and "invalid filter 'nosuch'" in bad_filter.stderr


# --------------------------------------------------------------------------- docker-py


def test_docker_py(berthd: Daemon) -> None:
    import docker

    client = docker.DockerClient(base_url=berthd.url, timeout=int(TIMEOUT))
    try:
        assert client.version()["ApiVersion"] == "1.43"
        assert client.info()["DockerRootDir"] == str(berthd.data_root)
        image = client.images.pull("busybox")
        assert image.tags == ["busybox:latest"]
        assert image.id == berthd.store().resolve("busybox").id
        assert image.id in [i.id for i in client.images.list()]
        assert client.images.get("busybox").attrs["Config"]["Cmd"] == ["sh"]
        assert image.tag("pyimage", "2") is True
        assert sorted(client.images.get("pyimage:2").tags) == ["busybox:latest", "pyimage:2"]
        assert [i.id for i in client.images.list(name="pyimage")] == [image.id]
        client.images.remove("pyimage:2")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("pyimage:2")
        with pytest.raises(docker.errors.NotFound, match="pull access denied"):
            client.images.pull("alpine")
        history = client.images.get("busybox").history()
        assert history[0]["Id"] == image.id
        assert client.df()["LayersSize"] > 0
    finally:
        client.close()


def test_a_client_that_drops_a_save_midway_is_tolerated(berthd: Daemon) -> None:
    _pull_busybox(berthd)
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(berthd.socket)
            conn.sendall(b"GET /v1.43/images/busybox/get HTTP/1.1\r\nHost: berth\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    # the daemon still serves, and its log (checked at teardown) has no traceback
    assert "busybox" in berthd.docker("images").stdout


def test_restart_after_kill_9_keeps_the_images(berthd: Daemon) -> None:
    home = berthd.home / "restart"
    home.mkdir()
    first = start_daemon(home)
    try:
        first.docker("pull", "-q", "busybox")
        first.proc.kill()
        first.proc.wait()
        assert os.path.exists(first.socket)  # a crash leaves the socket and the pid file
        second = start_daemon(home)  # ... which the next daemon takes over
        try:
            assert "busybox" in second.docker("images").stdout
        finally:
            assert stop_daemon(second) == 0
        assert not os.path.exists(second.socket)
    finally:
        stop_daemon(first)


def test_a_second_daemon_on_the_same_data_root_is_refused(berthd: Daemon) -> None:
    proc = subprocess.run(
        [BERTHD, "--data-root", str(berthd.data_root), "--host",
         f"unix://{berthd.home / 'other.sock'}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "pid file found" in proc.stderr
    assert not (berthd.home / "other.sock").exists()
    tcp = subprocess.run(
        [BERTHD, "--data-root", str(berthd.home / "r2"), "--host", "tcp://127.0.0.1:2375"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert tcp.returncode == 1
    assert "TCP needs --tlsverify with --tlscacert/--tlscert/--tlskey" in tcp.stderr


def _openssl(home: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=home, check=True, capture_output=True, timeout=TIMEOUT)


def _certificates(home: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as dockerd's docs
    make them."""
    (home / "server.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (home / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    _openssl(home, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem",
             "-out", "ca.pem", "-days", "1", "-subj", "/CN=berth-test-ca")  # fmt: skip
    for name in ("server", "client"):
        _openssl(home, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        _openssl(home, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
                 "ca-key.pem", "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                 "-extfile", f"{name}.cnf")  # fmt: skip


def test_tcp_with_tls_client_certificates(berthd: Daemon) -> None:
    home = berthd.home / "tls"
    home.mkdir()
    _certificates(home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [BERTHD, "--data-root", str(home / "root"), "--host", f"tcp://127.0.0.1:{port}",
         "--tlsverify", "--tlscacert", "ca.pem", "--tlscert", "server.pem",
         "--tlskey", "server-key.pem"],
        cwd=home, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(home / "docker-config")

    def docker(*tls: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKER, "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", "ca.pem",
             *tls, "version", "-f", "{{.Server.APIVersion}}"],
            cwd=home, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    try:
        deadline = time.monotonic() + 20
        while True:
            with_cert = docker("--tlscert", "client.pem", "--tlskey", "client-key.pem")
            if with_cert.returncode == 0 or time.monotonic() > deadline:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert with_cert.returncode == 0, with_cert.stderr
        assert with_cert.stdout.strip() == "1.43"
        without = docker()
        assert without.returncode == 1, without.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        stop_supervisor(home / "root")
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
