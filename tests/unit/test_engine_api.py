"""The engine's Docker API without root: filters parsing, the error -> HTTP map, and the
application driven in-process with aiohttp's test client over a copy-mode image store in a
temp dir (ping and its headers, version checks, 404s, the image endpoints end to end)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from berth.engine import api, api_errors, api_images, daemon
from berth.engine.filters import (
    Filters,
    parse_bool,
    parse_timestamp,
    path_match,
    reference_matches,
)
from berth.engine.paths import Paths
from berth.errors import (
    AlreadyExists,
    BerthError,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unsupported,
)
from berth.image.store import ImageStore

# --------------------------------------------------------------------------- filters


def test_filters_map_and_list_forms_mean_the_same() -> None:
    new = Filters.parse('{"dangling":{"true":true},"label":{"a=b":true,"c":true}}')
    old = Filters.parse('{"dangling":["true"],"label":["a=b","c"]}')
    assert new.get("dangling") == old.get("dangling") == ["true"]
    assert new.get("label") == old.get("label") == ["a=b", "c"]
    assert new.to_json() == {"dangling": {"true": True}, "label": {"a=b": True, "c": True}}


def test_filters_absent_empty_and_false_entries() -> None:
    assert not Filters.parse(None)
    assert not Filters.parse("")
    assert Filters.parse('{"label":{"x":false}}').get("label") == []


@pytest.mark.parametrize("text", ["{", "[1]", '{"a":1}', '{"a":"b"}'])
def test_filters_malformed_is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid filters"):
        Filters.parse(text)


def test_filters_unknown_name_is_refused_as_dockerd_does() -> None:
    f = Filters.parse('{"foo":{"x":true}}')
    with pytest.raises(InvalidArgument, match=r"^invalid filter 'foo'$"):
        f.validate(["dangling"])


def test_filters_booleans() -> None:
    assert Filters.parse('{"dangling":["true"]}').bool_value("dangling") is True
    assert Filters.parse('{"dangling":["0"]}').bool_value("dangling") is False
    assert Filters().bool_value("dangling", True) is True
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling=maybe'"):
        Filters.parse('{"dangling":["maybe"]}').bool_value("dangling")
    with pytest.raises(InvalidArgument):
        Filters.parse('{"dangling":["true","false"]}').bool_value("dangling")


def test_filters_labels_all_must_match() -> None:
    f = Filters({"label": ["a=1", "b"], "label!": ["c"]})
    assert f.match_labels({"a": "1", "b": "x"})
    assert not f.match_labels({"a": "2", "b": "x"})
    assert not f.match_labels({"a": "1"})
    assert f.excluded_by_labels({"c": ""}) and not f.excluded_by_labels({"a": "1"})


def test_reference_patterns_follow_go_path_match() -> None:
    assert path_match("busy*", "busybox")
    assert not path_match("*", "library/busybox")  # * never crosses '/'
    assert path_match("user/*", "user/app")
    assert path_match("b?sybox", "busybox") and path_match("[ab]usybox", "busybox")
    assert reference_matches("busybox", "busybox:latest")  # the name alone matches
    assert reference_matches("busybox:lat*", "busybox:latest")
    assert not reference_matches("busybox:1", "busybox:latest")
    assert reference_matches("localhost:5000/*", "localhost:5000/app:1")


def test_query_booleans_parse_like_moby() -> None:
    for false in ("", "0", "no", "false", "False", "NONE"):
        assert parse_bool(false) is False
    for true in ("1", "true", "True", "yes"):
        assert parse_bool(true) is True
    assert parse_bool(None, default=True) is True


def test_timestamps_durations_unix_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_timestamp("10m", now) == now - 600
    assert parse_timestamp("1h30m", now) == now - 5400
    assert parse_timestamp("1699999999.5", now) == 1699999999.5
    assert parse_timestamp("2024-01-01T00:00:00Z", now) == 1704067200
    assert parse_timestamp("2024-01-01", now) == 1704067200
    with pytest.raises(InvalidArgument):
        parse_timestamp("yesterday", now)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NotFound("No such image: x:latest"), 404),
        (AlreadyExists("name in use"), 409),
        (Conflict("in use"), 409),
        (FailedPrecondition("not running"), 409),
        (api_errors.NotModified("already started"), 304),
        (InvalidArgument("bad"), 400),
        (Unavailable("later"), 503),
        (Unsupported("no"), 501),
        (BerthError("internal"), 500),
        (RuntimeError("boom"), 500),
    ],
)
def test_errors_map_to_dockers_statuses(exc: BaseException, status: int) -> None:
    assert api_errors.status_of(exc) == status
    response = api_errors.error_response(exc, "t1")
    assert response.status == status
    if status != 304:
        assert response.content_type == "application/json"
        assert response.body is not None
        body = json.loads(bytes(response.body))  # type: ignore[arg-type]
        assert body == {"message": api_errors.message_of(exc)}


def test_stream_errors_are_error_detail_lines() -> None:
    assert api_errors.stream_error(NotFound("gone")) == {
        "errorDetail": {"message": "gone"},
        "error": "gone",
    }


def test_import_changes_make_a_config() -> None:
    assert api_images.config_from_changes([]) is None
    config = api_images.config_from_changes(
        ["CMD echo hi", 'ENTRYPOINT ["/e"]', "ENV A=1 B=2", "ENV A=3", "EXPOSE 80 53/udp",
         "LABEL k=v", "USER 1:2", "WORKDIR /w", "VOLUME /data", "STOPSIGNAL SIGINT"]
    )  # fmt: skip
    assert config is not None
    assert config.cmd == ("/bin/sh", "-c", "echo hi") and config.entrypoint == ("/e",)
    assert config.env == ("A=3", "B=2") and config.exposed_ports == ("80/tcp", "53/udp")
    assert config.labels == {"k": "v"} and config.user == "1:2" and config.working_dir == "/w"
    assert config.volumes == ("/data",) and config.stop_signal == "SIGINT"
    with pytest.raises(InvalidArgument, match="COPY is not a valid change command"):
        api_images.config_from_changes(["COPY a b"])


# --------------------------------------------------------------------------- paths, daemon args


def test_paths_all_under_the_data_root(tmp_path: Path) -> None:
    paths = Paths(str(tmp_path / "root"))
    for p in (paths.images, paths.containers, paths.run_dir, paths.supervisor_socket,
              paths.pid_file, paths.engine_id, paths.container("abc")):  # fmt: skip
        assert p.startswith(paths.data_root + os.sep)
    paths.make()
    assert os.path.isdir(paths.run_dir) and os.path.isdir(paths.containers)


def test_daemon_hosts() -> None:
    assert daemon.parse_host("unix:///tmp/x.sock", False) == daemon.Listener("unix", "/tmp/x.sock")
    assert daemon.parse_host("/tmp/y.sock", False).address == "/tmp/y.sock"
    with pytest.raises(InvalidArgument, match="TCP needs --tlsverify"):
        daemon.parse_host("tcp://0.0.0.0:2375", False)
    assert daemon.parse_host("tcp://127.0.0.1:2376", True) == daemon.Listener(
        "tcp", "127.0.0.1", 2376
    )
    with pytest.raises(InvalidArgument):
        daemon.parse_host("http://x", False)


def test_pid_file_is_locked_while_held(tmp_path: Path) -> None:
    pid_file = str(tmp_path / "run" / "berthd.pid")
    fd = daemon.take_pid_file(pid_file)
    try:
        assert Path(pid_file).read_text().strip() == str(os.getpid())
        with pytest.raises(Conflict, match="pid file found, ensure berthd is not running"):
            daemon.take_pid_file(pid_file)
    finally:
        daemon.release_pid_file(pid_file, fd)
    assert not os.path.exists(pid_file)
    Path(pid_file).write_text("1\n")  # a stale file (crashed daemon) is not locked: taken over
    daemon.release_pid_file(pid_file, daemon.take_pid_file(pid_file))


# --------------------------------------------------------------------------- the application

Client = TestClient[web.Request, web.Application]


async def _boom(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("kaput")


def _run(tmp_path: Path, body: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        paths = Paths(str(tmp_path / "root"))
        paths.make()
        state = api.Engine(
            paths=paths, images=ImageStore(paths.images, snapshot_mode="copy"), engine_id="e1"
        )
        app = api.make_app(state, extra_routes=[("GET", "/test/boom", _boom)])
        async with TestClient(TestServer(app)) as client:
            await body(client)

    asyncio.run(main())


async def _json(client: Client, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    response = await client.request(method, path, **kw)
    text = await response.text()
    assert response.status == status, text
    return json.loads(text) if text.strip() else None


def test_ping_and_the_headers_on_every_response(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        head = await client.head("/_ping")
        assert head.status == 200
        assert head.headers["Api-Version"] == "1.43"
        assert head.headers["Docker-Experimental"] == "false"
        assert head.headers["Ostype"] == "linux"
        assert head.headers["Server"].startswith("Berth/")
        assert head.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
        assert head.headers["Pragma"] == "no-cache"
        get = await client.get("/_ping")
        assert (get.status, await get.text()) == (200, "OK")
        assert get.headers["Content-Type"] == "text/plain; charset=utf-8"
        missing = await client.get("/v1.43/no/such/endpoint")
        assert missing.status == 404
        assert await missing.json() == {"message": "page not found"}
        assert missing.headers["Api-Version"] == "1.43"
        wrong_method = await client.put("/v1.43/version")
        assert wrong_method.status == 404

    _run(tmp_path, body)


def test_version_and_api_version_checks(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        for path in ("/version", "/v1.24/version", "/v1.43/version"):
            doc = await _json(client, "GET", path)
            assert doc["ApiVersion"] == "1.43" and doc["MinAPIVersion"] == "1.24"
            assert doc["Os"] == "linux" and doc["KernelVersion"] == os.uname().release
            assert doc["Components"][0]["Name"] == "Engine"
        too_new = await _json(client, "GET", "/v1.50/version", 400)
        assert too_new["message"] == (
            "client version 1.50 is too new. Maximum supported API version is 1.43"
        )
        too_old = await _json(client, "GET", "/v1.12/version", 400)
        assert "is too old. Minimum supported API version is 1.24" in too_old["message"]

    _run(tmp_path, body)


def test_info_and_df_on_an_empty_store(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        info = await _json(client, "GET", "/v1.43/info")
        assert info["ID"] == "e1" and info["Images"] == 0 and info["Containers"] == 0
        assert info["Driver"] == "native"  # copy snapshots
        assert info["NCPU"] >= 1 and info["MemTotal"] > 0
        assert info["DockerRootDir"] == str(tmp_path / "root")
        assert info["CgroupVersion"] in ("1", "2")
        df = await _json(client, "GET", "/v1.43/system/df")
        assert df == {"LayersSize": 0, "Images": [], "Containers": [], "Volumes": [],
                      "BuildCache": []}  # fmt: skip
        only = await _json(client, "GET", "/v1.43/system/df?type=volume")
        assert only == {"Volumes": []}
        await _json(client, "GET", "/v1.43/system/df?type=nope", 400)

    _run(tmp_path, body)


def test_errors_through_the_app(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        nosuch = await _json(client, "GET", "/v1.43/images/nosuch/json", 404)
        assert nosuch == {"message": "No such image: nosuch:latest"}
        rmi = await _json(client, "DELETE", "/v1.43/images/nosuch", 404)
        assert rmi["message"] == "No such image: nosuch:latest"
        bad = await _json(client, "GET", '/v1.43/images/json?filters={"foo":["1"]}', 400)
        assert bad == {"message": "invalid filter 'foo'"}
        boom = await _json(client, "GET", "/test/boom", 500)
        assert boom == {"message": "kaput"}
        pull = await _json(client, "POST", "/v1.43/images/create?fromImage=alpine&tag=3", 404)
        assert pull["message"].startswith("pull access denied for alpine, repository does")
        url = await _json(client, "POST", "/v1.43/images/create?fromSrc=http://x/a.tar", 501)
        assert "fetches nothing from the network" in url["message"]

    _run(tmp_path, body)


def _progress(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_images_end_to_end_in_process(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        r = await client.post(
            "/v1.43/images/create?fromImage=docker.io%2Flibrary%2Fbusybox&tag=latest"
        )
        assert r.status == 200 and r.content_type == "application/json"
        lines = _progress(await r.text())
        assert lines[0] == {"status": "Pulling from library/busybox", "id": "latest"}
        assert lines[-1] == {"status": "Status: Downloaded newer image for busybox:latest"}
        again = _progress(await (await client.post("/images/create?fromImage=busybox")).text())
        assert again[-1] == {"status": "Status: Image is up to date for busybox:latest"}

        rows = await _json(client, "GET", "/v1.43/images/json")
        assert len(rows) == 1 and rows[0]["RepoTags"] == ["busybox:latest"]
        image_id = rows[0]["Id"]
        doc = await _json(client, "GET", "/v1.43/images/busybox/json")
        assert doc["Id"] == image_id and doc["Config"]["Cmd"] == ["sh"]
        assert doc["Size"] == rows[0]["Size"]
        history = await _json(client, "GET", "/v1.43/images/busybox:latest/history")
        assert history[0]["Id"] == image_id and history[0]["Tags"] == ["busybox:latest"]

        r = await client.post("/v1.43/images/busybox/tag?repo=localhost%3A5000%2Fme%2Fapp&tag=1")
        assert r.status == 201
        doc = await _json(client, "GET", "/v1.43/images/localhost:5000/me/app:1/json")
        assert doc["Id"] == image_id
        ref = json.dumps({"reference": {"localhost:5000/*/*": True}})
        assert len(await _json(client, "GET", "/images/json", params={"filters": ref})) == 1
        ref = json.dumps({"reference": {"nomatch*": True}})
        assert await _json(client, "GET", "/images/json", params={"filters": ref}) == []
        dangling = json.dumps({"dangling": {"true": True}})
        assert await _json(client, "GET", "/images/json", params={"filters": dangling}) == []
        untag = await _json(client, "DELETE", "/v1.43/images/localhost:5000/me/app:1")
        assert untag == [{"Untagged": "localhost:5000/me/app:1"}]

        saved = await client.get("/v1.43/images/get", params={"names": "busybox"})
        assert saved.status == 200 and saved.content_type == "application/x-tar"
        tar_bytes = await saved.read()
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            assert "manifest.json" in tar.getnames()
        missing = await client.get("/v1.43/images/nosuch/get")
        assert missing.status == 404

        removed = await _json(client, "DELETE", "/v1.43/images/busybox?force=False")
        assert removed == [{"Untagged": "busybox:latest"}, {"Deleted": image_id}]
        assert (await _json(client, "GET", "/v1.43/system/df"))["LayersSize"] == 0

        loaded = await client.post(
            "/v1.43/images/load?quiet=1",
            data=tar_bytes,
            headers={"Content-Type": "application/x-tar"},
        )
        assert loaded.status == 200
        assert _progress(await loaded.text()) == [{"stream": "Loaded image: busybox:latest\n"}]
        df = await _json(client, "GET", "/v1.43/system/df")
        assert len(df["Images"]) == 1 and df["LayersSize"] > 0

        bad = await client.post("/v1.43/images/load", data=b"not a tar" * 100)
        assert bad.status == 400

        # docker import: a rootfs tar in, the new id out
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"hello\n"
            info = tarfile.TarInfo("hello.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        imported = await client.post(
            "/v1.43/images/create?fromSrc=-&repo=imported&tag=v1&message=hi",
            params=[("changes", 'CMD ["/hello"]'), ("changes", "ENV A=1")],
            data=buf.getvalue(),
        )
        assert imported.status == 200
        new_id = _progress(await imported.text())[0]["status"]
        doc = await _json(client, "GET", "/v1.43/images/imported:v1/json")
        assert doc["Id"] == new_id and doc["Comment"] == "hi"
        assert doc["Config"]["Cmd"] == ["/hello"] and doc["Config"]["Env"] == ["A=1"]
        bad = await client.post(
            "/v1.43/images/create?fromSrc=-&repo=x", params={"changes": "RUN true"}, data=b""
        )
        assert bad.status == 400
        assert (await bad.json())["message"] == "RUN is not a valid change command"

        await _json(client, "POST", "/v1.43/images/imported:v1/tag?repo=other", 201)
        await _json(client, "DELETE", "/v1.43/images/imported:v1", 200)
        await _json(client, "DELETE", "/v1.43/images/other", 200)
        pruned = await _json(client, "POST", "/v1.43/images/prune")
        assert pruned["ImagesDeleted"] is None
        everything = json.dumps({"dangling": {"false": True}})
        pruned = await _json(client, "POST", "/v1.43/images/prune", params={"filters": everything})
        assert {"Untagged": "busybox:latest"} in pruned["ImagesDeleted"]
        assert pruned["SpaceReclaimed"] > 0
        assert await _json(client, "GET", "/v1.43/images/json") == []

    _run(tmp_path, body)


def test_info_registry_config_lists_insecure_registries_as_dockerd() -> None:
    from berth.engine.api_system import registry_config

    doc = registry_config(["10.1.0.0/16", "myregistry:5000"])
    assert doc["InsecureRegistryCIDRs"] == ["10.1.0.0/16", "127.0.0.0/8", "::1/128"]
    assert doc["IndexConfigs"]["myregistry:5000"]["Secure"] is False
    assert doc["IndexConfigs"]["docker.io"]["Secure"] is True
