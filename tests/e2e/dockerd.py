"""A private dockerd (Debian's docker.io 20.10) for e2e tests, started and stopped by the test.

Everything it has lives in one temp dir: data root, exec root, pid file, socket, daemon.json
(with the trust key path, which otherwise defaults to /etc/docker/key.json), and a containerd
of its own, started with its own config and passed to dockerd with --containerd: the containerd
dockerd starts by itself would create /opt/containerd on the host (its "opt" plugin) and cannot
be configured not to.

Rules (DESIGN.md, "Safety of tests"):
- It runs inside ``unshare --mount --net --pid --fork --kill-child --mount-proc``: a private
  mount namespace, so the netns bind mounts of its exec root, containerd's shim sockets and
  runc state (both under /run/containerd, fixed paths) go on mounts that die with the
  namespace (/run is a fresh tmpfs there), and /proc/sys is read-only there but for
  /proc/sys/net, which is the private network namespace's (or a container's): no host sysctl
  can change, and no interface, route or address of the host's network either (the CLI talks
  to it over a unix socket, which crosses network namespaces); a private pid namespace whose
  init (docker-init, i.e. tini) is killed by the kernel with everything else in it if the
  test's unshare process dies, so no shim or container process can outlive the test.
- No network: --bridge none, no iptables, no masquerading, no userland proxy; containers run
  with --network none. vfs storage driver, so image layers are plain directories (no mounts).
  With ``networking`` (the network benchmark; ``private_dockerd(networking=True)`` for the
  compose tests), user bridge networks get dockerd's iptables rules, embedded DNS, IP
  forwarding and userland proxy, all in the private network namespace, whose loopback is
  raised; tests reach published ports from inside it (``netns_path``, e.g. with nsenter).
- Container cgroups go under a parent named with the session's tag (leakcheck.tagged_name),
  removed at teardown.
- Teardown, on success or failure: remove containers, SIGTERM the daemon (the namespace's init
  passes it on: dockerd stops, then containerd), wait, kill the namespace if it has not gone
  away, check nothing is left mounted under the temp dir (detaching it if something is), remove
  the temp dir and the cgroups, and fail naming anything that needed force.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import leakcheck

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
DOCKER_INIT = shutil.which("docker-init") or "/usr/bin/docker-init"
DOCKER = shutil.which("docker")
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 120.0


def missing() -> str | None:
    """Why a private dockerd cannot be started here, or None."""
    for path, package in (
        (DOCKERD, "docker.io"),
        (CONTAINERD, "containerd"),
        (DOCKER_INIT, "docker.io"),
        (UNSHARE, "util-linux"),
    ):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: `make install` adds Debian's {package}"
    if DOCKER is None:
        return "the docker CLI is not on PATH"
    if os.geteuid() != 0:
        return "dockerd needs root"
    return None


# Run by docker-init (pid 1 of the new pid namespace) in the private mount namespace.
# $1 is the temp dir, the rest dockerd's arguments. SIGTERM (from tini) stops dockerd, then
# containerd; the script then exits, and with it tini and the namespace.
_SUPERVISOR = r"""
set -eu
home=$1; shift
mount -t tmpfs -o mode=0755,size=64m berth-dockerd-run /run
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
ip link set lo up
containerd --config "$home/containerd.toml" >"$home/containerd.log" 2>&1 &
c=$!
n=0
while [ ! -S "$home/containerd.sock" ]; do
    n=$((n + 1))
    if [ "$n" -gt 400 ] || ! kill -0 "$c" 2>/dev/null; then
        echo "containerd did not start (see containerd.log)" >&2
        kill -TERM "$c" 2>/dev/null || :
        exit 1
    fi
    sleep 0.05
