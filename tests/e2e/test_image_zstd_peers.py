"""zstd layers against a peer: skopeo (Go's zstd) recompresses Berth's busybox to zstd in an
OCI layout and Berth loads it, diffIDs checked, unpacking to the same tree; skopeo reads a zstd
layer Berth wrote (``diff_to_layer(compress="zstd")``) and recompresses it to gzip with the same
diffID. skopeo works on OCI layout dirs only: no root, no storage, nothing leaves the machine.
"""

from __future__ import annotations

import filecmp
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from berth.image import archive, base
from berth.image.layers import diff_to_layer
from berth.image.store import ImageStore
from berth.spec import image as spec

SKOPEO = shutil.which("skopeo")
pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (make install adds it)"),
    pytest.mark.skipif(not os.access(base.BUSYBOX, os.X_OK), reason="needs busybox-static"),
]
TIMEOUT = 60.0


def skopeo_copy(src: str, dst: str, compression: str) -> None:
    assert SKOPEO is not None
    proc = subprocess.run(
        [SKOPEO, "copy", "--dest-compress-format", compression, src, dst],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def same_tree(a: str, b: str) -> None:
    cmp = filecmp.dircmp(a, b)
    stack = [cmp]
    while stack:
        c = stack.pop()
        assert not (c.left_only or c.right_only or c.diff_files or c.funny_files), c.report()
        stack.extend(c.subdirs.values())


def test_skopeo_zstd_both_ways(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path / "a"), "copy")
    busybox = base.busybox_image(store)
    archive.save(store, ["busybox"], tmp_path / "oci", "oci")
    index = json.loads((tmp_path / "oci/index.json").read_text())
    name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    skopeo_copy(f"oci:{tmp_path / 'oci'}:{name}", f"oci:{tmp_path / 'z'}:{name}", "zstd")

    other = ImageStore(str(tmp_path / "b"), "copy")
    assert archive.load(other, tmp_path / "z") == ["busybox:latest"]
    loaded = other.resolve("busybox")
    assert [d.media_type for d in loaded.manifest.layers] == [spec.OCI_LAYER_ZSTD]
    assert loaded.id == busybox.id  # the same config: diffIDs unchanged, and checked on load
    top, top0 = other.unpack(loaded), store.unpack(busybox)
    assert top is not None and top0 is not None
    same_tree(other.snapshots.stat(top0).path, other.snapshots.stat(top).path)

    # a layer Berth compressed, read by skopeo (decompressed and gzipped again)
    buf = io.BytesIO()
    stats = diff_to_layer(other.snapshots.stat(top).path, buf, compress="zstd", mtime=0)
    layer = other.content.put_bytes(buf.getvalue()).descriptor(spec.OCI_LAYER_ZSTD)
    config = spec.ImageConfig(
        architecture=busybox.config.architecture,
        os="linux",
        rootfs=spec.RootFS(diff_ids=(stats.diff_id,)),
        config=spec.ContainerConfig(cmd=("sh",)),
    )
    other.write_image(config, [layer], "ours:zstd")
    archive.save(other, ["ours:zstd"], tmp_path / "ours", "oci")
    ref = "docker.io/library/ours:zstd"
    skopeo_copy(f"oci:{tmp_path / 'ours'}:{ref}", f"oci:{tmp_path / 'gz'}:{ref}", "gzip")
    third = ImageStore(str(tmp_path / "c"), "copy")
    assert archive.load(third, tmp_path / "gz") == ["ours:zstd"]
    gz = third.resolve("ours:zstd")
    assert [d.media_type for d in gz.manifest.layers] == [spec.OCI_LAYER_GZIP]
    assert gz.config.rootfs.diff_ids == (stats.diff_id,)
