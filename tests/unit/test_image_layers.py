"""Unit tests for berth.image.layers: layer tars built in memory with tarfile, applied to temp
dirs; diffs of temp trees. No root needed here: whiteouts as overlay spells them (0:0 character
devices, trusted.* xattrs) are made and checked in tests/integration/image/test_layers_kernel.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.image.layers import (
    MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_GZIP,
    apply_layer,
    diff_to_layer,
)

ROOT = os.geteuid() == 0


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: Any) -> tuple:
    return (name, kind, data, attrs)


def make_tar(*entries: tuple, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, attrs in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            info.mtime = attrs.pop("mtime", 1_700_000_000)
            xattrs = attrs.pop("xattrs", {})
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
            for key, val in attrs.items():
                setattr(info, key, val)
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def apply(data: bytes, target: Path, **kwargs: Any) -> Any:
    return apply_layer(io.BytesIO(data), str(target), **kwargs)


def tree(root: Path) -> dict[str, tuple]:
    """Everything a layer carries, per path: type, mode, owner, mtime (not for dirs, which
    change as children come and go), content or link target, user xattrs."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISREG(st.st_mode):
                content: object = Path(path).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = st.st_rdev
            xattrs = sorted(
                (k, os.getxattr(path, k, follow_symlinks=False))
                for k in os.listxattr(path, follow_symlinks=False)
                if k.startswith("user.")
            )
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            found[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                          st.st_gid, mtime, content, xattrs)  # fmt: skip
    return found


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return tar.getmembers()


# --------------------------------------------------------------------------- apply


def test_apply_restores_every_kind_of_entry_with_its_attributes(tmp_path: Path) -> None:
    data = make_tar(
        entry("bin", tarfile.DIRTYPE, mode=0o750, mtime=1_600_000_000),
        entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1234, gid=99),
        entry("bin/same", tarfile.LNKTYPE, linkname="bin/tool"),
        entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o640),
        entry("etc/conf", data=b"x=1\n", xattrs={"user.note": "hello"}, mtime=1_500_000_000),
    )
    target = tmp_path / "t"
    target.mkdir()
    stats = apply(data, target)

    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert stats.digest == stats.diff_id and stats.size == stats.compressed_size == len(data)
    assert stats.media_type == MEDIA_TYPE_TAR and stats.entries == 6
    tool = os.lstat(target / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755  # setuid survives the chown
    if ROOT:
        assert (tool.st_uid, tool.st_gid) == (1234, 99)
    assert os.lstat(target / "bin/same").st_ino == tool.st_ino
    assert os.readlink(target / "bin/sh") == "/bin/busybox"  # absolute target: data
    assert stat.S_ISFIFO(os.lstat(target / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(target / "run/fifo").st_mode) == 0o640
    bindir = os.lstat(target / "bin")
    assert stat.S_IMODE(bindir.st_mode) == 0o750 and bindir.st_mtime == 1_600_000_000
    assert os.getxattr(target / "etc/conf", "user.note") == b"hello"
    assert os.lstat(target / "etc/conf").st_mtime == 1_500_000_000
    assert stat.S_IMODE(os.lstat(target / "run").st_mode) == 0o755  # implicit parent


def test_gzip_is_detected_and_both_digests_are_reported(tmp_path: Path) -> None:
    raw = make_tar(entry("a", data=b"A" * 5000))
    zipped = gzip.compress(raw, mtime=0)
    stats = apply(zipped, tmp_path)
    assert stats.media_type == MEDIA_TYPE_TAR_GZIP
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert stats.digest == "sha256:" + hashlib.sha256(zipped).hexdigest()
    assert (stats.size, stats.compressed_size) == (len(raw), len(zipped))
    assert (tmp_path / "a").read_bytes() == b"A" * 5000


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 100, b"\x1f\x8bgarbage"])
def test_garbage_is_invalid(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="layer tar"):
        apply(data, tmp_path)


