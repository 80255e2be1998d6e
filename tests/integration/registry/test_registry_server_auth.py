"""Who may use Berth's registry: Basic auth from a bcrypt htpasswd file with per-repository
rights, the Docker token flow against the registry's own token endpoint, read-only, and TLS.

Rules: servers on 127.0.0.1 ports in this process (registry_server.running); the htpasswd
file is written with bcrypt's ``$2y$`` prefix as ``htpasswd -B`` writes it; the TLS
certificate is made with openssl in the test's temp dir.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
from registry_server import Server, error_code, make_image, push_image, running, sha256

from berth.registry.server import ServerConfig

ACCESS = """\
# user      actions           repositories
alice       pull,push,delete  *
bob         pull              *
bob         push              bob/*
anonymous   pull              public/*
"""


def _htpasswd(path: Path, users: dict[str, str]) -> Path:
    lines = []
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        lines.append(f"{user}:$2y${hashed[4:]}")  # htpasswd -B's prefix
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("auth")
    _htpasswd(home / "htpasswd", {"alice": "alice-pw", "bob": "bob-pw"})
    (home / "access").write_text(ACCESS)
    return home


@pytest.fixture(scope="module")
def basic(files: Path) -> Iterator[Server]:
    config = ServerConfig(
        root=str(files / "basic-root"),
        htpasswd=str(files / "htpasswd"),
        access=str(files / "access"),
    )
    with running(config) as server:
        yield server


def _as(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ALICE = _as("alice", "alice-pw")
BOB = _as("bob", "bob-pw")


def test_basic_auth_challenge_and_login(basic: Server) -> None:
    anonymous = basic("GET", "/v2/")
    assert anonymous.status_code == 401 and error_code(anonymous) == "UNAUTHORIZED"
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="berth-registry"'
    wrong = basic("GET", "/v2/", headers=_as("alice", "nope"))
    assert wrong.status_code == 401
    stranger = basic("GET", "/v2/", headers=_as("mallory", "alice-pw"))
    assert stranger.status_code == 401
    assert basic("GET", "/v2/", headers=ALICE).status_code == 200
    assert basic("GET", "/v2/", headers=ALICE).status_code == 200  # remembered, still right


def test_basic_auth_per_repository_rights(basic: Server) -> None:
    image = make_image("rights")
    basic.session.headers.update(ALICE)
    try:
        push_image(basic, "team/app", image, "v1")
        push_image(basic, "public/app", image, "v1")
    finally:
        del basic.session.headers["Authorization"]
    # bob pulls anything, pushes only under bob/
    assert basic("GET", "/v2/team/app/manifests/v1", headers=BOB).status_code == 200
    data = os.urandom(100)
    denied = basic("POST", f"/v2/team/app/blobs/uploads/?digest={sha256(data)}",
                   data=data, headers=BOB)  # fmt: skip
    assert denied.status_code == 403 and error_code(denied) == "DENIED"
    assert basic("HEAD", f"/v2/team/app/blobs/{sha256(data)}", headers=ALICE).status_code == 404
    allowed = basic("POST", f"/v2/bob/app/blobs/uploads/?digest={sha256(data)}",
                    data=data, headers=BOB)  # fmt: skip
    assert allowed.status_code == 201
    no_delete = basic("DELETE", f"/v2/team/app/manifests/{image.digest}", headers=BOB)
    assert no_delete.status_code == 403
    # anonymous: public/* only, and a 401 (not 403) elsewhere so that clients log in
    assert basic("GET", "/v2/public/app/manifests/v1").status_code == 200
    private = basic("GET", "/v2/team/app/manifests/v1")
    assert private.status_code == 401 and "WWW-Authenticate" in private.headers
    # a mount needs pull on the source as well
    mount = basic("POST", f"/v2/bob/copy/blobs/uploads/?mount={sha256(image.config)}"
                  "&from=team/app", headers=BOB)  # fmt: skip
    assert mount.status_code == 201
    catalog = basic("GET", "/v2/_catalog", headers=BOB)
    assert catalog.status_code == 200 and "team/app" in catalog.json()["repositories"]
    assert basic("GET", "/v2/_catalog").status_code == 401


@pytest.fixture(scope="module")
def token_server(files: Path) -> Iterator[Server]:
    config = ServerConfig(
        root=str(files / "token-root"),
        htpasswd=str(files / "htpasswd"),
        access=str(files / "access"),
        token_realm="http://127.0.0.1/auth/token",
        token_service="test-registry",
    )
    with running(config) as server:
        yield server


def _token(server: Server, scope: str, auth: dict[str, str] | None = None) -> str:
    response = server(
        "GET", "/auth/token", params={"service": "test-registry", "scope": scope},
        headers=auth or {},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] > 0 and body["token"] == body["access_token"]
    token: str = body["token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_flow(token_server: Server) -> None:
    challenge = token_server("GET", "/v2/team/app/manifests/v1")
    assert challenge.status_code == 401 and error_code(challenge) == "UNAUTHORIZED"
    assert challenge.headers["WWW-Authenticate"] == (
        'Bearer realm="http://127.0.0.1/auth/token",service="test-registry",'
        'scope="repository:team/app:pull"'
    )
    scope = "repository:team/app:pull,push"
    alice = _token(token_server, scope, ALICE)
    claims = json.loads(base64.urlsafe_b64decode(alice.split(".")[1] + "=="))
    assert claims["sub"] == "alice" and claims["aud"] == "test-registry"
    assert claims["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    image = make_image("token")
    token_server.session.headers.update(_bearer(alice))
    try:
        push_image(token_server, "team/app", image, "v1")
    finally:
        del token_server.session.headers["Authorization"]
    # bob asks for push on team/app and is granted pull only: his push is refused
    bob = _token(token_server, scope, BOB)
    assert token_server("GET", "/v2/team/app/manifests/v1", headers=_bearer(bob)).status_code == 200
    data = os.urandom(10)
    refused = token_server("POST", f"/v2/team/app/blobs/uploads/?digest={sha256(data)}",
                           data=data, headers=_bearer(bob))  # fmt: skip
    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    # a token for one repository does not open another
    other = token_server("GET", "/v2/bob/app/tags/list", headers=_bearer(bob))
    assert other.status_code == 401
    # anonymous tokens carry the anonymous rights only
    anonymous = _token(token_server, "repository:public/x:pull,push")
    claims = json.loads(base64.urlsafe_b64decode(anonymous.split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "public/x", "actions": ["pull"]}]
    # wrong password at the token endpoint
    wrong = token_server("GET", "/auth/token", params={"scope": scope},
                         headers=_as("alice", "bad"))  # fmt: skip
    assert wrong.status_code == 401
    assert token_server("GET", "/auth/token", params={"scope": "bogus"}).status_code == 400
    assert token_server("GET", "/v2/", headers=_bearer(alice)).status_code == 200


def test_forged_and_expired_tokens_are_refused(token_server: Server, files: Path) -> None:
    alice = _token(token_server, "repository:team/app:pull", ALICE)
    header, claims, signature = alice.split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=="))
    body["access"][0]["actions"] = ["pull", "push", "delete"]
    forged_claims = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    forged = f"{header}.{forged_claims}.{signature}"
    refused = token_server("GET", "/v2/team/app/tags/list", headers=_bearer(forged))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    from berth.registry.tokens import TokenIssuer, load_or_create_key

    issuer = TokenIssuer(
        load_or_create_key(str(files / "token-root" / "token.key")), "test-registry", ttl=-120
    )
    expired = issuer.issue("alice", [])["token"]
    assert isinstance(expired, str)
    response = token_server("GET", "/v2/", headers=_bearer(expired))
    assert response.status_code == 401
    other_key = TokenIssuer(os.urandom(32), "test-registry").issue("alice", [])["token"]
    assert token_server("GET", "/v2/", headers=_bearer(str(other_key))).status_code == 401
    assert (files / "token-root" / "token.key").stat().st_mode & 0o777 == 0o600


def test_read_only(tmp_path: Path) -> None:
    image = make_image("ro")
    with running(ServerConfig(root=str(tmp_path))) as writable:
        push_image(writable, "ro/app", image, "v1")
    with running(ServerConfig(root=str(tmp_path), read_only=True)) as server:
        assert server("GET", "/v2/ro/app/manifests/v1").content == image.manifest
        for method, path in (
            ("POST", "/v2/ro/app/blobs/uploads/"),
            ("PUT", "/v2/ro/app/manifests/v2"),
            ("DELETE", f"/v2/ro/app/manifests/{image.digest}"),
            ("DELETE", f"/v2/ro/app/blobs/{sha256(image.config)}"),
        ):
            response = server(method, path, data=b"{}")
            assert response.status_code == 405, (method, path)
            assert error_code(response) == "UNSUPPORTED"
        assert server("GET", "/v2/ro/app/manifests/v1").status_code == 200


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    import asyncio
    import threading

    from berth.registry.server import bound_port, start, tls_context

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ports: list[int] = []

    async def main() -> None:
        runner = await start(
            ServerConfig(root=str(tmp_path / "root")), "127.0.0.1", 0,
            tls_context(str(cert), str(key)),
        )  # fmt: skip
        ports.append(bound_port(runner))
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not ports and time.monotonic() < deadline:
            time.sleep(0.02)
        url = f"https://127.0.0.1:{ports[0]}/v2/"
        response = requests.get(url, verify=str(cert), timeout=10)
        assert response.status_code == 200
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url.replace("https", "http"), timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_serve_refuses_an_open_registry_off_loopback(tmp_path: Path) -> None:
    berth = Path(sys.executable).parent / "berth"
    proc = subprocess.run(
        [str(berth), "registry", "serve", "--addr", "0.0.0.0:5999", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "refusing to serve 0.0.0.0:5999 without authentication" in proc.stderr
    bad = subprocess.run(
        [str(berth), "registry", "serve", "--addr", "nowhere", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 125 and "expected HOST:PORT" in bad.stderr


def test_access_rules_without_users(tmp_path: Path) -> None:
    """An access file alone says what anonymous callers may do (here: pull public/*)."""
    image = make_image("anon")
    with running(ServerConfig(root=str(tmp_path))) as writable:
        push_image(writable, "public/app", image, "v1")
        push_image(writable, "private/app", image, "v1")
    (tmp_path / "access").write_text("anonymous pull public/*\n")
    config = ServerConfig(root=str(tmp_path / "."), access=str(tmp_path / "access"))
    with running(config) as server:
        assert server("GET", "/v2/").status_code == 200
        assert server("GET", "/v2/public/app/manifests/v1").status_code == 200
        private = server("GET", "/v2/private/app/manifests/v1")
        assert private.status_code == 403 and error_code(private) == "DENIED"
        push = server("PUT", "/v2/public/app/manifests/v2", data=image.manifest)
        assert push.status_code == 403
