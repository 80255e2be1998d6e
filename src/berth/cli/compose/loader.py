"""Reading compose files: which files, the ``.env`` file, ``${VAR}`` interpolation, merging.

Rules:
- Files: every ``-f`` in order; without one, the first of ``compose.yaml``, ``compose.yml``,
  ``docker-compose.yml``, ``docker-compose.yaml`` in the project directory (or the current
  one), plus its ``compose.override.yaml``/``docker-compose.override.yml`` when present, as
  Compose picks them. The project directory is ``--project-directory``, else the first
  file's directory.
- Variables come from the shell's environment, then the project directory's ``.env`` (the
  shell wins, as in Compose). Interpolation applies to every string value, never to keys:
  ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
  ``${VAR:?message}``/``${VAR?message}`` (an error), ``${VAR:+other}``/``${VAR+other}``,
  ``$$`` for a literal ``$``; defaults may nest. An unset variable without a default is a
  blank string and one warning on stderr naming it.
- Every error is a ``ComposeError`` naming the file and the key path (``services.web.image``)
  of the bad value; nothing is sent to the daemon before the whole project has loaded.
- Merging several files: mappings merge key by key, later files win for scalar values and
  lists, except the lists Compose merges (``ports``, ``volumes``, ``expose``, ``env_file``,
  ``cap_add``, ``cap_drop``), which are concatenated. ``origin_of`` remembers which file gave
  each service key, so later errors name the right file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from berth.cli.common import CliError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = (
    "compose.override.yaml", "compose.override.yml",
    "docker-compose.override.yml", "docker-compose.override.yaml",
)  # fmt: skip
CONCATENATED = frozenset({"ports", "volumes", "expose", "env_file", "cap_add", "cap_drop"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ComposeError(CliError):
    """A bad compose file or option: the message names the file and the field (exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1)


def where(file: str, path: str) -> str:
    return f"{file}: {path}" if path else file


# ------------------------------------------------------------------ finding files


def find_files(files: list[str], project_directory: str | None) -> tuple[list[str], str]:
    """(absolute compose file paths, the project's working directory)."""
    if files:
        chosen = [os.path.abspath(f) for f in files]
        for path in chosen:
            if not os.path.isfile(path):
                raise ComposeError(f"open {path}: no such file or directory")
        base = project_directory or os.path.dirname(chosen[0])
        return chosen, os.path.abspath(base)
    base = os.path.abspath(project_directory or os.getcwd())
    for name in DEFAULT_FILES:
        path = os.path.join(base, name)
        if os.path.isfile(path):
            overrides = [os.path.join(base, o) for o in OVERRIDE_FILES]
            return [path, *[o for o in overrides if os.path.isfile(o)][:1]], base
    raise ComposeError(
        f"no configuration file provided: not found (looked for {', '.join(DEFAULT_FILES)} "
        f"in {base})"
    )


# ------------------------------------------------------------------ .env files


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        if value[0] == '"':
            inner = inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        return inner
    # an unquoted value ends at a `` #`` comment
    at = value.find(" #")
    return (value[:at] if at >= 0 else value).strip()


def parse_env_file(path: str, required: bool = True) -> dict[str, str | None]:
    """``KEY=VALUE`` lines (``export`` allowed, quotes stripped, ``#`` comments); a bare ``KEY``
    maps to None (its value is taken from the environment by the caller)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        if not required:
            return {}
        raise ComposeError(f"env file {path} not found: no such file or directory") from None
    except OSError as e:
        raise ComposeError(f"env file {path}: {e.strerror}") from e
    result: dict[str, str | None] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not _NAME.fullmatch(key):
            raise ComposeError(f"{path}:{number}: unexpected character in variable name {key!r}")
        result[key] = _unquote(value.strip()) if sep else None
    return result


def environment(working_dir: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables interpolation sees: ``.env`` under the shell's environment."""
    dotenv = parse_env_file(os.path.join(working_dir, ".env"), required=False)
    merged = {k: v for k, v in dotenv.items() if v is not None}
    merged.update(environ)
    return merged


# ------------------------------------------------------------------ interpolation


