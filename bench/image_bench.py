"""Side-by-side benchmark of Berth's image layer against GNU tar, podman and buildah, in one run.

What it measures (medians of ``--runs`` runs, 5 by default; the tools interleaved, their order
rotating every run, so noise on this shared 2-core machine hits them alike; a ratio is
berth's median divided by the peer's):

1. Unpacking a layer: a plain tar of ``--files`` files of random data (``--layer-mb`` MB in
   all, in 20 directories, sizes spread 0.2x..1.8x around the mean), generated once per run
   in the temp dir. berth: ``layers.apply_layer`` from the file into a fresh directory; the
   limit: GNU ``tar --numeric-owner -xf`` into a fresh directory. The first run of each is
   checked to give the same tree (paths, sizes, modes).
2. Loading a ``docker save`` tarball of a one-layer image of that same tree: podman makes it
   (``podman import`` of the layer, then ``podman save --format docker-archive``), so both
   load the same bytes. podman: ``podman load -i`` into private storage (``--root``,
   ``--runroot`` and ``--tmpdir`` in the temp dir, vfs driver, cgroupfs, file events), the
   image removed (untimed) after each run. berth: ``archive.load`` then ``store.unpack`` of
   each image loaded, into a fresh ``ImageStore`` each run (podman's load also extracts the
   layer into its storage, so both end with an unpacked image).
3. Builds: the same small Containerfile (FROM busybox, a RUN, a COPY of a small tree), built
   cold (no build cache, the base image present and unpacked), fully cached (the same build
   again), and after one copied file changed. buildah: ``buildah bud --layers --pull=never
   --isolation chroot`` on vfs private storage, its busybox image committed from the very
   rootfs tar berth's busybox base image is (``base.busybox_layer``), cold = every image but
   busybox removed. berth: ``build.build`` with the runner of tests/integration/image/
   runner.py (berth-runtime), cold = a fresh store holding only the unpacked busybox image.
   Per run: cold, cached, one change, each case interleaved between the tools.

Clock: tar, podman and buildah are CLI processes timed from just before posix_spawn to their
exit (bench/common.py), their start-up included. berth is timed in this process around the
library call (a daemon's view: berthd would make the same call), so Python's start-up and
imports are not in its numbers. ``sync`` runs (untimed) before every timed step so one tool's
dirty pages are not written back on another's clock; all data sits in the same temp dir on
the same filesystem.

A tool that fails is reported with its error text and skipped for the rest of that case; the
others go on. A berth module that is not in this checkout yet is reported as pending. On any
exit -- failure, Ctrl-C, SIGTERM -- podman's and buildah's storage is emptied, mounts under
the temp dir are unmounted, the temp dir is removed, and leftovers are looked for and
reported (exit status 1 if any remained).

Usage: .venv/bin/python bench/image_bench.py [--runs 5] [--cases unpack,load,build]
       [--layer-mb 100] [--files 1000] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import common
from common import Spawner, median

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
RUNNER_PATH = REPO / "tests" / "integration" / "image" / "runner.py"
MARKDOWN_KEY = "image-bench"
MARKER_VAR = "BERTH_IMAGE_BENCH_RUN"  # in the environment of every process this run starts
TAG_VAR = "BERTH_TEST_TAG"  # tests/leakcheck.py: the runner names its containers test<tag>...
ALL_CASES = ("unpack", "load", "build")
BUILD_CASES = ("cold", "cached", "one file changed")
IMAGE_REF = "localhost/image-bench:latest"
BUILD_TAG = "localhost/image-bench-build:latest"
BUSYBOX_REF = "docker.io/library/busybox:latest"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERFILE = """\
FROM busybox
RUN mkdir -p /data && echo built > /data/stamp && ls /bin | wc -l > /data/applets
COPY tree /app/
"""
EPOCH = 1704067200  # mtime of every generated file: the layer is the same on every run

if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


class StepFailed(Exception):
    """A tool failed a step; the message is the report's error text."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Row:
    """One line of the results table: a case, the tool, and how the ratio is taken."""

    case: str
    tool: str
    peer: str | None  # the key of the row this one is divided by; None for a peer itself
    mb: float | None = None  # MB processed, for a MB/s column


