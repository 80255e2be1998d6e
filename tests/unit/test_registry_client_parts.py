"""Unit tests of the registry client's parts: challenges, hosts and schemes, registry errors,
Docker's config.json and X-Registry-Auth, dockerd's progress messages, and the Bearer token
flow against a token service and registry front made here with aiohttp on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path

import pytest
from aiohttp import web

from berth.engine.api_registry import message_of, progress_bar
from berth.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from berth.registry import client, credentials
from berth.registry.client import Challenge, Event, parse_challenges
from berth.registry.credentials import AuthConfig, ConfigFile

# --------------------------------------------------------------------------- challenges


def test_bearer_challenge_with_quoted_scope() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:library/busybox:pull,push"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example.com/token",
                "service": "registry.example.com",
                "scope": "repository:library/busybox:pull,push",
            },
        )
    ]


def test_basic_challenge_and_several_in_one_header() -> None:
    assert parse_challenges('Basic realm="berth-test"') == [
        Challenge("basic", {"realm": "berth-test"})
    ]
    found = parse_challenges('Basic realm="a", Bearer realm="https://t/x", service=reg')
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[1].params == {"realm": "https://t/x", "service": "reg"}


def test_challenge_escapes_case_and_empty() -> None:
    found = parse_challenges(r'BEARER Realm="say \"hi\"",error=invalid_token')
    assert found == [Challenge("bearer", {"realm": 'say "hi"', "error": "invalid_token"})]
    assert parse_challenges("") == []
    assert parse_challenges("Negotiate") == [Challenge("negotiate", {})]
    with pytest.raises(InvalidArgument, match="no scheme"):
        parse_challenges('="x"')


# --------------------------------------------------------------------------- hosts


@pytest.mark.parametrize(
    ("domain", "url"),
    [
        ("localhost:5000", "http://localhost:5000"),
        ("localhost", "http://localhost"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.1.2.3:80", "http://127.1.2.3:80"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("registry.example.com", "https://registry.example.com"),
        ("registry.example.com:5000", "https://registry.example.com:5000"),
        ("10.1.2.3:5000", "https://10.1.2.3:5000"),
    ],
)
def test_scheme_by_host(domain: str, url: str) -> None:
    assert client.base_url(domain) == url


def test_insecure_registries_by_host_port_host_and_cidr() -> None:
    assert client.base_url("reg.lan:5000", ["reg.lan:5000"]) == "http://reg.lan:5000"
    assert client.base_url("reg.lan:5000", ["reg.lan"]) == "http://reg.lan:5000"
    assert client.base_url("reg.lan:5000", ["reg.lan:6000"]) == "https://reg.lan:5000"
    assert client.base_url("10.1.2.3:5000", ["10.0.0.0/8"]) == "http://10.1.2.3:5000"
    assert client.base_url("11.1.2.3:5000", ["10.0.0.0/8"]) == "https://11.1.2.3:5000"
    assert client.base_url("reg.lan", ["10.0.0.0/8"]) == "https://reg.lan"


def test_docker_io_is_refused_with_a_clear_error() -> None:
    for domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        with pytest.raises(Unavailable, match=r"docker\.io is not reachable"):
            client.base_url(domain)


def test_insecure_registry_option_values() -> None:
    assert client.check_insecure_entry(" reg.lan:5000 ") == "reg.lan:5000"
    assert client.check_insecure_entry("10.0.0.0/8") == "10.0.0.0/8"
    with pytest.raises(InvalidArgument, match="should not contain '://'"):
        client.check_insecure_entry("http://reg.lan")
    with pytest.raises(InvalidArgument, match="not a valid CIDR"):
        client.check_insecure_entry("10.0.0.0/99")
    with pytest.raises(InvalidArgument, match="empty"):
        client.check_insecure_entry("")


# --------------------------------------------------------------------------- errors


def test_registry_errors_read_as_docker_prints_them() -> None:
    body = json.dumps(
        {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {}}]}
    ).encode()
    assert client.error_text(404, "Not Found", body) == "manifest unknown: manifest unknown"
    denied = (
        b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
    )
    assert client.error_text(403, "Forbidden", denied) == (
        "denied: requested access to the resource is denied"
    )
    assert client.error_text(502, "Bad Gateway", b"<html>") == "502 Bad Gateway"
    assert client.error_text(401, "Unauthorized", b"") == "unauthorized: authentication required"
    assert client.error_text(403, "Forbidden", b"") == (
        "denied: requested access to the resource is denied"
    )
    assert isinstance(client.error_of(401, "x"), Unauthenticated)
    assert isinstance(client.error_of(403, "x"), Unauthenticated)
    assert isinstance(client.error_of(404, "x"), NotFound)
    assert isinstance(client.error_of(503, "x"), Unavailable)
    assert isinstance(client.error_of(400, "x"), InvalidArgument)


# --------------------------------------------------------------------------- credentials


def test_config_file_store_get_erase_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"psFormat": "{{.ID}}", "auths": {"other:1": {"auth": "eDp5"}}}))
    config = ConfigFile(str(path))
    assert config.get("localhost:5000") is None
    config.store("localhost:5000", AuthConfig("me", "pa:ss"))
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "{{.ID}}"
    assert doc["auths"]["other:1"] == {"auth": "eDp5"}
    assert base64.b64decode(doc["auths"]["localhost:5000"]["auth"]) == b"me:pa:ss"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    found = config.get("http://localhost:5000/v2/")
    assert found == AuthConfig("me", "pa:ss", "localhost:5000")
    assert config.get("other:1") == AuthConfig("x", "y", "other:1")
    assert config.erase("localhost:5000") is True
    assert config.erase("localhost:5000") is False
    assert "localhost:5000" not in json.loads(path.read_text())["auths"]
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_config_file_docker_hub_key_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    config = ConfigFile()
    assert config.path == str(tmp_path / "config.json")
    assert config.get("docker.io") is None  # no file yet
    config.store("docker.io", AuthConfig("hubuser", "pw"))
    assert list(json.loads((tmp_path / "config.json").read_text())["auths"]) == [
        credentials.DOCKER_HUB_KEY
    ]
    assert config.get("index.docker.io") == AuthConfig("hubuser", "pw", credentials.DOCKER_HUB_KEY)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match=r"config\.json: not valid JSON"):
        ConfigFile(str(path)).get("localhost:5000")
    path.write_text(json.dumps({"auths": {"localhost:5000": {"auth": "bm9jb2xvbg=="}}}))
    with pytest.raises(InvalidArgument, match="no ':'"):
        ConfigFile(str(path)).get("localhost:5000")


def test_registry_auth_header_round_trip_and_forms() -> None:
    auth = AuthConfig("me", "pw?>", "localhost:5000")
    header = credentials.encode_header(auth)
    assert "+" not in header and "/" not in header  # base64url, as the docker CLI sends it
    assert credentials.decode_header(header) == auth
    assert credentials.encode_header(None) == "e30="
    assert credentials.decode_header("e30=") is None
    assert credentials.decode_header("") is None
    assert credentials.decode_header(None) is None
    unpadded = base64.urlsafe_b64encode(b'{"username":"a","password":"b"}').decode().rstrip("=")
    assert credentials.decode_header(unpadded) == AuthConfig("a", "b")
    from_auth = base64.b64encode(b'{"auth":"YTpi"}').decode()
    assert credentials.decode_header(from_auth) == AuthConfig("a", "b")
    with pytest.raises(InvalidArgument, match="X-Registry-Auth"):
        credentials.decode_header("!!!")
    with pytest.raises(InvalidArgument, match="username must be a string"):
        credentials.decode_header(base64.b64encode(b'{"username": 3}').decode())


def test_server_names() -> None:
    assert credentials.normalize_server("https://index.docker.io/v1/") == "docker.io"
    assert credentials.normalize_server("http://localhost:5000/v2/") == "localhost:5000"
    assert credentials.server_key("docker.io") == credentials.DOCKER_HUB_KEY
    assert credentials.server_key("127.0.0.1:5000") == "127.0.0.1:5000"
    with pytest.raises(InvalidArgument, match="no host name"):
        credentials.normalize_server("https://")


# --------------------------------------------------------------------------- progress


def test_progress_messages_as_dockerd_writes_them() -> None:
    assert message_of(Event("", "Digest: sha256:ab")) == {"status": "Digest: sha256:ab"}
    assert message_of(Event("0123456789ab", "Pull complete")) == {
        "status": "Pull complete",
        "progressDetail": {},
        "id": "0123456789ab",
    }
    moving = message_of(Event("0123456789ab", "Downloading", 1_500_000, 3_000_000))
    assert moving["progressDetail"] == {"current": 1_500_000, "total": 3_000_000}
    assert moving["progress"] == "[" + "=" * 24 + ">" + " " * 25 + "]    1.5MB/3MB"
    assert progress_bar(10, 10).startswith("[" + "=" * 50 + "]")


# --------------------------------------------------------------------------- bearer flow


def test_bearer_token_flow_with_scope_and_credentials() -> None:
    asyncio.run(_bearer_flow())


async def _bearer_flow() -> None:
    seen: list[dict[str, object]] = []

    async def token(request: web.Request) -> web.StreamResponse:
        seen.append(
            {
                "service": request.query.get("service"),
                "scopes": request.query.getall("scope", []),
                "account": request.query.get("account"),
                "authorization": request.headers.get("Authorization", ""),
            }
        )
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"me:right").decode(
            "ascii"
        ):
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, status=401
            )
        return web.json_response({"token": f"t{len(seen)}"})

    async def ping(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") == f"Bearer t{len(seen)}":
            return web.json_response({})  # only the newest token is good
        realm = f"http://{request.host}/token"
        challenge = f'Bearer realm="{realm}",service="berth-test",scope="repository:x:pull"'
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            status=401,
            headers={"WWW-Authenticate": challenge},
        )

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/team/app/tags/list", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    domain = f"127.0.0.1:{port}"
    try:
        async with client.Registry(
            domain, "team/app", AuthConfig("me", "right"), actions=("pull", "push"),
            pull_from=["team/base"],
        ) as registry:  # fmt: skip
            assert registry.authorization == "Bearer t1"
            assert (await registry.ping())[0].status == 200
            seen.append({})  # the token expires: the next request is refused, then renewed
            response = await registry.request("GET", registry.url("tags/list"))
            response.release()
            assert registry.authorization == "Bearer t3"
        assert seen[-1] == {
            "service": "berth-test",
            "scopes": ["repository:team/app:pull,push", "repository:team/base:pull"],
            "account": "me",
            "authorization": "Basic " + base64.b64encode(b"me:right").decode("ascii"),
        }
        with pytest.raises(Unauthenticated, match="unauthorized: bad credentials"):
            await client.login(domain, AuthConfig("me", "wrong"))
        await client.login(domain, AuthConfig("me", "right"))
        assert seen[-1]["scopes"] == []  # a login asks for a token with no scope
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- diffIDs


def test_diff_id_of_gzip_members_and_zstd_frames_fed_in_pieces() -> None:
    import gzip
    import hashlib

    import zstandard

    from berth.registry.client_pull import DiffIdHasher

    plain = bytes(range(256)) * 40_000  # 10 MB, so the bounded-output loop turns
    expected = "sha256:" + hashlib.sha256(plain).hexdigest()
    half = len(plain) // 2
    blobs = {
        "gzip": gzip.compress(plain[:half]) + gzip.compress(plain[half:]),  # two members
        "zstd": zstandard.ZstdCompressor().compress(plain[:half])
        + zstandard.ZstdCompressor().compress(plain[half:]),  # two frames
        "": plain,
    }
    for compression, blob in blobs.items():
        hasher = DiffIdHasher(compression)
        for i in range(0, len(blob), 7_777):
            hasher.update(blob[i : i + 7_777])
        assert hasher.digest() == expected, compression
    cut = DiffIdHasher("gzip")
    cut.update(blobs["gzip"][: len(blobs["gzip"]) // 4])
    with pytest.raises(InvalidArgument, match="ends early"):
        cut.digest()
    with pytest.raises(InvalidArgument, match="not valid gzip"):
        DiffIdHasher("gzip").update(b"not gzip at all")
    with pytest.raises(InvalidArgument, match="not valid zstd"):
        DiffIdHasher("zstd").update(b"not zstd at all")


@pytest.mark.parametrize(
    ("text", "url", "repository"),
    [
        ("localhost:5000/app:1", "http://localhost:5000", "app"),
        ("localhost/team/app", "http://localhost", "team/app"),
        ("127.0.0.1:5000/a/b/c@sha256:" + "0" * 64, "http://127.0.0.1:5000", "a/b/c"),
        ("Registry.Example.com/app", "https://Registry.Example.com", "app"),
        ("reg.lan:443/x/y:tag", "https://reg.lan:443", "x/y"),
    ],
)
def test_references_name_their_registry(text: str, url: str, repository: str) -> None:
    from berth.image import reference

    ref = reference.parse(text)
    assert client.base_url(ref.domain) == url
    assert client.Registry(ref.domain, ref.path).url("manifests/1") == (
        f"{url}/v2/{repository}/manifests/1"
    )


def test_berthd_refuses_a_bad_insecure_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from berth.engine import daemon

    assert daemon.main(["--insecure-registry", "http://reg.lan:5000"]) == 1
    assert "should not contain '://'" in capsys.readouterr().err
