"""Container records and logs without a daemon: names, durations, times, the merged Config,
``docker ps`` status texts, log selection and framing, signals, start exit codes, and the
WorkingDir mkdir that stays inside the rootfs."""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest

from berth.engine import containers_logs as logs
from berth.engine.containers import parse_signal, start_exit_code
from berth.engine.containers_rootfs import make_dir_in
from berth.engine.containers_state import (
    ZERO_TIME,
    Record,
    check_name,
    generate_name,
    merged_config,
    parse_rfc3339,
)
from berth.errors import InvalidArgument


def test_names_follow_dockers_rules() -> None:
    assert check_name("web") == "/web"
    assert check_name("/web.1_a-b") == "/web.1_a-b"
    for bad in ("-x", "a", "a b", "a/b", ""):
        with pytest.raises(InvalidArgument, match="Invalid container name"):
            check_name(bad)
    taken = {generate_name(set()) for _ in range(20)}
    assert all(n.startswith("/") and "_" in n for n in taken)
    assert generate_name(taken) not in taken


def test_rfc3339_with_nanoseconds() -> None:
    assert parse_rfc3339("2026-11-26T17:56:34.5Z") == pytest.approx(1795715794.5)
    assert parse_rfc3339("2026-11-26T17:56:34Z") == 1795715794.0
    assert parse_rfc3339("2026-11-26T18:56:34+01:00") == 1795715794.0
    assert parse_rfc3339(ZERO_TIME) == 0.0


def test_merged_config_takes_the_images_defaults() -> None:
    image = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/w", "Labels": {"x": "1"}}
    out = merged_config({"Image": "busybox", "Env": ["A=2"], "Labels": {"y": "2"}}, image)
    assert out["Env"] == ["PATH=/bin", "A=2"] and out["Cmd"] == ["sh"]
    assert out["WorkingDir"] == "/w" and out["Labels"] == {"x": "1", "y": "2"}
    assert out["Tty"] is False and out["Image"] == "busybox"
    own = merged_config({"Image": "b", "Entrypoint": ["echo"]}, image)
    assert own["Entrypoint"] == ["echo"] and own["Cmd"] is None  # an Entrypoint resets Cmd


def _record(**state: object) -> Record:
    rec = Record("a" * 64, "/n", "2026-11-26T17:00:00Z", "sha256:" + "b" * 64, "busybox", {}, {})
    rec.state.update(state)
    return rec


def test_status_texts_and_round_trip(tmp_path: Path) -> None:
    now = parse_rfc3339("2026-11-26T17:00:10Z")
    assert _record().status_text(now) == "Created"
    up = _record(Running=True, Status="running", StartedAt="2026-11-26T17:00:05Z")
    assert up.status_text(now) == "Up 5 seconds"
    done = _record(Status="exited", ExitCode=3, FinishedAt="2026-11-26T17:00:00Z")
    assert done.status_text(now) == "Exited (3) 10 seconds ago"
    done.save(str(tmp_path))
    again = Record.load(str(tmp_path))
    assert again == done
    doc = again.inspect("overlay2")
    assert doc["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert doc["State"]["ExitCode"] == 3 and doc["Name"] == "/n"


def test_log_selection_and_frames(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    lines = [
        {"log": "one\n", "stream": "stdout", "time": "2026-11-26T17:00:01.000000001Z"},
        {"log": "two\n", "stream": "stderr", "time": "2026-11-26T17:00:02Z"},
        {"log": "three\n", "stream": "stdout", "time": "2026-11-26T17:00:03Z"},
    ]
    path.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines) + b'{"log":')
    reader = logs.LogReader(str(path))
    entries = reader.read()
    assert [e.data for e in entries] == [b"one\n", b"two\n", b"three\n"]
    assert reader.offset == path.stat().st_size - len(b'{"log":')  # half a line waits
    assert reader.read() == [] and reader.grown()  # the half line is there, unread
    assert not logs.LogReader(str(path), path.stat().st_size).grown()
    only_out = logs.Selection(stderr=False)
    assert [e.data for e in logs.select(entries, only_out)] == [b"one\n", b"three\n"]
    assert [e.data for e in logs.select(entries, logs.Selection(tail=1))] == [b"three\n"]
    assert logs.select(entries, logs.Selection(tail=0)) == []
    since = logs.Selection(since=parse_rfc3339("2026-11-26T17:00:02Z"))
    assert [e.data for e in logs.select(entries, since)] == [b"two\n", b"three\n"]
    framed = logs.Selection().render(entries[1], tty=False)
    assert framed == struct.pack(">BxxxI", 2, 4) + b"two\n"
    stamped = logs.Selection(timestamps=True).render(entries[0], tty=True)
    assert stamped == b"2026-11-26T17:00:01.000000001Z one\n"


def test_signals_and_start_exit_codes() -> None:
    assert parse_signal("SIGKILL") == parse_signal("KILL") == parse_signal("9") == 9
    assert parse_signal(None) == signal.SIGTERM and parse_signal("", 9) == 9
    with pytest.raises(InvalidArgument, match="Invalid signal: NOPE"):
        parse_signal("NOPE")
    assert start_exit_code('exec: "x": executable file not found in $PATH') == 127
    assert start_exit_code('exec: "/x": stat /x: no such file or directory') == 127
    assert start_exit_code('exec: "/etc": permission denied') == 126
    assert start_exit_code("something else") == 128


def test_working_dir_is_made_inside_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink("/", root / "up")  # absolute: resolved against the rootfs, not the host
    os.symlink("../../..", root / "rel")
    make_dir_in(str(root), "/up/srv/app")
    make_dir_in(str(root), "/rel/x")
    assert (root / "srv" / "app").is_dir() and (root / "x").is_dir()
    assert os.listdir(outside) == []
    (root / "file").write_text("")
    with pytest.raises(InvalidArgument, match="not a directory"):
        make_dir_in(str(root), "/file/sub")
