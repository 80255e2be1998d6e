"""Berth's image archives against Debian's dockerd 20.10: dockerd loads and runs what Berth
saves (busybox, and an image whose top layer deletes a file and makes a directory opaque), and
Berth loads what dockerd saves (an image it loaded, and one it committed itself, whose layer
dockerd diffed) with the same image ids and diffIDs, tags kept.

Rules: each test gets a private dockerd started by the test (tests/e2e/dockerd.py: its own
data root, exec root and socket under one temp dir, its own containerd, private mount and pid
namespaces, vfs storage, no bridge and no iptables, container cgroups under a parent named with
the session's tag), torn down even on failure; containers run with --network none and an image
loaded locally (nothing is pulled). Berth's stores are temp dirs in copy mode (nothing mounted).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.image import archive, base, layers
from berth.image.store import Image, ImageStore
from berth.spec import image as spec

sys.path.insert(0, str(Path(__file__).parent))
import dockerd  # tests/e2e/dockerd.py, a fixture module

pytestmark = [
    pytest.mark.root,
    pytest.mark.peer,
    pytest.mark.skipif(dockerd.missing() is not None, reason=str(dockerd.missing())),
]

BUSYBOX = "docker.io/library/busybox:latest"
EXTRA = "localhost/berth/extra:v1"
COMMITTED = "localhost/berth/committed:v1"
WHITEOUTS = "localhost/berth/whiteouts:v1"
RUN = ("run", "--network", "none", "--pull", "never")


@pytest.fixture
def docker() -> Iterator[dockerd.Dockerd]:
    with dockerd.private_dockerd() as daemon:
        yield daemon


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "berth"), "copy")


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    return base.busybox_image(store)


def _save(store: ImageStore, refs: list[str], path: Path) -> Path:
    with open(path, "wb") as f:
        archive.save(store, refs, f, "docker")
    return path


def _inspect(docker: dockerd.Dockerd, ref: str) -> dict[str, Any]:
    inspected: list[dict[str, Any]] = json.loads(docker.ok("image", "inspect", ref))
    return inspected[0]


def _load_into_berth(docker: dockerd.Dockerd, refs: list[str], tmp_path: Path) -> ImageStore:
    """``docker save refs`` loaded into a fresh Berth store; checks the refs it reports."""
    out = tmp_path / "dockerd.tar"
    docker.ok("save", "-o", str(out), *refs)
    fresh = ImageStore(str(tmp_path / "fresh"), "copy")
    loaded = archive.load(fresh, out)
    assert sorted(loaded) == sorted(r.removeprefix("docker.io/library/") for r in refs)
    return fresh


def _unpacked(store: ImageStore, image: Image) -> Path:
    top = store.unpack(image)  # checks every layer's diffID on the way
    assert top is not None
    return Path(store.snapshots.stat(top).path)


def test_dockerd_loads_and_runs_berths_busybox(
    docker: dockerd.Dockerd, store: ImageStore, busybox: Image, tmp_path: Path
) -> None:
    store.tag(BUSYBOX, EXTRA)
    loaded = docker.ok("load", "-i", str(_save(store, ["busybox", EXTRA], tmp_path / "in.tar")))
    assert "Loaded image: busybox:latest" in loaded, loaded
    assert f"Loaded image: {EXTRA}" in loaded, loaded
    inspected = _inspect(docker, "busybox")
    assert inspected["Id"] == busybox.id
    assert tuple(inspected["RootFS"]["Layers"]) == busybox.diff_ids
    assert sorted(inspected["RepoTags"]) == sorted(["busybox:latest", EXTRA])
    assert docker.ok(*RUN, "--rm", "busybox", "echo", "hi") == "hi\n"


def test_berth_loads_what_dockerd_saves(
    docker: dockerd.Dockerd, store: ImageStore, busybox: Image, tmp_path: Path
) -> None:
    docker.ok("load", "-i", str(_save(store, ["busybox"], tmp_path / "in.tar")))
    docker.ok("tag", "busybox", EXTRA)
    # an image whose layer dockerd made itself: a new file, and a file of busybox's deleted
    script = "echo made by dockerd > /hello && rm /bin/vi"
    docker.ok(*RUN, "--name", "berth-commit", "busybox", "sh", "-c", script)
    docker.ok("commit", "berth-commit", COMMITTED)
    docker.ok("rm", "berth-commit")
    committed = _inspect(docker, COMMITTED)
    assert len(committed["RootFS"]["Layers"]) == 2

    fresh = _load_into_berth(docker, [BUSYBOX, EXTRA, COMMITTED], tmp_path)
    again = fresh.resolve("busybox")
    assert again.id == busybox.id
    assert again.diff_ids == busybox.diff_ids
    assert set(again.repo_tags) == {"busybox:latest", EXTRA}
    made = fresh.resolve(COMMITTED)
    assert made.id == committed["Id"]
    assert made.diff_ids == tuple(committed["RootFS"]["Layers"])
    assert made.diff_ids[0] == busybox.diff_ids[0]
    assert made.repo_tags == (COMMITTED,)
    root = _unpacked(fresh, made)
    assert (root / "hello").read_text() == "made by dockerd\n"
    assert (root / "bin/busybox").is_file()
    assert not os.path.lexists(root / "bin/vi")
    assert os.path.islink(root / "bin/ls")


def _layer(store: ImageStore, upper: Path) -> tuple[spec.Descriptor, str]:
    """The OCI layer holding the changes in overlay upper dir ``upper``, and its diffID."""
    with store.content.writer() as writer:
        stats = layers.diff_to_layer(str(upper), writer, mtime=base.BASE_EPOCH)
    info = writer.commit()
    assert info.digest == stats.digest
    return info.descriptor(spec.OCI_LAYER), stats.diff_id


def _whiteout_image(store: ImageStore, busybox: Image, tmp_path: Path) -> Image:
    """busybox + a layer adding /srv/{gone,kept}, /opq/{a,sub/b} + a layer deleting
    /srv/gone and making /opq opaque with a new /opq/new, the last two made from overlay
    upper dirs (a 0:0 character device is a whiteout, trusted.overlay.opaque=y an opaque
    directory) by layers.diff_to_layer."""
    add = tmp_path / "upper-add"
    for name, text in (("srv/gone", "gone"), ("srv/kept", "kept"), ("opq/a", "a")):
        (add / name).parent.mkdir(parents=True, exist_ok=True)
        (add / name).write_text(text + "\n")
    (add / "opq/sub").mkdir()
    (add / "opq/sub/b").write_text("b\n")
    delete = tmp_path / "upper-delete"
    (delete / "srv").mkdir(parents=True)
    os.mknod(delete / "srv/gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (delete / "opq").mkdir()
    os.setxattr(delete / "opq", "trusted.overlay.opaque", b"y")
    (delete / "opq/new").write_text("new\n")
    add_layer, add_diff = _layer(store, add)
    delete_layer, delete_diff = _layer(store, delete)
    history = (
        *busybox.config.history,
        spec.History(created=base.BASE_CREATED, created_by="berth test: add /srv and /opq"),
        spec.History(created=base.BASE_CREATED, created_by="berth test: whiteouts"),
    )
    config = spec.ImageConfig(
        architecture=busybox.config.architecture,
        os="linux",
        created=base.BASE_CREATED,
        rootfs=spec.RootFS(diff_ids=(*busybox.diff_ids, add_diff, delete_diff)),
        config=busybox.config.config,
        history=history,
    )
    return store.write_image(config, [*busybox.manifest.layers, add_layer, delete_layer], WHITEOUTS)


def test_whiteouts_round_trip_through_dockerd(
    docker: dockerd.Dockerd, store: ImageStore, busybox: Image, tmp_path: Path
) -> None:
    image = _whiteout_image(store, busybox, tmp_path)
    berth_root = _unpacked(store, image)
    assert not (berth_root / "srv/gone").exists()
    assert sorted(os.listdir(berth_root / "opq")) == ["new"]

    docker.ok("load", "-i", str(_save(store, [WHITEOUTS], tmp_path / "in.tar")))
    inspected = _inspect(docker, WHITEOUTS)
    assert inspected["Id"] == image.id
    assert tuple(inspected["RootFS"]["Layers"]) == image.diff_ids
    listed = docker.ok(*RUN, "--rm", WHITEOUTS, "find", "/srv", "/opq")
    assert sorted(listed.split()) == ["/opq", "/opq/new", "/srv", "/srv/kept"]
    shown = docker.ok(*RUN, "--rm", WHITEOUTS, "cat", "/srv/kept", "/opq/new")
    assert shown == "kept\nnew\n"

    fresh = _load_into_berth(docker, [WHITEOUTS], tmp_path)
    again = fresh.resolve(WHITEOUTS)
    assert again.id == image.id
    assert again.diff_ids == image.diff_ids
    assert again.repo_tags == (WHITEOUTS,)
    root = _unpacked(fresh, again)
    assert not (root / "srv/gone").exists()
    assert (root / "srv/kept").read_text() == "kept\n"
    assert sorted(os.listdir(root / "opq")) == ["new"]
