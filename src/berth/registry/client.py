"""The distribution-protocol client's plumbing: which URL a registry has, how it is pinged and
authenticated, its errors, and the progress events pulls and pushes report.

Rules:
- A reference's domain is the registry host (``localhost:5000/app:1`` is ``localhost:5000``).
  Plain http for ``localhost``, ``127.0.0.0/8``, ``::1`` and the hosts given as insecure (as
  dockerd's ``--insecure-registry``: ``host:port``, ``host`` for any port, or a CIDR); https
  otherwise. ``docker.io`` is refused at once with a clear error: these machines reach no
  public registry.
- ``open()`` pings ``/v2/`` first, as docker does. A 401 carries the challenge
  (``WWW-Authenticate``): ``Basic`` sends the credentials on every request ("no basic auth
  credentials" without any; for a pull or push they are checked by a second ping, so refused
  ones fail before anything moves), ``Bearer`` fetches a token from the realm for the repository's
  scope (``repository:<name>:pull[,push]``, plus ``pull`` on the repositories a push mounts
  from), with the credentials as Basic auth when there are some, anonymously otherwise.
- Registry errors read as the docker client prints them: ``<code in lower case>: <message>``
  (``manifest unknown: manifest unknown``); the kind follows the status: 401/403
  ``Unauthenticated``, 404 ``NotFound``, 5xx and unreachable hosts ``Unavailable``, the rest
  ``InvalidArgument``. A request that never got an answer names the method and URL, as Go's
  client does (``Get "http://…/v2/": …``).
- Blocking calls run in worker threads through ``in_thread``, which a cancellation waits
  for, so a cancelled transfer never closes a file under a running call.
- Nothing here touches the image store; ``client_pull`` and ``client_push`` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from berth.errors import BerthError, InvalidArgument, NotFound, Unauthenticated, Unavailable
from berth.registry.credentials import AuthConfig, encode_basic
from berth.spec.value import value

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT = "berth/0.1.0 (linux)"
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 120.0
PROGRESS_INTERVAL = 0.1  # seconds between two progress events of one blob
ERROR_BODY_MAX = 64 << 10


@value
class Event:
    """One progress line: ``id`` a layer's short id (or a tag, or ""), ``status`` dockerd's
    words ("Downloading", "Pull complete", …), ``current``/``total`` bytes while moving."""

    id: str
    status: str
    current: int | None = None
    total: int | None = None


Progress = Callable[[Event], None]


def no_progress(event: Event) -> None:
    pass


async def in_thread(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a worker thread. If the caller is cancelled meanwhile, the call is
    still waited for before the cancellation goes on, so the caller's cleanup (closing the file
    or ingest writer the call uses) never runs beside it."""
    future = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


class Throttle:
    """Lets a blob's byte-count events through at most every ``PROGRESS_INTERVAL`` seconds."""

    def __init__(self, progress: Progress, ident: str, status: str, total: int) -> None:
        self.progress, self.ident, self.status, self.total = progress, ident, status, total
        self._last = 0.0

    def __call__(self, current: int) -> None:
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL or current == self.total:
            self._last = now
            self.progress(Event(self.ident, self.status, current, self.total))


# --------------------------------------------------------------------------- hosts


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_port(domain: str) -> str:
    """The host part of ``host:port`` / ``[v6]:port``."""
    if domain.startswith("["):
        return domain[: domain.index("]") + 1]
    return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain


def is_insecure(domain: str, insecure: Iterable[str] = ()) -> bool:
    """True when ``domain`` is spoken to over plain http (see the module rules)."""
    host = _split_port(domain)
    if _is_loopback(host):
        return True
    for entry in insecure:
        if entry in (domain, host):
            return True
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
                if ipaddress.ip_address(host.strip("[]")) in network:
                    return True
            except ValueError:
                continue
    return False


def check_insecure_entry(entry: str) -> str:
    """An ``--insecure-registry`` value, checked: ``host``, ``host:port`` or a CIDR."""
    text = entry.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            raise InvalidArgument(
                f"insecure registry {entry} should not contain '://' (give host[:port] or a CIDR)"
            )
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidArgument(f"insecure registry {entry}: not a valid CIDR") from None
    elif not text:
        raise InvalidArgument("insecure registry: empty value")
    return text


def base_url(domain: str, insecure: Iterable[str] = ()) -> str:
    """``http://localhost:5000`` or ``https://host``; docker.io is refused (no internet)."""
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        raise Unavailable(
            "docker.io is not reachable: this machine reaches no public registry; pull from a "
            "registry on this host (localhost:5000/NAME) or docker load a saved image"
        )
    scheme = "http" if is_insecure(domain, insecure) else "https"
    return f"{scheme}://{domain}"