done
dockerd "$@" >"$home/dockerd.log" 2>&1 &
d=$!
trap 'kill -TERM "$d" 2>/dev/null || :' TERM INT
wait "$d" || :
wait "$d" 2>/dev/null || :
kill -TERM "$c" 2>/dev/null || :
wait "$c" || :
"""

_CONTAINERD_TOML = """\
version = 2
root = "{home}/containerd/root"
state = "{home}/containerd/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{home}/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{home}/containerd/opt"
"""


@dataclass
class Dockerd:
    """A running private dockerd; call it to run the docker CLI against it."""

    home: Path
    cgroup_parent: str
    storage_driver: str = "vfs"  # the benchmark runs overlay2 (its mounts die with the namespace)
    networking: bool = False  # iptables, forwarding and the userland proxy, in its netns
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.home / "docker.sock"

    def __call__(
        self, *args: str, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        assert DOCKER is not None
        return subprocess.run(
            [DOCKER, *args],
            env=self.env,
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        proc = self(*args)
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}{self.logs()}"
        return proc.stdout

    def logs(self, lines: int = 30) -> str:
        out = []
        for name in ("dockerd.log", "containerd.log", "supervisor.log"):
            path = self.home / name
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"\n--- {name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "".join(out)

    def ping(self) -> bool:
        """True once GET /_ping on the daemon's socket answers 200 OK."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = b""
                while chunk := s.recv(4096):
                    reply += chunk
        except OSError:
            return False
        return reply.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")) and reply.endswith(b"OK")

    # -- start and stop

    def start(self) -> None:
        home = self.home
        (home / "containerd.toml").write_text(_CONTAINERD_TOML.format(home=home))
        (home / "daemon.json").write_text(f'{{"deprecated-key-path": "{home}/key.json"}}\n')
        args = [
            "--config-file", str(home / "daemon.json"),
            "--data-root", str(home / "data"),
            "--exec-root", str(home / "exec"),
            "--pidfile", str(home / "pid"),
            "--host", f"unix://{self.socket}",
            "--containerd", str(home / "containerd.sock"),
            "--bridge", "none",
            f"--iptables={str(self.networking).lower()}",
            "--ip6tables=false",
            "--ip-masq=false",
            f"--ip-forward={str(self.networking).lower()}",
            f"--userland-proxy={str(self.networking).lower()}",
            "--storage-driver", self.storage_driver,
            "--cgroup-parent", "/" + self.cgroup_parent,
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--oom-score-adjust", "0",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env = {**env, "DOCKER_HOST": f"unix://{self.socket}"}
        self.env["DOCKER_CONFIG"] = str(home / "cli")
        self.env["DOCKER_CLI_HINTS"] = "false"
        with open(home / "supervisor.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    UNSHARE, "--mount", "--propagation", "private", "--net",
                    "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc",
                    "--", DOCKER_INIT, "--", "sh", "-c", _SUPERVISOR, "sh", str(home), *args,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with status {self.process.returncode}{self.logs()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd did not answer /_ping in {START_TIMEOUT}s{self.logs()}"
                )
            time.sleep(0.05)

    @property
    def netns_path(self) -> str:
        """``/proc/<pid>/ns/net`` of the daemon's private network namespace (for nsenter)."""
        pid = self._init_pid()
        assert pid is not None, "the private dockerd is not running"
        return f"/proc/{pid}/ns/net"

    def _init_pid(self) -> int | None:
        """The host pid of the pid namespace's init (unshare's only child)."""
        if self.process is None:
            return None
        pid = self.process.pid
        with contextlib.suppress(OSError, ValueError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return int(children[0]) if children else None
        return None

    def stop(self) -> list[str]:
        """Stop everything, leave nothing; what needed force or could not be undone."""
        problems: list[str] = []
        proc = self.process
        if proc is not None and proc.poll() is None and self.ping():
            listed = self("ps", "--all", "--quiet", "--no-trunc", timeout=30)
            ids = listed.stdout.split() if listed.returncode == 0 else []
            for i in range(0, len(ids), 100):  # a benchmark leaves hundreds
                batch = ids[i : i + 100]
                try:
                    removed = self("rm", "--force", "--volumes", *batch, timeout=120)
                except subprocess.TimeoutExpired:
                    problems.append(f"docker rm -f of {len(batch)} containers timed out")
                    break  # the namespace is killed below
                if removed.returncode != 0:
                    problems.append(f"docker rm -f: {removed.stderr.strip()}")
        if proc is not None and proc.poll() is None:
            init = self._init_pid()
            if init is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"dockerd did not stop in {STOP_TIMEOUT}s: killed its namespace")
                proc.kill()  # unshare's --kill-child then kills the namespace's init
                proc.wait(10)
        problems.extend(self._wait_for_processes())
        problems.extend(self._unmount())
        if not _mounts_under(str(self.home)):
            shutil.rmtree(self.home, ignore_errors=True)
        problems.extend(_remove_cgroup_tree(self.cgroup_parent))
        return problems

    def _wait_for_processes(self) -> list[str]:
        home = str(self.home)
        deadline = time.monotonic() + 10
        while _processes_using(home) and time.monotonic() < deadline:
            time.sleep(0.05)
        problems = []
        for pid in _processes_using(home):
            problems.append(f"process {pid} of the private dockerd still running; killed it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return problems

    def _unmount(self) -> list[str]:
        problems = []
        for point in sorted(_mounts_under(str(self.home)), key=len, reverse=True):
            done = subprocess.run(
                ["umount", "--lazy", point], capture_output=True, text=True, check=False
            )
            problems.append(
                f"mount left under the dockerd home: {point}"
                + ("" if done.returncode == 0 else f" (umount: {done.stderr.strip()})")
            )
        return problems


def _processes_using(path: str) -> list[int]:
    """Live processes whose command line names ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if path.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _mounts_under(path: str) -> list[str]:
    points = (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return [
        leakcheck.unescape_mountinfo(p) for p in points if p == path or p.startswith(path + "/")
    ]


def _remove_cgroup_tree(name: str) -> list[str]:
    """Remove the cgroup directory ``name`` at the root of every hierarchy, deepest first
    (retried for a moment: the cgroups of processes just killed empty asynchronously)."""
    failures: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.split()[0] not in ("cgroup", "cgroup2"):
            continue
        top = Path(leakcheck.unescape_mountinfo(left.split()[4])) / name
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _s, _f in os.walk(top)), key=lambda p: -len(p.parts))
        for d in dirs:
            deadline = time.monotonic() + 5
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        failures.append(f"cgroup {d}: {exc}")
                        break
                    time.sleep(0.05)
    return failures


@contextlib.contextmanager
def private_dockerd(networking: bool = False) -> Iterator[Dockerd]:
    """A started private dockerd, stopped and cleaned up on exit (see the module rules)."""
    home = Path(tempfile.mkdtemp(prefix="berth-dockerd-", dir="/tmp"))
    daemon = Dockerd(home, leakcheck.tagged_name("test") + "-dockerd", networking=networking)
    try:
        daemon.start()
        yield daemon
    except BaseException as exc:
        problems = daemon.stop()
        if problems:
            exc.add_note("private dockerd teardown:\n" + "\n".join(problems))
        raise
    problems = daemon.stop()
    assert not problems, "private dockerd teardown:\n" + "\n".join(problems)
