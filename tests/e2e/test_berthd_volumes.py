"""Volumes, binds and tmpfs mounts through berthd, with the real docker CLI 28 and docker-py.

Each test uses the shared private ``berthd`` (conftest) or, for the restart, a daemon of its own;
host directories it binds are the test's tmp_path.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from berthd_process import mounts_under
from test_berthd_containers import own_berthd
from test_berthd_images import Daemon


def _volume_names(d: Daemon, *args: str) -> list[str]:
    return d.docker("volume", "ls", "-q", *args).stdout.split()


def _inspect(d: Daemon, *args: str) -> Any:
    return json.loads(d.docker(*args).stdout)[0]


def test_volume_create_ls_inspect_rm_prune(berthd: Daemon) -> None:
    assert berthd.docker("volume", "create", "--label", "team=a", "vol1").stdout.strip() == "vol1"
    doc = _inspect(berthd, "volume", "inspect", "vol1")
    assert doc["Driver"] == "local" and doc["Labels"] == {"team": "a"}
    assert doc["Mountpoint"] == str(berthd.data_root / "volumes" / "vol1" / "_data")
    # an existing name is returned as it is, not refused
    assert berthd.docker("volume", "create", "vol1").stdout.strip() == "vol1"
    anon = berthd.docker("volume", "create").stdout.strip()
    assert len(anon) == 64
    assert set(_volume_names(berthd)) >= {"vol1", anon}
    assert _volume_names(berthd, "--filter", "label=team=a") == ["vol1"]
    assert "vol1" in _volume_names(berthd, "--filter", "name=ol1")
    bad = berthd.docker("volume", "create", "bad/name", check=False)
    assert bad.returncode == 1 and "includes invalid characters" in bad.stderr
    # prune takes anonymous volumes only; --all takes named ones too
    pruned = berthd.docker("volume", "prune", "-f").stdout
    assert anon in pruned and "vol1" not in pruned
    assert "vol1" in _volume_names(berthd)
    berthd.docker("volume", "rm", "vol1")
    missing = berthd.docker("volume", "inspect", "vol1", check=False)
    assert missing.returncode == 1 and "no such volume" in missing.stderr
    assert berthd.docker("volume", "rm", "-f", "vol1").returncode == 0
    events = berthd.docker("events", "--since", "0", "--until", f"{time.time():.9f}",
                           "--filter", "volume=vol1",
                           "--format", "{{.Type}} {{.Action}} {{.Actor.ID}}").stdout  # fmt: skip
    assert events.splitlines() == ["volume create vol1", "volume destroy vol1"]


def test_named_volume_is_shared_kept_and_in_use(berthd: Daemon) -> None:
    berthd.docker("run", "--rm", "-v", "shared:/data", "busybox", "sh", "-c", "echo x > /data/f")
    out = berthd.docker("run", "--rm", "-v", "shared:/data", "busybox", "cat", "/data/f").stdout
    assert out == "x\n"
    cid = berthd.docker("create", "-v", "shared:/data", "busybox", "true").stdout.strip()
    busy = berthd.docker("volume", "rm", "shared", check=False)
    assert busy.returncode == 1 and f"volume is in use - [{cid}]" in busy.stderr
    mounts = _inspect(berthd, "inspect", cid)["Mounts"]
    assert mounts == [
        {"Type": "volume", "Name": "shared",
         "Source": str(berthd.data_root / "volumes" / "shared" / "_data"),
         "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}
    ]  # fmt: skip
    assert _volume_names(berthd, "--filter", "dangling=false") == ["shared"]
    assert "shared" not in _volume_names(berthd, "--filter", "dangling=true")
    df = json.loads(berthd.docker("system", "df", "-v", "--format", "{{json .Volumes}}").stdout)
    (row,) = [v for v in df if v["Name"] == "shared"]
    assert row["Links"] == "1" and row["Size"] == "2B"
    berthd.docker("rm", "-v", cid)  # a named volume stays
    assert "shared" in _volume_names(berthd)
    berthd.docker("volume", "rm", "shared")


def test_binds_read_only_created_and_missing(berthd: Daemon, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    script = "cat /m/in.txt; echo no > /m/w 2>/dev/null && echo wrote || echo refused"
    out = berthd.docker("run", "--rm", "-v", f"{tmp_path}:/m:ro", "busybox", "sh", "-c", script)
    assert out.stdout == "hello\nrefused\n"
    assert not (tmp_path / "w").exists()
    made = tmp_path / "made" / "here"
    berthd.docker("run", "--rm", "-v", f"{made}:/m", "busybox", "sh", "-c", "echo y > /m/f")
    assert (made / "f").read_text() == "y\n"
    refused = berthd.docker("run", "--rm", "--mount", f"type=bind,src={tmp_path}/nope,dst=/m",
                            "busybox", "true", check=False)  # fmt: skip
    assert refused.returncode == 125
    assert f"bind source path does not exist: {tmp_path}/nope" in refused.stderr
    relative = berthd.docker("run", "--rm", "-v", "data:rel", "busybox", "true", check=False)
    assert relative.returncode == 125 and "rel" in relative.stderr


def test_tmpfs_mount_is_limited(berthd: Daemon) -> None:
    script = "dd if=/dev/zero of=/t/big bs=1k count=2048 2>/dev/null; du -k /t/big; stat -c %a /t"
    out = berthd.docker("run", "--rm", "--mount", "type=tmpfs,destination=/t,tmpfs-size=1m",
                        "busybox", "sh", "-c", script).stdout.split()  # fmt: skip
    assert int(out[0]) <= 1024 and out[-1] == "1777"
    mode = berthd.docker("run", "--rm", "--mount", "type=tmpfs,dst=/t,tmpfs-mode=0700",
                         "busybox", "stat", "-c", "%a", "/t").stdout  # fmt: skip
    assert mode == "700\n"


def test_image_volume_is_anonymous_populated_and_removed_with_v(
    berthd: Daemon, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN mkdir /v && echo seed > /v/f\nVOLUME /v\n"
    )
    berthd.docker("build", "-q", "-t", "withvol", str(tmp_path))
    before = set(_volume_names(berthd))
    cid = berthd.docker("create", "withvol", "cat", "/v/f").stdout.strip()
    berthd.docker("start", cid)
    assert berthd.docker("wait", cid).stdout.strip() == "0"
    assert berthd.docker("logs", cid).stdout == "seed\n"
    (mount,) = _inspect(berthd, "inspect", cid)["Mounts"]
    assert mount["Type"] == "volume" and mount["Destination"] == "/v"
    assert set(_volume_names(berthd)) - before == {mount["Name"]}
    berthd.docker("rm", "-v", cid)
    assert set(_volume_names(berthd)) == before
    berthd.docker("run", "--rm", "withvol", "true")  # --rm takes its anonymous volume too
    assert set(_volume_names(berthd)) == before
    berthd.docker("rmi", "withvol")


def test_volume_data_survives_daemon_restart() -> None:
    with own_berthd("berthd-vol-") as (d, relaunch):
        d.docker("run", "--rm", "-v", "keep:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0
        relaunch()
        assert "keep" in _volume_names(d)
        out = d.docker("run", "--rm", "-v", "keep:/data", "busybox", "cat", "/data/f").stdout
        assert out == "kept\n"
        d.docker("volume", "rm", "keep")


def test_docker_py_volumes(berthd: Daemon) -> None:
    import docker
    import docker.errors

    client = docker.DockerClient(base_url=berthd.url, timeout=60)
    vol = client.volumes.create("pyvol", labels={"k": "v"})
    assert vol.name == "pyvol" and vol.attrs["Labels"] == {"k": "v"}
    assert [v.name for v in client.volumes.list(filters={"label": "k=v"})] == ["pyvol"]
    out = client.containers.run(
        "busybox", "sh -c 'echo py > /d/f; cat /d/f'", volumes={"pyvol": {"bind": "/d"}},
        remove=True,
    )  # fmt: skip
    assert out == b"py\n"
    client.volumes.get("pyvol").remove()
    try:
        client.volumes.get("pyvol")
    except docker.errors.NotFound:
        pass
    else:
        raise AssertionError("pyvol still there")
    assert "VolumesDeleted" in client.volumes.prune()


def test_volume_with_local_driver_options_is_mounted_and_unmounted(berthd: Daemon) -> None:
    """``--opt type=tmpfs --opt device=tmpfs --opt o=size=1m``: the volume is a 1 MiB tmpfs
    that two containers share; rm unmounts it and leaves no mount behind."""
    bad = berthd.docker("volume", "create", "--opt", "colour=blue", check=False)
    assert bad.returncode == 1 and 'invalid option: "colour"' in bad.stderr
    untyped = berthd.docker("volume", "create", "--opt", "device=tmpfs", check=False)
    assert untyped.returncode == 1 and 'missing required option: "type"' in untyped.stderr
    name = "opts-tmpfs"
    berthd.docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                  "--opt", "o=size=1m", name)  # fmt: skip
    try:
        script = "dd if=/dev/zero of=/v/big bs=1k count=2048 2>/dev/null; du -k /v/big"
        used = berthd.docker("run", "--rm", "-v", f"{name}:/v", "busybox", "sh", "-c", script)
        assert int(used.stdout.split()[0]) <= 1024
        seen = berthd.docker("run", "--rm", "-v", f"{name}:/v", "busybox", "ls", "/v")
        assert seen.stdout.split() == ["big"]
        options = _inspect(berthd, "volume", "inspect", name)["Options"]
        assert options == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    finally:
        berthd.docker("volume", "rm", name)
    assert not [m for m in mounts_under(str(berthd.home)) if "/volumes/" in m]


def test_bind_volume_keeps_host_files_at_rm(berthd: Daemon, tmp_path: Path) -> None:
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "keep.txt").write_text("host\n")
    berthd.docker("volume", "create", "--opt", "type=none", "--opt", f"device={host_dir}",
                  "--opt", "o=bind", "bindvol")  # fmt: skip
    try:
        out = berthd.docker("run", "--rm", "-v", "bindvol:/v", "busybox", "sh", "-c",
                            "cat /v/keep.txt; echo ctr > /v/new.txt")  # fmt: skip
        assert out.stdout == "host\n"
    finally:
        berthd.docker("volume", "rm", "bindvol")
    assert (host_dir / "keep.txt").read_text() == "host\n"
    assert (host_dir / "new.txt").read_text() == "ctr\n"


def test_bind_propagation(berthd: Daemon, tmp_path: Path) -> None:
    """``rslave`` of a shared source: a mount made under the source on the host after the
    start shows in the container; of a private source: dockerd's error; the default is
    ``rprivate``."""
    private = berthd.docker("run", "--rm", "-v", f"{tmp_path}:/m:rslave", "busybox", "true",
                            check=False)  # fmt: skip
    if not _is_shared(str(tmp_path)):
        assert private.returncode == 125 and "is not a shared or slave mount" in private.stderr
    source = tmp_path / "src"
    source.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "src", str(source)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(source)], check=True)
        (source / "sub").mkdir()
        cid = berthd.docker("run", "-d", "-v", f"{source}:/m:rslave", "busybox", "sleep", "60")
        cid = cid.stdout.strip()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "probe", str(source / "sub")], check=True)
            try:
                seen = berthd.docker("exec", cid, "grep", "-c", " /m/sub ", "/proc/mounts")
                assert seen.stdout.strip() == "1"
            finally:
                subprocess.run(["umount", str(source / "sub")], check=True)
            assert _inspect(berthd, "inspect", cid)["Mounts"][0]["Propagation"] == "rslave"
        finally:
            berthd.docker("rm", "-f", cid)
        plain = berthd.docker("create", "-v", f"{source}:/m", "busybox").stdout.strip()
        try:
            mount = _inspect(berthd, "inspect", plain)["Mounts"][0]
            assert mount["Propagation"] == "rprivate"
        finally:
            berthd.docker("rm", plain)
    finally:
        subprocess.run(["umount", str(source)], check=True)


def _is_shared(path: str) -> bool:
    """Whether the mount holding ``path`` propagates (shared, or a slave of one)."""
    best, shared = "", False
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            point = parts[4]
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best = point
                fields = parts[6 : parts.index("-")]
                shared = any(x.startswith(("shared:", "master:")) for x in fields)
    return shared
