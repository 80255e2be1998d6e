"""The registry server's pure parts: names, manifests on the way in, scopes, htpasswd, access
rules and tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import bcrypt
import pytest

from berth.errors import InvalidArgument
from berth.registry.auth import AccessRules, Htpasswd, Scope, basic_credentials, parse_scopes
from berth.registry.storage import check_name, check_tag, parse_manifest
from berth.registry.tokens import TokenIssuer, load_or_create_key

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("name", ["a", "library/busybox", "a-b/c__d/e.f", "x0/y--1", "a" * 255])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "a/", "/a", "a//b", "-a", "a-", "a_/b", "../etc", "a/_tags", "a" * 256]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid repository name"):
        check_name(name)


def test_tags() -> None:
    assert check_tag("v1.0_rc-2") == "v1.0_rc-2"
    for bad in ("", ".hidden", "-x", "a/b", "x" * 129, ".."):
        with pytest.raises(InvalidArgument, match="invalid tag"):
            check_tag(bad)


def _manifest(**extra: object) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST,
                   "size": 2},
        "layers": [],
        **extra,
    }  # fmt: skip
    return json.dumps(doc).encode()


def test_parse_manifest() -> None:
    parsed = parse_manifest(_manifest(), "application/vnd.oci.image.manifest.v1+json")
    assert parsed.blobs == (DIGEST,) and parsed.children == ()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST,
         "size": 3}]}).encode()  # fmt: skip
    found = parse_manifest(index, "application/vnd.oci.image.index.v1+json")
    assert found.children == (DIGEST,)
    assert found.media_type == "application/vnd.oci.image.index.v1+json"
    with pytest.raises(InvalidArgument, match="does not match Content-Type"):
        parse_manifest(_manifest(), "application/vnd.docker.distribution.manifest.v2+json")
    with pytest.raises(InvalidArgument, match="schema 1"):
        parse_manifest(json.dumps({"schemaVersion": 1}).encode(), "application/json")
    with pytest.raises(InvalidArgument, match="not JSON"):
        parse_manifest(b"\xff", "")
    with pytest.raises(InvalidArgument, match="unsupported media type"):
        parse_manifest(json.dumps({"schemaVersion": 2, "config": {}}).encode(), "text/plain")


def test_scopes() -> None:
    scope = Scope.parse("repository:team/app:pull,push")
    assert scope == Scope("repository", "team/app", frozenset({"pull", "push"}))
    assert str(scope) == "repository:team/app:pull,push"
    assert Scope.parse("repository:host:5000/app:pull").name == "host:5000/app"
    assert parse_scopes(["repository:a:pull repository:b:push", "registry:catalog:*"]) == [
        Scope("repository", "a", frozenset({"pull"})),
        Scope("repository", "b", frozenset({"push"})),
        Scope("registry", "catalog", frozenset({"*"})),
    ]
    for bad in ("pull", "repository:a", "user:a:pull", "repository::pull"):
        with pytest.raises(InvalidArgument, match="invalid scope"):
            Scope.parse(bad)


def test_basic_credentials() -> None:
    encoded = base64.b64encode(b"alice:pa:ss").decode()
    assert basic_credentials(f"Basic {encoded}") == ("alice", "pa:ss")
    assert basic_credentials(f"basic {encoded}") == ("alice", "pa:ss")
    assert basic_credentials("Bearer x") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_htpasswd(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "htpasswd"
    path.write_text(f"# users\nalice:$2y${hashed[4:]}\n\nbob:{hashed}\n")
    users = Htpasswd.load(str(path))
    assert users.check("alice", "pw") and users.check("bob", "pw")
    assert users.check("alice", "pw")  # the remembered path
    assert not users.check("alice", "wrong") and not users.check("carol", "pw")
    path.write_text("alice:$apr1$abc$def\n")
    with pytest.raises(InvalidArgument, match=r"htpasswd:1: user 'alice' has no bcrypt hash"):
        Htpasswd.load(str(path))


def test_access_rules(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_text(
        "alice pull,push,delete *\nbob pull team/* public/*\n* push shared/*\n"
        "anonymous pull public/*  # everyone reads public\n"
    )
    rules = AccessRules.load(str(path))
    everything = frozenset({"pull", "push", "delete"})

    def granted(user: str | None, name: str) -> frozenset[str]:
        return rules.granted(user, Scope("repository", name, everything))

    assert granted("alice", "x/y") == everything
    assert granted("bob", "team/app") == {"pull"}
    assert granted("bob", "shared/app") == {"push"}
    assert granted("bob", "other") == frozenset()
    assert granted(None, "public/app") == {"pull"}
    assert granted(None, "team/app") == frozenset()
    read_only = AccessRules.load(str(path), read_only=True)
    assert read_only.granted("alice", Scope("repository", "x", everything)) == {"pull"}
    defaults = AccessRules.load(None)
    assert defaults.granted("anyone", Scope("repository", "x", everything)) == everything
    assert defaults.granted(None, Scope("repository", "x", everything)) == frozenset()
    path.write_text("alice pull,admin *\n")
    with pytest.raises(InvalidArgument, match="unknown action 'admin'"):
        AccessRules.load(str(path))


def test_tokens(tmp_path: Path) -> None:
    key = load_or_create_key(str(tmp_path / "key"))
    assert load_or_create_key(str(tmp_path / "key")) == key  # made once
    issuer = TokenIssuer(key, "svc")
    scope = Scope("repository", "a/b", frozenset({"pull", "push"}))
    token = str(issuer.issue("alice", [scope])["token"])
    claims = issuer.verify(token)
    assert claims.subject == "alice"
    assert claims.allows(Scope("repository", "a/b", frozenset({"push"})))
    assert not claims.allows(Scope("repository", "a/b", frozenset({"delete"})))
    assert not claims.allows(Scope("repository", "a/c", frozenset({"pull"})))
    with pytest.raises(InvalidArgument, match="audience"):
        TokenIssuer(key, "other").verify(token)
    with pytest.raises(InvalidArgument, match="bad signature"):
        TokenIssuer(b"k" * 32, "svc").verify(token)
    _header, body, _sig = token.split(".")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(InvalidArgument, match="unsupported algorithm"):
        issuer.verify(f"{none_header}.{body}.")
    with pytest.raises(InvalidArgument, match="expired"):
        issuer.verify(str(TokenIssuer(key, "svc", ttl=-3600).issue("a", [])["token"]))
    with pytest.raises(InvalidArgument, match="not a JWT"):
        issuer.verify("abc")
    (tmp_path / "short").write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="too short"):
        load_or_create_key(str(tmp_path / "short"))
