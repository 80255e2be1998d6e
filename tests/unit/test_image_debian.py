"""Unit tests for berth.image.debian with no network and no debootstrap: apt's mirror read from
one-line and deb822 sources, the official images' clean-up on a fake debootstrap tree, the
epoch taken from package files, a layer that is the same bytes for the same tree made at
another time, and debian_image end to end with a fake debootstrap (success, a mirror that
fails, a hang) leaving no temp dir and no half-made image."""

from __future__ import annotations

import os
import stat
import sys
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from berth.errors import InvalidArgument, NotFound, Unavailable
from berth.image import base, debian
from berth.image.layers import diff_to_layer
from berth.image.store import ImageStore, unix_seconds

OLD = 1_700_000_000  # a package file's mtime (2023-11-14)
NEWEST = 1_720_000_000  # the newest package file's mtime: the epoch
ROOT = os.geteuid() == 0
TESTS_DIR = str(Path(__file__).resolve().parent)


def fake_debootstrap_tree(root: Path) -> None:
    """What debootstrap leaves, in miniature: package files (listed in dpkg's info), files
    written during the install, caches, logs, host files, /dev entries."""
    files = {
        "usr/bin/apt": "apt",
        "usr/bin/bash": "bash",
        "etc/debian_version": "12.15\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "etc/shadow": "root:*:20783:0:99999:7:::\ndaemon:*:100:0:99999:7:::\n",
        "etc/hostname": "build-host\n",
        "etc/resolv.conf": "nameserver 10.0.0.1\n",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/apt/sources.list": "deb http://deb.debian.org/debian bookworm main\n",
        "etc/apt/apt.conf.d/01autoremove": "// apt's own\n",
        "etc/apt/apt.conf.d/01autoremove-kernels": "// host kernel 6.18\n",
        "etc/dpkg/dpkg.cfg.d/.keep": "",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease": "Date: x\n",
        "var/lib/apt/lists/partial/.keep": "",
        "var/cache/apt/pkgcache.bin": "cache",
        "var/cache/apt/archives/apt_2.6.1_amd64.deb": "deb",
        "var/cache/ldconfig/aux-cache": "aux",
        "var/log/dpkg.log": "installed\n",
        "var/log/bootstrap.log": "bootstrapped\n",
        "var/log/alternatives.log": "alternatives\n",
        "var/log/wtmp": "",
        "var/lib/dpkg/info/apt.list": "/usr\n/usr/bin\n/usr/bin/apt\n/etc/debian_version\n",
        "var/lib/dpkg/info/bash.list": "/usr/bin/bash\n/usr/bin/gone\n",
        "run/mount/utab": "utab",
        "proc/cpuinfo": "host cpu",
        "dev/pts/.keep": "",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "etc/resolv.conf").chmod(0o755)  # copied from the host as it was
    (root / "sys").mkdir()
    (root / "tmp").mkdir(mode=0o1777)
    (root / "dev/fd").symlink_to("/proc/self/fd")
    (root / "usr/bin/sh").symlink_to("bash")
    os.link(root / "usr/bin/bash", root / "usr/bin/rbash")
    os.utime(root / "usr/bin/apt", (OLD, OLD))
    os.utime(root / "etc/debian_version", (OLD, OLD))
    os.utime(root / "usr/bin/bash", (NEWEST, NEWEST))


def finished_tree(root: Path) -> int:
    fake_debootstrap_tree(root)
    return debian.finish_rootfs(str(root), "bookworm", "http://mirror.test/debian", time.time())


def test_apt_mirror_from_one_line_and_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert debian.apt_mirror("bookworm", str(tmp_path)) == debian.DEFAULT_MIRROR
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://deb.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list.d/other.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] https://other.example/apt nodistro main\n"
    )
    assert debian.apt_mirror("bookworm", str(tmp_path)) == "http://deb.example/debian"
    assert debian.apt_mirror("nodistro", str(tmp_path)) == "https://other.example/apt"
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://first.example/debian bookworm main\n"
    )
    assert debian.apt_mirror("bookworm", str(tmp_path)) == "http://first.example/debian"
    assert debian.apt_mirror("trixie", str(tmp_path)) == debian.DEFAULT_MIRROR


def test_security_mirror() -> None:
    assert debian.security_mirror("http://m.test/debian/") == "http://m.test/debian-security"
    assert debian.security_mirror("http://m.test/d") == "http://deb.debian.org/debian-security"


