"""Unit tests for zstd-compressed layers (``application/vnd.oci.image.layer.v1.tar+zstd``):
apply and diff round trips with digests and diffIDs checked, multi-frame and skippable-frame
streams, truncated or corrupt streams refused leaving nothing, bounded memory on a zstd bomb,
deterministic output of ``diff_to_layer(compress="zstd")``, ``archive.load`` of zstd layers in
both formats, and ``zstandard`` imported only when a zstd layer is seen."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from test_image_archive import config_for, sha, tar_bytes

from berth.errors import InvalidArgument
from berth.image import archive
from berth.image.layers import (
    MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_ZSTD,
    LayerStats,
    ZstdDataError,
    ZstdReader,
    apply_layer,
    diff_to_layer,
)
from berth.image.store import Image, ImageStore
from berth.spec import image as spec

SKIPPABLE = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"berth"  # what zstd:chunked adds


def zstd(data: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def files(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return out


# A layer with enough data to span several zstd blocks and reads.
RAW = tar_bytes(
    ("etc/", None),
    ("etc/conf", b"key=value\n" * 3000),
    ("bin/", None),
    ("bin/blob", os.urandom(300_000)),
)
EXPECTED = {
    "etc": None,
    "etc/conf": b"key=value\n" * 3000,
    "bin": None,
    "bin/blob": None,  # random: compared by size below
}


def check_tree(root: Path) -> None:
    got = files(root)
    assert set(got) == set(EXPECTED)
    assert got["etc/conf"] == EXPECTED["etc/conf"]
    assert got["bin/blob"] is not None and len(got["bin/blob"]) == 300_000


# --------------------------------------------------------------------------- apply


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(zstd, id="one-frame"),
        pytest.param(lambda raw: zstd(raw, 19), id="level-19"),
        pytest.param(
            lambda raw: zstd(raw[:70_000]) + SKIPPABLE + zstd(raw[70_000:]) + SKIPPABLE,
            id="frames-and-skippable-frames",
        ),
        pytest.param(
            lambda raw: b"".join(zstd(raw[i : i + 4096]) for i in range(0, len(raw), 4096)),
            id="many-small-frames",
        ),
    ],
)
def test_apply_checks_diff_id_and_digest(tmp_path: Path, make: Callable[[bytes], bytes]) -> None:
    compressed = make(RAW)
    stats = apply_layer(io.BytesIO(compressed), str(tmp_path))
    assert stats.media_type == MEDIA_TYPE_TAR_ZSTD
    assert stats.diff_id == sha(RAW) and stats.size == len(RAW)
    assert stats.digest == sha(compressed) and stats.compressed_size == len(compressed)
    check_tree(tmp_path)


def test_apply_of_a_stream_written_without_content_size(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(write_content_size=False).stream_writer(
        buf, closefd=False
    ) as writer:
        for i in range(0, len(RAW), 10_000):
            writer.write(RAW[i : i + 10_000])
    stats = apply_layer(io.BytesIO(buf.getvalue()), str(tmp_path), whiteouts="delete")
    assert (stats.diff_id, stats.digest) == (sha(RAW), sha(buf.getvalue()))
    check_tree(tmp_path)


def cuts(compressed: bytes) -> list[int]:
    return [5, 20, len(compressed) // 3, len(compressed) // 2, len(compressed) - 4]


def test_truncated_stream_is_invalid_wherever_it_is_cut(tmp_path: Path) -> None:
    compressed = zstd(RAW)
    for i, cut in enumerate(cuts(compressed)):
        target = tmp_path / str(i)
        target.mkdir()
        with pytest.raises(InvalidArgument, match=r"not a valid \(zstd\) tar.*truncated"):
            apply_layer(io.BytesIO(compressed[:cut]), str(target))
    # the end of the last frame missing, even after a complete frame and a skippable one
    two = zstd(RAW[:70_000]) + SKIPPABLE + zstd(RAW[70_000:])
    with pytest.raises(InvalidArgument, match="truncated"):
        apply_layer(io.BytesIO(two[:-1]), str(tmp_path))


def test_corrupt_stream_and_trailing_garbage_are_invalid(tmp_path: Path) -> None:
    compressed = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(RAW))
    compressed[-2] ^= 0xFF  # in the frame's checksum
    with pytest.raises(InvalidArgument, match=r"not a valid \(zstd\) tar.*checksum"):
        apply_layer(io.BytesIO(bytes(compressed)), str(tmp_path), whiteouts="delete")
    with pytest.raises(InvalidArgument, match=r"not a valid \(zstd\) tar"):
        apply_layer(io.BytesIO(zstd(RAW) + b"garbage!"), str(tmp_path))
    with pytest.raises(InvalidArgument, match=r"not a valid \(zstd\) tar"):
        apply_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100), str(tmp_path))


def test_reader_streams_a_bomb_in_bounded_memory() -> None:
    size = 512 << 20  # 512 MiB of zeros: a few KiB of zstd
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(buf, closefd=False) as writer:
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            writer.write(block)
    compressed = buf.getvalue()
    assert len(compressed) < 1 << 20
    reader = ZstdReader(io.BytesIO(compressed))
    total = largest = 0
    tracemalloc.start()
    try:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            largest = max(largest, len(chunk))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == size and largest <= 1 << 20
    assert peak < 16 << 20, peak


def test_reader_read_all_and_errors() -> None:
    assert ZstdReader(io.BytesIO(zstd(b"abc") + zstd(b"def"))).read() == b"abcdef"
    assert ZstdReader(io.BytesIO(b"")).read() == b""
    with pytest.raises(ZstdDataError, match="truncated"):
        ZstdReader(io.BytesIO(zstd(b"abc" * 100)[:-3])).read()


# --------------------------------------------------------------------------- diff


def make_upper(root: Path) -> Path:
    upper = root / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/conf").write_bytes(b"key=value\n" * 3000)
    (upper / "bin").mkdir()
    (upper / "bin/blob").write_bytes(os.urandom(300_000))
    os.symlink("conf", upper / "etc/link")
    return upper


def diff(upper: Path, compress: Any = False) -> tuple[bytes, LayerStats]:
    buf = io.BytesIO()
    stats = diff_to_layer(str(upper), buf, mtime=0, compress=compress)
    return buf.getvalue(), stats


def test_diff_to_zstd_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    upper = make_upper(tmp_path)
    compressed, stats = diff(upper, compress="zstd")
    plain, plain_stats = diff(upper)
    assert compressed[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(compressed) == plain
    assert stats.media_type == MEDIA_TYPE_TAR_ZSTD
    assert plain_stats.media_type == MEDIA_TYPE_TAR
    assert stats.diff_id == plain_stats.diff_id == sha(plain)
    assert stats.size == len(plain)
    assert stats.digest == sha(compressed)
    assert stats.compressed_size == len(compressed)
    params = zstandard.get_frame_parameters(compressed)
    assert params.has_checksum and params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    # the same tree, the same bytes, run after run
    assert diff(upper, compress="zstd")[0] == compressed
    target = tmp_path / "applied"
    target.mkdir()
    applied = apply_layer(io.BytesIO(compressed), str(target), whiteouts="delete")
    assert (applied.diff_id, applied.digest) == (stats.diff_id, stats.digest)
    assert files(target) == files(upper)
    assert os.readlink(target / "etc/link") == "conf"


def test_diff_compress_values(tmp_path: Path) -> None:
    upper = make_upper(tmp_path)
    assert diff(upper, compress=True)[0] == diff(upper, compress="gzip")[0]
    with pytest.raises(InvalidArgument, match="compress"):
        diff(upper, compress="xz")


# --------------------------------------------------------------------------- archive, store

LAYER = tar_bytes(("etc/", None), ("etc/conf", b"conf" * 2000), ("hello", b"hello"))


def zstd_image(store: ImageStore, blobs: list[bytes], raws: list[bytes], ref: str) -> Image:
    descs = [store.content.put_bytes(b).descriptor(spec.OCI_LAYER_ZSTD) for b in blobs]
    return store.write_image(config_for([sha(raw) for raw in raws]), descs, ref)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "a"), "copy")


@pytest.fixture
def other(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "b"), "copy")


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_load_of_zstd_layers_checks_diff_ids(
    store: ImageStore, other: ImageStore, fmt: archive.Format
) -> None:
    blob = zstd(LAYER)
    image = zstd_image(store, [blob], [LAYER], "zapp:1")
    buf = io.BytesIO()
    archive.save(store, ["zapp:1"], buf, fmt)
    assert archive.load(other, io.BytesIO(buf.getvalue())) == ["zapp:1"]
    loaded = other.resolve("zapp:1")
    assert loaded.id == image.id
    assert [(d.media_type, d.digest) for d in loaded.manifest.layers] == [
        (spec.OCI_LAYER_ZSTD, sha(blob))
    ]
    top = other.unpack(loaded)
    assert top is not None
    fs = Path(other.snapshots.stat(top).path)
    assert (fs / "etc/conf").read_bytes() == b"conf" * 2000

    # a config whose diffID is not the zstd layer's content is refused
    liar = ImageStore(str(Path(store.root).parent / "liar"), "copy")
    zstd_image(liar, [blob], [LAYER + b"\0" * 512], "zapp:1")
    buf = io.BytesIO()
    archive.save(liar, ["zapp:1"], buf, fmt)
    fresh = ImageStore(str(Path(store.root).parent / "fresh"), "copy")
    with pytest.raises(InvalidArgument, match=r"its content has diffID " + sha(LAYER)):
        archive.load(fresh, io.BytesIO(buf.getvalue()))
    assert fresh.list() == []


def test_docker_format_zstd_layer_gets_the_zstd_media_type(other: ImageStore) -> None:
    blob = zstd(LAYER)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(LAYER)]},
            "config": {"Cmd": ["sh"]},
        }
    ).encode()
    hex_ = sha(config).removeprefix("sha256:")
    manifest = [{"Config": f"{hex_}.json", "RepoTags": ["old:z"], "Layers": ["l1/layer.tar"]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            ("manifest.json", json.dumps(manifest).encode()),
            (f"{hex_}.json", config),
            ("l1/layer.tar", blob),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert archive.load(other, io.BytesIO(buf.getvalue())) == ["old:z"]
    layers = other.resolve("old:z").manifest.layers
    assert [(d.media_type, d.digest) for d in layers] == [(spec.OCI_LAYER_ZSTD, sha(blob))]


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_truncated_zstd_layer_is_refused_naming_it_and_leaves_no_image(
    store: ImageStore, other: ImageStore, fmt: archive.Format
) -> None:
    cut = zstd(LAYER)[:-10]
    zstd_image(store, [cut], [LAYER], "zapp:1")
    buf = io.BytesIO()
    archive.save(store, ["zapp:1"], buf, fmt)
    with pytest.raises(InvalidArgument, match=rf"layer {sha(cut)}: not valid zstd.*truncated"):
        archive.load(other, io.BytesIO(buf.getvalue()))
    assert other.list() == []


def test_unpack_of_a_truncated_zstd_layer_leaves_no_snapshot(store: ImageStore) -> None:
    good = zstd(LAYER)
    cut = good[: len(good) // 2]
    image = zstd_image(store, [good, cut], [LAYER, LAYER], "zapp:1")
    with pytest.raises(InvalidArgument, match="truncated"):
        store.unpack(image)
    # the first layer is committed (it is whole); nothing of the second is left anywhere
    assert [i.key for i in store.snapshots.list()] == [sha(LAYER)]
    assert os.listdir(os.path.join(store.snapshots.root, "ingest")) == []


def test_zstandard_is_imported_only_when_a_zstd_layer_is_seen(tmp_path: Path) -> None:
    gz = tmp_path / "gz"
    zs = tmp_path / "zs"
    gz.mkdir()
    zs.mkdir()
    code = f"""
import gzip, io, sys
from berth.image import archive, layers, store
layers.apply_layer(io.BytesIO(gzip.compress({LAYER!r})), {str(gz)!r})
layers.diff_to_layer({str(gz)!r}, io.BytesIO(), compress=True)
assert "zstandard" not in sys.modules, "imported before any zstd layer"
layers.apply_layer(io.BytesIO({zstd(LAYER)!r}), {str(zs)!r})
assert "zstandard" in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)
