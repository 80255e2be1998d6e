"""Side-by-side benchmark of berth-runtime against runc and crun, all in one run.

What it measures (every runtime gets the same busybox bundle, from ``runc spec`` with
``terminal: false``, and its own ``--root`` state directory in a temp dir):

1. Latency, in ms, median and p90 over ``--runs`` runs: ``run`` of /bin/true (a fresh
   container id each time, deleted afterwards), and ``create``, ``start``, ``delete`` timed
   separately (start of a container whose process is /bin/true; delete once it has exited).
   Runtimes are interleaved and the order rotates every run (A B C, B C A, ...), so noise on
   this shared, 2-core machine hits all of them alike. The ratio columns divide a runtime's
   median by runc's and crun's. Clock: from just before posix_spawn of the runtime CLI to its
   exit (bench/common.py); untimed ``state`` calls sit between the phases.
2. Peak RSS, in MB, over a few extra interleaved runs: ``ru_maxrss`` of each runtime CLI
   call, taken through GNU time (a wait4 from Python would report the benchmark's own ~9 MB
   as a floor, see common.py). It is the maximum over the CLI process and the descendants it
   reaped itself -- for a foreground ``run`` that includes the container process, i.e. runc's
   ``runc init`` before its exec -- never a sum. The container-side helper is measured on its
   own: the process a ``create`` leaves waiting for ``start`` (``runc init``, crun's forked
   child), its VmHWM and PSS from /proc.
3. ``--count`` detached ``sleep 600`` containers, one runtime at a time, in ``--rounds``
   rounds; within a round the runtimes take turns, their order rotating, so the machine's
   drift hits all alike (median and min..max reported: other work on the machine moves host
   memory). Per round: the time to ``run -d`` them all; then, divided by the count, deltas of
   /proc/meminfo over the round: host memory, (MemTotal - MemAvailable), each reading the
   median over a second after a ``--settle`` pause (what the target is about; also the
   noisiest); kernel memory, Slab + KernelStack + PageTables; unreclaimable kernel memory,
   SUnreclaim + KernelStack + PageTables + VmallocUsed + Percpu (the kernel memory
   MemAvailable cannot hand out: host memory minus the processes' own pages, read without
   their noise); per-cpu pages, Percpu (populated pages: it grows only when the allocator has
   no populated free space left, so it depends on what ran before); per-cpu allocations, from
   debugfs's percpu_stats (what the containers actually allocated; see
   ``percpu_allocated_kb``). Then PSS (/proc/<pid>/smaps_rollup) of the container processes
   and of any helper processes the runtime leaves per container (ancestors of a container
   process, or processes carrying this run's environment marker; runc and crun leave none);
   the time to kill and delete them all; host memory after teardown minus before (noise, or
   a leak); and a check that no state, cgroup, process or mount is left.

crun refuses this machine's hybrid cgroup layout, so every crun call runs in one worker
process started once under ``unshare --mount --propagation private``; the worker unmounts
/sys/fs/cgroup/unified in that private namespace only (it checks it is not in the host's
namespace first) and times crun from there with the same code as the other runtimes. There
crun's containers get no cgroup in the unified hierarchy (``0::/``), while runc's and
berth's each get one; so "berth (as crun runs)" (``berth-crunenv``) is berth-runtime run by
the same worker, in exactly crun's environment: its cgroup detection sees a v1-only host.

A runtime that fails is reported with its error text and skipped for the rest of that case;
the others go on. On any exit -- failure, Ctrl-C, SIGTERM -- every container made is killed
and deleted, the temp dirs are removed, and leftover cgroups, processes and mounts are looked
for, removed and reported (exit status 1 if any remained).

Usage: .venv/bin/python bench/runtime_bench.py [--runtimes runc,crun,berth,berth-crunenv]
       [--runs 50] [--count 200] [--rounds 5] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import common
from common import Call, Spawner, median

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BERTH = REPO / ".venv" / "bin" / "berth-runtime"
ALL_RUNTIMES = ("runc", "crun", "berth", "berth-crunenv")
IN_WORKER = ("crun", "berth-crunenv")  # run where the worker hid the cgroup2 mount
LABELS = {"berth-crunenv": "berth (as crun runs)"}  # report headings; others: the name
CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"
MARKER_VAR = "BERTH_BENCH_RUN"  # in the environment of every runtime CLI this run starts
RSS_RUNS = 10
LATENCY_CASES = ("run", "create", "start", "delete")
MARKDOWN_KEY = "runtime-bench"


class CaseFailed(Exception):
    """A runtime failed a step of a case; the message is the report's error text."""


class Runner(Protocol):
    def run(self, argv: list[str], timeout: float) -> Call: ...


# --------------------------------------------------------------------------- runtimes


