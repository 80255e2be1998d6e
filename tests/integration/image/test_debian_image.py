"""debian:bookworm built for real: debootstrap from the Debian mirror apt uses here into a temp
store, then the image checked as the official one would be (one layer, Cmd bash, Env PATH,
apt and /etc/debian_version 12.x inside, the clean-ups done), unpacked, and run with chroot
(no mounts). Downloads ~40 MB and takes a minute or more: marked slow, still in `make test`;
skipped, saying why, when debootstrap is missing or the mirror cannot be reached.

debootstrap runs in its own mount namespace; the per-test leak check (marker root) proves
nothing it mounted stayed mounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from berth.errors import Unavailable
from berth.image import base, debian
from berth.image.store import ImageStore, unix_seconds

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def mirror() -> str:
    if (shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")) is None:
        pytest.skip("debootstrap is missing (Debian package debootstrap; `make install`)")
    found = debian.apt_mirror("bookworm")
    try:
        debian.probe_mirror(found, "bookworm")
    except Unavailable as e:
        pytest.skip(f"the Debian mirror cannot be reached, no network here: {e}")
    return found


def test_debian_bookworm_built_with_debootstrap(
    tmp_path: Path, mirror: str, record_property: pytest.RecordProperty
) -> None:
    store = ImageStore(str(tmp_path / "store"))
    lines: list[str] = []
    started = time.monotonic()
    image = base.base_image(store, "debian:bookworm", progress=lines.append)
    took = time.monotonic() - started
    record_property("debian_build_seconds", round(took, 1))
    print(f"\ndebian:bookworm from {mirror}: built in {took:.1f} s, image {image.short_id}")

    assert "I: Base system installed successfully." in lines
    assert image.repo_tags == ("debian:bookworm",)
    assert [n for n in os.listdir(store.root) if n.startswith(".debian-")] == []
    config = image.config
    assert config.config.cmd == ("bash",)
    assert config.config.env == (debian.PATH_ENV,)
    assert config.os == "linux" and len(image.manifest.layers) == 1
    epoch = unix_seconds(config.created)
    assert base.BASE_EPOCH < epoch <= time.time()

    top = store.unpack(image)
    assert top is not None
    rootfs = Path(store.snapshots.stat(top).path)
    assert (rootfs / "usr/bin/apt").is_file()
    assert (rootfs / "etc/debian_version").read_text().startswith("12.")
    assert (rootfs / "bin").is_symlink()  # merged /usr, as bookworm's official image
    assert not (rootfs / "etc/machine-id").exists()
    assert os.listdir(rootfs / "var/lib/apt/lists") == []
    assert os.listdir(rootfs / "var/cache/apt") == []
    assert os.listdir(rootfs / "dev") == [] and os.listdir(rootfs / "proc") == []
    assert (rootfs / "usr/sbin/policy-rc.d").read_text().rstrip().endswith("exit 101")
    sources = (rootfs / "etc/apt/sources.list.d/debian.sources").read_text()
    assert f"URIs: {mirror}\nSuites: bookworm bookworm-updates" in sources
    out = subprocess.run(
        ["chroot", str(rootfs), "/bin/bash", "-c", "apt-get --version | head -1; id -u"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": debian.PATH_ENV.removeprefix("PATH="), "LC_ALL": "C"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("apt ") and out.stdout.split()[-1] == "0"

    # asked for again: the tagged image is returned, nothing is built
    again_started = time.monotonic()
    assert base.base_image(store, "debian:bookworm").id == image.id
    assert time.monotonic() - again_started < 5
