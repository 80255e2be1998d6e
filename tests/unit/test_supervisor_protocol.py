"""The supervisor's wire protocol and its json-file log writer, without a kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from berth.engine import supervisor_protocol as p
from berth.engine.supervisor import JsonFileLog, exit_code_of
from berth.errors import BerthError, InvalidArgument, NotFound


def test_every_request_round_trips_with_its_seq() -> None:
    requests: list[p.Request] = [
        p.Create("c1", "/b", "/l.log", start=False, stdin=True),
        p.Start("c1"),
        p.Kill("c1", 9, all=True),
        p.Delete("c1", force=True),
        p.StateOf("c1"),
        p.List(),
        p.Wait("c1"),
        p.Subscribe(),
        p.WriteStdin.of("c1", b"\x00hi\n", eof=True),
        p.Shutdown(),
        p.Restart(),
        p.Resize("c1", 40, 120, exec_id="e1"),
        p.Exec("c1", "e1", {"args": ["sh"], "terminal": True}, stdin=True, attach=True),
        p.ExecState("c1", "e1"),
        p.Kill("c1", 9, exec_id="e1"),
        p.WriteStdin.of("c1", b"x", exec_id="e1"),
    ]
    for seq, req in enumerate(requests):
        line = p.encode_request(req, seq)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert p.decode_request(line) == (seq, req)
    assert p.decode_request(p.encode_request(requests[8], 0))[1].payload() == b"\x00hi\n"  # type: ignore[union-attr]


def test_defaults_and_unknown_fields() -> None:
    seq, req = p.decode_request(b'{"v":1,"op":"kill","seq":4,"id":"x","future":true}')
    assert (seq, req) == (4, p.Kill("x", 15, False))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"nope", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v":2,"op":"list"}', "version 2"),
        (b'{"v":1,"op":"fly"}', "unknown op 'fly'"),
        (b'{"v":1,"op":"kill","id":"x","signal":"9"}', "signal: '9'"),
        (b'{"v":1,"op":"kill","id":"x","signal":true}', "signal: True"),
        (b'{"v":1,"op":"wait"}', "missing argument 'id'"),
    ],
)
def test_bad_requests_are_invalid_arguments(line: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        p.decode_request(line)


def test_answers_carry_results_errors_and_events() -> None:
    exit_ = p.Exit("c1", 42, 137, True, "2026-01-01T00:00:00.5Z")
    info = p.Info("c1", "stopped", 42, "/b", "/l", "2026-01-01T00:00:00Z", exit=exit_)
    body = p.decode_reply(p.encode_result(3, info.to_json()))
    assert body["seq"] == 3 and p.Info.from_json(body["result"]) == info
    assert p.Exit.from_json(p.decode_reply(p.encode_exit_event(exit_))["exit"]) == exit_
    with pytest.raises(NotFound, match="no such"):
        p.decode_reply(p.encode_error(3, NotFound("no such")))
    with pytest.raises(BerthError, match="unexpected"):
        p.decode_reply(b'{"v":9}')


def test_exec_events_decode_to_output_then_exit() -> None:
    from berth.engine.supervisor_client import exec_event

    out = p.decode_reply(p.encode_exec_output("e1", "stderr", b"\x00oops\n"))
    assert exec_event(out) == ("stderr", b"\x00oops\n")
    assert exec_event(p.decode_reply(p.encode_exec_exit("e1", 126))) == 126
    assert exec_event(p.decode_reply(p.encode_result(3, {"pid": 7}))) is None
    with pytest.raises(InvalidArgument, match="process"):
        p.decode_request(b'{"v":1,"op":"exec","seq":1,"id":"c","exec_id":"e","process":[]}')


def test_exit_codes_as_a_shell_reports_them() -> None:
    assert exit_code_of(3 << 8) == 3
    assert exit_code_of(9) == 137  # killed by SIGKILL


def test_json_file_log_is_dockers_format(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = JsonFileLog(str(path))
    log.feed("stdout", b"one\ntw")
    log.feed("stderr", b"\xffbad utf-8\n")
    log.feed("stdout", b"o\n" + b"a" * 20000)
    log.feed("stdout", b"b" * 20000 + b"\n")
    log.feed("stdout", b"tail")
    log.flush("stdout")
    log.flush("stderr")  # nothing pending: nothing written
    log.close()
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["stream"], e["log"]) for e in entries] == [
        ("stdout", "one\n"),
        ("stderr", "\ufffdbad utf-8\n"),
        ("stdout", "two\n"),
        ("stdout", "a" * 16384),
        ("stdout", "a" * 3616 + "b" * 12768),
        ("stdout", "b" * 7232 + "\n"),
        ("stdout", "tail"),
    ]
    assert all(e["time"].endswith("Z") and list(e) == ["log", "stream", "time"] for e in entries)


def test_an_abandoned_requests_error_is_not_raised_in_the_next_one() -> None:
    """A request cancelled mid-exchange leaves its answer on the connection; the next request
    must skip it, not raise its error (seen: a container's create failing with an exec's
    "stdin is not open")."""
    import asyncio

    from berth.engine.supervisor_client import AsyncClient
    from berth.errors import Conflict

    stale = p.encode_error(1, Conflict("exec abc: stdin is not open"))
    fresh = p.encode_result(2, {"answer": 42})

    class Writer:
        def write(self, data: bytes) -> None:
            pass

        async def drain(self) -> None:
            pass

    async def main() -> dict[str, object]:
        reader = asyncio.StreamReader()
        reader.feed_data(stale + fresh)
        client = AsyncClient("/nonexistent")
        client._seq = 1
        return await client._exchange(reader, Writer(), p.List())  # type: ignore[arg-type]

    assert asyncio.run(main()) == {"answer": 42}
    assert p.decode_reply(stale, 2)["seq"] == 1  # returned to be skipped
    with pytest.raises(Conflict, match="stdin is not open"):
        p.decode_reply(stale, 1)
