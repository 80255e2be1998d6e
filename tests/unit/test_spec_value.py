"""berth.spec.value (@value classes) and berth.spec.jsonio (json without ``import json``).

Rules: ``@value`` behaves like a (frozen) dataclass for the way Berth uses it; ``jsonio`` agrees
with the ``json`` module (compact separators, ASCII output) on everything it accepts, and every
refusal is a ``ValueError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from berth.spec import jsonio
from berth.spec.value import field, fields, replace, value


@value
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


@value
class Bag:
    name: str
    items: list[int] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    note: str = field(default="none")


@value(frozen=False)
class Counter:
    name: str
    count: int = 0


# --------------------------------------------------------------------------- @value


def test_construction_positional_keyword_and_defaults() -> None:
    assert Point(1).y == 0
    p = Point(1, 2, ("a",))
    assert (p.x, p.y, p.tags) == (1, 2, ("a",))
    assert Point(y=5, x=4) == Point(4, 5)
    assert fields(Point) == ("x", "y", "tags")


def test_default_factory_gives_each_instance_its_own_value() -> None:
    a, b = Bag("a"), Bag("b")
    a.items.append(1)
    a.meta["k"] = "v"
    assert b.items == []
    assert b.meta == {}
    assert a.note == b.note == "none"


def test_equality_and_hash() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Point(1) != (1, 0, ())
    assert Point(1).__eq__("x") is NotImplemented


def test_equality_needs_the_same_class() -> None:
    @value
    class Other:
        x: int
        y: int = 0
        tags: tuple[str, ...] = ()

    assert Point(1) != Other(1)


def test_repr_names_class_and_fields_in_order() -> None:
    assert repr(Point(1, 2, ("a",))) == "Point(x=1, y=2, tags=('a',))"
    assert repr(Bag("b")) == "Bag(name='b', items=[], meta={}, note='none')"


def test_frozen_instances_refuse_changes() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match=r"^Point is immutable: cannot change 'x'$"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"^Point is immutable: cannot change 'z'$"):
        p.z = 2  # type: ignore[attr-defined]
    assert p == Point(1)


def test_frozen_instances_refuse_deletion() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match=r"^Point is immutable: cannot change 'y'$"):
        del p.y  # type: ignore[misc]
    assert p.y == 0


def test_mutable_records_change_and_are_unhashable() -> None:
    c = Counter("c")
    c.count += 1
    assert c == Counter("c", 1)
    with pytest.raises(TypeError):
        hash(c)
    assert repr(c) == "Counter(name='c', count=1)"


def test_replace_copies_with_changes() -> None:
    p = Point(1, 2, ("a",))
    q = replace(p, y=7)
    assert q == Point(1, 7, ("a",))
    assert p == Point(1, 2, ("a",))
    assert replace(p) == p
    assert replace(p) is not p
    c = replace(Counter("c", 3), count=4)
    assert isinstance(c, Counter)
    assert c.count == 4


def test_replace_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match=r"Point\(\) got unexpected arguments \['z'\]"):
        replace(Point(1), z=3)


def test_missing_argument_is_named() -> None:
    with pytest.raises(TypeError, match=r"Point\(\) missing argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"Bag\(\) missing argument 'name'"):
        Bag(items=[1])  # type: ignore[call-arg]


def test_unexpected_arguments_are_named() -> None:
    with pytest.raises(TypeError, match=r"got unexpected arguments \['a', 'b'\]"):
        Point(1, b=1, a=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"Point\(\) takes 3 arguments, got 4"):
        Point(1, 2, (), 4)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, x=2)  # type: ignore[misc]


def test_bare_field_is_required() -> None:
    @value
    class Required:
        x: int = field()

    with pytest.raises(TypeError, match=r"^Required\(\) missing argument 'x'$"):
        Required()
    assert Required(3).x == 3
    assert Required(x=4) == Required(4)


# --------------------------------------------------------------------------- jsonio.loads

CORPUS = [
    "null",
    "true",
    "false",
    "0",
    "-0",
    "-0.0",
    "123456789012345678901234567890",
    "1.5e10",
    "1E-7",
    "0.1",
    "1e400",
    "-1e400",
    '""',
    '"plain"',
    '"caf\\u00e9 \\ud83d\\ude00 \\n\\t\\"\\\\\\/"',
    '"café 😀 中文"',
    "[]",
    "{}",
    '[1, [2, [3, [4, {"a": [null]}]]]]',
    '{"b": 1, "a": 2, "b": 3}',
    '{"outer": {"inner": {"list": [1, 2.5, "x", true, false, null]}}}',
    " \t\n\r[1]\r\n\t ",
    '{ "spaced" : [ 1 , 2 ] }',
    "NaN",
    "[Infinity, -Infinity, NaN]",
]


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and -0.0 told apart from 0.0 (compare as reprs)."""
    return repr(a) == repr(b) and type(a) is type(b)