@dataclass
class Runtime:
    name: str
    path: str
    root: str  # --root state dir
    runner: Runner
    in_worker: bool  # run by the worker, in a mount namespace without the cgroup2 mount
    live: set[str] = field(default_factory=set)  # ids that may exist (added before create)
    errors: dict[str, str] = field(default_factory=dict)  # case -> first error text
    version: str = "?"

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *args]

    def call(self, *args: str, timeout: float) -> Call:
        return self.runner.run(self.argv(*args), timeout)


class WorkerRunner:
    """Runs commands in a worker process in a private mount namespace without the cgroup2
    mount (started once, so unshare is never part of a timing); JSON lines over pipes.
    ``runtime`` with its ``root`` (and each (path, root) of ``also``) are the runtimes whose
    containers named ``prefix``... the worker deletes when it exits."""

    def __init__(
        self,
        scratch: str,
        runtime: str,
        root: str,
        prefix: str,
        also: Sequence[tuple[str, str]] = (),
    ) -> None:
        config = {
            "host_mntns": os.readlink("/proc/self/ns/mnt"),
            "scratch": scratch,
            "runtimes": [[runtime, root], *map(list, also)],
            "prefix": prefix,
        }
        cmd = ["unshare", "--mount", "--propagation", "private"]
        cmd += [sys.executable, __file__, "--crun-worker", json.dumps(config)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, process_group=0
        )
        self.gone = False  # set at EOF on its stdout, which may come before it is waitable
        hello = self._request(None)
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"the worker did not start: {hello.get('error', hello)}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self.gone and self.proc.poll() is None

    def _request(self, message: dict[str, Any] | None) -> dict[str, Any]:
        """Send ``message`` and read the reply; Ctrl-C waits for the reply (the worker finishes
        the call anyway), so requests and replies never get out of step."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        interrupted: KeyboardInterrupt | None = None
        line = ""
        try:
            if message is not None:
                self.proc.stdin.write(json.dumps(message) + "\n")
                self.proc.stdin.flush()
            while True:
                try:
                    line = self.proc.stdout.readline()
                    break
                except KeyboardInterrupt as exc:
                    interrupted = exc
        except (BrokenPipeError, ValueError):
            line = ""
        if interrupted is not None:
            raise interrupted
        if not line:
            self.gone = True
            return {"error": "the worker process has exited"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self, argv: list[str], timeout: float) -> Call:
        reply = self._request({"op": "run", "argv": argv, "timeout": timeout})
        if "error" in reply:
            return Call(tuple(argv), 0.0, 255, 0, "", reply["error"])
        return Call.from_json(reply)

    def sweep(self) -> list[str]:
        """Remove the directories crun leaves under the hidden unified dir; say which."""
        reply = self._request({"op": "sweep"})
        return list(reply.get("removed", []))

    def close(self) -> list[str]:
        """EOF makes the worker delete any container left in its root, sweep, and exit."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        removed: list[str] = []
        if self.proc.stdout is not None:
            for line in self.proc.stdout:
                removed += json.loads(line).get("removed", [])
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return removed


def worker_main(config_json: str) -> int:
    """The worker side: runs in the private mount namespace that ``unshare`` made."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    config = json.loads(config_json)

    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    if os.readlink("/proc/self/ns/mnt") == config["host_mntns"]:
        send({"error": "not in a private mount namespace; refusing to unmount anything"})
        return 1
    if os.path.ismount(UNIFIED):
        done = subprocess.run(["umount", UNIFIED], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            send({"error": f"umount {UNIFIED}: {done.stderr.strip()}"})
            return 1
    spawner = Spawner(config["scratch"])
    prefix = config["prefix"]
    send({"ready": True})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "run":
                send(spawner.run(request["argv"], request["timeout"]).to_json())
            elif request["op"] == "sweep":
                send({"removed": sweep_hidden_unified(prefix)})
    finally:
        removed = []
        for path, root in config["runtimes"]:
            listing = spawner.run([path, "--root", root, "list", "-q"], 30)
            for cid in listing.stdout.split():
                if cid.startswith(prefix):
                    spawner.run([path, "--root", root, "kill", cid, "KILL"], 30)
                    spawner.run([path, "--root", root, "delete", "-f", cid], 30)
                    name = os.path.basename(path)
                    removed.append(f"{name} container {cid} (deleted by the worker on exit)")
        removed += sweep_hidden_unified(prefix)
        spawner.close()
        with contextlib.suppress(BrokenPipeError):
            send({"removed": removed})
    return 0


def sweep_hidden_unified(prefix: str) -> list[str]:
    """crun, seeing /sys/fs/cgroup/unified as a plain directory once unmounted, creates
    <id>/cgroup.procs there (in the host's /sys/fs/cgroup tmpfs, hidden under the cgroup2
    mount) and never removes it. Only runs where that directory is not a mount point."""
    if os.path.ismount(UNIFIED) or not os.path.isdir(UNIFIED):
        return []
    removed = []
    for name in os.listdir(UNIFIED):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(UNIFIED, name))
            removed.append(os.path.join(UNIFIED, name))
    return removed


# --------------------------------------------------------------------------- per-cpu memory


def percpu_allocated_kb(mountpoint: str) -> int | None:
    """The per-cpu allocator's allocated bytes (over all possible CPUs), in KB, from
    debugfs's percpu_stats; None where it cannot be read. debugfs is mounted at the empty
    directory ``mountpoint`` in a throwaway private mount namespace, so the host's mount
    table never changes. Meminfo's Percpu counts *populated pages*, which grow only when no
    populated free space is left, so it reads 0 for most rounds; this counts what was
    allocated: per chunk, its size (the first chunk's is a constant that cancels out in a
    delta) minus its free bytes, times the number of units (possible CPUs)."""
    script = f"mount -t debugfs none {shlex.quote(mountpoint)} && cat {mountpoint}/percpu_stats"
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    unit_size, used, first, chunks = 0, 0, False, 0
    for line in done.stdout.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "unit_size":
            unit_size = int(value)
        elif key.startswith("Chunk"):
            first, chunks = "First" in line, chunks + 1
        elif key == "free_bytes":
            used += (0 if first else unit_size) - int(value)
    if not unit_size or not chunks:
        return None
    return used * possible_cpus() // 1024


def unified_cgroup(pid: int) -> str | None:
    """The process's cgroup in the unified (cgroup2) hierarchy: the ``0::`` line's path."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def possible_cpus() -> int:
    """The number of possible CPUs ("0-1,4-5" -> 4): one per-cpu unit each."""
    with open("/sys/devices/system/cpu/possible") as f:
        spans = [span.split("-") for span in f.read().strip().split(",")]
    return sum(int(span[-1]) - int(span[0]) + 1 for span in spans)


