"""Unit tests for berth.image.archive on temp stores (copy snapshots unless a test says
otherwise, nothing mounted): save -> load round trips in both formats keep tags and digests;
Docker's older layouts (per-layer dirs, symlinked layers, gzip, a repositories file) load with
a manifest written by us; tampered blobs are refused and leave no reference; whiteouts survive
a round trip; a container's merged filesystem is exported from its snapshot dirs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from berth.errors import InvalidArgument, NotFound
from berth.image import archive, base, export
from berth.image.store import Image, ImageStore
from berth.spec import image as spec

MTIME = 1_700_000_000


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(*entries: tuple[str, bytes | None]) -> bytes:
    """A tar of files (bytes) and directories (None, name ending in '/')."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(diff_ids: list[str], label: str = "") -> spec.ImageConfig:
    return spec.ImageConfig(
        architecture="amd64",
        os="linux",
        created="2024-05-01T10:00:00Z",
        rootfs=spec.RootFS(diff_ids=tuple(diff_ids)),
        config=spec.ContainerConfig(cmd=("sh",), labels={"l": label} if label else {}),
    )


def make_image(store: ImageStore, layers: list[bytes], ref: str | None, label: str = "") -> Image:
    descs = [store.content.put_bytes(data).descriptor(spec.OCI_LAYER) for data in layers]
    return store.write_image(config_for([sha(d) for d in layers], label), descs, ref)


BASE = tar_bytes(("etc/", None), ("etc/base", b"base" * 100), ("keep/", None), ("keep/a", b"a"))
# layer 2 deletes etc/base, makes keep/ opaque and puts a new file in it
WHITEOUT_LAYER = tar_bytes(
    ("etc/.wh.base", b""), ("keep/", None), ("keep/.wh..wh..opq", b""), ("keep/new", b"new")
)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "a"), "copy")


@pytest.fixture
def other(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "b"), "copy")


def saved(store: ImageStore, refs: list[str], fmt: archive.Format = "docker") -> bytes:
    buf = io.BytesIO()
    archive.save(store, refs, buf, fmt)
    return buf.getvalue()


def members(data: bytes) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name] = f.read() if f else None
    return out