@pytest.mark.parametrize("text", CORPUS)
def test_loads_agrees_with_json(text: str) -> None:
    assert _same(jsonio.loads(text), json.loads(text))
    assert _same(jsonio.loads(text.encode()), json.loads(text))


def test_loads_constants() -> None:
    assert math.isnan(jsonio.loads("NaN"))
    assert jsonio.loads("[Infinity,-Infinity]") == [math.inf, -math.inf]


def test_loads_keeps_key_order_and_last_duplicate() -> None:
    got = jsonio.loads('{"z": 1, "a": 2, "z": 3}')
    assert list(got) == ["z", "a"]
    assert got["z"] == 3


BAD = [
    ("", 0),
    ("   ", 3),
    ("{", 1),
    ("[1,]", 3),
    ("{'a': 1}", 1),
    ("tru", 0),
    ("nan", 0),
    ('"\x01"', 1),
    ('"unterminated', 0),
    ("[1] x", 4),
    ("[1][2]", 3),
    ("{} {}", 3),
    ("1 2", 2),
]


@pytest.mark.parametrize(("text", "position"), BAD)
def test_bad_input_is_a_value_error_naming_the_position(text: str, position: int) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError) as info:
        jsonio.loads(text)
    assert str(position) in str(info.value)


def test_trailing_data_says_so() -> None:
    with pytest.raises(ValueError, match=r"extra data at character 4"):
        jsonio.loads("[1] x")


def test_invalid_utf8_bytes_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsonio.loads(b'"\xff"')


def test_loads_accepts_utf8_bytes() -> None:
    data = '{"a": [1], "b": "café 😀"}'.encode()
    assert jsonio.loads(data) == json.loads(data) == {"a": [1], "b": "café 😀"}


# bytes must be UTF-8 (documented, as in runc): a BOM or UTF-16/32 is refused, not guessed
@pytest.mark.parametrize(
    ("encoding", "error"),
    [
        ("utf-8-sig", ValueError),  # the BOM is read as text: invalid JSON at character 0
        ("utf-16", UnicodeDecodeError),
        ("utf-32", UnicodeDecodeError),
    ],
)
def test_loads_refuses_bytes_that_are_not_plain_utf8(encoding: str, error: type) -> None:
    data = '{"a": [1]}'.encode(encoding)
    with pytest.raises(error):
        jsonio.loads(data)


# --------------------------------------------------------------------------- jsonio.dumps

DUMPS_CORPUS: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    0.1,
    -0.0,
    1e22,
    1.5e-10,
    "",
    "café 😀 中文 \u2028",
    'quote " backslash \\ control \x00\x1f',
    [],
    {},
    [1, [2, [3, {"a": None}]]],
    {"z": 1, "a": [1.5, "x"], "nested": {"deep": {"deeper": []}}},
    {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    (1, 2),
    [math.inf, -math.inf, math.nan],
]


@pytest.mark.parametrize("obj", DUMPS_CORPUS, ids=[repr(o)[:30] for o in DUMPS_CORPUS])
def test_dumps_agrees_with_json(obj: Any) -> None:
    text = jsonio.dumps(obj)
    assert text == json.dumps(obj, separators=(",", ":"))
    assert text.isascii()


def test_dumps_round_trips_through_loads() -> None:
    doc = {"a": [1, 2.5, "é", None, True], "b": {"c": ""}}
    assert jsonio.loads(jsonio.dumps(doc)) == doc


def test_dumps_pretty_is_indented_json() -> None:
    doc = {"a": [1, {"b": 2}]}
    assert jsonio.dumps_pretty(doc) == json.dumps(doc, indent=2)
    assert jsonio.dumps_pretty(doc, indent="\t") == json.dumps(doc, indent="\t")


def test_dumps_refuses_keys_json_refuses() -> None:
    with pytest.raises(TypeError, match="keys must be"):
        jsonio.dumps({(1,): 2})


@pytest.mark.parametrize(
    ("obj", "name"), [({"a": {1, 2}}, "set"), ([b"x"], "bytes"), (object(), "object")]
)
def test_dumps_error_names_the_unsupported_type(obj: Any, name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} is not JSON serializable$"):
        jsonio.dumps(obj)
