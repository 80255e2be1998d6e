"""The text-level rules of Dockerfiles: lines, BuildKit's shell lexer, flags, JSON, durations.

Rules: sans-IO functions of text (stdlib only), written from the behaviour of BuildKit's
dockerfile frontend (``frontend/dockerfile/shell/lex.go`` and ``parser``), not from its code.
``berth.image.dockerfile`` is the public face; this module is its lower half.

- ``Reader`` turns the text into logical lines (``Line``): directives, comments, continuations
  and heredocs, as ``berth.image.dockerfile`` describes them.

- ``expand(word, env)`` is BuildKit's ``ProcessWord``: quote removal, escapes and variable
  substitution (``$V``, ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:+a}``, ``${V+a}``,
  ``${V:?msg}``, ``${V?msg}``, ``${V#p}``, ``${V##p}``, ``${V%p}``, ``${V%%p}``). Nothing is
  expanded inside single quotes; inside double quotes the escape character escapes only ``"``,
  ``$`` and itself. An unset variable expands to "". Whitespace is kept (one word in, one out).
- ``split_raw_words`` splits on unquoted whitespace keeping quotes and escapes as written (the
  parser's ``parseWords``, used by ENV, LABEL, ARG and heredoc detection).
- ``extract_flags`` takes the leading ``--name[=value]`` words off an instruction's arguments
  (quotes and escapes in them removed), stopping at the first other word or at ``--``.
- Errors are ``InvalidArgument`` with the bare message; the parser adds the file and line.
"""

from __future__ import annotations

import json
import re

from berth.errors import InvalidArgument
from berth.spec.value import value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

WHITESPACE = " \t\r\n\f\v"
_SPECIAL_PARAMS = "@*#?-$!0"
_DIRECTIVE = re.compile(r"#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*")
HEREDOC = re.compile(r"(\d*)<<(-?)([^<]*)")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_INSTRUCTIONS = frozenset(["run", "copy", "add"])

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")


class _Lexer:
    """One pass over one word; ``pos`` moves forward only."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def word(self, stop: str = "") -> str:
        """Read up to ``stop`` (not consumed) or the end, expanding as it goes."""
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch or (stop and ch == stop):
                return "".join(out)
            self.pos += 1
            if ch == "'":
                out.append(self.single_quoted())
            elif ch == '"':
                out.append(self.double_quoted())
            elif ch == "$":
                out.append(self.dollar())
            elif ch == self.escape:
                escaped = self.next()
                out.append(escaped)  # an escape at the very end is dropped
            else:
                out.append(ch)

    def single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise InvalidArgument(
                "unexpected end of statement while looking for matching single-quote"
            )
        literal = self.text[self.pos : end]
        self.pos = end + 1
        return literal

    def double_quoted(self) -> str:
        out: list[str] = []
        while True:
            ch = self.next()
            if not ch:
                raise InvalidArgument(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            if ch == self.escape:
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.pos += 1
            return self.text[start : self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        while (ch := self.peek()) and (ch.isalnum() or ch == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def dollar(self) -> str:
        """After a ``$``: a variable, a ``${...}`` form, or a literal ``$``."""
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.pos += 1
        name = self.name()
        op = self.next()
        if op == "}":
            return self.env.get(name, "")
        if not op:
            raise InvalidArgument(f"syntax error: missing '}}' in ${{{name}")
        current = self.env.get(name)
        doubled = op in ("#", "%") and self.peek() == op
        if doubled or (op == ":" and self.peek() in ("-", "+", "?")):
            op += self.next()
        if op not in ("-", "+", "?", ":-", ":+", ":?", "#", "##", "%", "%%"):
            raise InvalidArgument(f"unsupported modifier ({op}) in substitution")
        if op[0] in "#%":
            pattern = self.raw_until_brace()
            return _trim(current or "", pattern, op, self.escape)
        argument = self.word(stop="}")
        if self.next() != "}":
            raise InvalidArgument(f"syntax error: missing '}}' in ${{{name}")
        unset = current is None or (op.startswith(":") and current == "")
        if op[-1] == "-":
            return argument if unset else str(current)
        if op[-1] == "+":
            return "" if unset else argument
        if unset:  # "?"
            what = "empty" if op.startswith(":") and current == "" else "unset"
            raise InvalidArgument(f"{name}: {argument or f'is not allowed to be {what}'}")
        return str(current)

    def raw_until_brace(self) -> str:
        """A pattern: variables expanded, quotes and escapes kept for ``_glob_regex``."""
        out: list[str] = []
        while True:
            ch = self.next()
            if not ch:
                raise InvalidArgument("syntax error: missing '}'")
            if ch == "}":
                return "".join(out)
            if ch == "$":
                out.append(re.escape(self.dollar()).replace("\\", self.escape))
            elif ch == self.escape:
                out.append(ch + self.next())
            else:
                out.append(ch)


def _glob_regex(pattern: str, escape: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append({"*": ".*", "?": "."}.get(ch) or re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def _trim(text: str, pattern: str, op: str, escape: str) -> str:
    regex = _glob_regex(pattern, escape)
    sizes = range(len(text) + 1)
    order = sizes if len(op) == 1 else reversed(sizes)  # shortest or longest match
    for size in order:
        if op[0] == "#" and regex.fullmatch(text[:size]):
            return text[size:]
        if op[0] == "%" and regex.fullmatch(text[len(text) - size :]):
            return text[: len(text) - size]
    return text


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """BuildKit's ``ProcessWord``: ``word`` with quotes removed and variables substituted."""
    return _Lexer(word, env, escape).word()


