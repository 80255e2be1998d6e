"""Content digests: ``sha256:<64 hex>`` (and ``sha512:<128 hex>``), parsing and hashing.

Rules: a digest travels as its string form (``sha256:…``) everywhere; ``parse`` and
``validate`` are the checks at the edges and raise ``InvalidArgument`` naming the value.
Only the algorithms Berth can verify are accepted (sha256, the default, and sha512), with
exactly their number of lowercase hex digits, as the OCI spec requires.
"""

from __future__ import annotations

import hashlib

from berth.errors import InvalidArgument
from berth.spec.image import DIGEST_HEX_LENGTHS, digest_problem
from berth.spec.value import value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

SHA256 = "sha256"
SHA512 = "sha512"
ALGORITHMS = tuple(DIGEST_HEX_LENGTHS)  # the ones Berth verifies
CHUNK = 1 << 20
EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@value
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse(text: str) -> Digest:
    """``sha256:<hex>`` -> Digest; InvalidArgument naming the value if it is not one."""
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid digest {text!r}: expected a string")
    problem = digest_problem(text)
    algorithm, _, encoded = text.partition(":")
    if problem is None and algorithm not in DIGEST_HEX_LENGTHS:
        problem = f"unsupported algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"
    if problem is not None:
        raise InvalidArgument(f"invalid digest {text!r}: {problem}")
    return Digest(algorithm, encoded)


def validate(text: str) -> str:
    """``text`` itself if it is a digest Berth can verify; InvalidArgument otherwise."""
    parse(text)
    return text


def is_digest(text: str) -> bool:
    try:
        parse(text)
    except InvalidArgument:
        return False
    return True


def short(text: str, length: int = 12) -> str:
    """The short id Docker prints: the first ``length`` hex digits."""
    return parse(text).hex[:length]


class Hasher:
    """A streaming hash that counts the bytes it has seen."""

    __slots__ = ("_hash", "algorithm", "size")

    def __init__(self, algorithm: str = SHA256) -> None:
        if algorithm not in DIGEST_HEX_LENGTHS:
            raise InvalidArgument(
                f"unsupported digest algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"
            )
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"


def of_bytes(data: bytes | bytearray | memoryview, algorithm: str = SHA256) -> str:
    hasher = Hasher(algorithm)
    hasher.update(data)
    return hasher.digest()


def of_stream(stream: BinaryIO, algorithm: str = SHA256) -> tuple[str, int]:
    """(digest, size) of everything left in ``stream``, read in chunks."""
    hasher = Hasher(algorithm)
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
    return hasher.digest(), hasher.size


def of_file(path: str, algorithm: str = SHA256) -> tuple[str, int]:
    with open(path, "rb") as stream:
        return of_stream(stream, algorithm)