def test_existing_path_is_replaced_never_written_into(tmp_path: Path) -> None:
    """A layer unlinks and recreates: a hard-linked copy of a parent snapshot stays intact."""
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "f").write_bytes(b"old")
    target = tmp_path / "t"
    target.mkdir()
    os.link(parent / "f", target / "f")
    (target / "d").mkdir()
    (target / "d" / "x").write_bytes(b"x")
    apply(make_tar(entry("f", data=b"new"), entry("d", data=b"file now")), target)
    assert (parent / "f").read_bytes() == b"old"
    assert (target / "f").read_bytes() == b"new"
    assert (target / "d").read_bytes() == b"file now"


# --------------------------------------------------------------------------- hostile tars


@pytest.mark.parametrize(
    "hostile",
    [
        [entry("../escaped", data=b"x")],
        [entry("a/../../escaped", data=b"x")],
        [entry("/abs/escaped", data=b"x")],
        [entry("link", tarfile.SYMTYPE, linkname="{outside}"), entry("link/escaped", data=b"x")],
        [entry("link", tarfile.SYMTYPE, linkname=".."), entry("link/escaped", data=b"x")],
        [entry("hl", tarfile.LNKTYPE, linkname="../outside/secret")],
        [
            entry("link", tarfile.SYMTYPE, linkname="{outside}"),
            entry("hl", tarfile.LNKTYPE, linkname="link/secret"),
        ],
        [entry("link", tarfile.SYMTYPE, linkname="{outside}"), entry("link/.wh.secret")],
        [entry("dir/.wh..")],
    ],
    ids=[
        "dotdot",
        "dotdot-inner",
        "absolute",
        "symlink-then-write",
        "symlink-dotdot",
        "hardlink-dotdot",
        "hardlink-through-symlink",
        "whiteout-through-symlink",
        "whiteout-of-parent",
    ],
)
def test_hostile_tar_is_refused_naming_the_entry(tmp_path: Path, hostile: list[tuple]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    target = tmp_path / "t"
    target.mkdir()
    entries = [
        (name, kind, data, {k: str(v).format(outside=outside) for k, v in attrs.items()})
        for name, kind, data, attrs in hostile
    ]
    with pytest.raises(InvalidArgument, match=r"layer entry '[^']*'"):
        apply(make_tar(*entries), target)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    assert not (tmp_path / "escaped").exists()


def test_a_file_replacing_a_symlink_does_not_follow_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file").write_bytes(b"keep")
    target = tmp_path / "t"
    target.mkdir()
    layer = make_tar(
        entry("x", tarfile.SYMTYPE, linkname=str(outside / "file")), entry("x", data=b"mine")
    )
    apply(layer, target)
    assert (outside / "file").read_bytes() == b"keep"
    assert not (target / "x").is_symlink() and (target / "x").read_bytes() == b"mine"


# --------------------------------------------------------------------------- delete mode


def populated(tmp_path: Path) -> Path:
    target = tmp_path / "t"
    for rel in ("etc/keep", "etc/gone", "opq/old", "opq/sub/deep", "nested/b/c/bar"):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(rel.encode())
    return target


def test_delete_mode_removes_whited_out_paths_and_empties_opaque_dirs(tmp_path: Path) -> None:
    target = populated(tmp_path)
    layer = make_tar(
        entry("etc/.wh.gone"),
        entry("opq/new", data=b"new"),  # before its dir's marker: still kept (same layer)
        entry("opq/.wh..wh..opq"),
        entry("nested/.wh..wh..opq"),  # the spec's example: a/b/c/bar hidden, foo kept
        entry("nested/b/c/foo", data=b"foo"),
        entry(".wh.nothing-there"),
    )
    stats = apply(layer, target, whiteouts="delete")
    assert stats.entries == 6
    files = {k for k, v in tree(target).items() if v[0] == stat.S_IFREG}
    assert files == {"etc/keep", "opq/new", "nested/b/c/foo"}


def test_a_whiteout_never_hides_an_entry_of_its_own_layer(tmp_path: Path) -> None:
    target = populated(tmp_path)
    layer = make_tar(entry("etc/gone", data=b"again"), entry("etc/.wh.gone"))
    apply(layer, target, whiteouts="delete")
    assert (target / "etc/gone").read_bytes() == b"again"
    # Whiteout first, then the entry: the entry replaces the lower file.
    layer = make_tar(entry("etc/.wh.keep"), entry("etc/keep", data=b"new"))
    apply(layer, target, whiteouts="delete")
    assert (target / "etc/keep").read_bytes() == b"new"


def test_aufs_metadata_entries_are_skipped(tmp_path: Path) -> None:
    target = populated(tmp_path)
    apply(make_tar(entry(".wh..wh.plnk", tarfile.DIRTYPE)), target, whiteouts="delete")
    assert not (target / ".wh..wh.plnk").exists() and (target / "etc/keep").exists()


def test_bad_whiteouts_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="whiteouts"):
        apply(make_tar(entry("a")), tmp_path, whiteouts="nope")


