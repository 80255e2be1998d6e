"""Side-by-side network benchmark: berthd, dockerd and podman, each on its own bridge network.

The issue's words: "``run --rm`` with a bridge network (podman here about 600 ms); throughput
and latency of a TCP echo between two containers on one bridge, and through a published port
from the host, against the same between two host processes on loopback (the limit) -- report
the ratios. Target: bridge ``run --rm`` at least 3x faster than the faster peer;
container-to-container throughput within 80% of host loopback."

The peers (bench/engine_peers.py says how each is started, on private everything), each
inside a network namespace of its own whose loopback is raised, so that bridges, veths,
nftables/iptables rules and ``net.ipv4.ip_forward`` never touch the host's network:

- berthd under ``unshare --net`` (berthd, its supervisor and its containers live there);
- Debian's dockerd 20.10 (tests/e2e/dockerd.py with ``networking``: its own network, mount
  and pid namespaces; iptables rules, forwarding and the userland proxy inside them);
- podman 4.3 (``--runtime runc``, the ulimits of DESIGN.md, ``--pull never``), every call
  through ``nsenter`` into a holder process's private network and mount namespaces.

Each peer makes a bridge network ``benchnet`` (``network create``); a peer whose ``network
create`` fails is reported with the daemon's words and skipped (berthd: "no bridge networking
yet" until its networks land). Busybox is berthd's (built locally), saved and loaded into the
others, so every peer runs the same bytes.

The TCP tool is bench/tcpbench.c, compiled here with ``gcc -O2 -static`` and bind-mounted
read-only into the containers; the same binary runs the host's side.

What it measures (``--runs`` runs, peers interleaved with their order rotating each run):

1. ``run --rm --network benchnet busybox true``, clock from posix_spawn of the CLI to its exit:
   median, p90, and how many times faster berthd is than each peer.
2. Container to container on the bridge: a server container (``tcpbench serve``) and a client
   container (``sleep``) on ``benchnet``; ``exec`` in the client runs ``tcpbench tput`` (bytes
   for ``--seconds``, in 128 KiB writes, until the server has read them all) and ``tcpbench
   lat`` (``--round-trips`` 64-byte round trips, TCP_NODELAY; the median per run).
3. Through a published port from the host: the server container publishes its port
   (``-p HOSTPORT:5201``); the client is ``tcpbench`` run in the peer's network namespace
   (its "host") against 127.0.0.1:HOSTPORT -- dockerd's userland proxy or DNAT, netavark's
   DNAT, berthd's own.
4. The limit: ``tcpbench`` server and client as two host processes on the host's loopback
   (an ephemeral port).
5. The kernel's own path (bench/kernel_path.py): two namespaces joined by veths on a Linux
   bridge that the bench makes itself, at the kernel's defaults, with no engine and no
   firewall rule -- the ceiling of every engine's default bridge network, measured with them.
6. berthd on a second network ``benchnet-big`` made with ``-o io.berth.network.big_tcp=true``
   (BIG TCP on its veths: 192 KiB packets instead of 64 KiB; off by default but for
   internal networks, see src/berth/engine/network_links.py for what it costs traffic leaving
   the host), container to container only, with ``--mtu`` as the other networks.

Reported: median throughput (Gbit/s) and latency (µs, the median of the runs' medians),
and each as a ratio to the loopback limit (throughput: peer / loopback; latency: peer /
loopback, so 1.0 is the limit and more is slower), plus the issue's two targets.

``--quick`` (2 runs, 0.5 s of throughput, 300 round trips) is a smoke run: its numbers mean
little. On any exit every peer is stopped, the temp dir removed, and leftover cgroups,
processes and mounts are looked for, removed and reported (exit status 1 if any remained).

``--mtu N`` creates the bridge networks with that MTU (loopback's is 65536; a veth's 1500
by default, which bounds container-to-container throughput well below loopback's).

Usage: .venv/bin/python bench/network_bench.py [--quick] [--runs 5] [--seconds 2]
       [--round-trips 2000] [--peers berthd,dockerd,podman] [--mtu N]
       [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import common
import engine_peers
from common import Spawner, median
from engine_peers import Peer, PeerFailed
from kernel_path import KernelPath

MARKDOWN_KEY = "network-bench"
MARKER_VAR = "BERTH_BENCH_RUN"
ALL_PEERS = ("berthd", "dockerd", "podman")
NETWORK = "benchnet"
BIG_TCP_NETWORK = "benchnet-big"
BIG_TCP = "berthd (BIG TCP network)"
KERNEL = "kernel veth + bridge, no engine"
SERVER_PORT = 5201  # inside the server container
HERE = Path(__file__).resolve().parent
RAISE_LO_AND_EXEC = 'ip link set lo up && exec "$@"'


class CaseFailed(Exception):
    """A peer failed a step of a case; the message is the report's error text."""


