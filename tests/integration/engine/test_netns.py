"""engine.netns on the real kernel: a pinned namespace of its own, entered by one thread only."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from berth.engine import netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _interfaces() -> dict[str, int]:
    """Interface names of the calling thread's namespace, with their flags (SIOCGIFFLAGS)."""
    import fcntl
    import struct

    with open("/proc/thread-self/net/dev") as f:
        names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    flags = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            req = struct.pack("16sH22x", name.encode(), 0)
            flags[name] = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), 0x8913, req))[1]
    return flags


def _pinned(path: str) -> bool:
    """Whether ``path`` holds a namespace (a mount on it), not the empty file under it."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


@pytest.fixture
def pinned(tmp_path: Path):
    path = str(tmp_path / "ns")
    netns.create(path)
    yield path
    netns.remove(path)


def test_a_new_namespace_has_only_lo_and_it_is_up(pinned: str) -> None:
    assert _pinned(pinned)
    inside = netns.run_in(pinned, _interfaces)
    assert sorted(inside) == ["lo"]
    assert inside["lo"] & 0x1  # IFF_UP


def test_sockets_made_in_it_stay_there(pinned: str) -> None:
    """A listener on 127.0.0.11 in the namespace is unreachable from the host's loopback and
    reachable from inside; the caller's own namespace never changed."""
    own = os.readlink("/proc/thread-self/ns/net")
    listener = netns.socket_in(pinned, socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.bind(("127.0.0.11", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def connect() -> bool:
            with socket.create_connection(("127.0.0.11", port), timeout=2):
                return True

        assert netns.run_in(pinned, connect)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.11", port), timeout=1):
            pass
    assert os.readlink("/proc/thread-self/ns/net") == own


def test_errors_inside_come_back_and_remove_leaves_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "ns")
    netns.create(path)

    def fail() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        netns.run_in(path, fail)
    netns.remove(path)
    assert not os.path.exists(path) and not _pinned(path)
    netns.remove(path)  # idempotent


def test_create_over_an_existing_file_fails_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "ns"
    path.write_text("mine")
    with pytest.raises(FileExistsError):
        netns.create(str(path))
    assert path.read_text() == "mine"


def test_pin_keeps_a_process_namespace_after_it_ends_and_fails_cleanly(tmp_path: Path) -> None:
    """``pin`` of a process's /proc/<pid>/ns/net: the same namespace (inode), alive after the
    process is gone until ``remove``; a source that is not there leaves nothing."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "30"])  # execs sleep in a new netns
    path = str(tmp_path / "pin")
    try:
        source = f"/proc/{proc.pid}/ns/net"
        deadline = time.monotonic() + 5
        while os.readlink(source) == os.readlink("/proc/self/ns/net"):  # unshare not done yet
            assert time.monotonic() < deadline
            time.sleep(0.005)
        netns.pin(source, path)
        assert os.stat(path).st_ino == os.stat(source).st_ino and _pinned(path)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(netns.run_in(path, _interfaces)) == ["lo"]  # lives on without its process
    netns.remove(path)
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        netns.pin(f"/proc/{proc.pid}/ns/net", path)  # that process is gone
    assert not os.path.exists(path) and not _pinned(path)