# --------------------------------------------------------------------------- results


@dataclass
class ManyResult:
    """One runtime's detached-container rounds; process counts and PSS from the first."""

    start_all_s: list[float] = field(default_factory=list)  # per completed round
    run_ms: list[float] = field(default_factory=list)  # every `run -d`
    host_kb: list[float] = field(default_factory=list)  # per container, per round
    kernel_kb: list[float] = field(default_factory=list)  # slab + stacks + page tables, same
    percpu_kb: list[float] = field(default_factory=list)  # Percpu of /proc/meminfo, same
    percpu_alloc_kb: list[float] = field(default_factory=list)  # percpu_allocated_kb, same
    unavailable_kb: list[float] = field(default_factory=list)  # kernel_unavailable_kb, same
    teardown_s: list[float] = field(default_factory=list)
    round_change_kb: list[int] = field(default_factory=list)  # after teardown - before
    count: int = 0  # containers in the first round
    container_pss_kb: int = 0
    container_procs: int = 0
    helper_procs: int = 0
    helper_pss_kb: int = 0
    own_unified: int = 0  # containers whose unified (cgroup2) cgroup is not the caller's
    left: list[str] = field(default_factory=list)


def build_bundle(bundle: str, args: list[str], runc: str) -> None:
    """A busybox bundle: the host's busybox-static as rootfs, ``runc spec`` running ``args``."""
    sys.path.insert(0, str(REPO / "tools"))
    from busybox_rootfs import build_busybox_rootfs

    build_busybox_rootfs(os.path.join(bundle, "rootfs"))
    subprocess.run([runc, "spec", "--bundle", bundle], check=True)
    config_path = os.path.join(bundle, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)


