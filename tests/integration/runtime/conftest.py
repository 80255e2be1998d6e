"""Fixtures for the OCI runtime suite: one suite, run against runc and against berth-runtime.

Rules: the tests speak only the runc command line and the OCI config/state formats, so the same
test proves runc and berth-runtime alike. Every test gets its own work dir (a fresh ``--root``,
its bundles, the containers' stdio files) in /tmp, mode 0711 so that a user-namespaced container
can still reach its rootfs. Every container id the helper hands to the runtime is force-deleted
in teardown, even when the test failed, and teardown then checks that nothing was left: the
id is unknown to ``state``, the container's process is gone and its cgroup (``<the caller's
cgroup>/<id>`` in every hierarchy, where runc puts it) is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from runtime_suite import BINARIES, container_cgroups, is_plain_id

import leakcheck
from bundles import Bundle, BundleFactory, runc_default_spec

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 30.0  # seconds for one runtime command; a hung runtime fails the test, not the run


# --------------------------------------------------------------------------- rootfs and spec


def _build_busybox_rootfs(target: Path) -> Path:
    spec = importlib.util.spec_from_file_location(
        "busybox_rootfs", REPO / "tools" / "busybox_rootfs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.build_busybox_rootfs(str(target)))


@pytest.fixture(scope="session")
def runtime_busybox_rootfs(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Path:
    """The session's busybox rootfs: tests/conftest.py's ``busybox_rootfs`` when it exists,
    else one built here with tools/busybox_rootfs.py. Never handed to a runtime directly:
    every bundle gets its own copy."""
    try:
        return Path(request.getfixturevalue("busybox_rootfs"))
    except pytest.FixtureLookupError:
        return _build_busybox_rootfs(tmp_path_factory.mktemp("runtime-busybox") / "rootfs")


@pytest.fixture(scope="session")
def base_spec(tmp_path_factory: Any) -> dict[str, Any]:
    """runc's default config.json (`runc spec`), captured once per session."""
    return runc_default_spec(BINARIES["runc"], tmp_path_factory.mktemp("runc-spec"), TIMEOUT)


# --------------------------------------------------------------------------- work dir


