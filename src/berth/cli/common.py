"""What every verb shares: the context, the errors that set exit codes, the argument parser.

Rules:
- A verb is ``cmd_<verb>(ctx, argv) -> exit code``; it builds its own parser with
  ``parser()`` (a bad flag is a ``UsageError``: exit 125, as the docker CLI).
- ``CliError(message, code)`` ends the command with that message on stderr and that code.
- ``for_each`` runs a call per argument the way ``docker stop a b`` does: it prints each
  argument that succeeded, reports each failure as ``Error response from daemon: …`` and
  exits 1 if any failed.
- ``inspect_each`` is the ``network``/``volume`` inspect: the documents found as one JSON
  array (or each through ``-f``), then the daemon's error for each name not found; exit 1
  if any was missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from berth.cli.client import ApiError, Client


class UsageError(Exception):
    pass


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Context:
    """What a verb gets besides its arguments (a plain class: dataclasses cost ~8 ms)."""

    def __init__(self, client: Client, debug: bool = False, verb: str = "") -> None:
        self.client = client
        self.debug = debug
        self.verb = verb


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser(verb: str, usage: str, description: str = "", add_help: bool = True) -> Parser:
    return Parser(
        prog=f"berth {verb}",
        usage=f"berth {verb} {usage}",
        description=description,
        add_help=add_help,
    )


def for_each(names: list[str], call: Callable[[str], Any], print_name: bool = True) -> int:
    failed = False
    for name in names:
        try:
            call(name)
        except ApiError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
            continue
        if print_name:
            sys.stdout.write(f"{name}\n")
    return 1 if failed else 0


def filters_query(values: list[str] | None) -> dict[str, dict[str, bool]] | None:
    """``--filter k=v`` flags as the daemon's ``filters`` JSON (``{"k": {"v": true}}``)."""
    if not values:
        return None
    result: dict[str, dict[str, bool]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"Error: bad format of filter (expected name=value): {item!r}", 125)
        result.setdefault(key.strip().lower(), {})[value] = True
    return result


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def inspect_each(names: list[str], fetch: Callable[[str], Any], fmt: str = "") -> int:
    import json

    from berth.cli.template import Template

    template = Template(fmt) if fmt else None
    found: list[Any] = []
    errors: list[str] = []
    for name in names:
        try:
            doc = fetch(name)
        except ApiError as e:
            errors.append(f"Error response from daemon: {e.message}")
            continue
        if template is not None:
            sys.stdout.write(template.render(doc) + "\n")
        else:
            found.append(doc)
    if template is None:
        sys.stdout.write(json.dumps(found, indent=4, ensure_ascii=False) + "\n")
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
    return 1 if errors else 0