def unquote(word: str, *, escape: str = "\\") -> str:
    """``word`` with quotes and escapes removed and ``$`` left alone (heredoc delimiters)."""
    out: list[str] = []
    i = 0
    quote = ""
    while i < len(word):
        ch = word[i]
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in ("'", '"'):
            quote = ch
        elif ch == escape and quote != "'" and i + 1 < len(word):
            i += 1
            out.append(word[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def split_raw_words(text: str, escape: str = "\\") -> list[str]:
    """Split on whitespace outside quotes; quotes and escapes stay in the words as written."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if not quote and ch in WHITESPACE:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            continue
        in_word = True
        if ch == escape and quote != "'":
            if i == len(text):
                continue  # an escape at the very end is dropped
            word.append(ch + text[i])
            i += 1
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in ("'", '"'):
            quote = ch
        word.append(ch)
    if in_word:
        words.append("".join(word))
    return words


def extract_flags(text: str) -> tuple[list[str], str]:
    """The leading ``--flag`` words (unquoted, without ``--``) and the rest of ``text``."""
    flags: list[str] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in WHITESPACE:
            i += 1
        if not text.startswith("--", i):
            return flags, text[i:]
        word: list[str] = []
        quote = ""
        start = i
        while i < n and (quote or text[i] not in WHITESPACE):
            ch = text[i]
            i += 1
            if quote and ch == quote:
                quote = ""
            elif not quote and ch in ("'", '"'):
                quote = ch
            elif ch == "\\":
                if i < n:
                    word.append(text[i])
                    i += 1
            else:
                word.append(ch)
        if text[start:i] == "--":
            while i < n and text[i] in WHITESPACE:
                i += 1
            return flags, text[i:]
        flags.append("".join(word)[2:])


def parse_flags(words: list[str], kinds: Mapping[str, str]) -> dict[str, str | bool | list[str]]:
    """Typed flag values from ``extract_flags`` words; ``kinds`` maps a name to str/bool/list."""
    values: dict[str, str | bool | list[str]] = {}
    for word in words:
        name, eq, raw = word.partition("=")
        kind = kinds.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown flag: {name}")
        if kind == "bool":
            if eq and raw.lower() not in ("true", "false"):
                raise InvalidArgument(f"expecting boolean value for flag {name}, not: {raw}")
            values[name] = not eq or raw.lower() == "true"
            continue
        if not eq:
            raise InvalidArgument(f"missing a value on flag: {name}")
        if kind == "list":
            existing = values.setdefault(name, [])
            assert isinstance(existing, list)
            existing.append(raw)
        elif name in values:
            raise InvalidArgument(f"duplicate flag specified: {name}")
        else:
            values[name] = raw
    return values


def parse_json_array(text: str) -> list[str] | None:
    """The strings of a JSON array (exec form), or None if ``text`` is not valid JSON.

    An array holding anything but strings is an error, as in BuildKit.
    """
    stripped = text.lstrip(WHITESPACE)
    if not stripped.startswith("["):
        return None
    try:
        items = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    if not all(isinstance(item, str) for item in items):
        raise InvalidArgument(
            "when using JSON array syntax, arrays must be comprised of strings only"
        )
    return items


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (``1m30s``, ``1.5h``, ``250ms``, ``0``) in nanoseconds."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise InvalidArgument(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            raise InvalidArgument(f"invalid duration {text!r}")
        unit = _DURATION_UNITS.get(match.group(2))
        if unit is None:
            if match.group(2) == "" or not match.group(2).isalpha():
                raise InvalidArgument(f"invalid duration {text!r}")
            raise InvalidArgument(f"unknown unit {match.group(2)!r} in duration {text!r}")
        total += float(match.group(1)) * unit
        pos = match.end()
    return sign * round(total)


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be built; ``line`` is the 1-based line at fault."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


@value
class Source:
    """Where an instruction came from: its first and last line and its text (joined)."""

    line: int
    end_line: int
    text: str


@value
class LintWarning:
    """A lint finding on one line, with the name of BuildKit's rule (``rule``)."""

    line: int
    rule: str
    message: str


@value
class Heredoc:
    """A here-document; ``content`` ends with a newline, tabs already stripped for ``<<-``."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int | None = None


# --- lines -------------------------------------------------------------------------------


@value(frozen=False)
class Line:
    """One logical line: the instruction word, its flags and arguments, where it came from."""

    source: Source
    word: str
    flags: list[str]
    rest: str
    escape: str
    heredocs: tuple[Heredoc, ...] = ()


class Reader:
    """Turns the text into logical lines, tracking directives and warnings."""

    def __init__(self, text: str, filename: str) -> None:
        text = text.removeprefix("\ufeff")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.lines = [line.removesuffix("\r") for line in lines]
        self.pos = 0
        self.filename = filename
        self.escape = "\\"
        self.syntax = ""
        self.directives_done = False
        self.seen: set[str] = set()
        self.warnings: list[LintWarning] = []
        self._continuation = re.compile(re.escape(self.escape) + r"[ \t]*$")

    def error(self, line: int, message: str) -> DockerfileError:
        return DockerfileError(f"{self.filename}:{line}: {message}", line)

    def directive(self, raw: str) -> None:
        if self.directives_done:
            return
        match = _DIRECTIVE.fullmatch(raw)
        key = match.group(1).lower() if match else ""
        if match is None or key not in _DIRECTIVES:
            self.directives_done = True
            return
        if key in self.seen:
            raise self.error(self.pos, f"only one {key} parser directive can be used")
        self.seen.add(key)
        if key == "escape":
            if match.group(2) not in ("\\", "`"):
                raise self.error(
                    self.pos, f"invalid escape token '{match.group(2)}' does not match ` or \\"
                )
            self.escape = match.group(2)
            self._continuation = re.compile(re.escape(self.escape) + r"[ \t]*$")
        elif key == "syntax":
            self.syntax = match.group(2)

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        match = self._continuation.search(line)
        return (line, True) if match is None else (line[: match.start()], False)

    def next_line(self) -> Line | None:
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            self.pos += 1
            self.directive(raw)
            start = self.pos
            stripped = raw.lstrip(WHITESPACE)
            if stripped.startswith("#"):
                continue
            text, done = self.trim_continuation(stripped)
            if done and not text.strip(WHITESPACE):
                continue
            while not done and self.pos < len(self.lines):
                raw = self.lines[self.pos]
                self.pos += 1
                if raw.lstrip(WHITESPACE).startswith("#"):
                    continue
                if not raw.strip(WHITESPACE):
                    self.warnings.append(
                        LintWarning(self.pos, "NoEmptyContinuation", "Empty continuation line")
                    )
                    continue
                more, done = self.trim_continuation(raw)
                text += more
            return self.logical(text, start)
        return None

    def logical(self, text: str, start: int) -> Line:
        text = text.strip(WHITESPACE)
        word, _, args = split_first(text)
        flags, rest = extract_flags(args)
        line = Line(Source(start, self.pos, text), word, flags, rest, self.escape)
        if word.lower() in _HEREDOC_INSTRUCTIONS and "<<" in rest:
            line.heredocs = self.read_heredocs(line)
            line.source = Source(start, self.pos, text)
        return line

    def read_heredocs(self, line: Line) -> tuple[Heredoc, ...]:
        if parse_json_array(line.rest) is not None:
            return ()
        docs: list[Heredoc] = []
        for word in split_raw_words(line.rest):
            match = HEREDOC.fullmatch(word)
            if match is None or not match.group(3):
                continue
            fd, chomp, delimiter = match.groups()
            name = unquote(delimiter)
            if not name:
                continue
            body: list[str] = []
            while True:
                if self.pos >= len(self.lines):
                    raise self.error(line.source.line, "unterminated heredoc")
                raw = self.lines[self.pos]
                self.pos += 1
                if (raw.lstrip("\t") if chomp else raw) == name:
                    break
                body.append((raw.lstrip("\t") if chomp else raw) + "\n")
            docs.append(
                Heredoc(
                    name,
                    "".join(body),
                    expand=name == delimiter,
                    chomp=bool(chomp),
                    fd=int(fd) if fd else None,
                )
            )
        return tuple(docs)


def split_first(text: str) -> tuple[str, str, str]:
    for i, ch in enumerate(text):
        if ch in WHITESPACE:
            return text[:i], ch, text[i:].lstrip(WHITESPACE)
    return text, "", ""
