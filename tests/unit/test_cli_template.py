"""The --format template engine: the Go template forms docker users write, and clear refusals."""

from __future__ import annotations

import pytest

from berth.cli.template import Record, Template, TemplateError, go_string

DOC = {
    "Id": "abc",
    "Name": "/web",
    "State": {"Status": "running", "Running": True, "ExitCode": 0, "Health": None},
    "Config": {"Labels": {"app": "shop", "tier": "front"}, "Cmd": ["sh", "-c", "x"], "Env": []},
    "Mounts": [{"Source": "/a", "Destination": "/b"}, {"Source": "/c", "Destination": "/d"}],
    "Size": 1234000,
}


def render(source: str, data: object = DOC) -> str:
    return Template(source).render(data)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{.Id}}", "abc"),
        ("{{.State.Status}}", "running"),
        ("{{ .State.Running }}", "true"),
        ("{{.State.ExitCode}}", "0"),
        ("{{.Size}}", "1234000"),
        ("{{.State.Health}}", "<nil>"),
        ("{{.Missing}}", "<no value>"),
        ("{{.Missing.Deeper}}", "<no value>"),
        ('{{index .Config.Labels "app"}}', "shop"),
        ('{{index .Config.Labels "nope"}}', "<no value>"),
        ("{{index .Config.Cmd 1}}", "-c"),
        ("{{json .Config.Cmd}}", '["sh","-c","x"]'),
        ("{{.Config.Cmd | json}}", '["sh","-c","x"]'),
        ("{{json .Config.Labels}}", '{"app":"shop","tier":"front"}'),
        ("{{.Config.Cmd}}", "[sh -c x]"),
        ("{{.Config.Labels}}", "map[app:shop tier:front]"),
        ('{{join .Config.Cmd " "}}', "sh -c x"),
        ("{{upper .State.Status}}", "RUNNING"),
        ("{{.Name | lower}}", "/web"),
        ("{{len .Mounts}}", "2"),
        ('{{printf "%s=%d" .Id .State.ExitCode}}', "abc=0"),
        ("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", "/a:/b /c:/d "),
        ("{{range $i, $m := .Mounts}}{{$i}}={{$m.Source}};{{end}}", "0=/a;1=/c;"),
        ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}", "app=shop,tier=front,"),
        ("{{range .Config.Env}}x{{else}}empty{{end}}", "empty"),
        ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
        ('{{if eq .State.Status "exited"}}e{{else if .State.Running}}r{{end}}', "r"),
        ("{{if not .State.Running}}down{{end}}", ""),
        ("{{with .State}}{{.Status}}{{end}}", "running"),
        ("a\n{{- .Id -}}\nb", "aabcb"),
        ("{{(index .Mounts 0).Source}}", "/a"),
        ("{{$.Id}}", "abc"),
        ('{{"quoted\\tstring"}}', "quoted\tstring"),
        ("{{/* a comment */}}x", "x"),
    ],
)
def test_renders_what_docker_users_write(source: str, expected: str) -> None:
    assert render(source) == expected


def test_json_shorthand_is_the_whole_object() -> None:
    assert render("json", {"b": 1, "a": "<&>"}) == '{"b":1,"a":"\\u003c\\u0026\\u003e"}'
    assert render("{{json .}}", {"a": "<&>"}) == '{"a":"<&>"}'  # docker's json: no escaping
    assert render("json", Record(b=1, a=2)) == '{"a":2,"b":1}'  # a row is a Go map: sorted


def test_record_names_an_unknown_field() -> None:
    with pytest.raises(TemplateError, match="can't evaluate field Nope"):
        render("{{.Nope}}", Record(ID="x"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{.Id", "unclosed action"),
        ("{{if .Id}}x", "has no {{end}}"),
        ("{{end}}", "unexpected {{end}}"),
        ('{{template "x"}}', "not supported"),
        ("{{$x := .Id}}", "not supported"),
        ("{{frobnicate .Id}}", 'function "frobnicate" not defined'),
        ("{{$nope}}", "undefined variable"),
        ("{{.Id .Name}}", "non-function"),
    ],
)
def test_refuses_clearly(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(source)


def test_go_string_prints_values_as_go_does() -> None:
    assert go_string(None) == "<nil>"
    assert go_string(False) == "false"
    assert go_string(2.0) == "2"
    assert go_string(2.5) == "2.5"
    assert go_string([1, "a", True]) == "[1 a true]"
    assert go_string({"b": 1, "a": [2]}) == "map[a:[2] b:1]"