def test_clean_up_does_what_the_official_images_do(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    epoch = finished_tree(root)
    # the epoch: the newest package file older than the install ("gone" is listed, missing)
    assert epoch == NEWEST
    for gone in (
        "etc/machine-id",
        "etc/apt/sources.list",
        "etc/apt/apt.conf.d/01autoremove-kernels",
        "var/log/dpkg.log",
        "var/log/bootstrap.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
        "run/mount",
    ):
        assert not os.path.lexists(root / gone), gone
    for emptied in ("dev", "proc", "sys", "var/cache/apt", "var/lib/apt/lists"):
        assert (root / emptied).is_dir() and os.listdir(root / emptied) == [], emptied
    assert (root / "etc/apt/apt.conf.d/01autoremove").exists()  # apt's own config stays
    assert (root / "var/log/wtmp").exists()
    policy = root / "usr/sbin/policy-rc.d"
    assert stat.S_IMODE(policy.stat().st_mode) == 0o755
    assert policy.read_text().rstrip().endswith("exit 101")
    conf = root / "etc/apt/apt.conf.d"
    assert 'Dir::Cache::pkgcache "";' in (conf / "docker-clean").read_text()
    assert "/var/cache/apt/*.bin" in (conf / "docker-clean").read_text()
    assert 'Acquire::Languages "none";' in (conf / "docker-no-languages").read_text()
    assert 'Acquire::GzipIndexes "true";' in (conf / "docker-gzip-indexes").read_text()
    assert "SuggestsImportant" in (conf / "docker-autoremove-suggests").read_text()
    speedup = root / "etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    assert "force-unsafe-io" in speedup.read_text()
    sources = (root / "etc/apt/sources.list.d/debian.sources").read_text()
    assert "URIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\n" in sources
    assert "URIs: http://mirror.test/debian-security\nSuites: bookworm-security\n" in sources
    assert (root / "etc/hostname").read_text() == debian.HOSTNAME
    resolv = root / "etc/resolv.conf"
    assert "10.0.0.1" not in resolv.read_text() and stat.S_IMODE(resolv.stat().st_mode) == 0o644
    # day of the last password change: clamped to the epoch's day, earlier days kept
    shadow = (root / "etc/shadow").read_text().splitlines()
    assert shadow == [f"root:*:{NEWEST // 86400}:0:99999:7:::", "daemon:*:100:0:99999:7:::"]
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    # every mtime clamped to the epoch; older package files keep theirs
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            assert os.lstat(os.path.join(top, name)).st_mtime <= epoch, name
    assert (root / "usr/bin/apt").stat().st_mtime == OLD
    assert (root / "usr/sbin/policy-rc.d").stat().st_mtime == epoch


def test_epoch_without_package_files_is_the_fixed_date(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg/info").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/info/x.list").write_text("/new\n")
    (tmp_path / "new").write_text("written during the install")
    assert debian.package_epoch(str(tmp_path), time.time() - 60) == base.BASE_EPOCH


def layer_of(root: Path, out: Path) -> tuple[str, list[tarfile.TarInfo]]:
    with out.open("wb") as f:
        stats = diff_to_layer(str(root), f)
    with tarfile.open(out) as tar:
        return stats.diff_id, tar.getmembers()


def test_layer_is_deterministic_sorted_and_keeps_ids(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    finished_tree(one)
    time.sleep(1.1)  # the second tree is written at another second: only the epoch counts
    fake_debootstrap_tree(two)
    if ROOT:
        for tree in (one, two):
            os.chown(tree / "var/log/wtmp", 0, 43, follow_symlinks=False)
            os.chown(tree / "usr/bin/apt", 1000, 1001, follow_symlinks=False)
    debian.finish_rootfs(str(two), "bookworm", "http://mirror.test/debian", time.time())
    digest_one, members = layer_of(one, tmp_path / "one.tar")
    digest_two, _ = layer_of(two, tmp_path / "two.tar")
    assert digest_one == digest_two
    names = [m.name for m in members]
    # depth first, each directory's entries sorted by name, a directory before its content
    assert names.index("etc") < names.index("etc/apt") < names.index("etc/debian_version")
    assert names.index("usr/bin/apt") < names.index("usr/bin/bash") < names.index("usr/sbin")
    assert {m.uname for m in members} == {""} and {m.gname for m in members} == {""}
    assert max(m.mtime for m in members) == NEWEST
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/rbash"].islnk() and by_name["usr/bin/rbash"].linkname == "usr/bin/bash"
    assert by_name["usr/bin/sh"].issym() and by_name["usr/bin/sh"].linkname == "bash"
    assert not any(n.startswith(("dev/", "proc/", "var/lib/apt/lists/")) for n in names)
    if ROOT:
        assert (by_name["usr/bin/apt"].uid, by_name["usr/bin/apt"].gid) == (1000, 1001)
        assert (by_name["var/log/wtmp"].uid, by_name["var/log/wtmp"].gid) == (0, 43)


# --------------------------------------------------------------------------- debian_image


FAKE_UNSHARE = """#!/bin/sh
# the real one's arguments up to "--", then run the rest (no namespace: nothing is mounted)
while [ "$1" != "--" ]; do shift; done; shift
exec "$@"
"""

FAKE_DEBOOTSTRAP = """#!{python}
import os, sys, time
mode = {mode!r}
args = [a for a in sys.argv[1:] if not a.startswith("--")]
suite, target, mirror = args
assert "--variant=minbase" in sys.argv and "--force-check-gpg" in sys.argv, sys.argv
os.makedirs(os.path.join(target, "debootstrap"))
print("I: Retrieving InRelease", flush=True)
if mode == "fail":
    with open(os.path.join(target, "debootstrap", "debootstrap.log"), "w") as f:
        f.write("wget: unable to resolve host address\\n")
    print(f"E: Failed getting release file {{mirror}}/dists/{{suite}}/Release", flush=True)
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
sys.path.insert(0, {tests!r})
from test_image_debian import fake_debootstrap_tree
from pathlib import Path
os.rmdir(os.path.join(target, "debootstrap"))
fake_debootstrap_tree(Path(target))
print("I: Base system installed successfully.", flush=True)
"""


class FakeTools:
    """A fake ``unshare`` and one fake debootstrap per mode; ``debootstrap`` is the one used."""

    def __init__(self, directory: Path) -> None:
        self.unshare = directory / "unshare"
        self.unshare.write_text(FAKE_UNSHARE)
        self.unshare.chmod(0o755)
        self.modes: dict[str, Path] = {}
        for mode in ("ok", "fail", "hang"):
            script = directory / f"debootstrap-{mode}"
            tests = str(Path(__file__).resolve().parent)
            script.write_text(
                FAKE_DEBOOTSTRAP.format(python=sys.executable, mode=mode, tests=tests)
            )
            script.chmod(0o755)
            self.modes[mode] = script
        self.debootstrap = self.modes["ok"]

    def use(self, mode: str) -> None:
        self.debootstrap = self.modes[mode]

    def tool(self, name: str, package: str) -> str:
        return str(self.unshare if name == "unshare" else self.debootstrap)


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    if not ROOT:
        pytest.skip("debian_image refuses to run without root (debootstrap chroots)")
    tools = FakeTools(tmp_path)
    monkeypatch.setattr(debian, "_tool", tools.tool)
    monkeypatch.setattr(debian, "probe_mirror", lambda mirror, suite: None)
    return tools


def leftovers(store: ImageStore) -> list[str]:
    return [n for n in os.listdir(store.root) if n.startswith(".debian-")]


def test_debian_image_with_a_fake_debootstrap(tmp_path: Path, fake_tools: FakeTools) -> None:
    store = ImageStore(str(tmp_path / "store"), snapshot_mode="copy")
    lines: list[str] = []
    image = debian.debian_image(store, mirror="http://mirror.test/debian/", progress=lines.append)
    assert "I: Base system installed successfully." in lines
    assert image.repo_tags == ("debian:bookworm",)
    config = image.config
    assert config.config.cmd == ("bash",)
    assert config.config.env == (debian.PATH_ENV,)
    assert unix_seconds(config.created) == NEWEST
    assert [h.empty_layer for h in config.history] == [False, True]
    assert len(image.manifest.layers) == 1 and leftovers(store) == []
    again = debian.debian_image(store, mirror="http://mirror.test/debian")
    assert again.id == image.id  # same packages, same mirror: the same image
    assert base.base_image(store, "debian:bookworm").id == image.id  # already there: no build


def test_debian_image_mirror_failure_leaves_nothing(tmp_path: Path, fake_tools: FakeTools) -> None:
    fake_tools.use("fail")
    store = ImageStore(str(tmp_path / "store"), snapshot_mode="copy")
    with pytest.raises(Unavailable, match=r"mirror http://dead.test/debian failed") as err:
        debian.debian_image(store, mirror="http://dead.test/debian")
    assert "unable to resolve host" in str(err.value)  # the debootstrap.log's end
    assert leftovers(store) == [] and store.list() == []


def test_debian_image_timeout_kills_debootstrap(tmp_path: Path, fake_tools: FakeTools) -> None:
    fake_tools.use("hang")
    store = ImageStore(str(tmp_path / "store"), snapshot_mode="copy")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not finish in 1 s"):
        debian.debian_image(store, mirror="http://slow.test/debian", timeout=1)
    assert time.monotonic() - started < 20
    assert leftovers(store) == [] and store.list() == []


def test_debian_image_bad_input_and_missing_debootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(str(tmp_path / "store"), snapshot_mode="copy")
    with pytest.raises(InvalidArgument, match="suite"):
        debian.debian_image(store, suite="../etc")
    monkeypatch.setattr(debian.shutil, "which", lambda name, path=None: None)
    with pytest.raises(Unavailable, match="install the Debian package debootstrap"):
        debian.debian_image(store, mirror="http://mirror.test/debian")
    assert leftovers(store) == []


def test_unreachable_mirror_is_named(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match=r"Debian mirror http://127\.0\.0\.1:9/debian"):
        debian.probe_mirror("http://127.0.0.1:9/debian", "bookworm", timeout=5)
    (tmp_path / "debian/dists/bookworm").mkdir(parents=True)
    (tmp_path / "debian/dists/bookworm/InRelease").write_text("Origin: Debian\n")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/debian"
        debian.probe_mirror(mirror, "bookworm")
        with pytest.raises(NotFound, match="no suite 'trixie'"):
            debian.probe_mirror(mirror, "trixie")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