# --------------------------------------------------------------------------- diff


def build_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o4755)
    os.link(root / "bin" / "tool", root / "bin" / "tool2")
    os.symlink("/bin/busybox", root / "bin" / "sh")
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_bytes(b"x=1\n")
    os.setxattr(root / "etc" / "conf", "user.note", b"\xffbinary")
    os.mkfifo(root / "etc" / "fifo")
    long_dir = root / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "file").write_bytes(b"deep")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (1_650_000_000, 1_650_000_000), follow_symlinks=False)


def diff(upper: Path, **kwargs: Any) -> tuple[bytes, Any]:
    out = io.BytesIO()
    stats = diff_to_layer(str(upper), out, **kwargs)
    return out.getvalue(), stats


def test_diff_round_trips_through_apply(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    build_tree(upper)
    data, stats = diff(upper)
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest() == stats.digest
    assert stats.size == len(data) and stats.entries == 10
    names = [m.name for m in members(data)]
    assert names == sorted(names, key=lambda n: n.split("/")) and "bin/tool2" in names
    assert next(m for m in members(data) if m.name == "bin/tool2").islnk()
    copy = tmp_path / "copy"
    copy.mkdir()
    apply(data, copy)
    assert tree(copy) == tree(upper)


def test_diff_headers_carry_no_names_and_pax_only_where_needed(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    build_tree(upper)
    data, _ = diff(upper)
    for member in members(data):
        assert member.uname == member.gname == ""
        keys = set(member.pax_headers)
        if member.name == "etc/conf":  # a binary value: PAX says so with hdrcharset
            assert keys == {"SCHILY.xattr.user.note", "hdrcharset"}
        elif len(member.name) > 100:
            assert keys == {"path"}
        else:
            assert keys == set(), member.name


def test_diff_is_deterministic(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    build_tree(one)
    first, _ = diff(one)
    second, _ = diff(one)
    assert first == second
    build_tree(two)
    os.utime(two / "etc" / "conf", (5, 5))  # another time: only a fixed mtime evens it out
    assert diff(one)[1].diff_id != diff(two)[1].diff_id
    assert diff(one, mtime=0)[1].diff_id == diff(two, mtime=0)[1].diff_id
    assert all(m.mtime == 0 for m in members(diff(two, mtime=0)[0]))


def test_diff_gzip_is_reproducible_and_its_diff_id_is_the_plain_tar(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    build_tree(upper)
    plain, plain_stats = diff(upper)
    zipped, stats = diff(upper, compress=True)
    assert zipped[:2] == b"\x1f\x8b" and zipped[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert diff(upper, compress=True)[0] == zipped
    assert gzip.decompress(zipped) == plain
    assert stats.diff_id == plain_stats.diff_id
    assert stats.digest == "sha256:" + hashlib.sha256(zipped).hexdigest()
    assert stats.media_type == MEDIA_TYPE_TAR_GZIP and stats.compressed_size == len(zipped)


def test_diff_of_a_missing_dir_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="upper_dir"):
        diff(tmp_path / "missing")
