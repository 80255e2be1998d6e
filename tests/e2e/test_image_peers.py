"""Berth's image archives against the peers from Debian: podman loads and runs what Berth
saves, Berth loads what podman saves (docker-archive and oci-archive), skopeo and umoci read
Berth's OCI layouts. (dockerd round trips come later, with a dockerd the test starts.)

Rules: podman gets private everything under one temp dir: storage (--root, vfs driver, so no
storage mounts), run root, tmp dir (state and the file events log); --network none, --pull never
(nothing leaves the machine), --runtime runc and the ulimits DESIGN.md asks for; its container
cgroups go under a parent named with the session's tag, removed at teardown. Teardown waits for
podman's helpers to exit, resets the storage, checks nothing is mounted under the dir before
removing it, even on failure. Berth's stores are temp dirs in copy mode (nothing mounted).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from private_podman import TIMEOUT, ULIMITS, Podman, private_podman

from berth.image import archive, base
from berth.image.store import Image, ImageStore

pytestmark = [pytest.mark.root, pytest.mark.peer]

RUNC = shutil.which("runc") or "/usr/sbin/runc"
SKOPEO = shutil.which("skopeo")
UMOCI = shutil.which("umoci")
BUSYBOX = "docker.io/library/busybox:latest"
EXTRA = "localhost/berth/extra:v1"


@pytest.fixture
def podman() -> Iterator[Podman]:
    with private_podman(RUNC) as pm:
        yield pm


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "berth"), "copy")


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    image = base.busybox_image(store)
    store.tag(BUSYBOX, EXTRA)
    return image


def _save(store: ImageStore, refs: list[str], path: Path, fmt: archive.Format = "docker") -> Path:
    with open(path, "wb") as f:
        archive.save(store, refs, f, fmt)
    return path


def test_podman_loads_and_runs_berths_busybox(
    podman: Podman, store: ImageStore, busybox: Image, tmp_path: Path
) -> None:
    single = _save(store, ["busybox"], tmp_path / "busybox.tar")
    assert f"Loaded image: {BUSYBOX}" in podman.ok("load", "-i", str(single))
    both = _save(store, ["busybox", EXTRA], tmp_path / "both.tar")
    loaded = podman.ok("load", "-i", str(both))
    assert f"Loaded image: {EXTRA}" in loaded, loaded
    listed = json.loads(podman.ok("images", "--format", "json"))
    assert {i["Id"] for i in listed} == {busybox.id.removeprefix("sha256:")}
    names = {n for i in listed for n in i.get("Names", [])}
    assert {BUSYBOX, EXTRA} <= names
    proc = podman(
        "run", "--rm", "--network", "none", "--pull", "never", *ULIMITS,
        "--cgroup-parent", "/" + podman.cgroup_parent,
        "busybox", "echo", "hi",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hi\n"


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_berth_loads_what_podman_saves(
    podman: Podman, store: ImageStore, busybox: Image, tmp_path: Path, fmt: str
) -> None:
    podman.ok("load", "-i", str(_save(store, ["busybox", EXTRA], tmp_path / "in.tar")))
    out = tmp_path / "podman.tar"
    names = [BUSYBOX, EXTRA] if fmt == "docker-archive" else [BUSYBOX]
    extra = ["--multi-image-archive"] if fmt == "docker-archive" else []
    podman.ok("save", "--format", fmt, *extra, "-o", str(out), *names)
    fresh = ImageStore(str(tmp_path / "fresh"), "copy")
    with open(out, "rb") as f:
        loaded = archive.load(fresh, f)
    assert sorted(loaded) == sorted(ref.removeprefix("docker.io/library/") for ref in names)
    again = fresh.resolve("busybox")
    assert again.id == busybox.id
    assert again.diff_ids == busybox.diff_ids
    assert set(again.repo_tags) == {"busybox:latest", EXTRA} & set(loaded)
    top = fresh.unpack(again)  # the diffIDs hold on unpack too
    assert top is not None and os.path.isfile(
        os.path.join(fresh.snapshots.stat(top).path, "bin/busybox")
    )


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (make install adds it)")
def test_skopeo_reads_berths_oci_layout(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    assert SKOPEO is not None
    layout = tmp_path / "layout"
    archive.save(store, ["busybox", EXTRA], layout, "oci")
    proc = subprocess.run(
        [SKOPEO, "inspect", f"oci:{layout}:{BUSYBOX}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    inspected = json.loads(proc.stdout)
    assert inspected["Digest"] == busybox.manifest_digest
    assert inspected["Layers"] == [layer.digest for layer in busybox.manifest.layers]
    copied = tmp_path / "copied"
    proc = subprocess.run(
        [SKOPEO, "copy", f"oci:{layout}:{EXTRA}", f"dir:{copied}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for digest in (busybox.id, *(layer.digest for layer in busybox.manifest.layers)):
        assert (copied / digest.removeprefix("sha256:")).is_file()
    # the docker-format tarball is an OCI layout too, with the tag as ref.name
    tarball = _save(store, ["busybox"], tmp_path / "docker.tar")
    proc = subprocess.run(
        [SKOPEO, "inspect", f"oci-archive:{tarball}:latest"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Digest"] == busybox.manifest_digest


def test_umoci_lists_berths_tags(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    if UMOCI is None:
        pytest.skip("umoci is not installed: `make install` adds it (Makefile DEB_PACKAGES)")
    layout = tmp_path / "layout"
    archive.save(store, ["busybox", EXTRA], layout, "oci")
    proc = subprocess.run(
        [UMOCI, "ls", "--layout", str(layout)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted([BUSYBOX, EXTRA])