def rotate(items: list[Runtime], i: int) -> list[Runtime]:
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def mb(kb: float) -> str:
    return f"{kb / 1024:.2f}"


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix = f"rtb{os.getpid()}"
        self.tmp = tempfile.mkdtemp(prefix="runtime-bench-")
        self.runtimes: list[Runtime] = []
        self.worker: WorkerRunner | None = None
        self.spawner: Spawner | None = None
        self.latency: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.rss: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.rss_floor_kb: int | None = None
        self.many: dict[str, ManyResult] = {}
        self.errors: list[tuple[str, str, str]] = []  # runtime, case, text
        self.notes: list[str] = []
        self.left: list[str] = []
        self.swept: list[str] = []  # crun's leftovers under the hidden unified dir, removed
        self.bundle_true = os.path.join(self.tmp, "bundles", "true")
        self.bundle_sleep = os.path.join(self.tmp, "bundles", "sleep")
        self.debugfs_dir = os.path.join(self.tmp, "debugfs")  # mounted in throwaway namespaces
        os.makedirs(self.debugfs_dir)
        os.environ[MARKER_VAR] = self.prefix

    # ---- setup

    def setup(self) -> None:
        runc = common.which("runc")
        if runc is None:
            raise SystemExit("runc is needed (config.json comes from `runc spec`)")
        build_bundle(self.bundle_true, ["/bin/true"], runc)
        build_bundle(self.bundle_sleep, ["sleep", "600"], runc)
        os.makedirs(os.path.join(self.tmp, "scratch-main"))
        self.spawner = Spawner(os.path.join(self.tmp, "scratch-main"))
        found: dict[str, tuple[str, str]] = {}  # name -> (path, root)
        for name in self.args.runtimes:
            root = os.path.join(self.tmp, f"root-{name}")
            os.makedirs(root)
            path = self.args.berth_runtime if name.startswith("berth") else common.which(name)
            if path is None or not os.access(path, os.X_OK):
                self.fail(name, "setup", f"{name}: executable not found ({path or 'not on PATH'})")
                continue
            found[name] = (path, root)
        in_worker = [found[name] for name in IN_WORKER if name in found]
        if in_worker:
            try:
                self.worker = self.start_worker(in_worker)
            except RuntimeError as exc:
                for name in IN_WORKER:
                    if found.pop(name, None):
                        self.fail(name, "setup", str(exc))
        for name, (path, root) in found.items():
            runner: Runner = self.worker if name in IN_WORKER and self.worker else self.spawner
            rt = Runtime(name, path, root, runner, name in IN_WORKER)
            version = runner.run([path, "--version"], self.args.timeout)
            rt.version = (
                version.stdout.strip().splitlines()[0]
                if version.ok and version.stdout.strip()
                else f"unknown (--version: {version.error_text(2)})"
            )
            self.runtimes.append(rt)

    # ---- helpers

    def fail(self, runtime: str, case: str, text: str) -> None:
        self.errors.append((runtime, case, text))
        print(f"!! {runtime}: {case} failed: {text}", file=sys.stderr)

    def cid(self, rt: Runtime, case: str, i: int) -> str:
        return f"{self.prefix}-{rt.name}-{case}-{i}"

    def checked(self, rt: Runtime, *args: str, argv: list[str] | None = None) -> Call:
        """Run a runtime verb (or a wrapped ``argv``); raise CaseFailed unless it succeeded."""
        if argv is None:
            call = rt.call(*args, timeout=self.args.timeout)
        else:
            call = rt.runner.run(argv, self.args.timeout)
        if not call.ok:
            raise CaseFailed(call.error_text())
        return call

    def state_pid(self, rt: Runtime, cid: str) -> int:
        call = self.checked(rt, "state", cid)
        try:
            return int(json.loads(call.stdout)["pid"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CaseFailed(f"`state {cid}` printed no pid ({exc}): {call.stdout[:200]}") from exc

    def forget(self, rt: Runtime, cid: str) -> None:
        """Delete ``cid`` if it still exists (runc and crun delete a foreground `run` itself)."""
        if rt.call("state", cid, timeout=self.args.timeout).ok:
            self.checked(rt, "delete", "-f", cid)
        rt.live.discard(cid)

    def wait_exited(self, pid: int) -> None:
        if not common.wait_exited(pid, self.args.timeout):
            raise CaseFailed(f"container process {pid} still running {self.args.timeout}s later")

    def active(self, case: str) -> list[Runtime]:
        return [rt for rt in self.runtimes if case not in rt.errors]

    def record_failure(self, rt: Runtime, case: str, cid: str, exc: CaseFailed) -> None:
        rt.errors[case] = str(exc)
        self.fail(rt.name, case, str(exc))
        with contextlib.suppress(CaseFailed):
            self.forget(rt, cid)

    def progress(self, text: str) -> None:
        print(f".. {text}", file=sys.stderr, flush=True)

    # ---- cases

    def interleaved(
        self, case: str, tag: str, runs: int, body: Callable[[Runtime, str], None]
    ) -> None:
        """``body(runtime, fresh container id)`` for every runtime still in ``case``, run by
        run, their order rotating; a failure drops that runtime from the case."""
        for i in range(runs):
            for rt in rotate(self.active(case), i):
                cid = self.cid(rt, tag, i)
                rt.live.add(cid)
                try:
                    body(rt, cid)
                except CaseFailed as exc:
                    self.record_failure(rt, case, cid, exc)

    def bench_run(self) -> None:
        self.progress(f"run /bin/true, {self.args.runs} runs each")

        def body(rt: Runtime, cid: str) -> None:
            call = self.checked(rt, "run", "--bundle", self.bundle_true, cid)
            self.latency[("run", rt.name)].append(call.ms)
            self.forget(rt, cid)

        self.interleaved("run", "run", self.args.runs, body)

    def bench_lifecycle(self) -> None:
        self.progress(f"create / start / delete, {self.args.runs} runs each")

        def body(rt: Runtime, cid: str) -> None:
            call = self.checked(rt, "create", "--bundle", self.bundle_true, cid)
            self.latency[("create", rt.name)].append(call.ms)
            pid = self.state_pid(rt, cid)
            call = self.checked(rt, "start", cid)
            self.latency[("start", rt.name)].append(call.ms)
            self.wait_exited(pid)
            call = self.checked(rt, "delete", cid)
            self.latency[("delete", rt.name)].append(call.ms)
            rt.live.discard(cid)

        self.interleaved("create/start/delete", "life", self.args.runs, body)

    def bench_rss(self) -> None:
        self.progress(f"peak RSS, {RSS_RUNS} runs each")
        out = os.path.join(self.tmp, "peak-rss")
        floor_argv = common.peak_rss_argv(["/bin/busybox", "true"], out)
        if floor_argv is None or self.spawner is None:
            self.notes.append(f"peak RSS not measured: {common.GNU_TIME} (Debian `time`) missing")
            return
        self.spawner.run(floor_argv, self.args.timeout)
        self.rss_floor_kb = common.read_peak_rss(out)

        def wrapped(rt: Runtime, metric: str, *args: str) -> None:
            argv = common.peak_rss_argv(rt.argv(*args), out)
            assert argv is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out)
            self.checked(rt, argv=argv)
            kb = common.read_peak_rss(out)
            if kb is None:
                raise CaseFailed(f"{common.GNU_TIME} wrote no peak RSS for {args[0]}")
            self.rss[rt.name][metric].append(kb)

        def body(rt: Runtime, cid: str) -> None:
            wrapped(rt, "run", "run", "--bundle", self.bundle_true, cid)
            self.forget(rt, cid)
            rt.live.add(cid)
            wrapped(rt, "create", "create", "--bundle", self.bundle_true, cid)
            pid = self.state_pid(rt, cid)
            for metric, kb in (
                ("helper_hwm", common.status_kb(pid, "VmHWM")),
                ("helper_pss", common.pss_kb(pid)),
            ):
                if kb is not None:
                    self.rss[rt.name][metric].append(kb)
            wrapped(rt, "start", "start", cid)
            self.wait_exited(pid)
            wrapped(rt, "delete", "delete", cid)
            rt.live.discard(cid)

        self.interleaved("peak RSS", "rss", RSS_RUNS, body)

    def bench_many(self) -> None:
        """``--rounds`` rounds; in each, every runtime in turn (the order rotating) starts
        ``--count`` containers, is measured and tears them down, so drift of the machine's
        memory over the run hits every runtime alike. The host-memory reading after one
        teardown is the baseline of the next round."""
        for rt in self.runtimes:
            self.many[rt.name] = ManyResult()
        before_kb = self.host_used_kb()
        for n in range(self.args.rounds):
            for rt in rotate(self.active("many"), n):
                self.progress(
                    f"{rt.label}: {self.args.count} detached sleep containers, round {n + 1}"
                )
                before_kb = self.many_round(rt, n, before_kb, self.many[rt.name])

    def many_round(self, rt: Runtime, n: int, before_kb: int, result: ManyResult) -> int:
        kernel_before = common.kernel_kb(samples=5)
        percpu_before = common.meminfo_sum_kb(["Percpu"], samples=5)
        unavailable_before = common.kernel_unavailable_kb(samples=5)
        alloc_before = percpu_allocated_kb(self.debugfs_dir)
        ids = [self.cid(rt, f"many{n}", i) for i in range(self.args.count)]
        before_pids = set(common.process_table())
        try:
            start = time.perf_counter()
            for cid in ids:
                rt.live.add(cid)
                call = self.checked(rt, "run", "-d", "--bundle", self.bundle_sleep, cid)
                result.run_ms.append(call.ms)
            result.start_all_s.append(time.perf_counter() - start)
            result.host_kb.append((self.host_used_kb() - before_kb) / len(ids))
            result.kernel_kb.append((common.kernel_kb(samples=5) - kernel_before) / len(ids))
            percpu = common.meminfo_sum_kb(["Percpu"], samples=5) - percpu_before
            result.percpu_kb.append(percpu / len(ids))
            unavailable = common.kernel_unavailable_kb(samples=5) - unavailable_before
            result.unavailable_kb.append(unavailable / len(ids))
            alloc_after = percpu_allocated_kb(self.debugfs_dir)
            if alloc_before is not None and alloc_after is not None:
                result.percpu_alloc_kb.append((alloc_after - alloc_before) / len(ids))
            if n == 0:
                self.count_processes(rt, ids, before_pids, result)
        except CaseFailed as exc:
            rt.errors["many"] = str(exc)
            self.fail(rt.name, f"{self.args.count} containers, round {n + 1}", str(exc))
        finally:
            start = time.perf_counter()
            self.teardown(rt)
            result.teardown_s.append(time.perf_counter() - start)
        after_kb = self.host_used_kb()
        result.round_change_kb.append(after_kb - before_kb)
        result.left += self.find_leftovers(f"{self.prefix}-{rt.name}-")
        if rt.in_worker and self.worker is not None:
            self.swept += self.worker.sweep()
        return after_kb

    def host_used_kb(self) -> int:
        """After the settle pause, the median of 11 readings over one second."""
        time.sleep(self.args.settle)
        return common.host_used_kb(samples=11, interval=0.1)

    def count_processes(
        self, rt: Runtime, ids: list[str], before: set[int], result: ManyResult
    ) -> None:
        pids = [self.state_pid(rt, cid) for cid in ids]
        table = common.process_table()
        ours = self.ours()
        container = {p for p in common.descendants(pids, table) if table[p].state != "Z"}
        not_helpers = before | ours | container
        helpers = {a for p in pids for a in common.ancestors(p, table) if a not in not_helpers}
        marker = f"{MARKER_VAR}={self.prefix}"
        for pid, proc in table.items():
            if pid not in not_helpers and proc.state != "Z" and common.environ_has(pid, marker):
                helpers.add(pid)
        result.count = len(ids)
        result.container_procs = len(container)
        result.container_pss_kb = sum(common.pss_kb(p) or 0 for p in container)
        result.helper_procs = len(helpers)
        result.helper_pss_kb = sum(common.pss_kb(p) or 0 for p in helpers)
        ours_unified = unified_cgroup(os.getpid())
        result.own_unified = sum(1 for p in pids if unified_cgroup(p) != ours_unified)

    # ---- teardown and leak checks

    def teardown(self, rt: Runtime) -> None:
        """Kill and delete every container of ``rt`` that may exist; record what fails."""
        if rt.in_worker and self.worker is not None and not self.worker.alive():
            self.worker.close()
            self.worker = self.restart_worker()
        if rt.in_worker and self.worker is None:
            return
        for cid in sorted(rt.live):
            rt.call("kill", cid, "KILL", timeout=self.args.timeout)
            delete = rt.call("delete", "-f", cid, timeout=self.args.timeout)
            runtime_answered = rt.runner is not self.worker or self.worker.alive()
            if delete.ok or (
                runtime_answered and not rt.call("state", cid, timeout=self.args.timeout).ok
            ):
                rt.live.discard(cid)
            else:
                self.fail(rt.name, "teardown", delete.error_text())

    def find_leftovers(self, prefix: str) -> list[str]:
        """State entries, cgroups, live processes and mounts that belong to this run."""
        found = []
        for rt in self.runtimes:
            for dirpath, dirnames, filenames in os.walk(rt.root):
                found += [
                    f"state {os.path.join(dirpath, n)}"
                    for n in dirnames + filenames
                    if n.startswith(prefix)
                ]
        found += [f"cgroup {path}" for path in common.cgroup_dirs(prefix)]
        found += [f"process {pid}" for pid in self.process_leftovers(prefix)]
        found += [f"mount {path}" for path in common.mounts_under(self.tmp)]
        return found

    def ours(self) -> set[int]:
        return {os.getpid()} | ({self.worker.pid} if self.worker else set())

    def process_leftovers(self, prefix: str) -> list[int]:
        return common.marked_processes(prefix, f"{MARKER_VAR}={self.prefix}", self.ours())

    def cleanup(self) -> None:
        """Delete everything this run made; look for leftovers, remove and report them."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        for rt in self.runtimes:
            self.teardown(rt)
        if self.worker is not None:
            for item in self.worker.close():
                (self.swept if item.startswith(UNIFIED) else self.left).append(item)
            self.worker = None
        self.left += self.find_leftovers(self.prefix)
        self.force_clean()
        still = self.find_leftovers(self.prefix)
        if still:
            self.left += [f"STILL THERE: {item}" for item in still]
        if self.spawner is not None:
            self.spawner.close()
        if common.mounts_under(self.tmp):
            self.left.append(f"temp dir {self.tmp} kept: mounts remain below it")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start_worker(self, runtimes: list[tuple[str, str]]) -> WorkerRunner:
        """The worker for these (path, root) runtimes; it deletes their containers on exit."""
        scratch = os.path.join(self.tmp, f"scratch-worker-{time.monotonic_ns()}")
        os.makedirs(scratch)
        (path, root), *also = runtimes
        return WorkerRunner(scratch, path, root, self.prefix, also)

    def restart_worker(self) -> WorkerRunner | None:
        self.fail("worker", "worker", "the worker died; starting another one to clean up")
        runtimes = [rt for rt in self.runtimes if rt.in_worker]
        try:
            worker = self.start_worker([(rt.path, rt.root) for rt in runtimes])
        except RuntimeError as exc:
            self.left.append(
                f"containers of {', '.join(rt.name for rt in runtimes)} not deleted: {exc}"
            )
            return None
        for rt in runtimes:
            rt.runner = worker
        return worker

    def force_clean(self) -> None:
        for pid in self.process_leftovers(self.prefix):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        common.remove_cgroup_dirs(common.cgroup_dirs(self.prefix))
        for path in sorted(common.mounts_under(self.tmp), key=len, reverse=True):
            subprocess.run(["umount", "-l", path], check=False)

    # ---- the whole run

    def run_all(self) -> None:
        self.bench_run()
        self.bench_lifecycle()
        self.bench_rss()
        self.bench_many()
        if self.worker is not None:
            self.swept += self.worker.sweep()


# --------------------------------------------------------------------------- report


def report(bench: Bench, markdown: bool) -> str:
    args, runtimes = bench.args, bench.runtimes
    names = [rt.name for rt in runtimes]
    labels = [rt.label for rt in runtimes]
    bases = [b for b in ("runc", "crun") if b in names]
    tables = []

    rows = []
    for case in LATENCY_CASES:
        for name, label in zip(names, labels, strict=True):
            values = bench.latency.get((case, name))
            if not values:
                rows.append([case, label, "failed", "-", "0"] + ["-"] * len(bases))
                continue
            med = median(values)
            row = [case, label, f"{med:.1f}", f"{common.p90(values):.1f}", str(len(values))]
            for base in bases:
                row.append(
                    f"{med / median(bench.latency[(case, base)]):.2f}"
                    if bench.latency.get((case, base))
                    else "-"
                )
            rows.append(row)
    headers = ["case", "runtime", "median ms", "p90 ms", "runs", *(f"vs {b}" for b in bases)]
    tables.append(common.Table("Latency (vs X: this median / X's median)", headers, rows, 2))

    if bench.rss:
        title = f"Peak RSS, MB, median of {RSS_RUNS} runs"
        if bench.rss_floor_kb is not None:
            title += f" (floor: GNU time around busybox true, {mb(bench.rss_floor_kb)} MB)"
        rows = [
            [label] + [mb(median(v)) if (v := bench.rss[n].get(key)) else "-" for n in names]
            for key, label in RSS_METRICS
        ]
        tables.append(common.Table(title, ["metric", *labels], rows))

    if bench.many:
        results = [bench.many.get(n, ManyResult()) for n in names]
        rows = [[label] + [fmt(r) if r.count else "-" for r in results] for label, fmt in MANY_ROWS]
        rows.insert(0, ["rounds completed"] + [str(len(r.start_all_s)) for r in results])
        rows.append(["left behind"] + [summarize(r.left) for r in results])
        title = (
            f"{args.count} detached `sleep 600` containers (`run -d`), one runtime at a time, "
            f"runtimes taking turns in each round; median (min..max) of {args.rounds} "
            f"round{'s' if args.rounds > 1 else ''}"
        )
        tables.append(common.Table(title, ["metric", *labels], rows))

    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    info = [
        f"date: {when}",
        f"command: `{command}`",
        f"kernel: {os.uname().release}; cgroups: {cgroup_layout()}; CPUs: {os.cpu_count()}; "
        f"memory: {common.meminfo_kb()['MemTotal'] / 1024**2:.1f} GiB",
        "runtimes: " + "; ".join(f"{rt.name}: {rt.version}" for rt in runtimes),
        f"runs per latency case: {args.runs}"
        + (" (fewer than 50: indicative only)" if args.runs < 50 else "")
        + "; runtimes interleaved, their order rotating each run",
    ]
    notes = list(NOTES)
    if bench.swept:
        notes.append(
            f"crun left {len(bench.swept)} directories <id>/ with a plain file cgroup.procs under "
            f"{UNIFIED} as its private namespace sees it (the host's /sys/fs/cgroup tmpfs, "
            "hidden below the cgroup2 mount); the benchmark removed them."
        )
    sections = [
        ("Errors", [f"{rt} / {case}: {text}" for rt, case, text in bench.errors]),
        ("Notes", notes),
        ("Left behind after cleanup", bench.left or ["nothing: no state, cgroup, process, mount"]),
    ]
    heading = f"Runtime: berth-runtime vs runc and crun ({when})"
    return common.render(heading, info, tables, sections, markdown)


RSS_METRICS = [
    ("run", "`run` CLI peak"),
    ("create", "`create` CLI peak"),
    ("start", "`start` CLI peak"),
    ("delete", "`delete` CLI peak"),
    ("helper_hwm", "created-state process: peak (VmHWM)"),
    ("helper_pss", "created-state process: PSS"),
]
MANY_ROWS: list[tuple[str, Callable[[ManyResult], str]]] = [
    ("time to start all, s", lambda r: spread(r.start_all_s, "{:.2f}")),
    ("`run -d` median / p90, ms", lambda r: f"{median(r.run_ms):.1f} / {common.p90(r.run_ms):.1f}"),
    ("host memory per container, MB", lambda r: spread([k / 1024 for k in r.host_kb], "{:.2f}")),
    (
        "kernel memory per container, MB",
        lambda r: spread([k / 1024 for k in r.kernel_kb], "{:.2f}"),
    ),
    ("per-cpu pages (Percpu) per container, KB", lambda r: spread(r.percpu_kb, "{:.1f}")),
    (
        "per-cpu allocations per container, KB",
        lambda r: spread(r.percpu_alloc_kb, "{:.1f}"),
    ),
    (
        "unreclaimable kernel memory per container, MB",
        lambda r: spread([k / 1024 for k in r.unavailable_kb], "{:.2f}"),
    ),
    ("in a unified (cgroup2) cgroup of their own", lambda r: f"{r.own_unified} of {r.count}"),
    ("container processes per container", lambda r: f"{r.container_procs / r.count:.2f}"),
    ("their PSS per container, MB", lambda r: mb(r.container_pss_kb / r.count)),
    ("helper processes per container", lambda r: f"{r.helper_procs / r.count:.2f}"),
    ("their PSS per container, MB", lambda r: mb(r.helper_pss_kb / r.count)),
    ("time to kill + delete all, s", lambda r: spread(r.teardown_s, "{:.2f}")),
    (
        "host memory after teardown - before, MB",
        lambda r: spread([k / 1024 for k in r.round_change_kb], "{:.1f}"),
    ),
]
NOTES = [
    "Latency: from posix_spawn of the runtime CLI to its exit; crun and berth (as crun runs) "
    "are timed inside their worker's mount namespace, so unshare is not in their numbers.",
    "berth (as crun runs): berth-runtime in crun's environment, the worker's mount namespace "
    "without the cgroup2 mount, where its containers, like crun's, get v1 cgroups only "
    "(`0::/` in /proc/<pid>/cgroup); runc's and berth's also get one in the unified "
    "hierarchy.",
    "Peak RSS: GNU time's ru_maxrss, the maximum over the CLI and the descendants it reaped "
    "(a foreground `run` includes the container process, e.g. runc init before its exec), "
    "not a sum. Created-state process: the helper waiting in the container for `start`.",
    "Kernel memory: deltas of Slab + KernelStack + PageTables from /proc/meminfo, the kernel "
    "objects a container costs (namespaces, cgroups, mounts, its task), steadier than host "
    "memory. Unreclaimable kernel memory: SUnreclaim + KernelStack + PageTables + VmallocUsed "
    "+ Percpu, the part MemAvailable cannot hand out. "
    "Host memory: deltas of MemTotal - MemAvailable, kernel memory included; other work on "
    "the machine shows in the min..max.",
    "Per-cpu: Percpu of /proc/meminfo counts populated pages, which grow in whole pages "
    "only when the allocator has no populated free space left, so a round's delta depends on "
    "what ran before it (0 when it reuses space others freed); per-cpu allocations are the "
    "allocated bytes from debugfs's percpu_stats (mounted in a throwaway mount namespace), "
    "over all possible CPUs.",
]


def spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there are several values: "0.31 (0.25..0.40)"."""
    if not values:
        return "-"
    text = fmt.format(median(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}..{fmt.format(max(values))})"
    return text


def summarize(items: list[str]) -> str:
    """Count leftovers by kind (the first word of each description): "81 cgroup, 9 process"."""
    kinds: dict[str, int] = defaultdict(int)
    for item in items:
        kinds[item.split()[0]] += 1
    return ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "nothing"


def cgroup_layout() -> str:
    with open("/proc/self/mountinfo") as f:
        types = {line.split()[4]: line.split(" - ")[1].split()[0] for line in f}
    if types.get(CGROUP_ROOT) == "cgroup2":
        return "v2"
    return "hybrid (v1 + cgroup2 at unified)" if types.get(UNIFIED) == "cgroup2" else "v1"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", default=",".join(ALL_RUNTIMES), help="comma-separated")
    parser.add_argument("--runs", type=int, default=50, help="runs per latency case")
    parser.add_argument("--count", type=int, default=200, help="detached containers")
    parser.add_argument("--rounds", type=int, default=5, help="of the detached containers")
    parser.add_argument("--markdown", metavar="FILE", help="write the report section here")
    parser.add_argument("--berth-runtime", default=str(DEFAULT_BERTH), help="its path")
    parser.add_argument("--timeout", type=float, default=30.0, help="per runtime call, s")
    parser.add_argument("--settle", type=float, default=3.0, help="pause before memory reads")
    parser.add_argument("--crun-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.crun_worker is None:
        args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
        unknown = set(args.runtimes) - set(ALL_RUNTIMES)
        if unknown or not args.runtimes:
            parser.error(f"--runtimes: choose from {', '.join(ALL_RUNTIMES)}")
        if args.runs < 2 or args.count < 1 or args.rounds < 1:
            parser.error("--runs must be at least 2, --count and --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.crun_worker is not None:
        return worker_main(args.crun_worker)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the runtimes create namespaces and cgroups")
    return common.run_benchmark(Bench(args), report, args.markdown, MARKDOWN_KEY)


if __name__ == "__main__":
    sys.exit(main())