# --------------------------------------------------------------------------- challenges


@value
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*(,)?")
_SCHEME = re.compile(rf"\s*({_TOKEN})(?=\s|$|,)")


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` header (RFC 7235), parameters by lower-case
    name: ``Bearer realm="https://auth",service="reg"`` ->
    ``[Challenge("bearer", {"realm": …, "service": "reg"})]``."""
    found: list[Challenge] = []
    pos = 0
    while pos < len(header):
        if header[pos] in ", \t":
            pos += 1
            continue
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            raise InvalidArgument(f"WWW-Authenticate {header!r}: no scheme at offset {pos}")
        pos = scheme.end()
        params: dict[str, str] = {}
        while True:
            param = _PARAM.match(header, pos)
            if param is None or _SCHEME.fullmatch(header, pos, param.start(2) - 1):
                break
            quoted, bare = param.group(2), param.group(3)
            text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            params[param.group(1).lower()] = text
            pos = param.end()
            if param.group(4) is None:
                break
        found.append(Challenge(scheme.group(1).lower(), params))
    return found


# --------------------------------------------------------------------------- errors


def error_text(status: int, reason: str, body: bytes) -> str:
    """A registry's error as docker prints it: ``code: message`` of the first error in the
    body; with no such body (a HEAD's), the code its status stands for (401, 403), else the
    HTTP status."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        doc = None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code = str(first.get("code", "")).lower().replace("_", " ")
        message = str(first.get("message", "")) or code
        return f"{code}: {message}" if code else message
    if status == 401:
        return "unauthorized: authentication required"
    if status == 403:
        return "denied: requested access to the resource is denied"
    return f"{status} {reason}".strip()


def error_of(status: int, text: str) -> BerthError:
    if status in (401, 403):
        return Unauthenticated(text)
    if status == 404:
        return NotFound(text)
    if status >= 500:
        return Unavailable(text)
    return InvalidArgument(text)


async def read_error(response: aiohttp.ClientResponse) -> str:
    body = await response.content.read(ERROR_BODY_MAX) if response.method != "HEAD" else b""
    return error_text(response.status, response.reason or "", body)


def unreachable(method: str, url: str | URL, exc: BaseException) -> Unavailable:
    return Unavailable(f'{method.capitalize()} "{url}": {exc or type(exc).__name__}')


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body (released after); a broken transfer is Unavailable."""
    try:
        return await response.content.read(limit)
    except aiohttp.ClientError as e:
        raise unreachable(response.method, response.url, e) from None
    finally:
        response.release()


async def next_chunk(response: aiohttp.ClientResponse, chunks: AsyncIterator[bytes]) -> bytes:
    """The next piece of a streamed body, b"" at its end; a broken transfer is Unavailable."""
    try:
        return await anext(chunks, b"")
    except aiohttp.ClientError as e:
        raise unreachable(response.method, response.url, e) from None


# --------------------------------------------------------------------------- the client


def _bearer(response: aiohttp.ClientResponse) -> Challenge | None:
    try:
        found = parse_challenges(response.headers.get("WWW-Authenticate", ""))
    except InvalidArgument:
        return None
    return next((c for c in found if c.scheme == "bearer"), None)


class Registry:
    """One repository on one registry, authenticated for ``actions``; use ``async with``."""

    def __init__(
        self,
        domain: str,
        repository: str,
        auth: AuthConfig | None = None,
        insecure: Iterable[str] = (),
        actions: tuple[str, ...] = ("pull",),
        pull_from: Iterable[str] = (),
        probe: str = "manifests/latest",
    ) -> None:
        self.domain = domain
        self.repository = repository  # "" for a login (a token with no scope)
        self.base = base_url(domain, insecure)
        self.auth = auth if auth is not None and not auth.empty else None
        self.scopes = [f"repository:{repository}:{','.join(actions)}"] if repository else []
        self.scopes.extend(f"repository:{r}:pull" for r in pull_from if r != repository)
        self.probe = probe  # the request that needs the credentials, named in their absence
        self.authorization = ""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Registry:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise InvalidArgument("registry client used before open()")
        return self._session

    async def open(self) -> None:
        """Make the HTTP session, ping ``/v2/`` and authenticate (see the module rules)."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, auto_decompress=False
        )
        try:
            await self._authenticate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.repository}/{path}"

    async def ping(self) -> tuple[aiohttp.ClientResponse, bytes]:
        """``GET /v2/`` with the authorization set so far: the response (released) and the
        start of its body."""
        url = f"{self.base}/v2/"
        try:
            response = await self.session.get(url, headers=self._headers())
        except aiohttp.ClientError as e:
            raise unreachable("GET", url, e) from None
        return response, await read_body(response, ERROR_BODY_MAX)

    async def _authenticate(self) -> None:
        response, _ = await self.ping()
        if response.status == 200:
            return
        if response.status != 401:
            text = error_text(response.status, response.reason or "", b"")
            raise error_of(response.status, f'Get "{response.url}": {text}')
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme:
            self.authorization = "Bearer " + await self._token(by_scheme["bearer"])
        elif "basic" in by_scheme:
            if self.auth is None:
                # docker's words; the next request is the one that needed credentials
                raise Unauthenticated(f'Head "{self.url(self.probe)}": no basic auth credentials')
            self.authorization = "Basic " + encode_basic(self.auth.username, self.auth.password)
            if self.repository:  # a pull or push: refused credentials are refused now
                again, body = await self.ping()
                if again.status != 200:
                    text = error_text(again.status, again.reason or "", body)
                    raise error_of(again.status, text)
        else:
            raise Unauthenticated(
                f"{self.base}/v2/ asks for authentication the client does not know "
                f"({response.headers.get('WWW-Authenticate', 'no challenge')!r})"
            )

    async def _token(self, challenge: Challenge) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise Unauthenticated(f"bearer challenge of {self.base} has no realm URL: {realm!r}")
        query: list[tuple[str, str]] = []
        if service := challenge.params.get("service"):
            query.append(("service", service))
        query.extend(("scope", scope) for scope in self.scopes)
        headers = {}
        if self.auth is not None and self.auth.registry_token:
            return self.auth.registry_token
        if self.auth is not None and self.auth.username:
            query.append(("account", self.auth.username))
        if self.auth is not None and (self.auth.username or self.auth.password):
            headers["Authorization"] = "Basic " + encode_basic(
                self.auth.username, self.auth.password
            )
        url = URL(realm).extend_query(query)
        try:
            async with self.session.get(url, headers=headers) as response:
                if response.status != 200:
                    text = await read_error(response)
                    raise Unauthenticated(f'Get "{url}": {text}')
                doc = await response.json(content_type=None)
        except aiohttp.ClientError as e:
            raise unreachable("GET", url, e) from None
        except ValueError as e:
            raise Unauthenticated(f"token from {realm}: not JSON: {e}") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthenticated(f"token from {realm}: the answer has no token")
        log.debug("registry %s: bearer token for %s", self.domain, " ".join(self.scopes))
        return token

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers

    async def request(
        self,
        method: str,
        url: str | URL,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        ok: tuple[int, ...] = (200,),
        allow_redirects: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send a request; the response when its status is in ``ok`` (the caller releases it),
        else the registry's error (see the module rules). A bearer token refused on the way
        (expired during a long transfer) is renewed once, when the body can be sent again."""
        resendable = data is None or isinstance(data, bytes)
        for attempt in (1, 2):
            try:
                response = await self.session.request(
                    method,
                    url,
                    headers=self._headers(headers),
                    data=data,
                    allow_redirects=allow_redirects,
                )
            except aiohttp.ClientError as e:
                raise unreachable(method, url, e) from None
            if response.status in ok:
                return response
            challenge = _bearer(response) if response.status == 401 else None
            if attempt == 2 or not resendable or challenge is None:
                break
            if not self.authorization.startswith("Bearer "):
                break
            response.release()
            log.debug("registry %s: bearer token refused, renewing it", self.domain)
            self.authorization = "Bearer " + await self._token(challenge)
        try:
            text = await read_error(response)
        except aiohttp.ClientError as e:
            text = f"{response.status} {response.reason}: {e}"
        finally:
            response.release()
        raise error_of(response.status, text)

    async def login(self) -> None:
        """Check the credentials: ``/v2/`` must answer 200 with them (dockerd's words when
        it does not)."""
        response, _ = await self.ping()
        if response.status != 200:
            raise Unauthenticated(
                f"login attempt to {self.base}/v2/ failed with status: "
                f"{response.status} {response.reason}"
            )


async def login(domain: str, auth: AuthConfig, insecure: Iterable[str] = ()) -> None:
    """Check ``auth`` against the registry at ``domain`` (``POST /auth``, ``berth login``)."""
    async with Registry(domain, "", auth, insecure, probe="") as registry:
        await registry.login()
