"""Unit tests of the volume store and of parsing and preparing a container's mounts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from berth.engine import container_mounts as cm
from berth.engine.volumes import VolumeStore
from berth.errors import Conflict, InvalidArgument, NotFound


def _store(tmp_path: Path) -> VolumeStore:
    (tmp_path / "containers").mkdir()
    return VolumeStore(str(tmp_path / "volumes"), str(tmp_path / "containers"))


def test_create_get_existing_and_anonymous(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vol, made = store.create("data", labels={"a": "b"})
    assert made and vol.labels == {"a": "b"} and os.path.isdir(vol.mountpoint)
    again, made_again = store.create("data")
    assert not made_again and again.labels == {"a": "b"}
    anon, _ = store.create()
    assert len(anon.name) == 64 and anon.anonymous and not vol.anonymous
    assert [v.name for v in store.volumes()] == sorted(["data", anon.name])
    with pytest.raises(InvalidArgument, match="includes invalid characters"):
        store.create("a/b")
    with pytest.raises(NotFound, match='plugin "nfs" not found'):
        store.create("x", driver="nfs")


def test_half_made_volume_is_not_listed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    os.makedirs(store.data_path("half"))
    assert store.volumes() == []
    with pytest.raises(NotFound, match="get half: no such volume"):
        store.get("half")


def test_in_use_comes_from_config_json(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vol, _ = store.create("used")
    bundle = tmp_path / "containers" / "c1"
    bundle.mkdir()
    mount = {"destination": "/d", "type": "bind", "source": vol.mountpoint}
    (bundle / "config.json").write_text(json.dumps({"mounts": [mount]}))
    assert store.users() == {"used": ["c1"]}
    with pytest.raises(Conflict, match=r"volume is in use - \[c1\]"):
        store.remove("used")
    assert not store.remove_if_unused("used")
    (bundle / "config.json").unlink()
    store.remove("used")
    store.remove("used", force=True)  # missing and forced: fine
    with pytest.raises(NotFound):
        store.remove("used")


def test_parse_binds_mounts_and_image_volumes() -> None:
    body = {
        "Volumes": {"/cfg": {}},
        "HostConfig": {
            "Binds": ["/host:/m:ro", "named:/n", "/img"],
            "Mounts": [
                {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024}},
                {"Type": "volume", "Source": "v2", "Target": "/v2",
                 "VolumeOptions": {"NoCopy": True}},
            ],
        },
    }  # fmt: skip
    specs = {s.target: s for s in cm.parse(body, {"/img": {}})}
    assert set(specs) == {"/cfg", "/img", "/m", "/n", "/t", "/v2"}
    assert specs["/m"].kind == "bind" and specs["/m"].read_only and specs["/m"].from_flag
    assert specs["/n"].kind == "volume" and specs["/n"].source == "named"
    assert specs["/img"].source == "" and specs["/cfg"].source == ""
    assert specs["/t"].tmpfs_size == 1024 and specs["/v2"].no_copy


@pytest.mark.parametrize(
    ("binds", "mounts", "message"),
    [
        (["/a:rel"], [], "mount path must be absolute"),
        (["/a:/"], [], "destination can't be '/'"),
        (["/a:/m:bogus"], [], "invalid mode: bogus"),
        (["/a:/m", "/b:/m"], [], "Duplicate mount point: /m"),
        (["bad name:/m"], [], "includes invalid characters"),
        (["/a:/tmp"], [], "Duplicate mount point: /tmp"),
        ([], [{"Type": "nfs", "Target": "/m"}], "mount type unknown"),
        ([], [{"Type": "bind", "Source": "/no/such/dir", "Target": "/m"}],
         "bind source path does not exist: /no/such/dir"),
        ([], [{"Type": "bind", "Target": "/m"}], "field Source must not be empty"),
        ([], [{"Type": "tmpfs", "Source": "x", "Target": "/m"}], "must not be specified"),
    ],
)  # fmt: skip
def test_parse_refuses_bad_specs(binds: list[str], mounts: list[object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        cm.parse({"HostConfig": {"Binds": binds, "Mounts": mounts, "Tmpfs": {"/tmp": ""}}}, None)


def test_prepare_fills_new_volume_from_image_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rootfs = tmp_path / "rootfs"
    (rootfs / "v").mkdir(parents=True)
    (rootfs / "v" / "f").write_text("seed")
    specs = cm.parse({"HostConfig": {"Binds": ["vol:/v", "/srcdir-made:/b"]}}, {"/anon": {}})
    src = tmp_path / "made"
    specs[-1].source = str(src)
    oci, rows = cm.prepare(specs, store, str(rootfs))
    assert (Path(store.data_path("vol")) / "f").read_text() == "seed"
    assert src.is_dir()  # -v makes a missing bind source
    by_dest = {m["destination"]: m for m in oci}
    assert by_dest["/v"]["source"] == store.data_path("vol")
    assert by_dest["/b"]["options"] == ["rbind", "rprivate"]
    (anon,) = cm.anonymous_volumes(rows)
    assert "Anonymous" not in cm.inspect_rows(rows)[0]
    # an existing volume is not filled again
    (rootfs / "v" / "g").write_text("later")
    cm.prepare(cm.parse({"HostConfig": {"Binds": ["vol:/v:ro"]}}, None), store, str(rootfs))
    assert not (Path(store.data_path("vol")) / "g").exists()
    assert store.get(anon).anonymous


def test_prepare_does_not_follow_a_symlink_out_of_the_rootfs(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    (rootfs / "v").symlink_to(outside)
    cm.prepare(cm.parse({"HostConfig": {"Binds": ["vol:/v"]}}, None), store, str(rootfs))
    assert os.listdir(store.data_path("vol")) == []


def test_a_claimed_volume_is_in_use_until_released(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _, made = store.claim("held")
    assert made
    with pytest.raises(Conflict, match="a container being created"):
        store.remove("held")
    store.claim("held")  # a second create of the same volume
    store.release(["held"])
    assert not store.remove_if_unused("held")
    store.release(["held"])
    assert store.remove_if_unused("held")
