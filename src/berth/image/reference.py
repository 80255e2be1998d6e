"""Image references, with Docker's grammar and normalisation.

Grammar (docker/distribution's ``reference`` package)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]       host: DNS-like labels, or an IPv6 address in brackets
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*      separator: "." | "_" | "__" | "-"+
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

Normalisation as Docker does it: the first component is a domain only if it contains "." or
":", is "localhost", or has an upper-case letter; otherwise the domain is ``docker.io``, and a
one-component name on docker.io gets ``library/``. ``index.docker.io`` means ``docker.io``.
``parse`` adds the tag ``latest`` when neither a tag nor a digest is given; a reference with
both keeps both (pulling by it uses the digest). ``familiar()`` is the short form docker
prints (``busybox:latest``). Errors are ``InvalidArgument`` naming the reference and the part
at fault.
"""

from __future__ import annotations

import re

from berth.errors import InvalidArgument
from berth.image import digest as digests
from berth.spec.value import value

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255  # characters in domain/path
TAG_MAX = 128

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]*", re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")


@value
class Reference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository with its domain: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        return _with_suffix(self.name, self.tag, self.digest)

    def familiar_name(self) -> str:
        """The repository as docker prints it: ``busybox``, ``user/app``, ``host:5000/a/b``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        return self.path.removeprefix(OFFICIAL_PREFIX) if self.path.count("/") == 1 else self.path

    def familiar(self) -> str:
        """The whole reference as docker prints it: ``busybox:latest``."""
        return _with_suffix(self.familiar_name(), self.tag, self.digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, _check_tag(tag, f"{self}:{tag}"), self.digest)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, self.tag, _check_digest(digest, str(self)))

    def repository(self) -> Reference:
        """The name alone, without tag or digest."""
        return Reference(self.domain, self.path)


def _with_suffix(name: str, tag: str, digest: str) -> str:
    text = f"{name}:{tag}" if tag else name
    return f"{text}@{digest}" if digest else text


def _bad(text: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format {text!r}: {why}")


def _check_tag(tag: str, text: str) -> str:
    if len(tag) > TAG_MAX:
        raise _bad(text, f"tag {tag[:20]!r}… is longer than {TAG_MAX} characters")
    if not _TAG.fullmatch(tag):
        raise _bad(
            text,
            f"tag {tag!r} must be letters, digits, '_', '.' or '-' and not start with '.' or '-'",
        )
    return tag


def _check_digest(digest: str, text: str) -> str:
    try:
        digests.validate(digest)
    except InvalidArgument as exc:
        raise _bad(text, exc.message) from None
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, path = DEFAULT_DOMAIN, rest
    elif "." in first or ":" in first or first == "localhost" or first.lower() != first:
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse_normalized(text: str) -> Reference:
    """A reference, normalised, with no default tag (``ParseNormalizedNamed``)."""
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid reference format {text!r}: expected a string")
    if not text:
        raise _bad(text, "repository name must have at least one component")
    if _IDENTIFIER.fullmatch(text):
        raise _bad(text, "a repository name cannot be 64 hexadecimal digits (that is an id)")
    rest, at, digest = text.partition("@")
    if at:
        if not rest:
            raise _bad(text, "repository name is missing before '@'")
        _check_digest(digest, text)
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1 :]
        _check_tag(tag, text)
    if not name:
        raise _bad(text, "repository name must have at least one component")
    domain, path = _split_domain(name)
    if not _DOMAIN.fullmatch(domain):
        raise _bad(text, f"domain {domain!r} is not a host name or address with an optional port")
    if path.lower() != path:
        raise _bad(text, f"repository name {path!r} must be lowercase")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            shown = repr(component) if component else "an empty component"
            raise _bad(
                text,
                f"{shown} in repository name {path!r} must be lowercase letters and digits, "
                "separated by '.', '_', '__' or '-'",
            )
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _bad(text, f"repository name must not be more than {NAME_MAX} characters")
    return Reference(domain, path, tag, digest)


def parse(text: str) -> Reference:
    """A reference, normalised, tagged ``latest`` if it has neither tag nor digest."""
    ref = parse_normalized(text)
    if not ref.tag and not ref.digest:
        return Reference(ref.domain, ref.path, DEFAULT_TAG)
    return ref


def familiar(text: str) -> str:
    """The familiar form of a reference string: ``docker.io/library/busybox`` -> ``busybox``."""
    return parse_normalized(text).familiar()
