"""Berth's registry vs Debian's docker-registry (distribution 2.8), skopeo the client of both.

    .venv/bin/python bench/registry_bench.py            # 3 runs, 5 x 40 MB layers, 100 small images
    .venv/bin/python bench/registry_bench.py --quick    # 1 run, 5 x 4 MB, 10 small (smoke only)
    .venv/bin/python bench/registry_bench.py --markdown docs/benchmarks.md

What one run measures, the two registries interleaved (their order alternating run by run),
each started fresh on an empty storage dir in a temp dir, on a 127.0.0.1 port:

1. push: ``skopeo copy oci:<layout> docker://...`` of an image of ``--layers`` gzip layers of
   random data (``--layer-mb`` each: 5 x 40 MB = 200 MB by default). The layers are gzip at
   level 1 so skopeo sends them as they are (it would compress a plain tar itself, and then
   the client's gzip would be what is measured).
2. pull: ``skopeo copy docker://... dir:<fresh dir>`` of that image, ``PULL_ROUNDS`` times
   per run, the registries alternating (skopeo's own hashing and writing dominate: the two
   registries answer it with the same requests, one layer after the other, as a ``dir:``
   destination takes them). A pull takes ~1 s, so several rounds a run keep the
   median steady on a shared machine.
3. blob GETs: the five layers fetched over raw HTTP/1.1 by this script (one connection per
   blob, the body read into a reused 1 MB buffer and dropped), against the limit: the same
   files sent over loopback by a plain sender process (the length in 8 bytes, then
   ``socket.sendfile``, one connection per file: ``cat | nc`` without its copies) into the
   same receiver, which reads exactly that length as it reads a Content-Length. MB/s;
   the target is berth >= 70% of the limit. ``GET_ROUNDS`` rounds per run after a sync
   (no writeback of the pushes in the way); each file is fetched from the two registries and
   the limit back to back, whoever goes first rotating, so a change of the machine's load
   hits all three alike.
4. small pushes: ``--small`` images of one small layer each (a 4 KB random file in a tar.gz),
   each its own ``skopeo copy``: the total time for all of them.

Medians over ``--runs``, ratios berth / docker-registry (below 1.00: berth is faster). The
load average before and after is in the report: the machine is shared. Both servers and the
temp dir are removed on any exit (exit status 1 if something was left, 130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
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
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Table, median, render, run_benchmark

SKOPEO = shutil.which("skopeo") or "/usr/bin/skopeo"
DOCKER_REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
BERTH = str(Path(sys.executable).parent / "berth")
REGISTRIES = ("berth", "docker-registry")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
RECV_BUFFER = 1 << 20
GET_ROUNDS = 5  # blob-GET rounds per run (registries and the limit interleaved)
PULL_ROUNDS = 5  # skopeo pulls per registry per run (alternating)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- images


class Layout:
    """An OCI layout written by hand: blobs, manifests, index.json with ref names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.index: list[dict[str, object]] = []

    def blob(self, data: bytes) -> dict[str, object]:
        digest = _sha256(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest[7:]

    def image(self, ref: str, layers: list[tuple[bytes, str]]) -> list[str]:
        """Add an image of (gzip blob, diff id) layers; its layer digests."""
        config = json.dumps(
            {"architecture": "amd64", "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
             "config": {"Cmd": ["/bin/sh"]}}
        ).encode()  # fmt: skip
        descriptors = [{"mediaType": OCI_LAYER_GZIP, **self.blob(blob)} for blob, _ in layers]
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
             "config": {"mediaType": OCI_CONFIG, **self.blob(config)}, "layers": descriptors}
        ).encode()  # fmt: skip
        self.index.append(
            {"mediaType": OCI_MANIFEST, **self.blob(manifest),
             "annotations": {"org.opencontainers.image.ref.name": ref}}
        )  # fmt: skip
        (self.path / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "manifests": self.index})
        )
        return [str(d["digest"]) for d in descriptors]


def _layer(name: str, size: int) -> tuple[bytes, str]:
    """A tar of one file of random bytes, gzip level 1: (the gzip blob, the tar's diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), _sha256(tar_bytes)


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    kind: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def _start(kind: str, home: Path) -> Server:
    port = _free_port()
    root = home / f"{kind}-root"
    log = home / f"{kind}.log"
    if kind == "berth":
        argv = [BERTH, "registry", "serve", "--addr", f"127.0.0.1:{port}", "--root", str(root)]
    else:
        config = home / "docker-registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        argv = [DOCKER_REGISTRY, "serve", str(config)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    server = Server(kind, port, root, proc, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.02)
    _stop(server)
    raise RuntimeError(f"{kind} did not listen on {port}")


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    shutil.rmtree(server.root, ignore_errors=True)


def _skopeo(*args: str) -> float:
    """Seconds one skopeo command took; RuntimeError with its stderr if it failed."""
    start = time.perf_counter()
    proc = subprocess.run(
        [SKOPEO, "--insecure-policy", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
    return elapsed


# --------------------------------------------------------------------------- raw transfers


def _receive(sock: socket.socket, buffer: bytearray, length: int | None) -> int:
    view = memoryview(buffer)
    received = 0
    while length is None or received < length:
        n = sock.recv_into(view)
        if n == 0:
            break
        received += n
    return received


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise RuntimeError("connection closed early")
        data += chunk
    return data


def _http_get(port: int, path: str, buffer: bytearray) -> int:
    """GET ``path`` over a fresh connection; the body's length (read and dropped)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"GET {path}: connection closed in the headers")
            head += chunk
        header, _, rest = head.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        if " 200 " not in lines[0] + " ":
            raise RuntimeError(f"GET {path}: {lines[0]}")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        return len(rest) + _receive(sock, buffer, length - len(rest))


