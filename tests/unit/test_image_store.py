"""Unit tests for berth.image.store (and base) on temp dirs, copy snapshots, nothing mounted:
Docker's resolve rules (names, tags, digests, short ids), tag/untag, remove conflicts, prune,
gc keeping only what images use, disk usage counting a shared base once, unpack's diffID
check, import of a root filesystem tar and the built-in busybox image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from berth.errors import Conflict, InvalidArgument, NotFound, Unsupported
from berth.image import base
from berth.image.store import Image, ImageStore, unix_seconds
from berth.spec import image as spec


def tar_bytes(*files: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_layer(store: ImageStore, data: bytes) -> spec.Descriptor:
    return store.content.put_bytes(data).descriptor(spec.OCI_LAYER)


def make_image(
    store: ImageStore,
    layers: list[bytes],
    ref: str | None = None,
    label: str = "",
    diff_ids: list[str] | None = None,
) -> Image:
    config = spec.ImageConfig(
        architecture="amd64",
        os="linux",
        created="2024-05-01T10:00:00.123456789Z",
        rootfs=spec.RootFS(diff_ids=tuple(diff_ids or [sha(data) for data in layers])),
        config=spec.ContainerConfig(cmd=("sh",), labels={"l": label} if label else {}),
        history=tuple(spec.History(created_by=f"layer {i}") for i in range(len(layers))),
    )
    return store.write_image(config, [put_layer(store, data) for data in layers], ref)


BASE = tar_bytes(("etc/base", b"base" * 1000))
TOP_A = tar_bytes(("a", b"a"))
TOP_B = tar_bytes(("b", b"b"))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "images"), "copy")


# --------------------------------------------------------------------------- resolve, tag


def test_resolve_by_docker_rules(store: ImageStore) -> None:
    image = make_image(store, [BASE], "busybox")
    assert image.repo_tags == ("busybox:latest",)
    assert image.references == ("docker.io/library/busybox:latest",)
    hex_id = image.id.removeprefix("sha256:")
    for text in (
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox",
        image.id,
        hex_id,
        hex_id[:12],
        "sha256:" + hex_id[:12],
        f"busybox@{image.manifest_digest}",
    ):
        assert store.resolve(text).id == image.id, text
    with pytest.raises(NotFound, match=r"^No such image: busybox:1\.0$"):
        store.resolve("busybox:1.0")
    with pytest.raises(NotFound, match=r"^No such image: debian:latest$"):
        store.resolve("debian")
    with pytest.raises(NotFound, match="No such image"):
        store.resolve(f"debian@{image.manifest_digest}")  # not a repository it is in
    with pytest.raises(NotFound, match="No such image"):
        store.resolve("sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        store.resolve("Bad Name!")


def test_short_id_prefixes_must_be_unambiguous(store: ImageStore) -> None:
    images = [make_image(store, [BASE], label=str(i)) for i in range(40)]
    by_first = {}
    for image in images:
        by_first.setdefault(image.id[7], []).append(image)
    shared = next(group for group in by_first.values() if len(group) > 1)
    with pytest.raises(InvalidArgument, match="multiple IDs found with provided prefix"):
        store.resolve(shared[0].id[7])
    for image in images:
        assert store.resolve(image.id[7:19]).id == image.id


def test_a_name_wins_over_an_id_prefix(store: ImageStore) -> None:
    image = make_image(store, [BASE])
    prefix = image.id[7:13]
    other = make_image(store, [BASE], prefix, label="other")
    assert store.resolve(prefix).id == other.id
    assert store.resolve(image.id[7:20]).id == image.id


def test_tag_moves_a_reference_and_leaves_the_old_image_dangling(store: ImageStore) -> None:
    old = make_image(store, [BASE], "app:1")
    new = make_image(store, [BASE, TOP_A], "app:2")
    store.tag("app:2", "app:1")
    assert store.resolve("app:1").id == new.id
    assert store.resolve(old.id).repo_tags == ()
    assert [s.id for s in store.list(dangling=True)] == [old.id]
    assert set(store.resolve(new.id).repo_tags) == {"app:1", "app:2"}
    store.tag(new.id[7:19], "registry.local:5000/team/app:v3")
    assert "registry.local:5000/team/app:v3" in store.resolve(new.id).repo_tags
    with pytest.raises(InvalidArgument, match="digest"):
        store.tag("app:2", f"app@{new.manifest_digest}")
    with pytest.raises(NotFound, match="No such image: nope:latest"):
        store.tag("nope", "x")


def test_untag_keeps_the_image(store: ImageStore) -> None:
    image = make_image(store, [BASE], "busybox")
    assert store.untag("busybox") == image.id
    assert store.resolve(image.id).repo_tags == ()
    with pytest.raises(NotFound, match="No such image: busybox:latest"):
        store.untag("busybox:latest")


def test_state_survives_a_new_store_on_the_same_root(store: ImageStore) -> None:
    image = make_image(store, [BASE], "busybox")
    again = ImageStore(store.root, "copy")
    assert again.resolve("busybox") == image
    data = json.loads(Path(store.db_path).read_text())
    assert data["refs"] == {"docker.io/library/busybox:latest": image.manifest_digest}
    assert not [n for n in os.listdir(store.root) if n.startswith(".images-")]


def test_add_image_checks_what_it_is_given(store: ImageStore) -> None:
    layer = put_layer(store, BASE)
    config = spec.ImageConfig("amd64", "linux", rootfs=spec.RootFS(diff_ids=(sha(BASE),)))
    config_bytes = json.dumps(config.to_json()).encode()
    good = spec.Descriptor(spec.OCI_CONFIG, sha(config_bytes), len(config_bytes))

    def manifest(config_desc: spec.Descriptor, layers: tuple[spec.Descriptor, ...]) -> bytes:
        return json.dumps(spec.Manifest(config=config_desc, layers=layers).to_json()).encode()

    wrong = spec.Descriptor(spec.OCI_CONFIG, sha(b"other"), 5)
    with pytest.raises(InvalidArgument, match="does not match the config"):
        store.add_image(manifest(wrong, (layer,)), config_bytes)
    with pytest.raises(InvalidArgument, match=r"has 2 layers but .* has 1"):
        store.add_image(manifest(good, (layer, layer)), config_bytes)
    missing = spec.Descriptor(spec.OCI_LAYER, sha(b"missing"), 7)
    with pytest.raises(NotFound, match=r"layers\[0\]: blob sha256:"):
        store.add_image(manifest(good, (missing,)), config_bytes)
    assert store.list() == []
    image = store.add_image(manifest(good, (layer,)), config_bytes, ["x:1"])
    assert image.id == good.digest and image.repo_tags == ("x:1",)


# --------------------------------------------------------------------------- remove, prune


def test_remove_by_tag_untags_until_the_last_one(store: ImageStore) -> None:
    image = make_image(store, [BASE], "app:1")
    store.tag("app:1", "app:2")
    assert store.remove("app:1") == [{"Untagged": "app:1"}]
    assert store.resolve(image.id).repo_tags == ("app:2",)
    assert store.remove("app:2") == [{"Untagged": "app:2"}, {"Deleted": image.id}]
    with pytest.raises(NotFound, match="No such image: app:2"):
        store.resolve("app:2")
    with pytest.raises(NotFound):
        store.resolve(image.id)


def test_remove_of_an_image_in_use(store: ImageStore) -> None:
    image = make_image(store, [BASE], "busybox")
    used = {image.id}
    with pytest.raises(Conflict, match="image is being used by running container"):
        store.remove("busybox", in_use=used.__contains__)
    assert store.resolve("busybox").id == image.id
    out = store.remove("busybox", force=True, in_use=used.__contains__)
    assert out == [{"Untagged": "busybox:latest"}]
    assert store.resolve(image.id).repo_tags == ()  # kept for its container, dangling
    assert store.prune(in_use=used.__contains__).deleted == ()
    assert store.prune().deleted == (image.id,)


def test_remove_by_id_with_tags_in_several_repositories(store: ImageStore) -> None:
    image = make_image(store, [BASE], "app:1")
    store.tag("app:1", "app:2")
    store.tag("app:1", "other:1")
    with pytest.raises(Conflict, match=r"must be forced.*multiple repositories"):
        store.remove(image.id[7:19])
    assert len(store.resolve(image.id).repo_tags) == 3
    out = store.remove(image.id[7:19], force=True)
    assert out[-1] == {"Deleted": image.id}
    assert {o["Untagged"] for o in out[:-1]} == {"app:1", "app:2", "other:1"}


def test_remove_by_id_with_tags_in_one_repository(store: ImageStore) -> None:
    image = make_image(store, [BASE], "app:1")
    store.tag("app:1", "app:2")
    out = store.remove(image.id)
    assert out == [{"Untagged": "app:1"}, {"Untagged": "app:2"}, {"Deleted": image.id}]


def test_prune_dangling_then_all_unused(store: ImageStore) -> None:
    dangling = make_image(store, [BASE], label="dangling")
    tagged = make_image(store, [BASE, TOP_A], "app")
    used = make_image(store, [BASE, TOP_B], "used")
    report = store.prune()
    assert report.deleted == (dangling.id,) and report.untagged == ()
    assert report.reclaimed > 0  # its config and manifest
    report = store.prune(dangling_only=False, in_use={used.id}.__contains__)
    assert report.deleted == (tagged.id,) and report.untagged == ("app:latest",)
    assert [s.id for s in store.list()] == [used.id]
    assert store.content.exists(sha(BASE)) and not store.content.exists(sha(TOP_A))


# --------------------------------------------------------------------------- gc, disk use


def test_gc_removes_only_unreferenced_blobs_and_snapshots(store: ImageStore) -> None:
    keep = make_image(store, [BASE, TOP_A], "keep")
    drop = make_image(store, [BASE, TOP_B], "drop")
    orphan = store.content.put_bytes(b"orphan blob").digest
    keep_top, drop_top = store.unpack(keep), store.unpack(drop)
    store.container_mounts(keep, "c1")
    store.remove("drop")
    report = store.gc()
    assert set(report.blobs) == {orphan, sha(TOP_B), drop.id, drop.manifest_digest}
    assert report.snapshots == (drop_top,)
    assert report.reclaimed == sum(len(b) for b in (b"orphan blob", TOP_B)) + (
        drop.size - len(BASE) - len(TOP_B)
    )
    for digest in (keep.id, keep.manifest_digest, sha(BASE), sha(TOP_A)):
        assert store.content.exists(digest)
    keys = {i.key for i in store.snapshots.list()}
    assert keys == {sha(BASE), keep_top, "c1"}
    assert store.gc().blobs == ()
    # A container's snapshot keeps its chain even after its image is gone.
    store.remove("keep", force=True)
    store.prune()
    assert {i.key for i in store.snapshots.list()} == {sha(BASE), keep_top, "c1"}
    store.remove_container("c1")
    store.gc()
    assert store.snapshots.list() == []
    assert store.content.list() == []


def test_disk_usage_counts_a_shared_base_once(store: ImageStore) -> None:
    a = make_image(store, [BASE, TOP_A], "a")
    b = make_image(store, [BASE, TOP_B], "b")
    usage = store.disk_usage()
    by_id = {u.id: u for u in usage.images}
    for image in (a, b):
        row = by_id[image.id]
        assert row.size == image.size
        assert row.shared_size == len(BASE)
        assert row.unique_size == image.size - len(BASE)
    assert usage.total_size == a.size + b.size - len(BASE)
    assert usage.total_size == store.content.usage()
    assert usage.reclaimable == 0
    rows = {s.id: s for s in store.list()}
    assert rows[a.id].shared_size == len(BASE)
    store.untag("b")
    assert store.disk_usage().reclaimable == by_id[b.id].unique_size


# --------------------------------------------------------------------------- reading


def test_list_history_and_inspect(store: ImageStore) -> None:
    image = make_image(store, [BASE, TOP_A], "app:1")
    [row] = store.list()
    assert row.to_json()["RepoTags"] == ["app:1"]
    assert row.created == unix_seconds("2024-05-01T10:00:00Z") == 1714557600
    assert row.size == image.size
    history = store.history("app:1")
    assert [h.created_by for h in history] == ["layer 1", "layer 0"]
    assert history[0].id == image.id and history[0].tags == ("app:1",)
    assert history[1].id == "<missing>" and history[1].size == len(BASE)
    doc = store.inspect("app:1")
    assert doc["Id"] == image.id and doc["RepoTags"] == ["app:1"]
    assert doc["RootFS"]["Layers"] == [sha(BASE), sha(TOP_A)]
    assert doc["Config"]["Cmd"] == ["sh"]
    assert doc["Descriptor"]["digest"] == image.manifest_digest


def test_unix_seconds() -> None:
    assert unix_seconds("1970-01-01T00:00:10Z") == 10
    assert unix_seconds("1970-01-01T01:00:10.5+01:00") == 10
    assert unix_seconds("") == 0
    assert unix_seconds("yesterday") == 0


# --------------------------------------------------------------------------- unpack


def test_unpack_shares_committed_layers(store: ImageStore) -> None:
    a = make_image(store, [BASE, TOP_A], "a")
    b = make_image(store, [BASE, TOP_B], "b")
    top_a, top_b = store.unpack(a), store.unpack(b)
    assert top_a == a.chain_id and top_b == b.chain_id
    committed = [i for i in store.snapshots.list() if i.kind == "committed"]
    assert len(committed) == 3  # the base once
    assert store.unpack(a) == top_a  # nothing new
    mounts = store.container_mounts(a, "ctr")
    assert store.container_mounts(a, "ctr") == mounts
    with pytest.raises(Conflict, match="another image"):
        store.container_mounts(b, "ctr")
    assert (Path(mounts[0].source) / "a").read_bytes() == b"a"
    store.remove_container("ctr")
    with pytest.raises(NotFound):
        store.remove_container("ctr")


def test_unpack_refuses_a_layer_whose_diff_id_differs(store: ImageStore) -> None:
    good = make_image(store, [BASE], "good")
    bad = make_image(store, [BASE, TOP_A], "bad", diff_ids=[sha(BASE), sha(TOP_B)])
    store.unpack(good)
    before = store.snapshots.list()
    with pytest.raises(InvalidArgument, match=r"layer 1 \(sha256:.*\) of image .* diffID"):
        store.unpack(bad)
    assert store.snapshots.list() == before
    assert os.listdir(os.path.join(store.snapshots.root, "ingest")) == []


# --------------------------------------------------------------------------- import, base


@pytest.mark.parametrize("compress", [False, True])
def test_import_rootfs(store: ImageStore, compress: bool) -> None:
    data = tar_bytes(("bin/tool", b"tool"), ("etc/conf", b"conf"))
    blob = gzip.compress(data, mtime=0) if compress else data
    changes = spec.ContainerConfig(cmd=("/bin/tool",))
    image = store.import_rootfs(io.BytesIO(blob), "imported:v1", changes)
    assert image.repo_tags == ("imported:v1",)
    assert image.diff_ids == (sha(data),)
    [layer] = image.manifest.layers
    assert layer.digest == sha(blob)
    assert layer.media_type == (spec.OCI_LAYER_GZIP if compress else spec.OCI_LAYER)
    assert image.config.config.cmd == ("/bin/tool",)
    assert image.config.history[0].comment == "Imported from -"
    top = store.unpack(image)
    assert top is not None
    fs = store.snapshots.stat(top).path
    assert Path(fs, "etc/conf").read_bytes() == b"conf"


def test_import_of_a_non_tar_leaves_nothing(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="not a valid"):
        store.import_rootfs(io.BytesIO(b"x" * 3000), "bad")
    with pytest.raises(InvalidArgument, match="not a valid"):
        store.import_rootfs(io.BytesIO(gzip.compress(b"y" * 3000)), "bad")
    with pytest.raises(Unsupported):
        store.import_rootfs(io.BytesIO(b"BZh91AY&SY" + b"\0" * 100), "bad")
    assert store.content.list() == [] and store.list() == []


needs_busybox = pytest.mark.skipif(
    not os.access(base.BUSYBOX, os.X_OK), reason="needs busybox-static"
)


@needs_busybox
def test_busybox_base_image_is_deterministic(tmp_path: Path) -> None:
    one = base.busybox_image(ImageStore(str(tmp_path / "one"), "copy"))
    two_store = ImageStore(str(tmp_path / "two"), "copy")
    two = base.base_image(two_store, "busybox")
    assert one.id == two.id and one.manifest_digest == two.manifest_digest
    assert base.busybox_image(two_store) == two  # again: a no-op
    assert two.repo_tags == ("busybox:latest",)
    assert two.config.config.cmd == ("sh",)
    assert len(two.manifest.layers) == 1
    with (
        two_store.content.open(two.manifest.layers[0].digest) as f,
        tarfile.open(fileobj=f, mode="r:") as tar,
    ):
        names = {m.name: m for m in tar}
    assert names["bin/busybox"].isreg() and names["bin/busybox"].mode == 0o755
    assert names["bin/sh"].issym() and names["bin/sh"].linkname == "/bin/busybox"
    assert names["tmp"].mode == 0o1777
    assert {"etc/passwd", "etc/group"} <= set(names)
    assert {m.mtime for m in names.values()} == {base.BASE_EPOCH}


def test_other_base_images() -> None:
    with pytest.raises(NotFound, match="no built-in base image"):
        base.base_image(None, "alpine")  # type: ignore[arg-type]


def test_commit_needs_overlay_snapshots(store: ImageStore) -> None:
    image = make_image(store, [BASE], "a")
    store.container_mounts(image, "ctr")
    with pytest.raises(Unsupported, match="needs overlay"):
        store.commit_container("ctr", image, "committed")
