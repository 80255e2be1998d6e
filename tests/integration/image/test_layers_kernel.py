"""Layers and snapshots on the real kernel: overlay whiteouts (0:0 character devices, the
trusted.overlay.opaque xattr) made by apply_layer and read back by diff_to_layer, and an
overlay mount of a snapshot chain proving the kernel sees what the image spec means.

Rules: every mount happens in a child started with ``unshare --mount --propagation private``,
never in the test process's namespace; the mount dies with that child even when it fails, so
nothing can leak. The child prints what it saw as JSON; the test checks it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from berth.errors import Unsupported
from berth.image.layers import OPAQUE_XATTR, apply_layer, diff_to_layer
from berth.image.snapshots import Snapshotter, chain_id

pytestmark = pytest.mark.root

# Runs in a private mount namespace: mount, list the merged tree, make the writes asked for,
# list again. The listing leaves out dir mtimes (they move as children are written).
CHILD = r"""
import json, os, shutil, stat, subprocess, sys

def listing(root):
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                content = open(path, "rb").read().decode()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = None
            found[os.path.relpath(path, root)] = [
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content]
    return found

args = json.loads(sys.argv[1])
target = args["target"]
mount = args["mount"]
cmd = ["mount", "-t", mount["type"], "-o", ",".join(mount["options"]), mount["source"], target]
subprocess.run(cmd, check=True)
before = listing(target)
os.remove(os.path.join(target, "etc/keep"))
shutil.rmtree(os.path.join(target, "bin"))
os.mkdir(os.path.join(target, "bin"))
with open(os.path.join(target, "bin/new-tool"), "w") as f:
    f.write("new tool")
with open(os.path.join(target, "added"), "w") as f:
    f.write("added")
after = listing(target)
subprocess.run(["umount", target], check=True)
print(json.dumps({"before": before, "after": after}))
"""


def tar_of(*entries: tuple[str, str]) -> io.BytesIO:
    """('dir/', '') a directory, ('name', 'content') a file, ('.wh.x', '') a marker."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = 1_700_000_000
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = content.encode()
                info.size, info.mode, info.uid = len(data), 0o644, 4242
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


LAYER0 = (
    ("etc/", ""),
    ("etc/keep", "keep"),
    ("etc/gone", "gone"),
    ("opq/", ""),
    ("opq/old", "old"),
    ("opq/sub/", ""),
    ("opq/sub/deeper", "deeper"),
    ("bin/", ""),
    ("bin/tool", "tool"),
)
LAYER1 = (
    ("etc/.wh.gone", ""),
    ("opq/", ""),
    ("opq/.wh..wh..opq", ""),
    ("opq/new", "new"),
)


def listing(root: Path) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = Path(path).read_text() if stat.S_ISREG(st.st_mode) else None
            found[os.path.relpath(path, root)] = [
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                content,
            ]
    return found


def build_chain(snaps: Snapshotter, whiteouts: str) -> str:
    parent = None
    diff_ids: list[str] = []
    for entries in (LAYER0, LAYER1):
        work = snaps.prepare_layer(parent)
        stats = apply_layer(tar_of(*entries), work, whiteouts=whiteouts)  # type: ignore[arg-type]
        diff_ids.append(stats.diff_id)
        parent = chain_id(diff_ids)
        snaps.commit(work, parent)
    assert parent is not None
    return parent


