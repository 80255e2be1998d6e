"""Registry credentials as Docker keeps and sends them: ``config.json`` and ``X-Registry-Auth``.

``config.json`` (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``)::

    {"auths": {"localhost:5000": {"auth": "<base64 of user:password>"},
               "https://index.docker.io/v1/": {"auth": "…", "identitytoken": "…"}}}

Rules:
- Keys are registry hosts as the user typed them (``host:port``), Docker Hub's is
  ``https://index.docker.io/v1/``; a lookup also matches a key written as a URL
  (``http://host:port/v2/``), as the docker CLI does.
- Writing keeps every other key of the file as it was (``credsStore``, ``psFormat``, …) and is
  atomic (tmp + fsync + rename), mode 0600 as the docker CLI leaves it. A credential helper
  (``credsStore``/``credHelpers``) is not run: the credentials Berth stores go in the file.
- ``X-Registry-Auth`` is base64url of the AuthConfig JSON (``username``, ``password``,
  ``serveraddress``, ``identitytoken``, ``registrytoken``); decoding accepts missing padding
  and the standard alphabet too, as dockerd does; an empty or ``{}`` header is no credentials.
- Stdlib only: the CLI imports this module on ``login``/``pull``/``push`` start-up.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from typing import Any

from berth.errors import InvalidArgument
from berth.spec.value import value

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_KEY})


@value
class AuthConfig:
    username: str = ""
    password: str = ""
    server_address: str = ""
    identity_token: str = ""  # an OAuth refresh token (Docker Hub's), sent instead of a password
    registry_token: str = ""  # a bearer token given as is

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def to_json(self) -> dict[str, str]:
        out = {"username": self.username, "password": self.password}
        if self.server_address:
            out["serveraddress"] = self.server_address
        if self.identity_token:
            out["identitytoken"] = self.identity_token
        if self.registry_token:
            out["registrytoken"] = self.registry_token
        return out

    @staticmethod
    def from_json(data: Any, what: str = "auth config") -> AuthConfig:
        if not isinstance(data, dict):
            raise InvalidArgument(f"{what}: expected a JSON object")
        fields: dict[str, str] = {}
        for key, name in (
            ("username", "username"),
            ("password", "password"),
            ("serveraddress", "server_address"),
            ("identitytoken", "identity_token"),
            ("registrytoken", "registry_token"),
        ):
            found = data.get(key) or data.get(key.capitalize()) or ""
            if not isinstance(found, str):
                raise InvalidArgument(f"{what}: {key} must be a string")
            fields[name] = found
        auth = data.get("auth")
        if auth and not fields["username"]:
            fields["username"], fields["password"] = decode_basic(auth, f"{what}: auth")
        return AuthConfig(**fields)


def server_key(server: str) -> str:
    """The ``auths`` key of a registry: ``host:port`` as given, Docker Hub's URL for Hub."""
    host = normalize_server(server)
    return DOCKER_HUB_KEY if host == "docker.io" else host


def normalize_server(server: str) -> str:
    """``http://host:5000/v2/`` -> ``host:5000``; Docker Hub's names -> ``docker.io``."""
    text = server.strip()
    if text in _HUB_NAMES:
        return "docker.io"
    for scheme in ("https://", "http://"):
        text = text.removeprefix(scheme)
    host = text.split("/", 1)[0]
    if not host:
        raise InvalidArgument(f"registry server {server!r}: no host name")
    return "docker.io" if host in _HUB_NAMES else host


def encode_basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def decode_basic(text: Any, what: str) -> tuple[str, str]:
    if not isinstance(text, str):
        raise InvalidArgument(f"{what}: expected a base64 string")
    try:
        plain = base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{what}: not base64 of user:password ({e})") from None
    username, colon, password = plain.partition(":")
    if not colon:
        raise InvalidArgument(f"{what}: not base64 of user:password (no ':')")
    return username, password


# --------------------------------------------------------------------------- X-Registry-Auth


def encode_header(auth: AuthConfig | None) -> str:
    """The ``X-Registry-Auth`` value for ``auth`` (``e30=``, i.e. ``{}``, for none)."""
    doc = {} if auth is None else auth.to_json()
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode("ascii")


def decode_header(text: str | None) -> AuthConfig | None:
    """The credentials an ``X-Registry-Auth`` header carries; None for none."""
    if not text or not text.strip():
        return None
    raw = text.strip()
    padded = raw + "=" * (-len(raw) % 4)
    try:
        if "+" in raw or "/" in raw:
            data = base64.b64decode(padded)
        else:
            data = base64.urlsafe_b64decode(padded)
        doc = json.loads(data)
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument(f"X-Registry-Auth: not base64url-encoded JSON ({e})") from None
    auth = AuthConfig.from_json(doc, "X-Registry-Auth")
    return None if auth.empty else auth


# --------------------------------------------------------------------------- config.json


def config_path(directory: str | None = None) -> str:
    """``config.json`` in ``directory``, else ``$DOCKER_CONFIG``, else ``~/.docker``."""
    base = directory or os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    return os.path.join(base, "config.json")


class ConfigFile:
    """One ``config.json``; read on each call, so two processes see each other's logins."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or config_path()

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        if not data.strip():
            return {}
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"{self.path}: not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"{self.path}: expected a JSON object")
        auths = doc.get("auths", {})
        if not isinstance(auths, dict):
            raise InvalidArgument(f"{self.path}: auths must be an object")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent="\t")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _find(self, auths: dict[str, Any], server: str) -> str | None:
        wanted = normalize_server(server)
        for key in auths:
            with contextlib.suppress(InvalidArgument):
                if normalize_server(key) == wanted:
                    return key
        return None

    def get(self, server: str) -> AuthConfig | None:
        """The stored credentials for ``server``; None when there are none."""
        auths = self._read().get("auths", {})
        key = self._find(auths, server)
        if key is None:
            return None
        auth = AuthConfig.from_json(auths[key], f"{self.path}: auths[{key!r}]")
        if auth.empty:
            return None
        return AuthConfig(auth.username, auth.password, server_key(server), auth.identity_token, "")

    def store(self, server: str, auth: AuthConfig) -> None:
        doc = self._read()
        auths = doc.setdefault("auths", {})
        old = self._find(auths, server)
        if old is not None:
            del auths[old]
        entry: dict[str, str] = {}
        if auth.username or auth.password:
            entry["auth"] = encode_basic(auth.username, auth.password)
        if auth.identity_token:
            entry["identitytoken"] = auth.identity_token
        auths[server_key(server)] = entry
        self._write(doc)

    def erase(self, server: str) -> bool:
        """Forget ``server``'s credentials; False if there were none."""
        doc = self._read()
        auths = doc.get("auths", {})
        key = self._find(auths, server)
        if key is None:
            return False
        del auths[key]
        self._write(doc)
        return True
