"""A Go text/template subset for ``--format``, as the docker CLI's users write them.

Supported: text and ``{{ }}`` actions (``{{-``/``-}}`` trim the spaces beside them); fields
``.A.B`` on mappings (a missing key prints ``<no value>``, as Go does for maps, but a
``Record`` — the rows ps/images print — names the unknown field in an error); ``.``, ``$``,
string/number/bool literals, parentheses, pipes ``|``; ``if``/``else if``/``else``,
``range`` (with ``$i, $v :=``), ``with``, ``end``; the docker CLI's functions ``json``,
``join``, ``split``, ``lower``, ``upper``, ``title``, ``pad``, ``truncate``, ``println`` and
Go's ``index``, ``len``, ``printf``, ``print``, ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``,
``not``, ``and``, ``or``, ``slice``. A callable value is a method and takes the arguments
(``{{.Label "k"}}`` on ps and images rows); ``json`` leaves methods out.
Everything else is a ``TemplateError`` saying what is not supported. A format of just
``json`` is Go's json.Marshal of the value (HTML characters escaped, unlike the ``json``
function, as in the docker CLI); a ``table`` prefix is the caller's business (``render.py``).
Values print as Go prints them: lists ``[a b]``, maps ``map[k:v]``, None ``<nil>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

NO_VALUE = "<no value>"


class TemplateError(Exception):
    pass


class Record(dict[str, Any]):
    """A mapping whose unknown fields are an error (Go's struct fields), not ``<no value>``."""

    kind = "record"


# ------------------------------------------------------------------ lexing


def _split_actions(source: str) -> Iterator[tuple[str, str]]:
    """("text", s) and ("action", inner) pieces, with the trim markers applied."""
    pos = 0
    pending_trim = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if pending_trim:
            text = text.lstrip()
        if (
            start >= 0
            and source.startswith("{{-", start)
            and source[start + 3 : start + 4] in " \t\n"
        ):
            text = text.rstrip()
            start += 1
        if text:
            yield "text", text
        if start < 0:
            return
        end = source.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"template: unclosed action in {source!r}")
        inner = source[start + 2 : end]
        pending_trim = inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-")
        if pending_trim:
            inner = inner[:-1]
        yield "action", inner.strip()
        pos = end + 2