def run_in_private_namespace(mount: Any, target: Path) -> dict[str, Any]:
    arg = json.dumps(
        {
            "target": str(target),
            "mount": {"type": mount.type, "source": mount.source, "options": list(mount.options)},
        }
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-I", "-c", CHILD, arg],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def work(tmp_path: Path) -> Any:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_overlay_whiteouts_are_made_as_overlay_spells_them(work: Path) -> None:
    target = work / "layer"
    target.mkdir()
    apply_layer(tar_of(*LAYER1), str(target))
    gone = os.lstat(target / "etc/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert (gone.st_uid, gone.st_gid) == (0, 0)
    assert os.getxattr(target / "opq", OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(target / "opq")) == ["new"]
    assert not any(name.startswith(".wh.") for _, _, files in os.walk(target) for name in files)


def test_a_whiteout_and_an_entry_of_one_layer_keep_the_entry(work: Path) -> None:
    for order in ((("x", "mine"), (".wh.x", "")), ((".wh.x", ""), ("x", "mine"))):
        target = work / f"t{len(os.listdir(work))}"
        target.mkdir()
        apply_layer(tar_of(*order), str(target))
        assert (target / "x").read_text() == "mine"


def test_overlay_mount_merges_as_the_spec_says_and_diffs_back(work: Path) -> None:
    snaps = Snapshotter(str(work / "overlay"))
    top = build_chain(snaps, "overlay")
    mounts = snaps.active("ctr", top)
    assert [m.type for m in mounts] == ["overlay"]
    target = work / "merged"
    target.mkdir()
    seen = run_in_private_namespace(mounts[0], target)

    before = seen["before"]
    assert "etc/gone" not in before and before["etc/keep"][4] == "keep"
    assert sorted(k for k in before if k.startswith("opq/")) == ["opq/new"]
    assert before["bin/tool"][2] == 4242  # owners come through

    # The container's writes, as a layer: whiteouts and an opaque dir.
    upper = snaps.stat("ctr").path
    out = io.BytesIO()
    stats = diff_to_layer(upper, out, lower_dirs=snaps.lowers(top))
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = [m.name for m in tar.getmembers()]
    assert names == ["added", "bin", "bin/.wh..wh..opq", "bin/new-tool", "etc", "etc/.wh.keep"]
    assert stats.entries == len(names)

    # Copy fallback: the same layers, applied by deletion, give the same merged tree; the
    # diff applied on top gives the tree the container saw after its writes.
    copies = Snapshotter(str(work / "copy"), mode="copy")
    copy_top = build_chain(copies, "delete")
    copies.active("ctr", copy_top)
    assert listing(Path(copies.stat("ctr").path)) == before
    layer_work = copies.prepare_layer(copy_top)
    out.seek(0)
    apply_layer(out, layer_work, whiteouts="delete")
    after = listing(Path(layer_work))
    copies.abort(layer_work)
    assert after == seen["after"]


def test_diff_translates_overlay_markers_and_drops_whiteouts_hiding_nothing(work: Path) -> None:
    upper, lower = work / "upper", work / "lower"
    (lower / "dir").mkdir(parents=True)
    (lower / "dir" / "was-here").write_text("x")
    (upper / "dir").mkdir(parents=True)
    (upper / "fresh").mkdir()
    os.setxattr(upper / "fresh", OPAQUE_XATTR, b"y")
    os.setxattr(upper / "dir", "trusted.overlay.impure", b"y")  # overlay's own: left out
    for name in ("was-here", "never-was"):
        os.mknod(upper / "dir" / name, stat.S_IFCHR | 0o600, os.makedev(0, 0))

    def names(lowers: tuple[str, ...]) -> list[str]:
        out = io.BytesIO()
        diff_to_layer(str(upper), out, lower_dirs=lowers)
        out.seek(0)
        with tarfile.open(fileobj=out) as tar:
            members = tar.getmembers()
        assert all("trusted.overlay" not in key for m in members for key in m.pax_headers)
        return [m.name for m in members]

    assert names(()) == ["dir", "dir/.wh.never-was", "dir/.wh.was-here", "fresh",
                         "fresh/.wh..wh..opq"]  # fmt: skip
    assert names((str(lower),)) == ["dir", "dir/.wh.was-here", "fresh", "fresh/.wh..wh..opq"]


def test_diff_refuses_an_upper_dir_made_with_redirects(work: Path) -> None:
    (work / "moved").mkdir()
    os.setxattr(work / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(Unsupported, match="redirect"):
        diff_to_layer(str(work), io.BytesIO())