def _blob_get(server: Server, repo: str, digest: str, buffer: bytearray) -> float:
    start = time.perf_counter()
    _http_get(server.port, f"/v2/{repo}/blobs/{digest}", buffer)
    return time.perf_counter() - start


# The limit's sender: serves the files named in argv, one connection each, over and over in
# that order (its length in 8 bytes, then the file with sendfile), until it is killed.
_SENDER = """
import os, socket, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
while True:
    for path in sys.argv[1:]:
        conn, _ = listener.accept()
        with conn, open(path, "rb") as f:
            conn.sendall(os.fstat(f.fileno()).st_size.to_bytes(8, "big"))
            conn.sendfile(f)
"""


class LoopbackSender:
    """The limit: ``files`` sent over loopback by a plain process (sendfile: ``cat file | nc``
    without its copies), in order, one connection per file, into the same receiver."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SENDER, *map(str, files)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def receive(self, path: Path, buffer: bytearray) -> float:
        """Seconds to receive the next file, which must be ``path``."""
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            size = int.from_bytes(_exactly(sock, 8), "big")  # as Content-Length is read
            got = _receive(sock, buffer, size)
        elapsed = time.perf_counter() - start
        if got != path.stat().st_size:
            raise RuntimeError(f"loopback limit: {got} bytes of {path} arrived")
        return elapsed

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --------------------------------------------------------------------------- the benchmark


@dataclass
class RegistryBench:
    runs: int
    layers: int
    layer_mb: int
    small: int
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="registry-bench-")))
    left: list[str] = field(default_factory=list)
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    limit: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    big_digests: list[str] = field(default_factory=list)
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()
    big_bytes: int = 0  # the layers' bytes (what the blob GETs move)

    def setup(self) -> None:
        self.load_before = os.getloadavg()
        print(".. making the images", file=sys.stderr, flush=True)
        self.big_layout = Layout(self.home / "big")
        layers = [_layer(f"layer{i}", self.layer_mb << 20) for i in range(self.layers)]
        self.big_digests = self.big_layout.image("big", layers)
        self.big_bytes = sum(len(blob) for blob, _ in layers)
        self.small_layout = Layout(self.home / "small")
        for i in range(self.small):
            self.small_layout.image(f"img{i}", [_layer(f"file{i}", 4096)])
        for case in ("push", "pull", "blob GETs", "small pushes"):
            self.times[case] = {kind: [] for kind in REGISTRIES}

    def run_all(self) -> None:
        buffer = bytearray(RECV_BUFFER)
        for run in range(self.runs):
            order = REGISTRIES if run % 2 == 0 else REGISTRIES[::-1]
            print(f".. run {run + 1}/{self.runs} ({', '.join(order)})", file=sys.stderr, flush=True)
            servers = {}
            try:
                for kind in order:
                    servers[kind] = _start(kind, self.home)
                    self.servers.append(servers[kind])
                self._one_run(order, servers, buffer, run)
            except RuntimeError as e:
                self.errors.append(str(e))
            finally:
                for server in servers.values():
                    _stop(server)
                    self.servers.remove(server)
        self.load_after = os.getloadavg()

    def _one_run(
        self, order: tuple[str, ...], servers: dict[str, Server], buffer: bytearray, run: int
    ) -> None:
        source = f"oci:{self.big_layout.path}:big"
        os.sync()  # start each run with no writeback pending
        for kind in order:
            target = f"docker://{servers[kind].host}/bench/big:v1"
            self.times["push"][kind].append(
                _skopeo("copy", "--dest-tls-verify=false", source, target)
            )
        for i in range(PULL_ROUNDS):  # pulls repeat (the storage stays): more samples
            for kind in order if i % 2 == 0 else order[::-1]:
                out = self.home / f"pulled-{kind}"
                source = f"docker://{servers[kind].host}/bench/big:v1"
                self.times["pull"][kind].append(
                    _skopeo("copy", "--src-tls-verify=false", source, f"dir:{out}")
                )
                shutil.rmtree(out, ignore_errors=True)
        files = [self.big_layout.blob_path(d) for d in self.big_digests]
        os.sync()  # the pushes' and pulls' dirty pages: their writeback must not land here
        sender = LoopbackSender(files)
        try:
            for i in range(GET_ROUNDS):  # cheap, and the noisiest case: several rounds a run
                totals = dict.fromkeys((*order, "limit"), 0.0)
                kinds = list(totals)
                for digest, path in zip(self.big_digests, files, strict=True):
                    # each file from all three back to back (paired in time), whoever goes
                    # first rotating
                    for kind in kinds[i % 3 :] + kinds[: i % 3]:
                        if kind == "limit":
                            totals[kind] += sender.receive(path, buffer)
                        else:
                            totals[kind] += _blob_get(servers[kind], "bench/big", digest, buffer)
                self.limit.append(totals.pop("limit"))
                for kind, total in totals.items():
                    self.times["blob GETs"][kind].append(total)
        finally:
            sender.close()
        for kind in order:
            start = time.perf_counter()
            for i in range(self.small):
                _skopeo("copy", "--dest-tls-verify=false", f"oci:{self.small_layout.path}:img{i}",
                        f"docker://{servers[kind].host}/small/img{i}:r{run}")  # fmt: skip
            self.times["small pushes"][kind].append(time.perf_counter() - start)

    def cleanup(self) -> None:
        for server in self.servers:
            _stop(server)
        for server in self.servers:
            if server.proc.poll() is None:
                self.left.append(f"{server.kind} (pid {server.proc.pid}) still running")
        shutil.rmtree(self.home, ignore_errors=True)
        if self.home.exists():
            self.left.append(f"{self.home} could not be removed")


def _mb_s(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:.0f}" if seconds else "-"


def report(bench: RegistryBench, markdown: bool) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    version = subprocess.run(
        [DOCKER_REGISTRY, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    size = bench.big_bytes
    info = [
        f"date: {when}",
        f"command: `python bench/registry_bench.py {' '.join(sys.argv[1:])}`".replace(" `", "`", 0),
        f"peers: berth registry (aiohttp) vs {version}; client: skopeo; loopback, plain HTTP",
        f"image: {bench.layers} gzip layers of {bench.layer_mb} MB random data "
        f"({size / 1e6:.0f} MB); small pushes: {bench.small} images of one 4 KB layer",
        f"runs: {bench.runs}, each registry fresh (empty storage) per run, order alternating",
        "load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in bench.load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in bench.load_after)
        + " (2 CPUs, shared with other sessions)",
    ]
    rows = []
    targets = []
    for case, by_kind in bench.times.items():
        b, d = by_kind["berth"], by_kind["docker-registry"]
        if not b or not d:
            continue
        ratio = median(b) / median(d)
        extra = ""
        if case in ("push", "pull", "blob GETs"):
            extra = f"{_mb_s(size, median(b))} / {_mb_s(size, median(d))}"
        rows.append(
            [case, f"{median(b) * 1000:.0f}", f"{median(d) * 1000:.0f}", f"{ratio:.2f}", extra]
        )
        met = "met" if ratio <= 1.0 else "NOT met"
        targets.append(f"{case}: berth / docker-registry = {ratio:.2f} (target <= 1.00): {met}")
    tables = [
        Table(
            "Median ms (ratio berth / docker-registry; MB/s berth / docker-registry)",
            ["case", "berth ms", "docker-registry ms", "ratio", "MB/s"],
            rows,
        )
    ]
    gets = bench.times.get("blob GETs", {}).get("berth", [])
    if bench.limit and gets:
        limit = median(bench.limit)
        share = limit / median(gets)
        d_gets = bench.times["blob GETs"]["docker-registry"]
        d_share = limit / median(d_gets) if d_gets else 0.0
        tables.append(
            Table(
                "Blob GET throughput vs the loopback limit (sendfile sender, same receiver)",
                ["who", "median ms", "MB/s", "share of the limit"],
                [
                    ["limit", f"{limit * 1000:.0f}", _mb_s(size, limit), "1.00"],
                    [
                        "berth",
                        f"{median(gets) * 1000:.0f}",
                        _mb_s(size, median(gets)),
                        f"{share:.2f}",
                    ],
                    [
                        "docker-registry",
                        f"{median(d_gets) * 1000:.0f}" if d_gets else "-",
                        _mb_s(size, median(d_gets)) if d_gets else "-",
                        f"{d_share:.2f}",
                    ],
                ],
            )
        )
        met = "met" if share >= 0.70 else "NOT met"
        targets.append(
            f"blob GETs: berth at {share:.2f} of the loopback limit (target >= 0.70): {met}"
        )
    heading = f"Registry: berth vs docker-registry ({when})"
    return render(heading, info, tables, [("Targets", targets), ("Errors", bench.errors)], markdown)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--layer-mb", type=int, default=40)
    p.add_argument("--small", type=int, help="small images pushed one by one (100)")
    p.add_argument("--quick", action="store_true", help="1 run, 4 MB layers, 10 small images")
    p.add_argument("--markdown", help="also write the report into this file's registry section")
    args = p.parse_args()
    if args.quick:
        args.runs, args.layer_mb = 1, 4
    if args.small is None:
        args.small = 10 if args.quick else 100
    for tool in (SKOPEO, DOCKER_REGISTRY, BERTH):
        if not os.access(tool, os.X_OK):
            print(f"registry_bench: {tool} is missing (make install)", file=sys.stderr)
            return 1
    bench = RegistryBench(args.runs, args.layers, args.layer_mb, args.small)
    return run_benchmark(bench, report, args.markdown, "registry-bench")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
