"""Bearer tokens of the Docker registry token flow, issued and checked by the registry itself.

Rules: a token is a JWT (``header.claims.signature``, base64url without padding) signed with
HMAC-SHA256 under a secret that never leaves the registry (``load_or_create_key``: 32 random
bytes in a 0600 file, made atomically once). Claims as docker's token servers write them:
``iss``, ``sub`` (the user, "" for anonymous), ``aud`` (the service), ``exp``/``nbf``/``iat``,
``jti`` and ``access`` (``[{"type", "name", "actions"}]``). ``verify`` checks the algorithm,
the signature (constant time), the audience and the time window (``LEEWAY`` seconds of clock
skew) and raises InvalidArgument saying which failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.registry.auth import Scope

TOKEN_TTL = 300  # seconds
LEEWAY = 60  # seconds of clock skew accepted on nbf/exp
KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: str) -> bytes:
    """The signing secret in ``path``, made (0600, atomically) if the file does not exist."""
    try:
        with open(path, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key-")
        try:
            os.write(fd, os.urandom(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, "rb") as f:
            key = f.read()
    if len(key) < 16:
        raise InvalidArgument(f"token key {path} is too short ({len(key)} bytes, 16 at least)")
    return key


@dataclass(frozen=True)
class Claims:
    subject: str
    access: tuple[Scope, ...]

    def allows(self, scope: Scope) -> bool:
        granted: set[str] = set()
        for entry in self.access:
            if entry.type == scope.type and entry.name == scope.name:
                granted |= entry.actions
        return scope.actions <= granted or "*" in granted


class TokenIssuer:
    def __init__(
        self, key: bytes, service: str, issuer: str = "berth-registry", ttl: int = TOKEN_TTL
    ) -> None:
        self.key = key
        self.service = service
        self.issuer = issuer
        self.ttl = ttl

    def _sign(self, signing_input: bytes) -> bytes:
        return hmac.new(self.key, signing_input, hashlib.sha256).digest()

    def issue(self, subject: str, access: list[Scope]) -> dict[str, object]:
        """The token endpoint's JSON answer for ``subject`` granted ``access``."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [
                {"type": s.type, "name": s.name, "actions": sorted(s.actions)} for s in access
            ],
        }
        header = {"typ": "JWT", "alg": "HS256"}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        token = signing_input + "." + _b64(self._sign(signing_input.encode("ascii")))
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}

    def verify(self, token: str) -> Claims:
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidArgument("token is not a JWT (header.claims.signature)")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error) as e:
            raise InvalidArgument(f"token is malformed: {e}") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise InvalidArgument("token: unsupported algorithm (expected HS256)")
        expected = self._sign(f"{parts[0]}.{parts[1]}".encode("ascii"))
        if not hmac.compare_digest(expected, signature):
            raise InvalidArgument("token: bad signature")
        if not isinstance(claims, dict):
            raise InvalidArgument("token: claims are not an object")
        if claims.get("aud") != self.service:
            raise InvalidArgument(f"token: audience {claims.get('aud')!r} is not {self.service!r}")
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int) or not isinstance(nbf, int):
            raise InvalidArgument("token: exp and nbf must be integers")
        if now > exp + LEEWAY:
            raise InvalidArgument("token has expired")
        if now < nbf - LEEWAY:
            raise InvalidArgument("token is not valid yet")
        access: list[Scope] = []
        for entry in claims.get("access") or []:
            if not isinstance(entry, dict):
                raise InvalidArgument("token: access entries must be objects")
            access.append(
                Scope(
                    str(entry.get("type")),
                    str(entry.get("name")),
                    frozenset(str(a) for a in entry.get("actions") or []),
                )
            )
        return Claims(str(claims.get("sub") or ""), tuple(access))
