"""Side-by-side benchmark of berthd against dockerd and podman, all in one run.

The peers (bench/engine_peers.py says how each is started, on private everything): berthd,
Debian's dockerd (20.10, overlay2, its own containerd) -- both driven by the same docker CLI
(``docker -H unix://...``) and, for the API case, by the same HTTP client -- and podman 4.3
(``--runtime runc``) with ``--network none`` and with its default bridge network. Every peer
runs the same busybox image: berthd makes it (``docker pull busybox``, built locally) and
its ``docker save`` tarball is loaded into the others.

What it measures:

1. ``run --rm busybox true`` end to end (``--network none``; podman also on its bridge):
   ``--runs`` runs per peer, peers interleaved with their order rotating each run, the clock
   from posix_spawn of the CLI to its exit (common.Spawner). Reported: median, p90, and how
   many times faster berthd is than each peer (peer median / berthd median).
2. create + start of a detached ``sleep`` container through the Engine API, daemon warm:
   ``POST /containers/create`` then ``POST /containers/{id}/start`` on one kept-alive
   connection (as docker-py does), timed together; the container is removed (untimed) before
   the next run. The references are the OCI runtimes alone, ``runc run -d`` and ``crun run -d``
   (crun in the worker of runtime_bench.py: it needs the cgroup2 mount hidden in a private
   mount namespace), each twice: on the very config.json berthd writes for that container
   (Docker's defaults: its seccomp profile, masks and capabilities) -- the same container, the
   issue's target -- and on runc's default spec (no seccomp filter). Interleaved like case 1.
3. ``--count`` idle containers (``run -d ... sleep 3600`` through each CLI, one peer at a
   time): the time to start them all; host memory per container above the kernel's own
   cost, i.e. ((MemTotal - MemAvailable) after - before) minus the growth of the kernel memory
   MemAvailable does not count as available (common.kernel_unavailable_kb: unreclaimable
   slab, stacks, page tables, vmalloc, per-cpu), divided by the count (each reading the
   median over a second, after a ``--settle`` pause: other sessions on a shared machine still
   move it, so the same is also counted from below: the PSS of the containers and of the
   helpers plus the growth of the daemons' RSS); the kernel's own cost per container (Slab +
   KernelStack + PageTables, as runtime_bench.py counts it) alongside; the engine's daemons'
   RSS before and after (berthd + its supervisor; dockerd + containerd); the per-container
   helpers (containerd shims, conmon) and their PSS; the container processes' PSS; the time
   to remove them all.

Quick mode (``--quick``: 3 runs, 20 containers) is what tests/e2e/test_engine_bench.py runs,
so the script cannot rot; its numbers mean nothing.

A peer that fails is reported with its error text and skipped for the rest of that case; the
others go on. On any exit -- failure, Ctrl-C, SIGTERM -- every peer is stopped, the temp dir
removed, and leftover cgroups, processes and mounts are looked for, removed and reported
(exit status 1 if any remained).

Usage: .venv/bin/python bench/engine_bench.py [--quick] [--runs 30] [--count 500]
       [--peers berthd,dockerd,podman,podman-bridge] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import common
import engine_peers
from common import Spawner, median
from engine_peers import Peer, PeerFailed, UnixHTTPConnection

MARKDOWN_KEY = "engine-bench"
MARKER_VAR = "BERTH_BENCH_RUN"
ALL_PEERS = ("berthd", "dockerd", "podman", "podman-bridge")
MANY_PEERS = ("berthd", "dockerd", "podman")  # bridge: 500 veths prove nothing more
RUNTIME_REFS = ("runc", "crun")
SLEEP_BODY = {"Image": "busybox", "Cmd": ["sleep", "600"], "HostConfig": {"NetworkMode": "none"}}


class CaseFailed(Exception):
    """A peer failed a step of a case; the message is the report's error text."""