def retar(files: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def tree(root: str) -> dict[str, tuple[str, bytes | str]]:
    """Every path under root: its kind and content (file bytes, link target, dir mode)."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                out[rel] = ("file", Path(path).read_bytes())
    return out


def unpacked(store: ImageStore, ref: str) -> dict[str, tuple[str, bytes | str]]:
    top = store.unpack(store.resolve(ref))
    assert top is not None
    return tree(store.snapshots.stat(top).path)


# --------------------------------------------------------------------------- round trips


def test_docker_save_load_keeps_tags_and_digests(store: ImageStore, other: ImageStore) -> None:
    one = make_image(store, [BASE], "busybox")
    store.tag("busybox", "example.com/team/app:v1")
    two = make_image(store, [BASE, WHITEOUT_LAYER], "two:x", label="2")
    untagged = make_image(store, [WHITEOUT_LAYER], None, label="3")
    data = saved(store, ["busybox", "example.com/team/app:v1", "two:x", untagged.id])
    names = members(data)
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(names)
    entries = json.loads(names["manifest.json"] or b"")
    assert entries[0]["RepoTags"] == [
        "docker.io/library/busybox:latest",
        "example.com/team/app:v1",
    ]
    assert entries[0]["Config"] == "blobs/sha256/" + one.id.removeprefix("sha256:")
    assert entries[2]["RepoTags"] == []

    loaded = archive.load(other, io.BytesIO(data))
    assert loaded == ["busybox:latest", "example.com/team/app:v1", "two:x", untagged.id]
    for image in (one, two, untagged):
        again = other.resolve(image.id)
        assert (again.manifest_digest, again.diff_ids) == (image.manifest_digest, image.diff_ids)
    assert other.resolve("busybox").repo_tags == ("busybox:latest", "example.com/team/app:v1")
    assert other.resolve(untagged.id).repo_tags == ()


def test_docker_archive_is_also_an_oci_layout(store: ImageStore, tmp_path: Path) -> None:
    image = make_image(store, [BASE, WHITEOUT_LAYER], "busybox")
    files = members(saved(store, ["busybox"]))
    index = json.loads(files["index.json"] or b"")
    assert index["manifests"][0]["annotations"] == {
        archive.ANNOTATION_IMAGE_NAME: "docker.io/library/busybox:latest",
        archive.ANNOTATION_REF_NAME: "latest",
    }
    oci_only = {k: v for k, v in files.items() if k not in ("manifest.json", "repositories")}
    target = ImageStore(str(tmp_path / "oci"), "copy")
    assert archive.load(target, io.BytesIO(retar(oci_only))) == ["busybox:latest"]
    assert target.resolve("busybox").manifest_digest == image.manifest_digest

    docker_only = {k: v for k, v in files.items() if k not in ("index.json", "oci-layout")}
    target = ImageStore(str(tmp_path / "docker"), "copy")
    assert archive.load(target, io.BytesIO(retar(docker_only))) == ["busybox:latest"]
    again = target.resolve("busybox")
    assert again.id == image.id  # the same config; a manifest written by the loader
    assert [layer.digest for layer in again.manifest.layers] == [
        layer.digest for layer in image.manifest.layers
    ]
    assert {layer.media_type for layer in again.manifest.layers} == {spec.OCI_LAYER}


def test_oci_layout_as_tar_and_directory(
    store: ImageStore, other: ImageStore, tmp_path: Path
) -> None:
    image = make_image(store, [BASE], "busybox")
    make_image(store, [WHITEOUT_LAYER], "quay.io/a/b:1", label="b")
    files = members(saved(store, ["busybox"], "oci"))
    assert "manifest.json" not in files
    index = json.loads(files["index.json"] or b"")
    assert index["manifests"][0]["annotations"][archive.ANNOTATION_REF_NAME] == (
        "docker.io/library/busybox:latest"
    )
    layout = tmp_path / "layout"
    archive.save(store, ["busybox"], layout, "oci")
    archive.save(store, ["quay.io/a/b:1"], str(layout), "oci")  # added to the same layout
    archive.save(store, ["busybox"], layout, "oci")  # the same name replaces its entry
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    assert len(entries) == 2
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert sorted(archive.load(other, layout)) == ["busybox:latest", "quay.io/a/b:1"]
    assert other.resolve("busybox").manifest_digest == image.manifest_digest


def test_gzip_stream_and_bare_tag_with_repository(store: ImageStore, other: ImageStore) -> None:
    make_image(store, [BASE], "busybox")
    files = members(saved(store, ["busybox"], "oci"))
    index = json.loads(files["index.json"] or b"")
    index["manifests"][0]["annotations"] = {archive.ANNOTATION_REF_NAME: "v2"}
    files["index.json"] = json.dumps(index).encode()
    data = gzip.compress(retar(files))
    assert archive.load(other, io.BytesIO(data), repository="example.com/app") == [
        "example.com/app:v2"
    ]
    third = ImageStore(str(Path(other.root).parent / "c"), "copy")
    loaded = archive.load(third, io.BytesIO(data))  # no repository: loaded untagged
    assert loaded == [third.resolve(loaded[0]).id]


def legacy_archive(layers: list[bytes], tags: list[str], repositories: bool = False) -> bytes:
    """``docker save`` as Docker < 25 wrote it: <id>/layer.tar, <config hex>.json; a second
    use of a layer is a symlink, as docker and podman write it."""
    diff_ids = []
    for data in layers:
        plain = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        diff_ids.append(sha(plain))
    config = json.dumps(config_for(diff_ids).to_json()).encode()
    files: dict[str, bytes | None] = {}
    links: dict[str, str] = {}
    paths = []
    first: dict[bytes, str] = {}
    for i, data in enumerate(layers):
        layer_id = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
        files[f"{layer_id}/"] = None
        files[f"{layer_id}/VERSION"] = b"1.0"
        files[f"{layer_id}/json"] = b"{}"
        if data in first:
            links[f"{layer_id}/layer.tar"] = f"../{first[data]}/layer.tar"
        else:
            files[f"{layer_id}/layer.tar"] = data
            first[data] = layer_id
        paths.append(f"{layer_id}/layer.tar")
    config_name = sha(config).removeprefix("sha256:") + ".json"
    files[config_name] = config
    manifest = [{"Config": config_name, "RepoTags": [] if repositories else tags, "Layers": paths}]
    files["manifest.json"] = json.dumps(manifest).encode()
    if repositories:
        top = paths[-1].split("/")[0]
        repos: dict[str, dict[str, str]] = {}
        for tag in tags:
            name, _, t = tag.rpartition(":")
            repos.setdefault(name, {})[t] = top
        files["repositories"] = json.dumps(repos).encode()
    return retar(files, links)


def test_legacy_docker_save_with_symlinked_and_gzip_layers(other: ImageStore) -> None:
    zipped = gzip.compress(WHITEOUT_LAYER, mtime=0)
    data = legacy_archive([BASE, zipped, BASE], ["app:1", "app:2"])
    assert archive.load(other, io.BytesIO(gzip.compress(data))) == ["app:1", "app:2"]
    image = other.resolve("app:1")
    assert [layer.media_type for layer in image.manifest.layers] == [
        spec.OCI_LAYER,
        spec.OCI_LAYER_GZIP,
        spec.OCI_LAYER,
    ]
    assert [layer.digest for layer in image.manifest.layers] == [sha(BASE), sha(zipped), sha(BASE)]
    assert image.manifest.media_type == spec.OCI_MANIFEST
    assert "etc/base" in unpacked(other, "app:1")  # layer 3 brings it back
    before = image.manifest_digest
    assert archive.load(other, io.BytesIO(data)) == ["app:1", "app:2"]
    assert other.resolve("app:1").manifest_digest == before  # our manifest is deterministic


def test_repositories_file_names_an_untagged_entry(other: ImageStore) -> None:
    data = legacy_archive([BASE], ["old/app:1"], repositories=True)
    assert archive.load(other, io.BytesIO(data)) == ["old/app:1"]


def test_load_directory_with_symlinks(other: ImageStore, tmp_path: Path) -> None:
    data = legacy_archive([BASE, BASE], ["app:1"])
    root = tmp_path / "unpacked"
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root, filter="tar")
    assert archive.load(other, root) == ["app:1"]
    (tmp_path / "app.tar").write_bytes(data)
    assert archive.load(other, str(tmp_path / "app.tar")) == ["app:1"]
    with pytest.raises(NotFound, match="no such file"):
        archive.load(other, tmp_path / "missing")


# --------------------------------------------------------------------------- refusals


def tamper(data: bytes, digest: str) -> bytes:
    files = members(data)
    name = "blobs/sha256/" + digest.removeprefix("sha256:")
    blob = files[name] or b""
    files[name] = blob[:-1] + bytes([blob[-1] ^ 1]) if blob[-1:] else b"x"
    return retar(files)


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_tampered_layer_or_config_is_refused_and_leaves_no_ref(
    store: ImageStore, other: ImageStore, fmt: archive.Format
) -> None:
    image = make_image(store, [BASE, tar_bytes(("x", b"x" * 600))], "busybox")
    data = saved(store, ["busybox"], fmt)
    for digest in (image.manifest.layers[1].digest, image.id):
        with pytest.raises(InvalidArgument) as err:
            archive.load(other, io.BytesIO(tamper(data, digest)))
        assert "blobs/sha256/" + digest.removeprefix("sha256:") in str(err.value)
        assert "digest mismatch" in str(err.value)
        assert other.list() == []


def test_tampered_legacy_layer_and_config_are_refused(other: ImageStore) -> None:
    data = legacy_archive([BASE], ["app:1"])
    files = members(data)
    layer = next(n for n in files if n.endswith("layer.tar"))
    bad = dict(files)
    bad[layer] = tar_bytes(("etc/base", b"evil"))
    with pytest.raises(InvalidArgument, match=r"Layers\[0\].*diffID"):
        archive.load(other, io.BytesIO(retar(bad)))
    config = next(n for n in files if n.endswith(".json") and len(n) == 69)
    bad = dict(files)
    bad[config] = (files[config] or b"").replace(b'"sh"', b'"bash"')
    with pytest.raises(InvalidArgument, match="its name says"):
        archive.load(other, io.BytesIO(retar(bad)))
    assert other.list() == []


def test_descriptor_size_and_missing_blob_are_refused(store: ImageStore, other: ImageStore) -> None:
    image = make_image(store, [BASE], "busybox")
    files = members(saved(store, ["busybox"], "oci"))
    index = json.loads(files["index.json"] or b"")
    index["manifests"][0]["size"] += 1
    with pytest.raises(InvalidArgument, match="the descriptor says"):
        archive.load(other, io.BytesIO(retar({**files, "index.json": json.dumps(index).encode()})))
    assert other.list() == []
    fresh = ImageStore(str(Path(other.root).parent / "fresh"), "copy")  # no blobs yet
    del files["blobs/sha256/" + image.manifest.layers[0].digest.removeprefix("sha256:")]
    with pytest.raises(InvalidArgument, match="not in the archive"):
        archive.load(fresh, io.BytesIO(retar(files)))
    assert fresh.list() == []


def test_not_an_image_archive(other: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match=r"neither manifest\.json"):
        archive.load(other, io.BytesIO(tar_bytes(("etc/passwd", b"root"))))
    with pytest.raises(InvalidArgument, match="not a valid"):
        archive.load(other, io.BytesIO(b"not a tar at all" * 100))
    bad_name = retar({"blobs/sha256/xyz": b"1", "index.json": b"{}"})
    with pytest.raises(InvalidArgument, match="blobs/sha256/xyz: not a blob name"):
        archive.load(other, io.BytesIO(bad_name))


def test_save_refusals(store: ImageStore, tmp_path: Path) -> None:
    make_image(store, [BASE], "busybox")
    with pytest.raises(NotFound, match="No such image: nothere:latest"):
        saved(store, ["nothere"])
    with pytest.raises(InvalidArgument, match="only as an OCI layout"):
        archive.save(store, ["busybox"], tmp_path / "d", "docker")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    with pytest.raises(InvalidArgument, match="not empty and not an OCI image layout"):
        archive.save(store, ["busybox"], tmp_path / "full", "oci")


# --------------------------------------------------------------------------- whiteouts


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_whiteouts_survive_a_round_trip(
    store: ImageStore, other: ImageStore, fmt: archive.Format
) -> None:
    make_image(store, [BASE, WHITEOUT_LAYER], "two:layers")
    before = unpacked(store, "two:layers")
    assert "etc/base" not in before and "keep/a" not in before
    assert before["keep/new"] == ("file", b"new")
    archive.load(other, io.BytesIO(saved(store, ["two:layers"], fmt)))
    assert unpacked(other, "two:layers") == before


def test_busybox_round_trip_unpacks_the_same_tree(store: ImageStore, other: ImageStore) -> None:
    image = base.busybox_image(store)
    archive.load(other, io.BytesIO(saved(store, ["busybox"])))
    assert other.resolve("busybox").id == image.id
    assert unpacked(other, "busybox") == unpacked(store, "busybox")


# --------------------------------------------------------------------------- export


def exported(store: ImageStore, key: str) -> dict[str, tarfile.TarInfo | bytes]:
    buf = io.BytesIO()
    export.export_container(store, key, buf)
    buf.seek(0)
    out: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=buf) as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name] = f.read() if f else m
    return out


def test_export_container_copy_mode(store: ImageStore) -> None:
    image = make_image(store, [BASE, WHITEOUT_LAYER], "two:layers")
    store.container_mounts(image, "c1")
    upper = Path(store.snapshots.stat("c1").path)
    (upper / "hello").write_bytes(b"hi")
    os.unlink(upper / "keep" / "new")
    got = exported(store, "c1")
    assert got["hello"] == b"hi"
    assert "keep/new" not in got and "etc/base" not in got and "keep/a" not in got
    assert isinstance(got["keep"], tarfile.TarInfo) and got["keep"].isdir()
    with pytest.raises(InvalidArgument, match="not a container's"):
        export.export_container(store, store.unpack(image) or "", io.BytesIO())


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts are device nodes (root)")
def test_export_container_overlay_merges_without_mounting(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path / "ov"), "overlay")
    lower2 = tar_bytes(("etc/", None), ("etc/two", b"2"), ("deep/", None), ("deep/x", b"x"))
    image = make_image(store, [BASE, WHITEOUT_LAYER, lower2], "three")
    store.container_mounts(image, "c1")
    upper = Path(store.snapshots.stat("c1").path)
    (upper / "etc").mkdir()
    os.mknod(upper / "etc" / "two", stat.S_IFCHR | 0o000, 0)  # the container deleted etc/two
    (upper / "deep").mkdir()
    os.setxattr(upper / "deep", "trusted.overlay.opaque", b"y")  # rm -rf deep/*; then y
    (upper / "deep" / "y").write_bytes(b"y")
    (upper / "keep").write_bytes(b"a file now")  # a directory replaced by a file
    got = exported(store, "c1")
    names = set(got)
    assert "etc/two" not in names and "etc/base" not in names
    assert "deep/x" not in names and got["deep/y"] == b"y"
    assert got["keep"] == b"a file now" and "keep/new" not in names
    info = got["etc"]
    assert isinstance(info, tarfile.TarInfo) and info.isdir()
    assert not any(isinstance(v, tarfile.TarInfo) and v.ischr() for v in got.values())
