"""berth.runtime.cli: the flag parser, runc's list table, and main()'s output and exit codes.

Rules: main() runs in-process with --root under tmp_path and only for verbs that touch no
kernel state (state/list of records this file writes, spec, features); every error is exactly
one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.runtime.cli import (
    CREATE_FLAGS,
    GLOBAL_FLAGS,
    VERB_FLAGS,
    FlagTable,
    format_table,
    main,
    parse_flags,
)
from berth.runtime.store import Record, Store

EXEC = VERB_FLAGS["exec"]


# --------------------------------------------------------------------------- parse_flags


@pytest.mark.parametrize(
    "argv",
    [
        ["--bundle", "/b", "id"],
        ["--bundle=/b", "id"],
        ["-bundle", "/b", "id"],
        ["-bundle=/b", "id"],
        ["-b", "/b", "id"],
        ["-b=/b", "id"],
        ["id", "--bundle", "/b"],
    ],
)
def test_value_flag_forms(argv: list[str]) -> None:
    parsed, _ = parse_flags(argv, CREATE_FLAGS, stop_at_positional=False)
    assert parsed.text("bundle") == "/b"
    assert parsed.positionals == ["id"]


def test_last_value_wins_and_empty_inline_value_is_kept() -> None:
    parsed, _ = parse_flags(["--pid-file", "a", "--pid-file=b"], CREATE_FLAGS, False)
    assert parsed.text("pid-file") == "b"
    parsed, _ = parse_flags(["--pid-file="], CREATE_FLAGS, False)
    assert parsed.text("pid-file") == ""


def test_value_may_start_with_a_dash() -> None:
    parsed, _ = parse_flags(["--cwd", "-weird"], EXEC, False)
    assert parsed.text("cwd") == "-weird"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--no-pivot"], True),
        (["-no-pivot"], True),
        (["--no-pivot=true"], True),
        (["--no-pivot=false"], False),
        ([], False),
    ],
)
def test_boolean_flags(argv: list[str], expected: bool) -> None:
    parsed, _ = parse_flags(argv, CREATE_FLAGS, False)
    assert parsed.on("no-pivot") is expected


def test_boolean_flag_takes_no_separate_value() -> None:
    parsed, _ = parse_flags(["--no-pivot", "true"], CREATE_FLAGS, False)
    assert parsed.on("no-pivot")
    assert parsed.positionals == ["true"]


def test_boolean_flag_refuses_other_inline_values() -> None:
    with pytest.raises(InvalidArgument, match=r"--no-pivot=yes: expected true or false"):
        parse_flags(["--no-pivot=yes"], CREATE_FLAGS, False)


def test_short_aliases_store_under_the_long_name() -> None:
    table: FlagTable = VERB_FLAGS["delete"]
    parsed, _ = parse_flags(["-f", "web"], table, False)
    assert parsed.on("force")
    assert parsed.flags == {"force": True}


def test_repeatable_env_and_cap() -> None:
    argv = ["--env", "A=1", "-e", "B=2", "--env=C=3", "--cap", "CAP_KILL", "-c", "CAP_CHOWN"]
    parsed, _ = parse_flags(argv, EXEC, False)
    assert parsed.many("env") == ["A=1", "B=2", "C=3"]
    assert parsed.many("cap") == ["CAP_KILL", "CAP_CHOWN"]
    assert parsed.text("env") == "C=3"
    assert parsed.many("user") == []


@pytest.mark.parametrize("flag", ["--bogus", "-x", "--bogus=1", "--bundle-x"])
def test_unknown_flag(flag: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_flags([flag, "id"], CREATE_FLAGS, False)
    assert info.value.message == f"flag provided but not defined: {flag.split('=', maxsplit=1)[0]}"


@pytest.mark.parametrize("flag", ["--bundle", "-b", "--pid-file"])
def test_missing_value(flag: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^flag needs an argument: {flag}$"):
        parse_flags(["id", flag], CREATE_FLAGS, False)


def test_stop_at_positional_leaves_the_rest_untouched() -> None:
    argv = ["-t", "--env", "A=1", "web", "sh", "-c", "--not-ours"]
    parsed, index = parse_flags(argv, EXEC, stop_at_positional=True)
    assert index == 3
    assert argv[index:] == ["web", "sh", "-c", "--not-ours"]
    assert parsed.on("tty")
    assert parsed.many("env") == ["A=1"]
    assert parsed.positionals == []


def test_global_flags_stop_at_the_verb() -> None:
    argv = ["--root", "/r", "--debug", "--log-format=json", "state", "--bogus"]
    parsed, index = parse_flags(argv, GLOBAL_FLAGS, stop_at_positional=True)
    assert argv[index] == "state"
    assert parsed.text("root") == "/r"
    assert parsed.text("log-format") == "json"
    assert parsed.on("debug")


def test_double_dash_ends_flags() -> None:
    parsed, index = parse_flags(["-d", "--", "-t"], EXEC, stop_at_positional=True)
    assert parsed.on("detach")
    assert not parsed.on("tty")
    assert index == 2


def test_lone_dash_is_a_positional() -> None:
    parsed, _ = parse_flags(["-"], CREATE_FLAGS, False)
    assert parsed.positionals == ["-"]


# --------------------------------------------------------------------------- format_table

HEADER = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]


def test_table_of_the_header_alone_is_runcs() -> None:
    # `runc list` on an empty root, byte for byte
    assert format_table([HEADER]) == (
        "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
    )


def test_table_columns_grow_with_padding_three() -> None:
    rows = [
        HEADER,
        ["a-very-long-container-id", "12345", "running", "/b", "2024-05-01T10:20:30.5Z", "root"],
        ["c", "0", "stopped", "/bundles/ten-chars", "", ""],
    ]
    assert format_table(rows) == (
        "ID                         PID         STATUS      BUNDLE               "
        "CREATED                  OWNER\n"
        "a-very-long-container-id   12345       running     /b                   "
        "2024-05-01T10:20:30.5Z   root\n"
        "c                          0           stopped     /bundles/ten-chars   "
        "                         \n"
    )


def test_table_minwidth_boundary() -> None:
    # 9 characters + padding 3 is exactly the minimum width 12; 10 characters make 13
    assert format_table([["123456789", "x"], ["", "y"]]) == "123456789   x\n            y\n"
    assert format_table([["1234567890", "x"]]) == "1234567890   x\n"


def test_table_last_column_is_not_padded() -> None:
    assert format_table([["a", "long last cell"], ["b", "c"]]) == (
        "a           long last cell\nb           c\n"
    )


# --------------------------------------------------------------------------- main()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert err.startswith("berth-runtime: "), err
    return err


def _stopped_record(root: Path, container_id: str) -> None:
    st = Store(str(root))
    st.reserve(container_id)
    st.save(
        Record(
            id=container_id,
            bundle=f"/bundles/{container_id}",
            rootfs=f"/bundles/{container_id}/rootfs",
            pid=0,  # never alive: status is derived as stopped without any kernel state
            pid_start=0,
            created="2024-05-01T10:20:30.5Z",
            config={"ociVersion": "1.2.0"},
            cgroup={"hierarchies": []},
        )
    )


def test_no_arguments_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys)
    assert code == 1
    assert out.startswith("usage: berth-runtime")


def test_help_and_version_succeed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    assert "commands:" in out
    code, out, _ = _run(capsys, "-v")
    assert code == 0
    assert "spec: 1.2.0" in out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_verb_has_help_listing_its_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str
) -> None:
    """``VERB --help`` as runc has it: the verb's usage on stdout, exit 0, nothing done (the
    container id after it is not looked at)."""
    for verb, table in VERB_FLAGS.items():
        code, out, err = _run(capsys, "--root", str(tmp_path), verb, flag, "ghost")
        assert (code, err) == (0, ""), (verb, err)
        assert out.startswith(f"usage: berth-runtime {verb}"), out
        for name in table:
            assert f"--{name}" in out, (verb, name, out)
    assert not list(tmp_path.iterdir())


def test_unknown_verb(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "--root", str(tmp_path), "frobnicate", "x")
    assert code == 1
    assert out == ""
    assert "'frobnicate'" in _one_line(err)


def test_unknown_global_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--bogus", "list")
    assert code == 1
    assert _one_line(err) == "berth-runtime: flag provided but not defined: --bogus\n"


def test_unknown_verb_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "state", "--bogus", "x")
    assert code == 1
    assert "--bogus" in _one_line(err)


def test_state_of_a_missing_container(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "--root", str(tmp_path), "state", "ghost")
    assert code == 1
    assert out == ""
    assert "ghost" in _one_line(err)
    assert "does not exist" in err


def test_state_needs_an_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "state")
    assert code == 1
    assert _one_line(err) == 'berth-runtime: "state" requires a container id\n'


def test_state_of_an_invalid_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "state", "../etc")
    assert code == 1
    assert "'../etc'" in _one_line(err)


def test_state_of_a_stopped_container(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _stopped_record(tmp_path, "web")
    code, out, err = _run(capsys, "--root", str(tmp_path), "state", "web")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert list(doc) == [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ]
    assert (doc["id"], doc["status"], doc["pid"]) == ("web", "stopped", 0)
    assert out.startswith('{\n  "ociVersion"')  # indented like runc's


def test_list_on_an_empty_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = _run(capsys, "--root", str(tmp_path / "none"), "list")
    assert (code, err) == (0, "")
    assert out == "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"


def test_list_json_on_an_empty_root_is_null(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for argv in (["list", "--format", "json"], ["list", "-f=json"]):
        code, out, _ = _run(capsys, "--root", str(tmp_path), *argv)
        assert (code, out) == (0, "null\n")


def test_list_quiet_on_an_empty_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _run(capsys, "--root", str(tmp_path), "list", "-q") == (0, "", "")


def test_list_shows_records(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _stopped_record(tmp_path, "web")
    _stopped_record(tmp_path, "db")
    Store(str(tmp_path)).reserve("half-created")  # no record: not listed
    owner = pwd.getpwuid(os.getuid()).pw_name  # who owns the state dirs, as runc shows it
    code, out, _ = _run(capsys, "--root", str(tmp_path), "list")
    assert code == 0
    assert out == (
        "ID          PID         STATUS      BUNDLE         CREATED                  OWNER\n"
        f"db          0           stopped     /bundles/db    2024-05-01T10:20:30.5Z   {owner}\n"
        f"web         0           stopped     /bundles/web   2024-05-01T10:20:30.5Z   {owner}\n"
    )
    code, out, _ = _run(capsys, "--root", str(tmp_path), "list", "-q")
    assert out == "db\nweb\n"
    code, out, _ = _run(capsys, "--root", str(tmp_path), "list", "--format=json")
    assert "\n" not in out.rstrip("\n")
    assert [(s["id"], s["owner"]) for s in json.loads(out)] == [("db", owner), ("web", owner)]


def test_list_refuses_an_unknown_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "list", "--format", "yaml")
    assert code == 1
    assert "--format" in _one_line(err)
    assert "'yaml'" in err


def test_spec_writes_config_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from berth.spec.defaults import default_spec

    code, out, err = _run(capsys, "--root", str(tmp_path / "r"), "spec", "--bundle", str(tmp_path))
    assert (code, out, err) == (0, "", "")
    text = (tmp_path / "config.json").read_text()
    assert json.loads(text) == default_spec()
    assert text.startswith('{\n\t"ociVersion"')  # runc indents with tabs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temp file left


def test_spec_rootless(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from berth.spec.defaults import default_spec

    assert _run(capsys, "spec", "-b", str(tmp_path), "--rootless")[0] == 0
    assert json.loads((tmp_path / "config.json").read_text()) == default_spec(rootless=True)


def test_spec_uses_the_current_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(capsys, "spec")[0] == 0
    assert (tmp_path / "config.json").is_file()


def test_spec_refuses_to_overwrite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("mine")
    code, _, err = _run(capsys, "spec", "--bundle", str(tmp_path))
    assert code == 1
    path = os.path.join(str(tmp_path), "config.json")
    assert _one_line(err) == f"berth-runtime: File {path} exists. Remove it first\n"
    assert (tmp_path / "config.json").read_text() == "mine"


def test_spec_into_a_missing_bundle_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "spec", "--bundle", str(tmp_path / "missing"))
    assert code == 1
    assert "missing" in _one_line(err)


def test_features_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "features")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["ociVersionMax"] == "1.2.0"
    assert "poststop" in doc["hooks"]
    assert "CAP_SYS_ADMIN" in doc["linux"]["capabilities"]
    assert doc["linux"]["seccomp"]["enabled"] is True


def test_kill_refuses_a_bad_signal_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "kill", "ghost", "SIGNOPE")
    assert code == 1
    assert "'SIGNOPE'" in _one_line(err)


def test_ps_options_after_the_id_are_not_berth_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "ps", "ghost", "-ef")
    assert code == 1
    assert "'ghost' does not exist" in _one_line(err)  # got as far as looking the container up


@pytest.mark.parametrize(
    ("after_id", "ps_args"),
    [
        ([], ["-ef"]),
        (["-ef"], ["-ef"]),
        (["--", "-ef"], ["-ef"]),
        (["-o", "pid,comm"], ["-o", "pid,comm"]),
        (["--", "-o", "pid,comm"], ["-o", "pid,comm"]),
    ],
)
def test_ps_passes_options_after_the_id_to_ps(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    after_id: list[str],
    ps_args: list[str],
) -> None:
    # as runc (ps has SkipArgReorder): everything after the id goes to ps, a leading -- aside
    import subprocess

    from berth.runtime import container

    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        out = "UID PID CMD\nroot 1 init\nroot 42 sh\nroot 43 other\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(container, "pids", lambda st, container_id: [42])
    monkeypatch.setattr(subprocess, "run", fake_run)
    code, out, err = _run(capsys, "--root", str(tmp_path), "ps", "web", *after_id)
    assert (code, err) == (0, "")
    assert calls == [["ps", *ps_args]]
    assert out == "UID PID CMD\nroot 42 sh\n"


def test_kill_with_a_superscript_digit_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path), "kill", "ghost", "\u00b2")
    assert code == 1
    assert "signal '\u00b2'" in _one_line(err)


def test_list_with_a_damaged_record_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _stopped_record(tmp_path, "web")
    (tmp_path / "web" / "state.json").write_text("{")
    code, _, err = _run(capsys, "--root", str(tmp_path), "list")
    assert code == 1
    assert "web" in _one_line(err)