class Results:
    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.rows: list[tuple[str, Row]] = []
        self.errors: list[str] = []
        self.pending: dict[str, str] = {}  # row key -> why it did not run

    def add_row(self, key: str, row: Row) -> None:
        if key not in dict(self.rows):
            self.rows.append((key, row))

    def fail(self, key: str, text: str) -> None:
        self.errors.append(f"{key}: {text}")


def rotate(items: list[Any], i: int) -> list[Any]:
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter_ns()
    out = fn()
    return (time.perf_counter_ns() - start) / 1e6, out


def module_or_none(name: str) -> ModuleType | None:
    """``berth.image.<name>`` when this checkout has it (it may be landing right now)."""
    if importlib.util.find_spec(f"berth.image.{name}") is None:
        return None
    return importlib.import_module(f"berth.image.{name}")


def load_runner_module() -> ModuleType | None:
    if not RUNNER_PATH.exists():
        return None
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    spec = importlib.util.spec_from_file_location("berth_bench_image_runner", RUNNER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the layer


def write_layer(path: str, total_mb: int, files: int, seed: int) -> tuple[int, int]:
    """A plain tar of ``files`` files of random bytes, ``total_mb`` MB in all, in 20
    directories; sizes spread around the mean. Returns (file bytes, tar bytes)."""
    rng = random.Random(seed)
    total = total_mb * 1_000_000
    weights = [rng.uniform(0.2, 1.8) for _ in range(files)]
    scale = total / sum(weights)
    sizes = [int(w * scale) for w in weights]
    sizes[-1] += total - sum(sizes)
    dirs = [f"d{i:02d}" for i in range(min(20, files))]

    def info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, EPOCH
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with (
        open(path, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        tar.addfile(info("./", tarfile.DIRTYPE, 0o755))
        for d in dirs:
            tar.addfile(info(f"./{d}/", tarfile.DIRTYPE, 0o755))
        for i, size in enumerate(sizes):
            name = f"./{dirs[i % len(dirs)]}/file{i:05d}.bin"
            data = rng.randbytes(size)
            tar.addfile(info(name, tarfile.REGTYPE, 0o644, size), io.BytesIO(data))
    return total, os.path.getsize(path)


def tree_listing(root: str) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            size = st.st_size if not os.path.isdir(path) else 0
            out.append((os.path.relpath(path, root), size, st.st_mode))
    return sorted(out)


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix = f"imb{os.getpid()}"
        self.tmp = tempfile.mkdtemp(prefix="image-bench-")
        os.environ[MARKER_VAR] = self.prefix
        os.environ[TAG_VAR] = self.prefix
        self.cgroup_prefix = f"test{self.prefix}"  # the runner's container ids and cgroups
        self.peer_tmp = os.path.join(self.tmp, "peer-tmp")  # TMPDIR of podman and buildah
        os.makedirs(self.peer_tmp)
        env = dict(os.environ, TMPDIR=self.peer_tmp)
        os.makedirs(os.path.join(self.tmp, "scratch"))
        self.spawner = Spawner(os.path.join(self.tmp, "scratch"), env)
        self.results = Results()
        self.notes: list[str] = []
        self.left: list[str] = []
        self.info: list[str] = []
        self.versions: dict[str, str] = {}
        self.loadavg = 0.0
        self.source = "?"
        self.layer = os.path.join(self.tmp, "layer.tar")
        self.layer_mb = 0.0
        self.image_tar = os.path.join(self.tmp, "image.tar")
        self.storages: list[tuple[str, list[str]]] = []  # (tool, base argv) to empty at exit
        self.podman = common.which("podman")
        self.buildah = common.which("buildah")
        self.tar = common.which("tar")

    # ---- helpers

    def call(self, argv: list[str], what: str, timeout: float | None = None) -> common.Call:
        """Run a command (untimed use or timed by the caller); StepFailed if it fails."""
        result = self.spawner.run(argv, timeout or self.args.timeout)
        if not result.ok:
            raise StepFailed(f"{what}: {result.error_text()}")
        return result

    def podman_argv(self, name: str) -> list[str]:
        assert self.podman is not None
        base = os.path.join(self.tmp, name)
        argv = [self.podman, "--root", f"{base}/root", "--runroot", f"{base}/runroot"]
        argv += ["--tmpdir", f"{base}/tmp", "--storage-driver", "vfs"]
        argv += ["--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        self.storages.append(("podman", argv))
        return argv

    def buildah_argv(self, name: str) -> list[str]:
        assert self.buildah is not None
        base = os.path.join(self.tmp, name)
        argv = [self.buildah, "--root", f"{base}/root", "--runroot", f"{base}/runroot"]
        argv += ["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
        self.storages.append(("buildah", argv))
        return argv

    def version(self, key: str, argv: list[str]) -> None:
        out = self.spawner.run(argv, 30)
        text = out.stdout.strip().splitlines()[0] if out.ok and out.stdout.strip() else "?"
        self.versions[key] = text

    @staticmethod
    def settle() -> None:
        os.sync()

    def fresh_dir(self, *parts: str) -> str:
        path = os.path.join(self.tmp, *parts)
        if os.path.lexists(path):
            shutil.rmtree(path)
        os.makedirs(path)
        return path

    # ---- setup

    def setup(self) -> None:
        from berth import __version__

        self.loadavg = os.getloadavg()[0]
        self.source = source_state()

        self.versions["berth"] = f"berth {__version__} (Python {sys.version.split()[0]})"
        if self.tar:
            self.version("tar", [self.tar, "--version"])
        if self.podman:
            self.version("podman", [self.podman, "--version"])
        if self.buildah:
            self.version("buildah", [self.buildah, "--version"])
        if {"unpack", "load"} & set(self.args.cases):
            print(".. generating the layer", file=sys.stderr, flush=True)
            files_bytes, tar_bytes = write_layer(
                self.layer, self.args.layer_mb, self.args.files, seed=1
            )
            self.layer_mb = tar_bytes / 1e6
            self.info.append(
                f"layer: {self.args.files} files of random data, {files_bytes / 1e6:.0f} MB "
                f"of file data, a {tar_bytes / 1e6:.1f} MB plain tar"
            )

    # ---- 1. unpack

    def bench_unpack(self) -> None:
        res = self.results
        peer_key, berth_key = "unpack/tar", "unpack/berth"
        res.add_row(peer_key, Row("unpack layer", "GNU tar -x", None, self.layer_mb))
        res.add_row(
            berth_key, Row("unpack layer", "berth layers.apply_layer", peer_key, self.layer_mb)
        )
        from berth.image import layers

        def berth_once(target: str) -> float:
            def go() -> None:
                with open(self.layer, "rb") as f:
                    layers.apply_layer(f, target, whiteouts="overlay")

            return timed(go)[0]

        def tar_once(target: str) -> float:
            assert self.tar is not None
            argv = [self.tar, "--numeric-owner", "-xf", self.layer, "-C", target]
            return self.call(argv, "tar -x").ms

        tools: list[tuple[str, Callable[[str], float] | None]] = [
            (berth_key, berth_once),
            (peer_key, tar_once if self.tar else None),
        ]
        if self.tar is None:
            res.fail(peer_key, "GNU tar not found")
        failed: set[str] = set()
        trees: dict[str, list[tuple[str, int, int]]] = {}
        for i in range(self.args.runs):
            for key, fn in rotate(tools, i):
                if fn is None or key in failed:
                    continue
                target = self.fresh_dir("unpack", key.split("/")[1])
                self.settle()
                try:
                    res.ms[key].append(fn(target))
                except Exception as exc:
                    failed.add(key)
                    res.fail(key, str(exc))
                    continue
                if i == 0:
                    trees[key] = tree_listing(target)
                shutil.rmtree(target)
        if len(trees) == 2 and trees[berth_key] != trees[peer_key]:
            diff = set(trees[berth_key]) ^ set(trees[peer_key])
            res.fail(berth_key, f"trees differ from tar's: e.g. {sorted(diff)[:3]}")

    # ---- 2. load

    def make_image_tar(self, podman: list[str]) -> None:
        self.call([*podman, "import", self.layer, IMAGE_REF], "podman import")
        argv = [*podman, "save", "--format", "docker-archive", "-o", self.image_tar, IMAGE_REF]
        self.call(argv, "podman save")
        self.call([*podman, "rmi", "-a", "-f"], "podman rmi")
        self.info.append(
            f"docker-save tarball: {os.path.getsize(self.image_tar) / 1e6:.1f} MB, "
            "one layer (`podman import` of the layer, `podman save --format docker-archive`)"
        )

    def bench_load(self) -> None:
        res = self.results
        peer_key, berth_key = "load/podman", "load/berth"
        mb = os.path.getsize(self.layer) / 1e6
        res.add_row(peer_key, Row("load docker-save tarball", "podman load", None, mb))
        res.add_row(
            berth_key, Row("load docker-save tarball", "berth archive.load + unpack", peer_key, mb)
        )
        if self.podman is None:
            res.fail(peer_key, "podman not found; it also makes the tarball")
            return
        podman = self.podman_argv("podman-load")
        try:
            self.make_image_tar(podman)
        except StepFailed as exc:
            res.fail(peer_key, str(exc))
            return
        archive = module_or_none("archive")
        from berth.image.store import ImageStore

        def berth_once() -> float:
            assert archive is not None
            store = ImageStore(self.fresh_dir("berth-load"))

            def go() -> list[str | None]:
                with open(self.image_tar, "rb") as f:
                    loaded = archive.load(store, f)
                return [store.unpack(image) for image in loaded_images(store, loaded)]

            ms, chains = timed(go)
            if not res.ms[berth_key]:  # the first run: check what it made (untimed)
                self.check_unpacked(store, chains)
            self.settle()
            shutil.rmtree(store.root)
            return ms

        def podman_once() -> float:
            ms = self.call([*podman, "load", "-i", self.image_tar], "podman load").ms
            if not res.ms[peer_key]:
                self.call([*podman, "image", "exists", IMAGE_REF], "podman image exists")
            self.call([*podman, "rmi", "-a", "-f"], "podman rmi (untimed)")
            return ms

        tools: list[tuple[str, Callable[[], float] | None]] = [
            (berth_key, berth_once if archive is not None else None),
            (peer_key, podman_once),
        ]
        if archive is None:
            res.pending[berth_key] = "pending: archive.py not in this checkout"
        failed: set[str] = set()
        for i in range(self.args.runs):
            for key, fn in rotate(tools, i):
                if fn is None or key in failed:
                    continue
                self.settle()
                try:
                    res.ms[key].append(fn())
                except Exception as exc:
                    failed.add(key)
                    res.fail(key, f"{type(exc).__name__}: {exc}")

    def check_unpacked(self, store: Any, chains: list[str | None]) -> None:
        if len(chains) != 1 or chains[0] is None:
            raise StepFailed(f"expected one image with a layer, the load gave chains {chains}")
        path = store.snapshots.stat(chains[0]).path
        files = sum(len(names) for _, _, names in os.walk(path))
        if files != self.args.files:
            raise StepFailed(f"the unpacked image has {files} files, not {self.args.files}")

    # ---- 3. builds

    def bench_build(self) -> None:
        res = self.results
        for case in BUILD_CASES:
            res.add_row(f"build {case}/buildah", Row(f"build: {case}", "buildah bud", None))
            res.add_row(
                f"build {case}/berth",
                Row(f"build: {case}", "berth build.build", f"build {case}/buildah"),
            )
        busybox_tar = os.path.join(self.tmp, "busybox-rootfs.tar")
        from berth.image import base

        with open(busybox_tar, "wb") as f:
            base.busybox_layer(f)
        context = self.make_context()
        tools: list[Builder] = []
        try:
            tools.append(BuildahBuilder(self, busybox_tar, context))
        except StepFailed as exc:
            res.fail("build/buildah", str(exc))
        berth = self.berth_builder(context)
        if berth is not None:
            tools.append(berth)
        failed: set[str] = set()
        for i in range(self.args.runs):
            ids: dict[tuple[str, str], str] = {}
            for case in BUILD_CASES:
                if case == "one file changed":
                    self.change_context(context, i)
                for tool in rotate(tools, i):
                    key = f"build {case}/{tool.name}"
                    if tool.name in failed:
                        continue
                    try:
                        if case == "cold":
                            tool.reset()
                        self.settle()
                        ms, ids[(tool.name, case)] = tool.build()
                        res.ms[key].append(ms)
                        if i == 0 and case == "cold":
                            tool.verify(context)
                        self.check_ids(tool.name, case, ids)
                    except Exception as exc:
                        failed.add(tool.name)
                        res.fail(key, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def check_ids(name: str, case: str, ids: dict[tuple[str, str], str]) -> None:
        """A fully cached rebuild gives the cold build's image; a change, another one."""
        if case == "cached" and ids[(name, case)] != ids[(name, "cold")]:
            raise StepFailed("the cached rebuild gave another image id than the cold build")
        if case == "one file changed" and ids[(name, case)] == ids[(name, "cached")]:
            raise StepFailed("the build after a change gave the same image id")

    def make_context(self) -> str:
        context = self.fresh_dir("context")
        with open(os.path.join(context, "Containerfile"), "w") as f:
            f.write(CONTAINERFILE)
        for d in ("tree", "tree/etc", "tree/lib", "tree/lib/deep"):
            os.makedirs(os.path.join(context, d), exist_ok=True)
        rng = random.Random(2)
        for i in range(24):
            sub = ("tree", "tree/etc", "tree/lib", "tree/lib/deep")[i % 4]
            with open(os.path.join(context, sub, f"file{i:02d}.txt"), "w") as f:
                f.write("".join(rng.choice("abcdefgh \n") for _ in range(rng.randint(50, 4000))))
        return context

    @staticmethod
    def change_context(context: str, i: int) -> None:
        with open(os.path.join(context, "tree", "etc", "file01.txt"), "a") as f:
            f.write(f"changed in run {i}\n")

    def berth_builder(self, context: str) -> Builder | None:
        build = module_or_none("build")
        why = []
        if build is None:
            why.append("build.py not in this checkout")
        runner_module = load_runner_module()
        if runner_module is None:
            why.append(f"{RUNNER_PATH.relative_to(REPO)} not in this checkout")
        if why:
            for case in BUILD_CASES:
                self.results.pending[f"build {case}/berth"] = "pending: " + "; ".join(why)
            return None
        try:
            return BerthBuilder(self, build, runner_module, context)
        except Exception as exc:
            self.results.fail("build/berth", f"setup: {type(exc).__name__}: {exc}")
            return None

    # ---- cleanup

    def cleanup(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        seen = set()
        for tool, argv in self.storages:
            if tuple(argv) in seen or not os.path.isdir(argv[argv.index("--root") + 1]):
                continue
            seen.add(tuple(argv))
            if tool == "buildah":
                self.spawner.run([*argv, "rm", "-a"], 60)
            else:
                self.spawner.run([*argv, "rm", "-a", "-f"], 60)
            self.spawner.run([*argv, "rmi", "-a", "-f"], 60)
        for pid in common.marked_processes(
            self.prefix, f"{MARKER_VAR}={self.prefix}", {os.getpid()}
        ):
            self.left.append(f"process {pid} (killed)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cgroups = common.cgroup_dirs(self.cgroup_prefix)
        if cgroups:
            time.sleep(0.5)
            self.left += [f"cgroup {path} (removed)" for path in cgroups]
            common.remove_cgroup_dirs(cgroups)
        for path in sorted(common.mounts_under(self.tmp), key=len, reverse=True):
            self.left.append(f"mount {path} (unmounted)")
            subprocess.run(["umount", "-l", path], check=False)
        self.spawner.close()
        if common.mounts_under(self.tmp):
            self.left.append(f"STILL THERE: mounts under {self.tmp}; temp dir kept")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if os.path.exists(self.tmp):
                self.left.append(f"STILL THERE: temp dir {self.tmp}")

    def measure_startup(self) -> None:
        """For scale beside berth's in-process numbers: what a CLI would add first."""
        argv = [sys.executable, "-c", "import berth.image.build, berth.image.archive"]
        runs = [self.spawner.run(argv, 60) for _ in range(5)]
        if all(r.ok for r in runs):
            self.notes.append(
                "For scale: starting this Python and importing berth.image.build and "
                f"berth.image.archive takes {median([r.ms for r in runs]):.0f} ms (median of 5); "
                "a one-shot CLI would pay it, berthd pays it once."
            )

    # ---- the whole run

    def run_all(self) -> None:
        self.measure_startup()
        steps = {"unpack": self.bench_unpack, "load": self.bench_load, "build": self.bench_build}
        for case in self.args.cases:
            print(f".. {case}", file=sys.stderr, flush=True)
            steps[case]()


def loaded_images(store: Any, loaded: Any) -> list[Any]:
    """What ``archive.load`` returned, as images: one image, a sequence of images, or of
    references to resolve in the store."""
    items = loaded if isinstance(loaded, list | tuple) else [loaded]
    images = []
    for item in items:
        images.append(store.resolve(item) if isinstance(item, str) else item)
    return images


# --------------------------------------------------------------------------- builders


class Builder:
    name = ""

    def reset(self) -> None:
        """Back to cold: no build cache, the base image present."""
        raise NotImplementedError

    def build(self) -> tuple[float, str]:
        """One build of the context: its wall time in ms, the image id."""
        raise NotImplementedError

    def verify(self, context: str) -> None:
        """Check the image built has the RUN's file and the copied tree (untimed)."""
        raise NotImplementedError


def check_rootfs(lookup: Callable[[str], str | None], context: str, tool: str) -> None:
    """``lookup(path)`` reads a file of the built image's root filesystem (None: absent)."""
    with open(os.path.join(context, "tree", "etc", "file01.txt")) as f:
        want = f.read()
    if lookup("data/stamp") != "built\n":
        raise StepFailed(f"{tool}: the image lacks the RUN's /data/stamp")
    if lookup("app/etc/file01.txt") != want:
        raise StepFailed(f"{tool}: the image's /app/etc/file01.txt is not the context's")


class BuildahBuilder(Builder):
    name = "buildah"

    def __init__(self, bench: Bench, busybox_tar: str, context: str) -> None:
        if bench.buildah is None:
            raise StepFailed("buildah not found")
        self.bench = bench
        self.context = context
        self.argv = bench.buildah_argv("buildah")
        ctr = bench.call([*self.argv, "from", "scratch"], "buildah from scratch")
        name = ctr.stdout.strip().splitlines()[-1]
        bench.call([*self.argv, "add", name, busybox_tar, "/"], "buildah add")
        config = [*self.argv, "config", "--cmd", "sh", "--env", PATH_ENV, name]
        bench.call(config, "buildah config")
        bench.call([*self.argv, "commit", "--rm", name, BUSYBOX_REF], "buildah commit")
        listing = bench.call([*self.argv, "images", "-q", "--no-trunc", BUSYBOX_REF], "images")
        self.base_id = listing.stdout.strip()

    def reset(self) -> None:
        listing = self.bench.call([*self.argv, "images", "-a", "-q", "--no-trunc"], "images")
        ids = [i for i in listing.stdout.split() if i != self.base_id]
        if ids:
            self.bench.call([*self.argv, "rmi", "-f", *ids], "buildah rmi (untimed)")

    def build(self) -> tuple[float, str]:
        argv = [*self.argv, "bud", "--pull=never", "--layers", "--isolation", "chroot"]
        argv += ["-q", "-t", BUILD_TAG, "-f", os.path.join(self.context, "Containerfile")]
        done = self.bench.call([*argv, self.context], "buildah bud", 300)
        return done.ms, done.stdout.split()[-1]

    def verify(self, context: str) -> None:
        ctr = self.bench.call([*self.argv, "from", BUILD_TAG], "buildah from").stdout.split()[-1]
        try:
            root = self.bench.call([*self.argv, "mount", ctr], "buildah mount").stdout.strip()

            def lookup(path: str) -> str | None:
                try:
                    with open(os.path.join(root, path)) as f:
                        return f.read()
                except FileNotFoundError:
                    return None

            check_rootfs(lookup, context, "buildah")
        finally:
            self.bench.call([*self.argv, "rm", ctr], "buildah rm")


class BerthBuilder(Builder):
    name = "berth"

    def __init__(
        self, bench: Bench, build: ModuleType, runner_module: ModuleType, context: str
    ) -> None:
        from berth.image import base
        from berth.image.store import ImageStore

        self.bench = bench
        self.build_module = build
        self.context = context
        self.base = base
        self.store_class = ImageStore
        self.root = os.path.join(bench.tmp, "berth-build")
        self.runner = make_runner(runner_module, bench)
        self.store: Any = None
        self.reset()

    def reset(self) -> None:
        if os.path.lexists(self.root):
            shutil.rmtree(self.root)
        self.store = self.store_class(self.root)
        self.store.unpack(self.base.busybox_image(self.store))

    def build(self) -> tuple[float, str]:
        def go() -> Any:
            return self.build_module.build(
                self.store,
                self.context,
                CONTAINERFILE,
                runner=self.runner,
                events=lambda event: None,
                tags=[BUILD_TAG],
            )

        ms, image = timed(go)
        return ms, str(image.id)

    def verify(self, context: str) -> None:
        image = self.store.resolve(BUILD_TAG)
        lowers = self.store.snapshots.lowers(self.store.unpack(image))

        def lookup(path: str) -> str | None:
            for layer in lowers:  # overlay lower dirs (copy mode: one full tree)
                full = os.path.join(layer, path)
                if os.path.lexists(full):
                    with open(full) as f:
                        return f.read()
            return None

        check_rootfs(lookup, context, "berth")


def make_runner(runner_module: ModuleType, bench: Bench) -> Any:
    """The tests' ``KernelRunner``: each RUN a ``berth-runtime run`` in a child under
    ``unshare --mount``; its container ids (and so cgroups) carry this run's tag."""
    work = os.path.join(bench.tmp, "berth-runner")
    os.makedirs(work, exist_ok=True)
    return runner_module.KernelRunner(Path(work))


# --------------------------------------------------------------------------- report


def report(bench: Bench, markdown: bool) -> str:
    args, res = bench.args, bench.results
    headers = ["case", "tool", "median ms", "min..max ms", "runs", "MB/s", "berth / peer"]
    rows = []
    for key, row in res.rows:
        values = res.ms.get(key, [])
        if not values:
            text = "pending" if key in res.pending else "failed"
            rows.append([row.case, row.tool, text, "-", "0", "-", "-"])
            continue
        med = median(values)
        ratio = "1.00" if row.peer is None else "-"
        if row.peer is not None and res.ms.get(row.peer):
            ratio = f"{med / median(res.ms[row.peer]):.2f}"
        rate = f"{row.mb / (med / 1000):.0f}" if row.mb else "-"
        spread = f"{min(values):.0f}..{max(values):.0f}"
        rows.append([row.case, row.tool, f"{med:.0f}", spread, str(len(values)), rate, ratio])
    title = (
        f"Median of {args.runs} runs, tools interleaved; berth / peer: berth's median divided "
        "by the peer's (below 1.00: berth is faster)"
    )
    tables = [common.Table(title, headers, rows, 2)]
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    info = [
        f"date: {when}",
        f"command: `{command}`",
        f"kernel: {os.uname().release}; CPUs: {os.cpu_count()}; "
        f"memory: {common.meminfo_kb()['MemTotal'] / 1024**2:.1f} GiB; "
        f"temp dir on: {filesystem_of(bench.tmp)}",
        "tools: " + "; ".join(bench.versions.values()),
        f"berth source: {bench.source}",
        f"load average (1 min) at the start: {bench.loadavg:.2f}",
        *bench.info,
    ]
    notes = [*NOTES, *bench.notes]
    pending = sorted({text for text in res.pending.values()})
    sections = [
        ("Pending", pending),
        ("Errors", res.errors),
        ("Notes", notes),
        ("Left behind after cleanup", bench.left or ["nothing: no storage, mount, process"]),
    ]
    heading = f"Images: berth vs GNU tar, podman and buildah ({when})"
    return common.render(heading, info, tables, sections, markdown)


NOTES = [
    "Clock: tar, podman and buildah are CLI processes timed from posix_spawn to exit (their "
    "start-up included); berth is timed in the benchmark process around the library call, as "
    "berthd would make it (no interpreter start-up or imports in its numbers).",
    "`sync` runs untimed before every timed step; all files live in one temp dir on one "
    "filesystem, read from the page cache.",
    "Load: podman's private storage (vfs) and berth's fresh ImageStore both end with the layer "
    "extracted; podman's image is removed after each run, untimed.",
    "Builds: buildah `bud --layers --pull=never --isolation chroot`, vfs; cold = every image "
    "but busybox removed. Issue 3's target: berth no slower than buildah on each build case.",
]


def source_state() -> str:
    """The commit the berth code measured is at, and whether src/ differs from it."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    )
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], check=False, capture_output=True, text=True
    ).stdout.strip()
    changed = f" + uncommitted changes in {len(dirty.splitlines())} file(s) of src/"
    return f"commit {head.stdout.strip()}" + (changed if dirty else "")


def filesystem_of(path: str) -> str:
    best, fstype = "", "?"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(
                best
            ):
                best, fstype = point, line.split(" - ")[1].split()[0]
    return fstype


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="per case and tool")
    parser.add_argument("--layer-mb", type=int, default=100, help="file data in the layer")
    parser.add_argument("--files", type=int, default=1000, help="files in the layer")
    parser.add_argument("--markdown", metavar="FILE", help="write the report section here")
    parser.add_argument("--timeout", type=float, default=120.0, help="per command, s")
    args = parser.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if set(args.cases) - set(ALL_CASES) or not args.cases:
        parser.error(f"--cases: choose from {', '.join(ALL_CASES)}")
    if args.runs < 1 or args.layer_mb < 1 or args.files < 1:
        parser.error("--runs, --layer-mb and --files must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: podman, buildah and the berth runtime need it")
    return common.run_benchmark(Bench(args), report, args.markdown, MARKDOWN_KEY)


if __name__ == "__main__":
    sys.exit(main())
