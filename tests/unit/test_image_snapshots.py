"""Unit tests for berth.image.snapshots on temp dirs: chain ids, the prepare/commit/active/remove
life of snapshots in both modes, mounts returned as data and nothing ever mounted."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.image.layers import Whiteouts, apply_layer
from berth.image.snapshots import Mount, Snapshotter, chain_id

D0 = "sha256:" + "a" * 64
D1 = "sha256:" + "b" * 64
D2 = "sha256:" + "c" * 64


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_chain_id_follows_the_image_spec_formula() -> None:
    # config.md: ChainID(L0) = DiffID(L0); ChainID(L0|...|Ln) = Digest(ChainID(L0|...|Ln-1) +
    # " " + DiffID(Ln)). The spec gives the formula, no numeric example: spelled out here.
    assert chain_id([D0]) == D0
    c1 = sha(f"{D0} {D1}")
    assert chain_id([D0, D1]) == c1
    assert chain_id([D0, D1, D2]) == sha(f"{c1} {D2}")
    assert chain_id([D1, D0]) != c1  # order matters


@pytest.mark.parametrize("bad", [[], ["md5:abc"], [D0, "sha256:XYZ"], ["sha256:" + "a" * 63]])
def test_chain_id_refuses_bad_diff_ids(bad: list[str]) -> None:
    with pytest.raises(InvalidArgument):
        chain_id(bad)


def layer(*files: tuple[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def mount_table() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.fixture
def snaps(tmp_path: Path) -> Snapshotter:
    return Snapshotter(str(tmp_path / "snaps"))


def commit_chain(s: Snapshotter, whiteouts: Whiteouts = "overlay") -> tuple[str, str]:
    work = s.prepare_layer(None)
    st0 = apply_layer(layer(("base", b"0"), ("shared", b"s")), work, whiteouts=whiteouts)
    c0 = chain_id([st0.diff_id])
    s.commit(work, c0)
    work = s.prepare_layer(c0)
    st1 = apply_layer(layer(("top", b"1")), work, whiteouts=whiteouts)
    c1 = chain_id([st0.diff_id, st1.diff_id])
    s.commit(work, c1)
    return c0, c1


def test_prepare_commit_active_and_mounts_as_data(snaps: Snapshotter) -> None:
    before = mount_table()
    c0, c1 = commit_chain(snaps)
    committed = {i.key: i for i in snaps.list() if i.kind == "committed"}
    assert set(committed) == {c0, c1}
    assert committed[c1].parent == c0 and committed[c0].parent is None
    assert sorted(os.listdir(committed[c1].path)) == ["top"]  # a layer holds only itself

    mounts = snaps.active("ctr1", c1)
    info = snaps.stat("ctr1")
    assert info.kind == "active" and info.parent == c1
    lowers = [snaps.stat(c1).path, snaps.stat(c0).path]
    assert mounts == [
        Mount(
            type="overlay",
            source="overlay",
            options=(
                "lowerdir=" + ":".join(lowers),
                f"upperdir={info.path}",
                "workdir=" + os.path.join(os.path.dirname(info.path), "work"),
            ),
        )
    ]
    assert snaps.mounts("ctr1") == mounts
    assert os.listdir(info.path) == []
    assert mount_table() == before  # nothing was mounted
    assert snaps.lowers(c1) == lowers


def test_active_without_layers_is_a_bind_of_its_own_dir(snaps: Snapshotter) -> None:
    mounts = snaps.active("scratch", None)
    assert mounts == [Mount("bind", snaps.stat("scratch").path, ("rbind", "rw"))]


def test_commit_of_an_existing_chain_id_keeps_the_first(snaps: Snapshotter) -> None:
    c0, _ = commit_chain(snaps)
    first = snaps.stat(c0).path
    work = snaps.prepare_layer(None)
    Path(work, "other").write_bytes(b"x")
    assert snaps.commit(work, c0) == first
    assert sorted(os.listdir(first)) == ["base", "shared"]
    assert not os.path.exists(work)
    assert os.listdir(os.path.join(snaps.root, "ingest")) == []
    assert os.listdir(os.path.join(snaps.root, "trash")) == []


def test_abort_and_unknown_work_dirs(snaps: Snapshotter, tmp_path: Path) -> None:
    work = snaps.prepare_layer(None)
    snaps.abort(work)
    assert not os.path.exists(work)
    with pytest.raises(NotFound):
        snaps.commit(work, D0)
    with pytest.raises(NotFound):
        snaps.commit(str(tmp_path), D0)


def test_errors_name_what_is_wrong(snaps: Snapshotter) -> None:
    with pytest.raises(NotFound, match=D0):
        snaps.prepare_layer(D0)
    with pytest.raises(NotFound):
        snaps.active("c", D0)
    with pytest.raises(InvalidArgument, match="key"):
        snaps.active("../escape", None)
    with pytest.raises(InvalidArgument, match="chain id"):
        snaps.commit(snaps.prepare_layer(None), "not-a-digest")
    snaps.active("c", None)
    with pytest.raises(AlreadyExists):
        snaps.active("c", None)
    with pytest.raises(NotFound):
        snaps.remove("nope")
    with pytest.raises(InvalidArgument, match="mode"):
        Snapshotter(snaps.root, mode="zfs")  # type: ignore[arg-type]


def test_remove_refuses_a_parent_in_use(snaps: Snapshotter) -> None:
    c0, c1 = commit_chain(snaps)
    snaps.active("ctr", c1)
    with pytest.raises(FailedPrecondition, match="ctr"):
        snaps.remove(c1)
    with pytest.raises(FailedPrecondition, match=c1):
        snaps.remove(c0)
    snaps.remove("ctr")
    snaps.remove(c1)
    snaps.remove(c0)
    assert snaps.list() == []
    assert os.listdir(os.path.join(snaps.root, "trash")) == []


def test_usage_counts_each_inode_once(snaps: Snapshotter) -> None:
    snaps.active("ctr", None)
    upper = Path(snaps.stat("ctr").path)
    (upper / "big").write_bytes(b"x" * 100_000)
    os.link(upper / "big", upper / "again")
    usage = snaps.usage("ctr")
    assert usage.inodes == 2  # the dir and one file
    assert 100_000 <= usage.size < 200_000


def test_copy_mode_materialises_full_trees(tmp_path: Path) -> None:
    before = mount_table()
    snaps = Snapshotter(str(tmp_path / "copy"), mode="copy")
    c0, c1 = commit_chain(snaps, "delete")
    top = Path(snaps.stat(c1).path)
    assert sorted(os.listdir(top)) == ["base", "shared", "top"]
    base = Path(snaps.stat(c0).path)
    assert os.stat(top / "base").st_ino == os.stat(base / "base").st_ino  # hard-linked
    assert snaps.lowers(c1) == [str(top)]

    mounts = snaps.active("ctr", c1)
    fs = snaps.stat("ctr").path
    assert mounts == [Mount("bind", fs, ("rbind", "rw"))]
    assert sorted(os.listdir(fs)) == ["base", "shared", "top"]
    assert os.stat(Path(fs, "base")).st_ino != os.stat(base / "base").st_ino  # a real copy
    Path(fs, "base").write_bytes(b"changed by the container")
    assert (base / "base").read_bytes() == b"0"
    assert mount_table() == before


def test_copy_mode_layer_replaces_without_touching_the_parent(tmp_path: Path) -> None:
    snaps = Snapshotter(str(tmp_path / "copy"), mode="copy")
    c0, _ = commit_chain(snaps, "delete")
    work = snaps.prepare_layer(c0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("base")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"new"))
        tar.addfile(tarfile.TarInfo(".wh.shared"))
    buf.seek(0)
    apply_layer(buf, work, whiteouts="delete")
    c2 = chain_id([c0, D2])
    top = Path(snaps.commit(work, c2))
    assert sorted(os.listdir(top)) == ["base"]
    assert (top / "base").read_bytes() == b"new"
    parent = Path(snaps.stat(c0).path)
    assert (parent / "base").read_bytes() == b"0" and (parent / "shared").exists()


def test_root_with_a_colon_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="root"):
        Snapshotter(str(tmp_path / "a:b"))
