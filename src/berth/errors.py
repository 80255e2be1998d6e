"""One error vocabulary for every layer of Berth.

Rules: code raises these (never bare Exception) with a message that names the field, value or
object at fault; each API maps them to its own status codes in exactly one module. Errors raised
in a child process travel to the parent as data (``to_json``/``from_json``) and are re-raised
there with the same class.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class BerthError(Exception):
    """Base of every error Berth raises on purpose."""

    kind = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message}

    @staticmethod
    def from_json(data: dict[str, Any]) -> BerthError:
        cls = _BY_KIND.get(str(data.get("kind")), BerthError)
        return cls(str(data.get("message", "unknown error")))


class NotFound(BerthError):
    kind = "not_found"


class AlreadyExists(BerthError):
    kind = "already_exists"


class Conflict(BerthError):
    kind = "conflict"


class InvalidArgument(BerthError):
    kind = "invalid_argument"


class FailedPrecondition(BerthError):
    kind = "failed_precondition"


class Unavailable(BerthError):
    kind = "unavailable"


class Unsupported(BerthError):
    kind = "unsupported"


class Unauthenticated(BerthError):
    """Credentials missing or refused (a registry's 401/403)."""

    kind = "unauthenticated"


_BY_KIND: dict[str, type[BerthError]] = {
    cls.kind: cls
    for cls in (
        BerthError,
        NotFound,
        AlreadyExists,
        Conflict,
        InvalidArgument,
        FailedPrecondition,
        Unavailable,
        Unsupported,
        Unauthenticated,
    )
}
