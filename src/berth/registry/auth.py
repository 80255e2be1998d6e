"""Who may do what on the registry: htpasswd users, per-repository rights, scopes.

Rules:
- Users come from an htpasswd file with bcrypt entries, as ``htpasswd -B`` writes them
  (``$2y$``, also ``$2a$``/``$2b$``); any other hash format is refused when the file is loaded,
  naming the line. A password that checked once is remembered (its salted SHA-256, in memory)
  so that Basic auth on every request does not pay bcrypt's cost each time.
- Rights come from an optional access file, one rule a line::

      # user       actions            repositories (shell patterns)
      alice        pull,push,delete   *
      bob          pull               library/* team/app
      *            pull               public/*        ("*": any authenticated user)
      anonymous    pull               public/*        (no credentials at all)

  Without one, an authenticated user may do everything and anonymous nothing. Rights add up
  over the rules that match; ``--read-only`` takes push and delete from everyone.
- A scope is the Docker token flow's ``repository:NAME:pull,push`` (``registry:catalog:*`` for
  the catalog); ``Scope.parse`` refuses anything else with InvalidArgument naming it.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import os
from dataclasses import dataclass

from berth.errors import InvalidArgument

ACTIONS = frozenset({"pull", "push", "delete"})
WRITE_ACTIONS = frozenset({"push", "delete"})
ANONYMOUS = "anonymous"
ANY_USER = "*"
_BCRYPT_PREFIXES = ("$2y$", "$2a$", "$2b$")


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: frozenset[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    @staticmethod
    def parse(text: str) -> Scope:
        kind, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind not in ("repository", "registry") or not name or not actions:
            raise InvalidArgument(
                f"invalid scope {text!r}: expected repository:NAME:ACTIONS or registry:catalog:*"
            )
        return Scope(kind, name, frozenset(a for a in actions.split(",") if a))


def parse_scopes(values: list[str]) -> list[Scope]:
    """The ``scope`` query parameters of a token request (each may hold several, spaced)."""
    return [Scope.parse(part) for value in values for part in value.split() if part]


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, None if it is not one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Htpasswd:
    def __init__(self, entries: dict[str, bytes]) -> None:
        self._entries = entries
        self._checked: dict[str, bytes] = {}  # user -> sha256(salt + password) that passed
        self._salt = os.urandom(16)

    @staticmethod
    def load(path: str) -> Htpasswd:
        entries: dict[str, bytes] = {}
        with open(path, encoding="utf-8") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                user, sep, hashed = line.partition(":")
                if not sep or not user:
                    raise InvalidArgument(f"{path}:{number}: expected user:hash")
                if not hashed.startswith(_BCRYPT_PREFIXES):
                    raise InvalidArgument(
                        f"{path}:{number}: user {user!r} has no bcrypt hash "
                        f"(write the file with htpasswd -B)"
                    )
                entries[user] = hashed.encode("ascii")
        return Htpasswd(entries)

    def check(self, user: str, password: str) -> bool:
        hashed = self._entries.get(user)
        if hashed is None:
            return False
        fingerprint = hashlib.sha256(self._salt + password.encode()).digest()
        known = self._checked.get(user)
        if known is not None and hmac.compare_digest(known, fingerprint):
            return True
        import bcrypt  # imported here: only servers with an htpasswd file need it

        # bcrypt reads $2y$ (htpasswd -B) as the $2b$ it is
        candidate = b"$2b$" + hashed[4:] if hashed.startswith(b"$2y$") else hashed
        if bcrypt.checkpw(password.encode(), candidate):
            self._checked[user] = fingerprint
            return True
        return False


@dataclass(frozen=True)
class Rule:
    user: str
    actions: frozenset[str]
    patterns: tuple[str, ...]


class AccessRules:
    """The access file's rules; None of them (no file) means the defaults above."""

    def __init__(self, rules: list[Rule] | None = None, read_only: bool = False) -> None:
        self.rules = rules
        self.read_only = read_only

    @staticmethod
    def load(path: str | None, read_only: bool = False) -> AccessRules:
        if path is None:
            return AccessRules(None, read_only)
        rules: list[Rule] = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                words = line.split("#", 1)[0].split()
                if not words:
                    continue
                if len(words) < 3:
                    raise InvalidArgument(f"{path}:{number}: expected USER ACTIONS PATTERN...")
                actions = frozenset(words[1].split(","))
                unknown = actions - ACTIONS
                if unknown:
                    raise InvalidArgument(
                        f"{path}:{number}: unknown action {sorted(unknown)[0]!r} "
                        f"(expected pull, push, delete)"
                    )
                rules.append(Rule(words[0], actions, tuple(words[2:])))
        return AccessRules(rules, read_only)

    def granted(self, user: str | None, scope: Scope) -> frozenset[str]:
        """The actions of ``scope`` that ``user`` (None: anonymous) may take."""
        if scope.type == "registry":
            allowed = scope.actions if scope.name == "catalog" and user is not None else set()
            return frozenset(allowed)
        if self.rules is None:
            rights = ACTIONS if user is not None else frozenset()
        else:
            rights = frozenset(
                action
                for rule in self.rules
                if _rule_applies(rule.user, user)
                and any(fnmatch.fnmatchcase(scope.name, p) for p in rule.patterns)
                for action in rule.actions
            )
        if self.read_only:
            rights = rights - WRITE_ACTIONS
        return scope.actions & rights


def _rule_applies(rule_user: str, user: str | None) -> bool:
    if user is None:
        return rule_user == ANONYMOUS
    return rule_user in (ANY_USER, user)