@pytest.fixture
def rt_workdir() -> Iterator[Path]:
    """A per-test dir in /tmp, traversable by any uid (0711) for user-namespace tests."""
    path = Path(tempfile.mkdtemp(prefix="berth-rt-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- bundles


@pytest.fixture
def bundle(base_spec: dict[str, Any], runtime_busybox_rootfs: Path, rt_workdir: Path) -> Any:
    return BundleFactory(base_spec, runtime_busybox_rootfs, rt_workdir)


# --------------------------------------------------------------------------- the runtime


@dataclass
class Runtime:
    """One runtime binary driven through runc's command line with a private ``--root``.

    ``run`` in the foreground captures the container's output; ``create`` and ``run -d`` send
    the container's stdout/stderr (and the runtime's own messages) to files read by
    ``output``, so no pipe is held open by a container that outlives the command."""

    name: str
    binary: str
    root: Path
    io_dir: Path
    ids: list[str] = field(default_factory=list)
    _stems: dict[str, list[Path]] = field(default_factory=dict, repr=False)
    _made: dict[str, Path] = field(default_factory=dict, repr=False)

    @staticmethod
    def new_id(prefix: str = "test") -> str:
        """A container id unique on this host; its cgroups are named after it, with the test
        session's tag so that the leak check watches them (and not another session's)."""
        return leakcheck.tagged_name(prefix)

    # -- raw calls
    def __call__(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``<binary> --root <root> args...`` with stdout/stderr captured."""
        return subprocess.run(
            [self.binary, "--root", str(self.root), *args],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _track(self, cid: str) -> None:
        if cid not in self.ids:
            self.ids.append(cid)

    def _stem(self, cid: str) -> Path:
        """Fresh file names in io_dir for one create/run call of ``cid`` (a malformed id such
        as "../x" gets a hashed name): a later call never mixes into an earlier one's files."""
        name = cid if is_plain_id(cid) else "bad-" + hashlib.sha1(cid.encode()).hexdigest()[:12]
        stems = self._stems.setdefault(cid, [])
        stems.append(self.io_dir / f"{name}.{len(stems)}")
        return stems[-1]

    def _current(self, cid: str) -> Path | None:
        """The files of the call that made ``cid`` (else its latest call)."""
        return self._made.get(cid) or (self._stems.get(cid) or [None])[-1]

    def pid_file(self, cid: str) -> Path:
        """The --pid-file of the call that made container ``cid``."""
        stem = self._current(cid)
        assert stem is not None, f"no create/run of {cid} yet"
        return stem.with_suffix(stem.suffix + ".pid")

    def _call(
        self, verb: str, cid: str, path: Path, extra: Sequence[str], detach: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        self._track(cid)
        stem = self._stem(cid)
        out, err = (stem.with_suffix(stem.suffix + s) for s in (".out", ".err"))
        pid = stem.with_suffix(stem.suffix + ".pid")
        args = [self.binary, "--root", str(self.root), verb, *(["-d"] if detach else [])]
        args += ["--bundle", str(path), "--pid-file", str(pid), *extra, cid]
        if verb == "run" and not detach:  # foreground: the container's output is captured
            proc = subprocess.run(
                args,
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        else:  # the container outlives the command: its stdio goes to files, never pipes
            with out.open("wb") as fout, err.open("wb") as ferr:
                done = subprocess.run(
                    args,
                    check=False,
                    stdin=subprocess.DEVNULL,
                    stdout=fout,
                    stderr=ferr,
                    timeout=timeout,
                )
            proc = subprocess.CompletedProcess(
                args, done.returncode, out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )  # fmt: skip
        if proc.returncode == 0:
            self._made[cid] = stem
        return proc

    def output(self, cid: str) -> tuple[str, str]:
        """What a created/detached container (and the runtime) wrote so far: (stdout, stderr)."""
        stem = self._current(cid)
        if stem is None:
            return "", ""
        files = (stem.with_suffix(stem.suffix + s) for s in (".out", ".err"))
        out, err = (f.read_text(errors="replace") if f.exists() else "" for f in files)
        return out, err

    # -- verbs
    def run(
        self,
        bundle: Bundle | Path,
        cid: str,
        *,
        detach: bool = False,
        extra: Sequence[str] = (),
        timeout: float = TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        path = bundle.path if isinstance(bundle, Bundle) else bundle
        return self._call("run", cid, path, extra, detach, timeout)

    def create(
        self, bundle: Bundle | Path, cid: str, *, extra: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        path = bundle.path if isinstance(bundle, Bundle) else bundle
        return self._call("create", cid, path, extra, False, TIMEOUT)

    def start(self, cid: str) -> subprocess.CompletedProcess[str]:
        return self("start", cid)

    def state_raw(self, cid: str) -> subprocess.CompletedProcess[str]:
        return self("state", cid)

    def state(self, cid: str) -> dict[str, Any]:
        proc = self.state_raw(cid)
        assert proc.returncode == 0, f"state {cid}: exit {proc.returncode}: {proc.stderr}"
        state: dict[str, Any] = json.loads(proc.stdout)
        return state

    def kill(self, cid: str, signal: str = "KILL") -> subprocess.CompletedProcess[str]:
        return self("kill", cid, signal)

    def delete(self, cid: str, force: bool = True) -> subprocess.CompletedProcess[str]:
        return self("delete", *(["--force"] if force else []), cid)

    def list(self) -> list[dict[str, Any]]:
        """``list --format json`` parsed (runc prints ``null`` when there are none)."""
        proc = self("list", "--format", "json")
        assert proc.returncode == 0, f"list: exit {proc.returncode}: {proc.stderr}"
        return json.loads(proc.stdout) or []

    def ids_listed(self) -> list[str]:
        return [c["id"] for c in self.list()]

    def wait_status(self, cid: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(cid)
            if state["status"] == status or time.monotonic() > deadline:
                assert state["status"] == status, state
                return state
            time.sleep(0.02)

    # -- leftovers and teardown
    def leftovers(self, cid: str, *, kill: bool = False) -> list[str]:
        """What is left of container ``cid``: known to ``state``, its process alive (killed
        if ``kill``), its cgroup present. Empty once it is deleted (or never was)."""
        found: list[str] = []
        try:
            if self.state_raw(cid).returncode == 0:
                found.append(f"{cid}: still known to `state`")
        except (OSError, subprocess.TimeoutExpired):
            pass  # a runtime that cannot even run has no state to leave
        for stem in self._stems.get(cid, []):
            pid = _read_pid(stem.with_suffix(stem.suffix + ".pid"))
            if pid is not None and _still_alive(pid, kill=kill):
                found.append(f"{cid}: process {pid} alive" + ("; killed it" if kill else ""))
        found.extend(f"{cid}: cgroup left behind: {p}" for p in container_cgroups(cid))
        return found

    def cleanup(self) -> list[str]:
        """Force-delete every container this helper touched; return what leaked."""
        leaks: list[str] = []
        for cid in self.ids:
            try:
                self.delete(cid, force=True)
            except (OSError, subprocess.TimeoutExpired) as exc:
                leaks.append(f"{cid}: delete --force failed to run: {exc}")
            leaks.extend(self.leftovers(cid, kill=True))
        return leaks


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive_in_container(pid: int) -> bool:
    """True if ``pid`` lives (not a zombie) in another PID namespace than ours, i.e. it is a
    container's process and not a host process that reused the number."""
    try:
        if os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid"):
            return False
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _still_alive(pid: int, *, kill: bool, timeout: float = 2.0) -> bool:
    """Give a container process ``timeout`` to die; True (after killing it if ``kill``) if it
    does not."""
    deadline = time.monotonic() + timeout
    while _alive_in_container(pid):
        if time.monotonic() > deadline:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(params=list(BINARIES))
def runtime(request: pytest.FixtureRequest, rt_workdir: Path) -> Iterator[Runtime]:
    """The runtime under test (``runc`` or ``berth``) with a fresh ``--root``."""
    name: str = request.param
    io_dir = rt_workdir / "io"
    io_dir.mkdir()
    rt = Runtime(name, BINARIES[name], rt_workdir / "state", io_dir)
    yield rt
    leaks = rt.cleanup()
    assert not leaks, "containers leaked:\n" + "\n".join(leaks)