@dataclass
class Tcp:
    """One path's measurements: Gbit/s per run and median round-trip µs per run."""

    gbits: list[float] = field(default_factory=list)
    rtt_us: list[float] = field(default_factory=list)


def rotate(items: list[str], i: int) -> list[str]:
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def parse_tput(text: str) -> float:
    """``BYTES SECONDS`` → Gbit/s."""
    sent, seconds = text.split()
    return int(sent) * 8 / float(seconds) / 1e9


def parse_lat(text: str) -> float:
    """``MEDIAN_US P99_US`` → the median."""
    return float(text.split(maxsplit=1)[0])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix = f"netb{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix="network-bench-", dir="/tmp"))
        os.environ[MARKER_VAR] = self.prefix
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env["DOCKER_CONFIG"] = str(self.tmp / "docker-config")
        self.env["DOCKER_CLI_HINTS"] = "false"
        self.tool = self.tmp / "tcpbench"
        self.peers: dict[str, Peer] = {}
        self.spawner: Spawner | None = None
        self.versions: dict[str, str] = {}
        self.run_rm: dict[str, list[float]] = defaultdict(list)
        self.c2c: dict[str, Tcp] = defaultdict(Tcp)
        self.published: dict[str, Tcp] = defaultdict(Tcp)
        self.loopback = Tcp()
        self.kernel = Tcp()
        self.kernel_path: KernelPath | None = None
        self.host_ports: dict[str, int] = {}
        self.server_ip: dict[str, str] = {}
        self.errors: list[tuple[str, str, str]] = []
        self.failed: dict[str, set[str]] = defaultdict(set)
        self.skipped: dict[str, str] = {}  # peer -> why it has no column
        self.left: list[str] = []
        self.loopback_server: subprocess.Popen[str] | None = None
        self.loopback_port = 0

    # ---- set-up

    def setup(self) -> None:
        (self.tmp / "scratch").mkdir()
        (self.tmp / "docker-config").mkdir()
        (self.tmp / "docker-config" / "config.json").write_text("{}\n")
        self.spawner = Spawner(str(self.tmp / "scratch"), self.env)
        self.compile_tool()
        self.kernel_path = KernelPath(self.tool, self.env)
        try:
            self.kernel_path.start()
        except (subprocess.SubprocessError, OSError) as exc:
            self.fail(KERNEL, "setup", str(exc))
        image_tar = self.tmp / "busybox.tar"
        berthd = engine_peers.Berthd(self.tmp / "b", f"{self.prefix}-berthd", self.env)
        berthd.wrapper = [engine_peers.UNSHARE, "--net", "--", "sh", "-c", RAISE_LO_AND_EXEC,
                          "sh"]  # fmt: skip
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
            sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "e2e")]
            import dockerd

            missing = dockerd.missing()
            if missing:
                self.fail("dockerd", "setup", missing)
            else:
                d = engine_peers.Dockerd(self.tmp / "d", f"{self.prefix}-dockerd", self.env)
                d.daemon.networking = True
                self.start_peer(d, image_tar)
        if "podman" in wanted:
            pm = engine_peers.Podman(self.tmp / "p", f"{self.prefix}-podman", self.env, True)
            pm.name = "podman"
            self.start_peer(pm, image_tar)
            if "podman" in self.peers:
                self.in_netns("podman", ["ip", "link", "set", "lo", "up"])
        if "berthd" not in wanted:
            self.stop_peer("berthd")
        for name in list(self.peers):
            self.make_network(name)
        self.start_loopback_server()

    def compile_tool(self) -> None:
        gcc = common.which("gcc")
        if gcc is None:
            raise SystemExit("gcc is missing: it compiles bench/tcpbench.c")
        done = subprocess.run(
            [gcc, "-O2", "-static", "-o", str(self.tool), str(HERE / "tcpbench.c")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"gcc -static tcpbench.c failed:\n{done.stderr}")

    def start_peer(self, peer: Peer, image_tar: Path | None) -> None:
        self.progress(f"starting {peer.name}")
        self.peers[peer.name] = peer
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

    def make_network(self, name: str) -> None:
        peer = self.peers[name]
        mtu = []
        if self.args.mtu:
            key = (
                "mtu" if isinstance(peer, engine_peers.Podman) else "com.docker.network.driver.mtu"
            )
            mtu = ["-o", f"{key}={self.args.mtu}"]
        done = subprocess.run(peer.cli("network", "create", *mtu, NETWORK), capture_output=True,
                              text=True, env=self.env, timeout=60, check=False)  # fmt: skip
        if done.returncode == 0:
            return
        why = done.stderr.strip() or f"exit status {done.returncode}"
        if name == "berthd":
            self.skipped[name] = f"berthd: no bridge networking yet ({why})"
        else:
            self.skipped[name] = f"{name}: network create {NETWORK} failed ({why})"
        self.progress(f"skipping {self.skipped[name]}")
        self.stop_peer(name)

    def netns_pid(self, name: str) -> int:
        """A process in the peer's network namespace, to nsenter."""
        peer = self.peers[name]
        if isinstance(peer, engine_peers.Berthd):
            assert peer.proc is not None
            return peer.proc.pid
        if isinstance(peer, engine_peers.Dockerd):
            proc = peer.daemon.process
            assert proc is not None
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            return int(children[0])  # unshare's child, the namespace's init
        assert isinstance(peer, engine_peers.Podman) and peer.holder is not None
        return peer.holder.pid

    def netns_argv(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` run in the peer's network namespace (its "host")."""
        return [engine_peers.NSENTER, "-t", str(self.netns_pid(name)), "--net", "--", *argv]

    def in_netns(self, name: str, argv: list[str], timeout: float = 60) -> str:
        full = self.netns_argv(name, argv)
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise CaseFailed(f"`{' '.join(argv)}` in {name}'s netns: {done.stderr.strip()}")
        return done.stdout

    def start_loopback_server(self) -> None:
        self.loopback_server = subprocess.Popen(
            [str(self.tool), "serve", "0"], stdout=subprocess.PIPE, text=True, env=self.env
        )
        assert self.loopback_server.stdout is not None
        self.loopback_port = int(self.loopback_server.stdout.readline())

    # ---- helpers

    def fail(self, peer: str, case: str, text: str) -> None:
        self.errors.append((peer, case, text))
        self.failed[peer].add(case)
        print(f"!! {peer}: {case} failed: {text}", file=sys.stderr)

    def progress(self, text: str) -> None:
        print(f".. {text}", file=sys.stderr, flush=True)

    def call(self, argv: list[str], timeout: float = 120) -> common.Call:
        assert self.spawner is not None
        call = self.spawner.run(argv, timeout)
        if not call.ok:
            raise CaseFailed(call.error_text())
        return call

    def run_args(self, name: str) -> list[str]:
        """``run`` flags: the bridge network, and podman's of DESIGN.md."""
        peer = self.peers[name]
        args = ["--network", NETWORK]
        if isinstance(peer, engine_peers.Podman):
            args += ["--pull", "never", *engine_peers.PODMAN_ULIMITS,
                     "--cgroup-parent", "/" + peer.cgroup_parent]  # fmt: skip
        return args

    def interleaved(self, case: str, body: Callable[[str, int], None]) -> None:
        for i in range(self.args.runs):
            for name in rotate([n for n in self.peers if case not in self.failed[n]], i):
                try:
                    body(name, i)
                except (CaseFailed, PeerFailed, OSError, ValueError) as exc:
                    self.fail(name, case, str(exc))

    # ---- the cases

    def run_all(self) -> None:
        self.bench_run_rm()
        self.start_servers()
        self.bench_tcp()

    def bench_run_rm(self) -> None:
        self.progress(f"run --rm --network {NETWORK} busybox true, {self.args.runs} runs each")

        def body(name: str, i: int) -> None:
            peer = self.peers[name]
            argv = peer.cli("run", "--rm", *self.run_args(name), "busybox", "true")
            self.run_rm[name].append(self.call(argv).ms)

        self.interleaved("run --rm", body)

    def start_pair(self, name: str, network: str, tag: str, publish: list[str]) -> str:
        """A ``tcpbench serve`` container and a client container on ``network``; the
        server's address."""
        peer = self.peers[name]
        mount = ["-v", f"{self.tool}:/tcpbench:ro"]
        args = [*self.run_args(name)[2:], "--network", network, *mount]
        self.call(peer.cli("run", "-d", "--name", f"{self.prefix}-{tag}srv", *args, *publish,
                           "busybox", "/tcpbench", "serve", str(SERVER_PORT)))  # fmt: skip
        self.call(peer.cli("run", "-d", "--name", f"{self.prefix}-{tag}cli", *args,
                           "busybox", "sleep", "3600"))  # fmt: skip
        fmt = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
        return self.call(peer.cli("inspect", "-f", fmt, f"{self.prefix}-{tag}srv")).stdout.strip()

    def start_servers(self) -> None:
        for n, name in enumerate(list(self.peers)):
            host_port = 15201 + n
            try:
                publish = ["-p", f"{host_port}:{SERVER_PORT}"]
                self.server_ip[name] = self.start_pair(name, NETWORK, "", publish)
                self.host_ports[name] = host_port
            except CaseFailed as exc:
                self.fail(name, "TCP", str(exc))
        if "berthd" in self.server_ip:
            try:
                big = ["-o", "io.berth.network.big_tcp=true"]
                if self.args.mtu:
                    big += ["-o", f"com.docker.network.driver.mtu={self.args.mtu}"]
                self.call(self.peers["berthd"].cli("network", "create", *big, BIG_TCP_NETWORK))
                self.server_ip[BIG_TCP] = self.start_pair("berthd", BIG_TCP_NETWORK, "big", [])
            except CaseFailed as exc:
                self.fail(BIG_TCP, "TCP", str(exc))

    def bench_tcp(self) -> None:
        a = self.args
        self.progress(f"TCP: {a.runs} runs of {a.seconds} s and {a.round_trips} round trips each")
        tool = str(self.tool)
        for i in range(self.args.runs):
            for name in rotate([n for n in self.peers if n in self.server_ip], i):
                if "TCP" in self.failed[name]:
                    continue
                peer, ip, port = self.peers[name], self.server_ip[name], self.host_ports[name]
                exec_argv = peer.cli("exec", f"{self.prefix}-cli", "/tcpbench")
                try:
                    self.measure(self.c2c[name], exec_argv, ip, str(SERVER_PORT))
                    if name == "berthd" and BIG_TCP in self.server_ip:
                        big_exec = peer.cli("exec", f"{self.prefix}-bigcli", "/tcpbench")
                        big_ip = self.server_ip[BIG_TCP]
                        self.measure(self.c2c[BIG_TCP], big_exec, big_ip, str(SERVER_PORT))
                    host_tool = self.netns_argv(name, [tool])
                    self.measure(self.published[name], host_tool, "127.0.0.1", str(port))
                except (CaseFailed, ValueError, OSError) as exc:
                    self.fail(name, "TCP", str(exc))
            self.measure(self.loopback, [tool], "127.0.0.1", str(self.loopback_port))
            kernel = self.kernel_path
            if kernel is not None and "setup" not in self.failed[KERNEL]:
                try:
                    self.measure(self.kernel, kernel.client(), kernel.server_ip, str(SERVER_PORT))
                except (CaseFailed, ValueError) as exc:
                    self.fail(KERNEL, "TCP", str(exc))

    def measure(self, into: Tcp, tool_argv: list[str], ip: str, port: str) -> None:
        """One throughput and one latency measurement of ``tool_argv`` (tcpbench) to ip:port."""
        out = self.call([*tool_argv, "tput", ip, port, str(self.args.seconds)]).stdout
        into.gbits.append(parse_tput(out))
        out = self.call([*tool_argv, "lat", ip, port, str(self.args.round_trips)]).stdout
        into.rtt_us.append(parse_lat(out))

    # ---- clean-up

    def cleanup(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if self.loopback_server is not None:
            self.loopback_server.kill()
            self.loopback_server.wait()
        if self.kernel_path is not None:
            self.kernel_path.close()
        for name in list(self.peers):
            self.stop_peer(name)
        if self.spawner is not None:
            self.spawner.close()
        self.left += common.sweep_run(self.prefix, self.tmp, MARKER_VAR)


# --------------------------------------------------------------------------- report


def _ms(values: list[float]) -> str:
    return f"{median(values):.0f}" if values else "-"


def _ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}" if x and y else "-"


def report(b: Bench, markdown: bool) -> str:
    peers = [n for n in ALL_PEERS if n in b.run_rm or n in b.c2c]
    info = [
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"{b.args.runs} runs, {b.args.seconds} s of throughput and {b.args.round_trips} round "
        f"trips per measurement" + (" (--quick: a smoke run)" if b.args.quick else ""),
        *(f"{n}: {v}" for n, v in b.versions.items()),
        *b.skipped.values(),
        "each daemon in its own network namespace, on its own bridge network "
        f"`{NETWORK}`"
        + (f" (MTU {b.args.mtu})" if b.args.mtu else " (default MTU, 1500)")
        + "; the TCP tool is bench/tcpbench.c, static, bind-mounted",
    ]
    tables = []
    rm_rows = []
    berthd_rm = median(b.run_rm["berthd"]) if b.run_rm.get("berthd") else 0.0
    for name in peers:
        values = b.run_rm.get(name) or []
        if not values:
            continue
        faster = _ratio(median(values), berthd_rm) if name != "berthd" and berthd_rm else "-"
        rm_rows.append([name, _ms(values), f"{common.p90(values):.0f}", faster])
    if rm_rows:
        tables.append(common.Table(
            f"`run --rm --network {NETWORK} busybox true` (ms)",
            ["peer", "median", "p90", "berthd faster by"], rm_rows,
        ))  # fmt: skip
    loop_gbits = median(b.loopback.gbits) if b.loopback.gbits else 0.0
    loop_rtt = median(b.loopback.rtt_us) if b.loopback.rtt_us else 0.0
    tcp_rows = [["host loopback (the limit)", f"{loop_gbits:.2f}", "1.00", f"{loop_rtt:.1f}",
                 "1.00"]]  # fmt: skip

    def row(label: str, r: Tcp | None) -> None:
        if r is None or not r.gbits:
            return
        gbits, rtt = median(r.gbits), median(r.rtt_us) if r.rtt_us else 0.0
        tcp_rows.append([label, f"{gbits:.2f}", _ratio(gbits, loop_gbits),
                         f"{rtt:.1f}" if rtt else "-", _ratio(rtt, loop_rtt)])  # fmt: skip

    row(f"{KERNEL}: container to container", b.kernel)
    for name in peers:
        row(f"{name}: container to container", b.c2c.get(name))
        row(f"{name}: published port", b.published.get(name))
    row(f"{BIG_TCP}: container to container", b.c2c.get(BIG_TCP))
    tables.append(common.Table(
        "TCP throughput (Gbit/s) and round-trip latency (µs, 64 bytes), medians",
        ["path", "throughput", "x loopback", "latency", "x loopback"], tcp_rows,
    ))  # fmt: skip
    targets = []
    others = [median(b.run_rm[n]) for n in peers if n != "berthd" and b.run_rm.get(n)]
    if berthd_rm and others:
        speedup = min(others) / berthd_rm
        targets.append(f"bridge `run --rm`: berthd {speedup:.2f}x the faster peer (target 3x): "
                       + ("met" if speedup >= 3 else "NOT met"))  # fmt: skip
    else:
        targets.append("bridge `run --rm`: no berthd number (see above)")
    berthd_c2c = b.c2c.get("berthd")
    if berthd_c2c is not None and berthd_c2c.gbits and loop_gbits:
        share = median(berthd_c2c.gbits) / loop_gbits
        targets.append(f"container-to-container throughput: berthd {share:.0%} of loopback "
                       "(target 80%): " + ("met" if share >= 0.8 else "NOT met"))  # fmt: skip
    else:
        targets.append("container-to-container throughput: no berthd number (see above)")
    if b.kernel.gbits and loop_gbits:
        targets.append(f"the kernel's own veth + bridge path (no engine): "
                       f"{median(b.kernel.gbits) / loop_gbits:.0%} of loopback")  # fmt: skip
    big = b.c2c.get(BIG_TCP)
    if big is not None and big.gbits and loop_gbits:
        targets.append(f"berthd with BIG TCP on the network (opt-in): "
                       f"{median(big.gbits) / loop_gbits:.0%} of loopback")  # fmt: skip
    errors = [f"{peer}, {case}: {text}" for peer, case, text in b.errors]
    sections = [("Targets", targets), ("Errors", errors), ("Left behind", b.left)]
    return common.render("Network benchmark", info, tables, sections, markdown)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 runs, short")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="per throughput measurement")
    p.add_argument("--round-trips", type=int, default=2000, help="per latency measurement")
    p.add_argument("--peers", default=",".join(ALL_PEERS))
    p.add_argument("--mtu", type=int, help="the bridge networks' MTU (default: the engines')")
    p.add_argument("--markdown", help="write the report's section into this file")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.round_trips = 2, 0.5, 300
    args.peers = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = set(args.peers) - set(ALL_PEERS)
    if unknown:
        p.error(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(ALL_PEERS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the daemons create namespaces, cgroups and bridges")
    return common.run_benchmark(Bench(args), report, args.markdown, MARKDOWN_KEY)


if __name__ == "__main__":
    sys.exit(main())