class Interpolator:
    def __init__(self, variables: Mapping[str, str], file: str) -> None:
        self.variables = variables
        self.file = file
        self.warned: set[str] = set()

    def value(self, node: Any, path: str) -> Any:
        """``node`` with every string in it interpolated (keys are left as they are)."""
        if isinstance(node, str):
            return self.text(node, path)
        if isinstance(node, dict):
            return {k: self.value(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(node)]
        return node

    def text(self, text: str, path: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c != "$":
                out.append(c)
                i += 1
                continue
            nxt = text[i + 1 : i + 2]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt == "{":
                end = self._closing_brace(text, i + 2, path)
                out.append(self._braced(text[i + 2 : end], path, text))
                i = end + 1
            elif match := _NAME.match(text, i + 1):
                out.append(self._lookup(match.group(), path))
                i = match.end()
            else:
                raise self._invalid(path, text)
        return "".join(out)

    def _closing_brace(self, text: str, start: int, path: str) -> int:
        depth = 1
        for j in range(start, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return j
        raise self._invalid(path, text)

    def _invalid(self, path: str, text: str) -> ComposeError:
        return ComposeError(
            f'{where(self.file, path)}: invalid interpolation format "{text}"; '
            "you may need to escape any $ with another $"
        )

    def _lookup(self, name: str, path: str) -> str:
        value = self.variables.get(name)
        if value is None:
            if name not in self.warned:
                self.warned.add(name)
                sys.stderr.write(
                    f'WARN[0000] The "{name}" variable is not set. Defaulting to a blank string.\n'
                )
            return ""
        return value

    def _braced(self, inner: str, path: str, whole: str) -> str:
        match = _NAME.match(inner)
        if match is None:
            raise self._invalid(path, whole)
        name, rest = match.group(), inner[match.end() :]
        if not rest:
            return self._lookup(name, path)
        value = self.variables.get(name)
        for operator in (":-", ":?", ":+", "-", "?", "+"):
            if rest.startswith(operator):
                argument = rest[len(operator) :]
                break
        else:
            raise self._invalid(path, whole)
        empty_counts = operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        kind = operator[-1]
        if kind == "-":
            return self.text(argument, path) if missing else str(value)
        if kind == "+":
            return "" if missing else self.text(argument, path)
        if missing:  # "?"
            detail = self.text(argument, path) or "required variable is not set"
            raise ComposeError(
                f"{where(self.file, path)}: required variable {name} is missing a value: {detail}"
            )
        return str(value)


# ------------------------------------------------------------------ reading and merging


def read_file(path: str, variables: Mapping[str, str]) -> dict[str, Any]:
    """One compose file, parsed and interpolated."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except OSError as e:
        raise ComposeError(f"open {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ComposeError(f"{path}: invalid YAML: {e}") from e
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ComposeError(f"{path}: the top level must be a mapping, not {type_name(document)}")
    interpolated: dict[str, Any] = Interpolator(variables, path).value(document, "")
    return interpolated


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


class Merged:
    """Several files' documents merged, with the file each service key came from."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {}
        self.origins: dict[tuple[str, str], str] = {}  # (section.name, key) -> file
        self.first_file = ""

    def add(self, file: str, document: dict[str, Any]) -> None:
        self.first_file = self.first_file or file
        for section, value in document.items():
            if section in ("services", "networks", "volumes") and value is None:
                self.document.setdefault(section, {})  # an empty section adds nothing
                continue
            if section in ("services", "networks", "volumes") and isinstance(value, dict):
                target = self.document.setdefault(section, {})
                if not isinstance(target, dict):
                    target = self.document[section] = {}
                for name, item in value.items():
                    self._merge_item(section, str(name), target, item, file)
            else:
                self.document[section] = value
                self.origins[(section, "")] = file

    def _merge_item(
        self, section: str, name: str, target: dict[str, Any], item: Any, file: str
    ) -> None:
        existing = target.get(name)
        if not isinstance(item, dict) or not isinstance(existing, dict):
            target[name] = item
            self.origins[(f"{section}.{name}", "")] = file
            if isinstance(item, dict):
                for key in item:
                    self.origins[(f"{section}.{name}", str(key))] = file
            return
        for key, value in item.items():
            old = existing.get(key)
            if key in CONCATENATED and isinstance(old, list) and isinstance(value, list):
                existing[key] = old + value
            elif isinstance(old, dict) and isinstance(value, dict):
                existing[key] = {**old, **value}
            else:
                existing[key] = value
            self.origins[(f"{section}.{name}", str(key))] = file

    def origin_of(self, section: str, key: str = "") -> str:
        return (
            self.origins.get((section, key)) or self.origins.get((section, "")) or self.first_file
        )


def load_documents(files: list[str], variables: Mapping[str, str]) -> Merged:
    merged = Merged()
    for path in files:
        merged.add(path, read_file(path, variables))
    return merged