def _tokens(action: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(action):
        c = action[i]
        if c.isspace():
            i += 1
        elif c in "()|,":
            tokens.append(c)
            i += 1
        elif c == ":" and action.startswith(":=", i):
            tokens.append(":=")
            i += 2
        elif c in '"`':
            j = i + 1
            while j < len(action) and action[j] != c:
                j += 2 if action[j] == "\\" and c == '"' else 1
            if j >= len(action):
                raise TemplateError(f"template: unterminated string in {{{{{action}}}}}")
            tokens.append(action[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < len(action) and not action[j].isspace() and action[j] not in '()|,"`':
                if action.startswith(":=", j):
                    break
                j += 1
            tokens.append(action[i:j])
            i = j
    return tokens


# ------------------------------------------------------------------ parsing

# Nodes: ("text", s) | ("out", pipe) | ("if", [(pipe, body)...], else_body)
#        | ("range", vars, pipe, body, else_body) | ("with", pipe, body, else_body)
# pipe: list of commands; command: list of operands; operand: ("field", [names])
#       | ("lit", value) | ("var", name, [names]) | ("func", name) | ("pipe", pipe)
#       | ("chain", ("pipe", pipe), [names])  -- a field of a parenthesized pipeline


class _Parser:
    def __init__(self, source: str) -> None:
        self.pieces = list(_split_actions(source))
        self.pos = 0

    def parse(self) -> list[Any]:
        body, stop = self.block()
        if stop is not None:
            raise TemplateError(f"template: unexpected {{{{{stop}}}}}")
        return body

    def block(self) -> tuple[list[Any], str | None]:
        nodes: list[Any] = []
        while self.pos < len(self.pieces):
            kind, value = self.pieces[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(("text", value))
                continue
            if value.startswith("/*"):
                continue
            word = value.split(None, 1)[0] if value else ""
            rest = value[len(word) :].strip()
            if word in ("end", "else"):
                return nodes, value
            if word == "if":
                nodes.append(self.if_node(rest))
            elif word == "range":
                variables, pipe = self.declaration(rest)
                body, stop = self.block()
                else_body: list[Any] = []
                if stop == "else":
                    else_body, stop = self.block()
                self.expect_end(stop, "range")
                nodes.append(("range", variables, pipe, body, else_body))
            elif word == "with":
                pipe = self.pipe(rest)
                body, stop = self.block()
                else_body = []
                if stop == "else":
                    else_body, stop = self.block()
                self.expect_end(stop, "with")
                nodes.append(("with", pipe, body, else_body))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"template: {{{{{word}}}}} is not supported by berth")
            else:
                nodes.append(("out", self.pipe(value)))
        return nodes, None

    def if_node(self, condition: str) -> Any:
        branches = []
        else_body: list[Any] = []
        while True:
            pipe = self.pipe(condition)
            body, stop = self.block()
            branches.append((pipe, body))
            if stop is not None and stop.startswith("else if "):
                condition = stop[len("else if ") :]
                continue
            if stop == "else":
                else_body, stop = self.block()
            self.expect_end(stop, "if")
            return ("if", branches, else_body)

    @staticmethod
    def expect_end(stop: str | None, what: str) -> None:
        if stop != "end":
            raise TemplateError(f"template: unexpected EOF: {{{{{what}}}}} has no {{{{end}}}}")

    def declaration(self, text: str) -> tuple[list[str], list[Any]]:
        tokens = _tokens(text)
        if ":=" in tokens:
            at = tokens.index(":=")
            names = [t for t in tokens[:at] if t != ","]
            return names, _pipe_of(tokens[at + 1 :])
        return [], _pipe_of(tokens)

    @staticmethod
    def pipe(text: str) -> list[Any]:
        tokens = _tokens(text)
        if ":=" in tokens or "=" in tokens:
            raise TemplateError("template: variable assignment is not supported by berth")
        return _pipe_of(tokens)


def _pipe_of(tokens: list[str]) -> list[Any]:
    if not tokens:
        raise TemplateError("template: missing value for command")
    pipe: list[Any] = []
    command: list[Any] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "|":
            if not command:
                raise TemplateError("template: missing command before |")
            pipe.append(command)
            command = []
        elif token == "(":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[j], 0)
                j += 1
            if depth:
                raise TemplateError("template: unclosed parenthesis")
            inner: tuple[Any, ...] = ("pipe", _pipe_of(tokens[i + 1 : j - 1]))
            if j < len(tokens) and tokens[j].startswith("."):  # (index .X 0).Field
                inner = ("chain", inner, [n for n in tokens[j].split(".") if n])
                j += 1
            command.append(inner)
            i = j
            continue
        else:
            command.append(_operand(token))
        i += 1
    if not command:
        raise TemplateError("template: missing command after |")
    pipe.append(command)
    return pipe


def _operand(token: str) -> Any:
    if token.startswith('"'):
        return ("lit", json.loads(token))
    if token.startswith("`"):
        return ("lit", token[1:-1])
    if token in ("true", "false"):
        return ("lit", token == "true")
    if token == "nil":
        return ("lit", None)
    if token[0].isdigit() or (token[0] == "-" and token[1:2].isdigit()):
        try:
            return ("lit", int(token))
        except ValueError:
            return ("lit", float(token))
    if token.startswith("."):
        names = [n for n in token.split(".")[1:] if n]
        return ("field", names)
    if token.startswith("$"):
        name, *names = token.split(".")
        return ("var", name, names)
    if token in FUNCTIONS:
        return ("func", token)
    raise TemplateError(f'template: function "{token}" not defined')


# ------------------------------------------------------------------ values


def go_string(value: Any) -> str:
    """A value as Go's fmt prints it with %v."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value) if not value.is_integer() or abs(value) >= 1e21 else str(int(value))
    if isinstance(value, dict):
        items = " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items()))
        return f"map[{items}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    return bool(value) and value != NO_VALUE


def _field(value: Any, names: list[str], label: str) -> Any:
    for name in names:
        if isinstance(value, Record):
            if name not in value:
                raise TemplateError(
                    f'template: executing "" at <{label}>: can\'t evaluate field {name}'
                )
            value = value[name]
        elif isinstance(value, dict):
            value = value.get(name, NO_VALUE)
        elif value is None or value == NO_VALUE:
            return NO_VALUE
        else:
            raise TemplateError(
                f'template: executing "" at <{label}>: can\'t evaluate field {name} in type '
                f"{type(value).__name__}"
            )
    return value


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, NO_VALUE if not isinstance(value, Record) else None)
        elif isinstance(value, list | str):
            try:
                value = value[int(key)]
            except (IndexError, ValueError) as e:
                raise TemplateError(f"template: error calling index: {e}") from e
        elif value is None:
            return None
        else:
            raise TemplateError(f"template: error calling index: cannot index {type(value)}")
    return value


def _json(value: Any) -> str:
    """The template's ``json``, as docker's: Go's encoder with HTML escaping off; a row's
    keys sorted (Go marshals it as a map), its methods left out; a daemon document's keys in
    the daemon's order."""
    row = isinstance(value, Record)
    if row:
        value = {k: v for k, v in value.items() if not callable(v)}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=row)


def marshal(value: Any) -> str:
    """``--format json``: Go's json.Marshal, which also escapes ``<``, ``>`` and ``&``."""
    text = _json(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _printf(fmt: str, *args: Any) -> str:
    converted = fmt.replace("%v", "%s").replace("%q", '"%s"')
    values = tuple(go_string(a) if isinstance(a, dict | list | bool | None) else a for a in args)
    try:
        return converted % values
    except (TypeError, ValueError) as e:
        raise TemplateError(f"template: error calling printf: {e}") from e


def _truncate(s: Any, length: int) -> str:
    text = go_string(s)
    return text[:length]


def _pad(s: Any, left: int, right: int) -> str:
    return " " * left + go_string(s) + " " * right


def _compare(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, *others: Any) -> bool:
        try:
            return any(op(a, b) for b in others) if op is _eq else all(op(a, b) for b in others)
        except TypeError as e:
            raise TemplateError(f"template: incompatible types for comparison: {e}") from e

    return compare


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def _and(*args: Any) -> Any:
    for a in args:
        if not _truthy(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if _truthy(a):
            return a
    return args[-1]


def _slice(value: Any, *bounds: int) -> Any:
    return value[slice(*bounds)]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "join": lambda items, sep: sep.join(go_string(i) for i in (items or [])),
    "split": lambda s, sep: s.split(sep),
    "lower": lambda s: go_string(s).lower(),
    "upper": lambda s: go_string(s).upper(),
    "title": lambda s: go_string(s).title(),
    "pad": _pad,
    "truncate": _truncate,
    "println": lambda *a: " ".join(go_string(x) for x in a) + "\n",
    "print": lambda *a: "".join(go_string(x) for x in a),
    "printf": _printf,
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "eq": _compare(_eq),
    "ne": _compare(lambda a, b: a != b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "not": lambda v: not _truthy(v),
    "and": _and,
    "or": _or,
    "slice": _slice,
}


# ------------------------------------------------------------------ execution


class Template:
    """A parsed template; ``render(data)`` returns the text."""

    def __init__(self, source: str) -> None:
        self.marshal = source.strip() == "json"  # the shorthand is json.Marshal, not {{json .}}
        self.source = source
        self.nodes = [] if self.marshal else _Parser(source).parse()

    def render(self, data: Any) -> str:
        if self.marshal:
            return marshal(data)
        out: list[str] = []
        self._run(self.nodes, data, {"$": data}, out)
        return "".join(out)

    def _run(self, nodes: list[Any], dot: Any, variables: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "out":
                out.append(go_string(self._pipe(node[1], dot, variables)))
            elif kind == "if":
                for pipe, body in node[1]:
                    if _truthy(self._pipe(pipe, dot, variables)):
                        self._run(body, dot, variables, out)
                        break
                else:
                    self._run(node[2], dot, variables, out)
            elif kind == "with":
                value = self._pipe(node[1], dot, variables)
                if _truthy(value):
                    self._run(node[2], value, variables, out)
                else:
                    self._run(node[3], dot, variables, out)
            elif kind == "range":
                self._range(node, dot, variables, out)

    def _range(self, node: Any, dot: Any, variables: dict[str, Any], out: list[str]) -> None:
        _, names, pipe, body, else_body = node
        value = self._pipe(pipe, dot, variables)
        if isinstance(value, dict):
            items = sorted(value.items())
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif value is None or value == NO_VALUE:
            items = []
        elif isinstance(value, int):
            items = [(i, i) for i in range(value)]
        else:
            raise TemplateError(f"template: range can't iterate over {go_string(value)}")
        if not items:
            self._run(else_body, dot, variables, out)
        for key, item in items:
            scope = dict(variables)
            if len(names) == 1:
                scope[names[0]] = item
            elif len(names) == 2:
                scope[names[0]], scope[names[1]] = key, item
            self._run(body, item, scope, out)

    def _pipe(self, pipe: list[Any], dot: Any, variables: dict[str, Any]) -> Any:
        value: Any = None
        for i, command in enumerate(pipe):
            extra = [value] if i else []
            value = self._command(command, dot, variables, extra)
        return value

    def _command(
        self, command: list[Any], dot: Any, variables: dict[str, Any], extra: list[Any]
    ) -> Any:
        head = command[0]
        if head[0] == "func":
            args = [self._operand(o, dot, variables) for o in command[1:]] + extra
            try:
                return FUNCTIONS[head[1]](*args)
            except TemplateError:
                raise
            except (TypeError, AttributeError, KeyError, ValueError) as e:
                raise TemplateError(f"template: error calling {head[1]}: {e}") from e
        value = self._operand(head, dot, variables)
        if callable(value):  # a row's method, like docker's {{.Label "com.example"}}
            args = [self._operand(o, dot, variables) for o in command[1:]] + extra
            try:
                return value(*args)
            except TypeError as e:
                raise TemplateError(f"template: error calling {head}: {e}") from e
        if len(command) > 1 or extra:
            raise TemplateError(f"template: can't give argument to non-function {command[0]}")
        return value

    def _operand(self, operand: Any, dot: Any, variables: dict[str, Any]) -> Any:
        kind = operand[0]
        if kind == "lit":
            return operand[1]
        if kind == "field":
            return _field(dot, operand[1], "." + ".".join(operand[1]))
        if kind == "var":
            if operand[1] not in variables:
                raise TemplateError(f"template: undefined variable: {operand[1]}")
            return _field(variables[operand[1]], operand[2], operand[1])
        if kind == "pipe":
            return self._pipe(operand[1], dot, variables)
        if kind == "chain":
            base = self._operand(operand[1], dot, variables)
            return _field(base, operand[2], "(...)." + ".".join(operand[2]))
        raise TemplateError(f"template: {operand[1]} needs arguments")
