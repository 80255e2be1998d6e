"""The image store on the real kernel: the busybox base image unpacked into overlay snapshots
and mounted, layer sharing between images, a whiteout layer hiding a file, a tampered layer
refused, and ``commit_container`` turning a container's writes back into a layer.

Rules: every mount happens in a child started with ``unshare --mount --propagation private``,
never in the test process's namespace; the mount dies with that child even when it fails, so
nothing can leak. The child prints what it saw as JSON; the test checks it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.image import base
from berth.image.snapshots import Mount
from berth.image.store import Image, ImageStore
from berth.spec import image as spec
from berth.spec.value import replace

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.access(base.BUSYBOX, os.X_OK), reason="needs busybox-static"),
]

# Mounts the container's rootfs, reports what is there, runs the writes asked for, unmounts.
CHILD = r"""
import json, os, subprocess, sys

args = json.loads(sys.argv[1])
target, mount = args["target"], args["mount"]
opts = ",".join(mount["options"])
subprocess.run(["mount", "-t", mount["type"], "-o", opts, mount["source"], target], check=True)
try:
    seen = {path: os.path.lexists(os.path.join(target, path)) for path in args["paths"]}
    out = subprocess.run(["chroot", target, "/bin/busybox", "echo", "hello from busybox"],
                         capture_output=True, text=True)
    for path, text in args["write"].items():
        with open(os.path.join(target, path), "w") as f:
            f.write(text)
    for path in args["delete"]:
        os.remove(os.path.join(target, path))
finally:
    subprocess.run(["umount", target], check=True)
print(json.dumps({"seen": seen, "echo": out.stdout.strip(), "rc": out.returncode}))
"""


def in_private_namespace(
    mounts: list[Mount],
    target: Path,
    paths: list[str],
    write: dict[str, str] | None = None,
    delete: list[str] | None = None,
) -> dict[str, Any]:
    [mount] = mounts
    arg = {
        "target": str(target),
        "mount": {"type": mount.type, "source": mount.source, "options": list(mount.options)},
        "paths": paths,
        "write": write or {},
        "delete": delete or [],
    }
    target.mkdir(exist_ok=True)
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD]
    argv = [*cmd, json.dumps(arg)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def layer_deleting(path: str) -> bytes:
    parent, name = os.path.split(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"{parent}/.wh.{name}")
        info.mtime = 1_700_000_000
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def on_top(store: ImageStore, parent: Image, layer: bytes, ref: str, diff_id: str = "") -> Image:
    blob = store.content.put_bytes(layer)
    config = replace(
        parent.config,
        rootfs=spec.RootFS(diff_ids=(*parent.diff_ids, diff_id or blob.digest)),
        history=(*parent.config.history, spec.History(created_by="delete a file")),
    )
    layers = (*parent.manifest.layers, blob.descriptor(spec.OCI_LAYER))
    return store.write_image(config, layers, ref)


def committed(store: ImageStore) -> list[str]:
    return sorted(os.listdir(os.path.join(store.snapshots.root, "committed")))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    made = ImageStore(str(tmp_path / "images"))
    assert made.snapshots.mode == "overlay"
    return made


def test_busybox_unpacked_into_overlay_and_mounted(store: ImageStore, tmp_path: Path) -> None:
    image = base.base_image(store, "busybox")
    mounts = store.container_mounts(image, "c1")
    assert mounts[0].type == "overlay"
    seen = in_private_namespace(mounts, tmp_path / "rootfs", ["bin/busybox", "bin/sh", "etc"])
    assert seen["seen"] == {"bin/busybox": True, "bin/sh": True, "etc": True}
    assert seen["echo"] == "hello from busybox" and seen["rc"] == 0
    assert committed(store) == [image.diff_ids[0].removeprefix("sha256:")]
    store.remove_container("c1")


def test_a_whiteout_layer_shares_the_base_and_hides_a_file(
    store: ImageStore, tmp_path: Path
) -> None:
    busybox = base.busybox_image(store)
    store.unpack(busybox)
    slim = on_top(store, busybox, layer_deleting("etc/hostname"), "slim")
    top = store.unpack(slim)
    assert len(committed(store)) == 2  # the busybox snapshot once, plus the new layer
    assert store.snapshots.stat(top or "").parent == busybox.chain_id
    paths = ["etc/hostname", "etc/passwd", "bin/busybox"]
    seen = in_private_namespace(store.container_mounts(slim, "slim-1"), tmp_path / "a", paths)
    assert seen["seen"] == {"etc/hostname": False, "etc/passwd": True, "bin/busybox": True}
    seen = in_private_namespace(store.container_mounts(busybox, "bb-1"), tmp_path / "b", paths)
    assert seen["seen"]["etc/hostname"] is True
    for key in ("slim-1", "bb-1"):
        store.remove_container(key)
    usage = store.disk_usage()
    assert usage.total_size == store.content.usage()
    assert {u.shared_size for u in usage.images} == {busybox.manifest.layers[0].size}


def test_a_layer_not_matching_its_diff_id_is_refused(store: ImageStore) -> None:
    busybox = base.busybox_image(store)
    store.unpack(busybox)
    before = committed(store)
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    tampered = on_top(store, busybox, layer_deleting("etc/passwd"), "tampered", diff_id=wrong)
    with pytest.raises(InvalidArgument, match="diffID"):
        store.unpack(tampered)
    assert committed(store) == before
    assert os.listdir(os.path.join(store.snapshots.root, "ingest")) == []
    with pytest.raises(InvalidArgument, match="diffID"):
        store.container_mounts(tampered, "t-1")
    assert [i.key for i in store.snapshots.list() if i.kind == "active"] == []


def test_commit_turns_a_containers_writes_into_a_layer(store: ImageStore, tmp_path: Path) -> None:
    busybox = base.busybox_image(store)
    mounts = store.container_mounts(busybox, "work")
    in_private_namespace(
        mounts, tmp_path / "w", [], write={"root/note": "written"}, delete=["etc/hostname"]
    )
    changes = replace(busybox.config.config, cmd=("cat", "/root/note"))
    image = store.commit_container("work", busybox, "noted:1", changes, comment="a note")
    assert image.repo_tags == ("noted:1",)
    assert image.config.config.cmd == ("cat", "/root/note")
    assert len(image.diff_ids) == 2 and image.config.history[-1].comment == "a note"
    with store.content.open(image.manifest.layers[-1].digest) as f, tarfile.open(fileobj=f) as t:
        names = set(t.getnames())
    assert {"root/note", "etc/.wh.hostname"} <= names
    store.remove_container("work")
    paths = ["root/note", "etc/hostname"]
    seen = in_private_namespace(store.container_mounts(image, "n-1"), tmp_path / "n", paths)
    assert seen["seen"] == {"root/note": True, "etc/hostname": False}
    store.remove_container("n-1")
