"""Berth's OCI distribution (1.1) registry server: the app, its routes and who may use them.

    berth registry serve --addr 127.0.0.1:5000 --root DIR [--htpasswd FILE [--access FILE]
                         [--token-realm URL]] [--tls-cert FILE --tls-key FILE] [--read-only]

Rules:
- One catch-all route under ``/v2/`` and a table of path patterns: a repository name may
  hold slashes, so the name is checked here (NAME_INVALID) before any handler runs; a known
  path with a method it does not take is 405 UNSUPPORTED.
- Every request needs a scope (``repository:NAME:pull|push|delete``, ``registry:catalog:*``
  for the catalog; the ``/v2/`` base check needs only a valid identity). GET and HEAD pull,
  DELETE deletes, the rest pushes. Read-only refuses push and delete with 405 UNSUPPORTED.
- Authentication, by configuration: none (the default; ``serve`` refuses it on an address
  that is not loopback unless told); an access file alone (rights of anonymous callers);
  Basic against an htpasswd file (401 with a Basic challenge, 403 DENIED when the user lacks
  the right); or the Docker token flow: the
  registry's own token endpoint at the realm's path issues HMAC-signed tokens for the
  intersection of what is asked and what the access rules grant, and ``/v2/`` answers 401
  with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` until a token carries
  the scope (``error="insufficient_scope"`` when a valid token lacks it).
- Every response carries ``Docker-Distribution-API-Version: registry/2.0``; errors are the
  spec's JSON bodies (server_errors); HEAD errors have no body.
- Shutdown aborts open uploads, so no ingest file outlives the server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from berth.errors import InvalidArgument
from berth.registry import server_blobs as blobs
from berth.registry import server_manifests as manifests
from berth.registry.auth import AccessRules, Htpasswd, Scope, basic_credentials, parse_scopes
from berth.registry.server_context import Call, Handler
from berth.registry.server_errors import API_VERSION_HEADER, RegistryError, errors_as
from berth.registry.storage import RegistryStorage, check_name
from berth.registry.tokens import TokenIssuer, load_or_create_key

log = logging.getLogger(__name__)

DEFAULT_SERVICE = "berth-registry"
BASIC_REALM = "berth-registry"
CATALOG = Scope("registry", "catalog", frozenset({"*"}))


@dataclass(frozen=True)
class ServerConfig:
    root: str
    htpasswd: str | None = None  # bcrypt users; Basic auth unless token_realm is set
    access: str | None = None  # per-repository rights (auth.AccessRules)
    token_realm: str | None = None  # the token flow: the URL clients get tokens from
    token_service: str = DEFAULT_SERVICE
    token_key: str | None = None  # HMAC secret file (default <root>/token.key, made once)
    read_only: bool = False


_NAME = r"(?P<name>.+?)"
ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"_catalog"), {"GET": manifests.catalog}),
    (re.compile(rf"{_NAME}/tags/list"), {"GET": manifests.list_tags}),
    (
        re.compile(rf"{_NAME}/manifests/(?P<reference>[^/]+)"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (re.compile(rf"{_NAME}/blobs/uploads/?"), {"POST": blobs.start_upload}),
    (
        re.compile(rf"{_NAME}/blobs/uploads/(?P<upload>[^/]+)"),
        {
            "GET": blobs.upload_status,
            "PATCH": blobs.patch_upload,
            "PUT": blobs.put_upload,
            "DELETE": blobs.cancel_upload,
        },
    ),
    (
        re.compile(rf"{_NAME}/blobs/(?P<digest>[^/]+)"),
        {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob},
    ),
    (re.compile(rf"{_NAME}/referrers/(?P<digest>[^/]+)"), {"GET": manifests.referrers}),
]


def _route(tail: str, path: str) -> tuple[re.Match[str], dict[str, Handler]]:
    for pattern, methods in ROUTES:
        match = pattern.fullmatch(tail)
        if match is not None:
            return match, methods
    raise RegistryError("NAME_UNKNOWN", f"no such endpoint: {path}", status=404)


def _action(method: str) -> str:
    if method in ("GET", "HEAD"):
        return "pull"
    return "delete" if method == "DELETE" else "push"


class Registry:
    """The app's state: storage, users, rules, token issuer."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.storage = RegistryStorage(config.root)
        self.rules = AccessRules.load(config.access, config.read_only)
        self.htpasswd = Htpasswd.load(config.htpasswd) if config.htpasswd else None
        self.tokens: TokenIssuer | None = None
        if config.token_realm:
            if self.htpasswd is None and config.access is None:
                raise InvalidArgument("--token-realm needs --htpasswd (or --access) to grant")
            key_file = config.token_key or f"{config.root}/token.key"
            self.tokens = TokenIssuer(load_or_create_key(key_file), config.token_service)

    @property
    def auth_enabled(self) -> bool:
        """Users or rules are configured (rules alone: what anonymous callers may do)."""
        return self.htpasswd is not None or self.tokens is not None or self.rules.rules is not None

    async def check_password(self, user: str, password: str) -> bool:
        assert self.htpasswd is not None
        return await asyncio.get_running_loop().run_in_executor(
            None, self.htpasswd.check, user, password
        )

    async def basic_user(self, request: web.Request) -> str | None:
        """The Basic-authenticated user, None without credentials; 401 for wrong ones."""
        credentials = basic_credentials(request.headers.get("Authorization", ""))
        if credentials is None or self.htpasswd is None:
            return None
        if not await self.check_password(*credentials):
            raise RegistryError(
                "UNAUTHORIZED",
                f"authentication failed for user {credentials[0]!r}",
                headers={"WWW-Authenticate": f'Basic realm="{BASIC_REALM}"'},
            )
        return credentials[0]

    def _bearer_challenge(self, scope: Scope | None, error: str = "") -> RegistryError:
        assert self.config.token_realm is not None
        config = self.config
        challenge = f'Bearer realm="{config.token_realm}",service="{config.token_service}"'
        if scope is not None:
            challenge += f',scope="{scope}"'
        if error:
            challenge += f',error="{error}"'
        what = "authentication required" if not error else f"token refused: {error}"
        return RegistryError(
            "UNAUTHORIZED", what, detail=None, headers={"WWW-Authenticate": challenge}
        )

    async def authorize(self, request: web.Request, scope: Scope | None) -> str | None:
        """The caller, if they may act on ``scope`` (None: any identity); else 401/403."""
        if not self.auth_enabled:
            return None
        header = request.headers.get("Authorization", "")
        if self.tokens is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                raise self._bearer_challenge(scope)
            try:
                claims = self.tokens.verify(token.strip())
            except InvalidArgument as e:
                log.info("registry: refused a token: %s", e.message)
                raise self._bearer_challenge(scope, "invalid_token") from None
            if scope is not None and not claims.allows(scope):
                raise self._bearer_challenge(scope, "insufficient_scope")
            return claims.subject or None
        user = await self.basic_user(request)
        basic = {"WWW-Authenticate": f'Basic realm="{BASIC_REALM}"'}
        can_log_in = self.htpasswd is not None
        if scope is None or self.rules.granted(user, scope) >= scope.actions:
            if scope is None and user is None and can_log_in:
                raise RegistryError("UNAUTHORIZED", "authentication required", headers=basic)
            return user
        if user is None and can_log_in:
            raise RegistryError("UNAUTHORIZED", "authentication required", headers=basic)
        who = "anonymous callers" if user is None else f"user {user!r}"
        actions = "/".join(sorted(scope.actions))
        raise RegistryError("DENIED", f"{who} may not {actions} {scope.name}")

    async def may_pull(self, request: web.Request, name: str) -> bool:
        try:
            await self.authorize(request, Scope("repository", name, frozenset({"pull"})))
        except RegistryError:
            return False
        return True

    # ------------------------------------------------------------------ handlers

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        if tail in ("", "/"):
            await self.authorize(request, None)
            return web.json_response({})
        match, methods = _route(tail, request.path)
        parts = match.groupdict()
        name = parts.pop("name", "") or ""
        if name:
            with errors_as(InvalidArgument="NAME_INVALID"):
                check_name(name)
        handler = methods.get(request.method)
        if handler is None:
            raise RegistryError(
                "UNSUPPORTED",
                f"{request.method} is not supported on {request.path}",
                headers={"Allow": ", ".join(methods)},
            )
        action = _action(request.method)
        if self.config.read_only and action != "pull":
            raise RegistryError("UNSUPPORTED", "this registry is read-only")
        scope = Scope("repository", name, frozenset({action})) if name else CATALOG
        user = await self.authorize(request, scope)
        call = Call(request, self.storage, name, parts, user)
        call.can_pull = lambda source: self.may_pull(request, source)
        return await handler(call)

    async def token(self, request: web.Request) -> web.StreamResponse:
        assert self.tokens is not None
        service = request.query.get("service")
        if service is not None and service != self.config.token_service:
            raise RegistryError(
                "DENIED",
                f"this token endpoint serves {self.config.token_service!r}, not {service!r}",
            )
        with errors_as(InvalidArgument="SCOPE_INVALID"):
            scopes = parse_scopes(request.query.getall("scope", []))
        user = await self.basic_user(request)
        granted = []
        for scope in scopes:
            actions = self.rules.granted(user, scope)
            if actions:
                granted.append(Scope(scope.type, scope.name, actions))
        log.debug("registry token for %r: %s", user, " ".join(map(str, granted)))
        return web.json_response(self.tokens.issue(user or "", granted))


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as e:
        return e.response(head_only=request.method == "HEAD")


async def _version_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(API_VERSION_HEADER)


def make_app(config: ServerConfig) -> web.Application:
    registry = Registry(config)
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app.router.add_route("*", "/v2", registry.dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", registry.dispatch)
    if config.token_realm:
        path = urlsplit(config.token_realm).path or "/token"
        app.router.add_route("GET", path, registry.token)
    app.on_response_prepare.append(_version_header)

    async def close(_app: web.Application) -> None:
        registry.storage.close()

    app.on_cleanup.append(close)
    app[REGISTRY] = registry
    return app


MAX_BODY = 1 << 22  # bytes aiohttp reads into memory for a request (bodies stream otherwise)
REGISTRY = web.AppKey("registry", Registry)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; an empty host is every address)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"invalid address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def start(
    config: ServerConfig, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Serve the registry on ``host:port``; the runner (``await runner.cleanup()`` stops it)."""
    runner = web.AppRunner(make_app(config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("registry serving %s on %s", config.root, site.name)
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner's first site listens on (for ``port=0``)."""
    for address in runner.addresses:
        return int(address[1])
    raise InvalidArgument("the registry is not listening")