@dataclass
class ManyResult:
    count: int = 0
    start_all_s: float = 0.0
    run_ms: list[float] = field(default_factory=list)
    host_kb: float = 0.0  # per container, above the kernel's own cost
    kernel_kb: float = 0.0  # per container
    daemon_before_kb: dict[str, int] = field(default_factory=dict)  # VmRSS by daemon name
    daemon_after_kb: dict[str, int] = field(default_factory=dict)
    container_procs: int = 0
    container_pss_kb: int = 0
    helper_procs: int = 0
    helper_pss_kb: int = 0
    remove_all_s: float = 0.0

    @property
    def userspace_kb(self) -> float:
        """Per container: the containers' and helpers' PSS plus the daemons' RSS growth, an
        account that other work on the machine cannot move (MemAvailable can)."""
        if not self.count:
            return 0.0
        growth = sum(self.daemon_after_kb.get(d, 0) - kb for d, kb in self.daemon_before_kb.items())
        return (self.container_pss_kb + self.helper_pss_kb + growth) / self.count


def rotate(items: list[str], i: int) -> list[str]:
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix = f"engb{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix="engine-bench-", dir="/tmp"))  # short paths
        os.environ[MARKER_VAR] = self.prefix
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env["DOCKER_CONFIG"] = str(self.tmp / "docker-config")
        self.env["DOCKER_CLI_HINTS"] = "false"
        self.peers: dict[str, Peer] = {}
        self.spawner: Spawner | None = None
        self.worker: object | None = None  # runtime_bench.WorkerRunner for crun
        self.ref_paths: dict[str, str] = {}
        self.ref_bundles: dict[str, str] = {}  # a reference's bundle, if not the plain one
        self.versions: dict[str, str] = {}
        self.run_rm: dict[str, list[float]] = defaultdict(list)
        self.api: dict[str, list[float]] = defaultdict(list)
        self.many: dict[str, ManyResult] = {}
        self.errors: list[tuple[str, str, str]] = []  # peer, case, text
        self.failed: dict[str, set[str]] = defaultdict(set)  # peer -> cases it failed
        self.left: list[str] = []

    # ---- set-up

    def setup(self) -> None:
        (self.tmp / "scratch").mkdir()
        (self.tmp / "docker-config").mkdir()
        (self.tmp / "docker-config" / "config.json").write_text("{}\n")  # podman reads it too
        self.spawner = Spawner(str(self.tmp / "scratch"), self.env)
        image_tar = self.tmp / "busybox.tar"
        berthd = engine_peers.Berthd(self.tmp / "b", f"{self.prefix}-berthd", self.env)
        self.start_peer(berthd, None)
        if "berthd" in self.peers:
            try:
                berthd.save_image(image_tar)
            except PeerFailed as exc:
                self.fail("berthd", "setup", f"docker save busybox: {exc}")
        if not image_tar.exists():
            raise SystemExit("no busybox tarball for the peers: berthd could not make one")
        wanted = self.args.peers
        if "dockerd" in wanted:
            missing = self.dockerd_missing()
            if missing:
                self.fail("dockerd", "setup", missing)
            else:
                d = engine_peers.Dockerd(self.tmp / "d", f"{self.prefix}-dockerd", self.env)
                self.start_peer(d, image_tar)
        for key, bridge in (("podman", False), ("podman-bridge", True)):
            if key in wanted:
                pm = engine_peers.Podman(self.tmp / key, f"{self.prefix}-{key}", self.env, bridge)
                self.start_peer(pm, image_tar)
        if "berthd" not in wanted:
            self.stop_peer("berthd")
        self.setup_references()

    def dockerd_missing(self) -> str | None:
        sys.path[:0] = [str(engine_peers.REPO / "tests"), str(engine_peers.REPO / "tests/e2e")]
        import dockerd

        why: str | None = dockerd.missing()
        return why

    def start_peer(self, peer: Peer, image_tar: Path | None) -> None:
        self.progress(f"starting {peer.name}")
        self.peers[peer.name] = peer  # before start: a half-started peer is stopped too
        try:
            peer.start(image_tar)
            self.versions[peer.name] = peer.version
        except (PeerFailed, OSError, subprocess.TimeoutExpired) as exc:
            self.fail(peer.name, "setup", str(exc))
            self.stop_peer(peer.name)

    def stop_peer(self, name: str) -> None:
        peer = self.peers.pop(name, None)
        if peer is not None:
            self.left += [f"{name}: {p}" for p in peer.stop()]

    def setup_references(self) -> None:
        """busybox bundles for ``runc run -d`` and ``crun run -d`` (the API case's refs)."""
        import runtime_bench

        runc = common.which("runc")
        if runc is None:
            self.fail("runc", "setup", "runc is not installed")
            return
        bundle = str(self.tmp / "bundle")
        with contextlib.redirect_stdout(sys.stderr):
            runtime_bench.build_bundle(bundle, ["sleep", "600"], runc)
        self.ref_paths["runc"] = runc
        crun = common.which("crun")
        if crun is None:
            self.fail("crun", "setup", "crun is not installed")
            return
        (self.tmp / "scratch-crun").mkdir()
        (self.tmp / "crun-root").mkdir()
        try:
            self.worker = runtime_bench.WorkerRunner(
                str(self.tmp / "scratch-crun"), crun, str(self.tmp / "crun-root"), self.prefix
            )
        except RuntimeError as exc:
            self.fail("crun", "setup", str(exc))
            return
        self.ref_paths["crun"] = crun
        for name, path in self.ref_paths.items():
            call = self.ref_runner(name).run([path, "--version"], 30)
            self.versions[name] = call.stdout.splitlines()[0] if call.ok else "?"

    def ref_runner(self, name: str) -> common.Spawner:
        runner = self.worker if name.startswith("crun") else self.spawner
        assert runner is not None
        return runner  # type: ignore[return-value]  (the worker has the same run())

    # ---- helpers

    def fail(self, peer: str, case: str, text: str) -> None:
        self.errors.append((peer, case, text))
        self.failed[peer].add(case)
        print(f"!! {peer}: {case} failed: {text}", file=sys.stderr)

    def progress(self, text: str) -> None:
        print(f".. {text}", file=sys.stderr, flush=True)

    def timed(self, argv: list[str]) -> float:
        assert self.spawner is not None
        call = self.spawner.run(argv, self.args.timeout)
        if not call.ok:
            raise CaseFailed(call.error_text())
        return call.ms

    def interleaved(self, case: str, names: list[str], body: Callable[[str, int], None]) -> None:
        for i in range(self.args.runs):
            for name in rotate([n for n in names if case not in self.failed[n]], i):
                try:
                    body(name, i)
                except (CaseFailed, PeerFailed, OSError) as exc:
                    self.fail(name, case, str(exc))

    # ---- case 1: run --rm busybox true

    def bench_run_rm(self) -> None:
        self.progress(f"run --rm busybox true, {self.args.runs} runs each")

        def body(name: str, i: int) -> None:
            self.run_rm[name].append(self.timed(self.peers[name].run_rm_argv()))

        self.interleaved("run --rm", list(self.peers), body)

    # ---- case 2: create + start through the API, and the runtimes' run -d

    def bench_api(self) -> None:
        self.progress(f"API create + start, {self.args.runs} runs each")
        conns = {n: UnixHTTPConnection(p.api_socket) for n, p in self.peers.items() if p.has_api}
        try:
            for name, conn in list(conns.items()):  # warm: the connection, the first create
                try:
                    conn.negotiate()
                    self.api_once(conn)
                except (PeerFailed, OSError) as exc:
                    self.fail(name, "create + start", str(exc))

            if "berthd" in conns and "create + start" not in self.failed["berthd"]:
                self.add_same_config_references(conns["berthd"])

            def body(name: str, i: int) -> None:
                if name in conns:
                    self.api[name].append(self.api_once(conns[name]))
                else:
                    self.api[name].append(self.runtime_once(name, i))

            self.interleaved("create + start", [*conns, *self.ref_paths], body)
        finally:
            for conn in conns.values():
                conn.close()

    def api_once(self, conn: UnixHTTPConnection) -> float:
        start = time.perf_counter_ns()
        created = conn.call("POST", "/containers/create", SLEEP_BODY)
        conn.call("POST", f"/containers/{created['Id']}/start")
        ms = (time.perf_counter_ns() - start) / 1e6
        conn.call("DELETE", f"/containers/{created['Id']}?force=1")
        return ms

    def add_same_config_references(self, conn: UnixHTTPConnection) -> None:
        """``runc``/``crun run -d`` of the very container berthd runs: the config.json berthd
        writes for the API case's body (Docker's defaults: its seccomp profile, masks,
        capabilities), on the same busybox rootfs, its cgroup left to the runtime."""
        created = conn.call("POST", "/containers/create", SLEEP_BODY)
        peer = self.peers["berthd"]
        assert isinstance(peer, engine_peers.Berthd)
        path = peer.data_root / "containers" / created["Id"] / "config.json"
        config = json.loads(path.read_text())
        conn.call("DELETE", f"/containers/{created['Id']}?force=1")
        config["root"]["path"] = str(self.tmp / "bundle" / "rootfs")
        config["linux"].pop("cgroupsPath", None)
        # berthd's pinned network namespace and /etc files went with the container: the
        # runtimes make a namespace of their own (as for `--network none`) and keep the image's.
        for ns in config["linux"]["namespaces"]:
            ns.pop("path", None)
        gone = str(path.parent) + "/"
        config["mounts"] = [m for m in config["mounts"] if not m["source"].startswith(gone)]
        bundle = self.tmp / "bundle-berthd-config"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(config))
        for base in [n for n in ("runc", "crun") if n in self.ref_paths]:
            name = f"{base} (berthd's config)"
            self.ref_paths[name] = self.ref_paths[base]
            self.ref_bundles[name] = str(bundle)
            self.versions.setdefault(name, self.versions.get(base, "?"))

    def runtime_once(self, name: str, i: int) -> float:
        runner, path = self.ref_runner(name), self.ref_paths[name]
        safe = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        root = str(self.tmp / f"{safe}-root")
        os.makedirs(root, exist_ok=True)
        cid = f"{self.prefix}-{safe}-{i}"
        bundle = self.ref_bundles.get(name, str(self.tmp / "bundle"))
        call = runner.run([path, "--root", root, "run", "-d", "--bundle", bundle, cid], 30)
        deleted = runner.run([path, "--root", root, "delete", "-f", cid], 30)
        if not call.ok:
            raise CaseFailed(call.error_text())
        if not deleted.ok:
            raise CaseFailed(deleted.error_text())
        return call.ms

    # ---- case 3: many idle containers

    def bench_many(self, name: str) -> None:
        peer = self.peers[name]
        n = self.args.count
        self.progress(f"{name}: {n} idle containers")
        result = self.many[name] = ManyResult(count=n)
        time.sleep(self.args.settle)
        host_before = common.host_used_kb(samples=11, interval=0.1)
        kernel_before = common.kernel_kb(samples=11, interval=0.1)
        unavailable_before = common.kernel_unavailable_kb(samples=11, interval=0.1)
        result.daemon_before_kb = self.daemon_rss(peer)
        try:
            start = time.perf_counter()
            for i in range(n):
                result.run_ms.append(self.timed(peer.run_detached_argv(f"{self.prefix}-{i}")))
            result.start_all_s = time.perf_counter() - start
            time.sleep(self.args.settle)
            host_after = common.host_used_kb(samples=11, interval=0.1)
            kernel_after = common.kernel_kb(samples=11, interval=0.1)
            unavailable = common.kernel_unavailable_kb(samples=11, interval=0.1)
            unavailable -= unavailable_before
            result.kernel_kb = (kernel_after - kernel_before) / n
            result.host_kb = (host_after - host_before - unavailable) / n
            result.daemon_after_kb = self.daemon_rss(peer)
            self.count_processes(peer, result)
            if peer.count_containers() != n:
                raise CaseFailed(f"{peer.count_containers()} containers listed, {n} started")
        except (CaseFailed, PeerFailed, OSError) as exc:
            self.fail(name, f"{n} containers", str(exc))
        finally:
            start = time.perf_counter()
            try:
                peer.remove_all()
            except (PeerFailed, subprocess.TimeoutExpired) as exc:
                self.fail(name, "remove all", str(exc))
            result.remove_all_s = time.perf_counter() - start

    def daemon_rss(self, peer: Peer) -> dict[str, int]:
        pids = peer.daemon_pids()
        return {name: common.status_kb(pid, "VmRSS") or 0 for name, pid in sorted(pids.items())}

    def count_processes(self, peer: Peer, result: ManyResult) -> None:
        """Container processes: in a cgroup below the peer's parent, less its helpers
        (podman puts conmon there too)."""
        table = common.process_table()
        in_parent = set()
        for pid, proc in table.items():
            if proc.state == "Z":
                continue
            with contextlib.suppress(OSError):
                if f"/{peer.cgroup_parent}/" in Path(f"/proc/{pid}/cgroup").read_text():
                    in_parent.add(pid)
        helpers = peer.helper_pids()
        containers = in_parent - helpers
        result.container_procs = len(containers)
        result.container_pss_kb = sum(common.pss_kb(p) or 0 for p in containers)
        result.helper_procs = len(helpers)
        result.helper_pss_kb = sum(common.pss_kb(p) or 0 for p in helpers)

    # ---- clean-up

    def cleanup(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        for name in list(self.peers):
            self.stop_peer(name)
        if self.worker is not None:
            self.left += [i for i in self.worker.close() if "unified" not in i]  # type: ignore[attr-defined]
            self.worker = None
        if self.spawner is not None:
            self.spawner.close()
        self.left += common.sweep_run(self.prefix, self.tmp, MARKER_VAR)

    # ---- the whole run

    def run_all(self) -> None:
        self.bench_run_rm()
        self.bench_api()
        for name in MANY_PEERS:
            label = "podman (none)" if name == "podman" else name
            if label in self.peers:
                self.bench_many(label)


# --------------------------------------------------------------------------- report


def mb(kb: float) -> str:
    return f"{kb / 1024:.2f}"


def ms_row(label: str, values: list[float]) -> list[str]:
    if not values:
        return [label, "failed", "-", "0"]
    return [label, f"{median(values):.1f}", f"{common.p90(values):.1f}", str(len(values))]


def latency_table(title: str, results: dict[str, list[float]], names: list[str]) -> common.Table:
    """Median/p90 rows and, per row, peer median / berthd median (how much faster berthd is)."""
    base = median(results["berthd"]) if results.get("berthd") else None
    rows = []
    for name in names:
        row = ms_row(name, results.get(name, []))
        if base and results.get(name):
            row.append(f"{median(results[name]) / base:.2f}")
        else:
            row.append("-")
        rows.append(row)
    headers = ["peer", "median ms", "p90 ms", "runs", "this / berthd"]
    return common.Table(title, headers, rows)


def many_table(bench: Bench) -> common.Table:
    names = list(bench.many)
    results = [bench.many[n] for n in names]
    daemons = sorted({d for r in results for d in [*r.daemon_before_kb, *r.daemon_after_kb]})

    def row(label: str, fn: Callable[[ManyResult], str]) -> list[str]:
        return [label, *(fn(r) for r in results)]

    def per(kb: float, r: ManyResult) -> str:
        return mb(kb / r.count) if r.count else "-"

    rows = [
        row("time to start all, s", lambda r: f"{r.start_all_s:.2f}"),
        row("`run -d` median / p90, ms", lambda r: (
            f"{median(r.run_ms):.1f} / {common.p90(r.run_ms):.1f}" if r.run_ms else "-")),
        row("host memory per container above the kernel's, MB", lambda r: mb(r.host_kb)),
        row("kernel memory per container, MB", lambda r: mb(r.kernel_kb)),
        row("userspace memory per container (PSS + daemons' growth), MB",
            lambda r: mb(r.userspace_kb)),
        row("container processes (PSS per container, MB)", lambda r: (
            f"{r.container_procs} ({per(r.container_pss_kb, r)})")),
        row("helper processes (PSS per container, MB)", lambda r: (
            f"{r.helper_procs} ({per(r.helper_pss_kb, r)})")),
    ]  # fmt: skip
    for d in daemons:
        rows.append(
            row(f"{d} RSS before -> after, MB", lambda r, d=d: (
                f"{mb(r.daemon_before_kb[d])} -> {mb(r.daemon_after_kb.get(d, 0))}"
                if d in r.daemon_before_kb else "-"))
        )  # fmt: skip
    rows.append(row("time to remove all, s", lambda r: f"{r.remove_all_s:.2f}"))
    title = f"{bench.args.count} idle containers (`run -d ... sleep 3600`), one peer at a time"
    return common.Table(title, ["metric", *names], rows)


def targets(bench: Bench) -> list[str]:
    """The issue's targets, each with the measured value and met / NOT met."""
    out = []

    def say(text: str, ok: bool) -> None:
        out.append(f"{text}: {'met' if ok else 'NOT met'}")

    if bench.run_rm.get("berthd"):
        berthd = median(bench.run_rm["berthd"])
        peers = [median(v) for n, v in bench.run_rm.items() if n != "berthd" and v]
        if peers:
            x = min(peers) / berthd
            say(f"`run --rm` at least 3x faster than the fastest peer: {x:.2f}x", x >= 3)
    same = "crun (berthd's config)"
    if bench.api.get("berthd") and bench.api.get(same):
        b, c = median(bench.api["berthd"]), median(bench.api[same])
        text = "API create + start no slower than `crun run -d` of the same container"
        say(f"{text}: {b:.1f} vs {c:.1f} ms", b <= c)
    if bench.api.get("berthd") and bench.api.get("crun"):
        b, c = median(bench.api["berthd"]), median(bench.api["crun"])
        text = "the same against `crun run -d` of runc's default spec (no seccomp)"
        say(f"{text}: {b:.1f} vs {c:.1f} ms", b <= c)
    m = bench.many.get("berthd")
    if m and m.daemon_after_kb:
        limit = 0.3 * 1024
        say(f"host memory per container under 0.3 MB: {mb(m.host_kb)} MB", m.host_kb < limit)
        say(
            f"the same, counted as PSS + daemons' growth: {mb(m.userspace_kb)} MB",
            m.userspace_kb < limit,
        )
        rss = m.daemon_after_kb.get("berthd", 0)
        say(f"berthd RSS under 80 MB with {m.count} containers: {mb(rss)} MB", rss < 80 * 1024)
    return out


def report(bench: Bench, markdown: bool) -> str:
    args = bench.args
    names = list(bench.run_rm) or list(bench.peers)
    tables = [
        latency_table("`run --rm busybox true`, end to end through each CLI", bench.run_rm, names),
        latency_table(
            "create + start of a detached container: the Engine API (daemon warm) vs the "
            "OCI runtimes' `run -d`",
            bench.api,
            list(bench.api),
        ),
    ]
    if bench.many:
        tables.append(many_table(bench))
    mem = common.meminfo_kb()["MemTotal"] / 1024 / 1024
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = [
        f"date: {now}",
        f"command: `python bench/engine_bench.py {' '.join(args.argv)}`",
        f"kernel: {os.uname().release}; CPUs: {os.cpu_count()}; memory: {mem:.1f} GiB",
        "versions: " + "; ".join(f"{k}: {v}" for k, v in bench.versions.items()),
        "docker CLI for berthd and dockerd; dockerd with overlay2 and `--bridge none`, podman "
        "with overlay and `--runtime runc`; every container with `--network none` except "
        "podman (bridge)",
        f"runs per latency case: {args.runs}, peers interleaved, their order rotating each run",
    ]
    if args.quick:
        info.insert(0, "QUICK MODE: too few runs for the numbers to mean anything")
    errors = [f"{peer} ({case}): {text}" for peer, case, text in bench.errors]
    sections = [
        ("Targets (issue 4)", targets(bench)),
        ("Errors", errors),
        ("Left behind", bench.left),
    ]
    heading = f"Engine: berthd vs dockerd and podman ({now})"
    return common.render(heading, info, tables, sections, markdown)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="3 runs, 20 containers")
    parser.add_argument("--runs", type=int, help="runs per latency case (default 30)")
    parser.add_argument("--count", type=int, help="idle containers (default 500)")
    parser.add_argument("--markdown", metavar="FILE", help="write the report section here")
    parser.add_argument("--timeout", type=float, default=60.0, help="per CLI call, s")
    parser.add_argument("--settle", type=float, default=3.0, help="pause before memory reads")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if set(args.peers) - set(ALL_PEERS) or not args.peers:
        parser.error(f"--peers: choose from {', '.join(ALL_PEERS)}")
    args.runs = args.runs or (3 if args.quick else 30)
    args.count = args.count or (20 if args.quick else 500)
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the daemons create namespaces and cgroups")
    return common.run_benchmark(Bench(args), report, args.markdown, MARKDOWN_KEY)


if __name__ == "__main__":
    sys.exit(main())
