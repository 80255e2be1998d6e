"""The daemons engine_bench.py compares: berthd, a private dockerd, and podman (no daemon).

Each peer is started by the benchmark on private everything, made to hold the busybox image,
driven by CLI argv lists (timed by ``common.Spawner``) and, for the two daemons, over their
Engine API socket; each says which of its processes are the daemon and which are helpers per
container, and stops leaving nothing behind.

Rules:
- berthd: ``.venv/bin/berthd`` on its own data root and socket, ``--cgroup-parent`` named
  with the run's prefix; busybox comes from ``docker pull busybox`` (made locally from the
  built-in base), and ``docker save`` of it is the tarball the other peers load, so every
  peer runs the same bytes. Stopping: SIGTERM to berthd, then the supervisor's shutdown verb
  (the supervisor outlives berthd by design). ``wrapper`` prefixes berthd's command line
  (the network benchmark starts it in a network namespace of its own).
- dockerd: ``tests/e2e/dockerd.py`` (its own pid, mount and network namespaces, its own
  containerd), with the overlay2 storage driver (the mounts die with its namespace) and
  ``--bridge none``, so its containers run with ``--network none``.
- podman: ``--runtime runc`` (crun refuses this host's hybrid cgroups), overlay storage, its
  root, run root, tmp dir and network config in a private dir, the ulimits of DESIGN.md,
  ``--pull never``. The bridge variant runs every podman call through ``nsenter`` into a
  holder process's private network and mount namespaces, so the bridge, veths and firewall
  rules podman makes exist only there and die with the holder.
- Every process started here inherits the run's marker variable, so leftovers can be found.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

REPO = Path(__file__).resolve().parent.parent
BERTHD = REPO / ".venv" / "bin" / "berthd"
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
PODMAN = shutil.which("podman") or "/usr/bin/podman"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
PODMAN_ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
CALL_TIMEOUT = 120.0


class PeerFailed(Exception):
    """A peer could not be started or made ready; the message says why."""


def checked(argv: list[str], timeout: float = CALL_TIMEOUT, **kw: Any) -> str:
    """Run an untimed set-up command; its stdout, or PeerFailed with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if done.returncode != 0:
        raise PeerFailed(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket, kept alive between requests (as docker-py does)."""

    def __init__(self, path: str, timeout: float = CALL_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path
        self.api = ""  # "/v1.NN" once negotiated

    def negotiate(self) -> None:
        """Use the daemon's own API version, as the docker CLI does (dockerd 20.10: 1.41)."""
        self.api = ""
        self.api = "/v" + self.call("GET", "/version")["ApiVersion"]

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer (None when empty); PeerFailed on >= 400."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.request(method, self.api + url, body=data, headers=headers)
        response = self.getresponse()
        raw = response.read()
        if response.status >= 400:
            raise PeerFailed(f"{method} {url}: {response.status} {raw.decode(errors='replace')}")
        return json.loads(raw) if raw.strip() else None


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def processes_naming(path: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``path``."""
    found = []
    for pid, proc in common.process_table().items():
        if pid == os.getpid() or proc.state == "Z":
            continue
        with contextlib.suppress(OSError):
            if path.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


class Peer:
    """What the benchmark needs of a container engine; subclasses fill it in."""

    name = ""
    has_api = False  # serves the Engine API on ``api_socket``

    def __init__(self, home: Path, cgroup_parent: str, env: dict[str, str]) -> None:
        self.home = home
        self.cgroup_parent = cgroup_parent  # a unique name: container processes carry it
        self.env = env
        self.version = "?"
        home.mkdir(parents=True, exist_ok=True)

    @property
    def api_socket(self) -> str:
        raise NotImplementedError

    def start(self, image_tar: Path | None) -> None:
        raise NotImplementedError

    def cli(self, *args: str) -> list[str]:
        raise NotImplementedError

    def run_rm_argv(self) -> list[str]:
        return self.cli("run", "--rm", "--network", "none", "busybox", "true")

    def run_detached_argv(self, name: str) -> list[str]:
        return self.cli(
            "run", "-d", "--network", "none", "--name", name, "busybox", "sleep", "3600"
        )

    def remove_all(self) -> None:
        """Remove every container (force); PeerFailed if the CLI refuses."""
        ids = checked(self.cli("ps", "-aq"), env=self.env).split()
        for i in range(0, len(ids), 100):
            checked(self.cli("rm", "-f", *ids[i : i + 100]), env=self.env)

    def count_containers(self) -> int:
        return len(checked(self.cli("ps", "-aq"), env=self.env).split())

    def daemon_pids(self) -> dict[str, int]:
        """The long-lived processes of the engine (not per container), by name."""
        return {}

    def helper_pids(self) -> set[int]:
        """Processes the engine keeps per container (shims, conmon), not the containers."""
        return set()

    def stop(self) -> list[str]:
        """Stop everything; what needed force or is left."""
        raise NotImplementedError


# --------------------------------------------------------------------------- berthd


class Berthd(Peer):
    name = "berthd"
    has_api = True

    def __init__(self, home: Path, cgroup_parent: str, env: dict[str, str]) -> None:
        super().__init__(home, cgroup_parent, env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_root = home / "root"
        self.wrapper: list[str] = []  # exec's berthd in the end, so proc.pid is berthd's

    @property
    def api_socket(self) -> str:
        return str(self.home / "berth.sock")

    def cli(self, *args: str) -> list[str]:
        return [DOCKER, "-H", f"unix://{self.api_socket}", *args]

    def start(self, image_tar: Path | None) -> None:
        if not os.access(BERTHD, os.X_OK):
            raise PeerFailed(f"{BERTHD} is missing: run `make install`")
        log = open(self.home / "berthd.log", "wb")  # noqa: SIM115  (the child holds it)
        argv = [*self.wrapper, str(BERTHD), "--data-root", str(self.data_root)]
        argv += ["--host", f"unix://{self.api_socket}", "--cgroup-parent", self.cgroup_parent]
        self.proc = subprocess.Popen(
            argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_for_ping(self.api_socket, self.proc, self.log_tail)
        checked(self.cli("pull", "busybox"), env=self.env)
        self.version = checked(
            self.cli("version", "-f", "{{.Server.Version}} (API {{.Server.APIVersion}})"),
            env=self.env,
        ).strip()

    def save_image(self, path: Path) -> None:
        checked(self.cli("save", "-o", str(path), "busybox"), env=self.env)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.home / "berthd.log").read_text().splitlines()[-20:])
        return ""

    def daemon_pids(self) -> dict[str, int]:
        out = {}
        if self.proc is not None and self.proc.poll() is None:
            out["berthd"] = self.proc.pid
        for pid in processes_naming(str(self.data_root)):
            if pid != out.get("berthd"):
                out["supervisor"] = pid
        return out

    def stop(self) -> list[str]:
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.remove_all()
            except (PeerFailed, subprocess.TimeoutExpired) as exc:
                problems.append(f"berthd: removing containers: {exc}")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("berthd did not stop in 30 s: killed")
                self.proc.kill()
                self.proc.wait()
            if self.proc.returncode != 0:
                problems.append(f"berthd exited {self.proc.returncode}: {self.log_tail()}")
        problems += stop_berth_supervisor(self.data_root)
        return problems


def stop_berth_supervisor(data_root: Path) -> list[str]:
    """Ask the supervisor of ``data_root`` to shut down (it outlives berthd by design)."""
    sys.path.insert(0, str(REPO / "src"))
    from berth.engine import supervisor_client

    path = str(data_root / "run" / "supervisor.sock")
    try:
        if supervisor_client.answers(path):
            with supervisor_client.Client(path, timeout=30) as client:
                client.shutdown()
    except Exception as exc:  # reported; the leftovers are then swept
        return [f"supervisor shutdown: {exc!r}"]
    deadline = time.monotonic() + 10
    while processes_naming(str(data_root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return []


def wait_for_ping(path: str, proc: subprocess.Popen[bytes], tail: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerFailed(f"daemon exited {proc.returncode}:\n{tail()}")
        conn = UnixHTTPConnection(path, timeout=2)
        try:
            conn.request("GET", "/_ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
        finally:
            conn.close()
    raise PeerFailed(f"no answer to /_ping on {path} in 30 s:\n{tail()}")


# --------------------------------------------------------------------------- dockerd


class Dockerd(Peer):
    name = "dockerd"
    has_api = True

    def __init__(self, home: Path, cgroup_parent: str, env: dict[str, str]) -> None:
        super().__init__(home, cgroup_parent, env)
        sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]
        import dockerd

        self.daemon = dockerd.Dockerd(home, cgroup_parent, storage_driver="overlay2")

    @property
    def api_socket(self) -> str:
        return str(self.daemon.socket)

    def cli(self, *args: str) -> list[str]:
        return [DOCKER, "-H", f"unix://{self.api_socket}", *args]

    def start(self, image_tar: Path | None) -> None:
        assert image_tar is not None
        try:
            self.daemon.start()
        except RuntimeError as exc:
            raise PeerFailed(str(exc)) from exc
        checked(self.cli("load", "-i", str(image_tar)), env=self.env)
        self.version = checked(
            self.cli("version", "-f", "{{.Server.Version}} (API {{.Server.APIVersion}})"),
            env=self.env,
        ).strip()

    def _tree(self) -> set[int]:
        proc = self.daemon.process
        if proc is None or proc.poll() is not None:
            return set()
        return common.descendants([proc.pid], common.process_table())

    def daemon_pids(self) -> dict[str, int]:
        return {c: p for p in self._tree() if (c := proc_comm(p)) in ("dockerd", "containerd")}

    def helper_pids(self) -> set[int]:
        return {p for p in self._tree() if proc_comm(p).startswith("containerd-")}

    def stop(self) -> list[str]:
        return self.daemon.stop()


# --------------------------------------------------------------------------- podman


class Podman(Peer):
    name = "podman"

    def __init__(
        self, home: Path, cgroup_parent: str, env: dict[str, str], bridge: bool = False
    ) -> None:
        super().__init__(home, cgroup_parent, env)
        self.bridge = bridge
        self.name = "podman (bridge)" if bridge else "podman (none)"
        self.holder: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> list[str]:
        h = self.home
        prefix = []
        if self.holder is not None:
            prefix = [NSENTER, "-t", str(self.holder.pid), "--net", "--mount", "--"]
        return [
            *prefix, PODMAN,
            "--root", str(h / "storage"), "--runroot", str(h / "run"),
            "--tmpdir", str(h / "tmp"), "--network-config-dir", str(h / "networks"),
            "--volumepath", str(h / "volumes"), "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc",
            *args,
        ]  # fmt: skip

    def _run_args(self) -> list[str]:
        net = [] if self.bridge else ["--network", "none"]
        return [
            "--pull",
            "never",
            *PODMAN_ULIMITS,
            "--cgroup-parent",
            "/" + self.cgroup_parent,
            *net,
        ]

    def run_rm_argv(self) -> list[str]:
        return self.cli("run", "--rm", *self._run_args(), "busybox", "true")

    def run_detached_argv(self, name: str) -> list[str]:
        args = self._run_args()
        return self.cli("run", "-d", "--name", name, *args, "busybox", "sleep", "3600")

    def start(self, image_tar: Path | None) -> None:
        assert image_tar is not None
        if self.bridge:
            self.holder = subprocess.Popen(
                [UNSHARE, "--net", "--mount", "--propagation", "private", "sleep", "86400"],
                env=self.env,
                stdin=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5
            while os.readlink(f"/proc/{self.holder.pid}/ns/net") == os.readlink(
                "/proc/self/ns/net"
            ):
                if time.monotonic() > deadline or self.holder.poll() is not None:
                    raise PeerFailed("the namespace holder for podman's bridge did not start")
                time.sleep(0.01)
        checked(self.cli("load", "-i", str(image_tar)), env=self.env)
        self.version = checked(self.cli("--version"), env=self.env).strip()

    def remove_all(self) -> None:
        checked(self.cli("rm", "-af", "-t", "0"), env=self.env)

    def helper_pids(self) -> set[int]:
        return {p for p in processes_naming(str(self.home)) if proc_comm(p) == "conmon"}

    def stop(self) -> list[str]:
        problems = []
        try:
            self.remove_all()
        except (PeerFailed, subprocess.TimeoutExpired) as exc:
            problems.append(f"{self.name}: rm -af: {exc}")
        deadline = time.monotonic() + 15
        while self._helpers_left() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._helpers_left():
            problems.append(f"{self.name}: helper {pid} still running; killed it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reset = subprocess.run(
            self.cli("system", "reset", "--force"), capture_output=True, text=True, check=False
        )
        if reset.returncode != 0:
            problems.append(f"{self.name}: system reset: {reset.stderr.strip()}")
        common.remove_cgroup_dirs(common.cgroup_dirs(self.cgroup_parent))  # podman leaves it
        problems += [f"cgroup left: {p}" for p in common.cgroup_dirs(self.cgroup_parent)]
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder = None
        return problems

    def _helpers_left(self) -> list[int]:
        holder = self.holder.pid if self.holder is not None else -1
        return [p for p in processes_naming(str(self.home)) if p != holder]
