"""Argument parsing: global options, run flags into the create body, value parsers, exit codes."""

from __future__ import annotations

import argparse

import pytest

from berth.cli import main
from berth.cli.client import host_from_environment
from berth.cli.common import CliError, UsageError, filters_query
from berth.cli.containers import since_value
from berth.cli.images import normalize_repository, split_reference
from berth.cli.options import (
    add_create_flags,
    cpus_to_nano,
    create_body,
    create_parser,
    memory_bytes,
    parse_duration,
    restart_policy,
    ulimit,
)
from berth.cli.run import exit_code_of_start_error, full_reference
from berth.cli.tty import StdinPump, parse_detach_keys


def run_args(*argv: str) -> argparse.Namespace:
    p = create_parser("run")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--rm", action="store_true")
    add_create_flags(p)
    return p.parse_args(list(argv))


def test_run_flags_make_the_create_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "yes")
    a = run_args(
        "--rm", "-e", "A=1", "-e", "FROM_HOST", "-e", "UNSET_HERE_X", "-w", "/w", "-u", "1:2",
        "-h", "box", "--name", "n", "-m", "64m", "--cpus", "1.5", "--pids-limit", "20",
        "--cpu-shares", "512", "--cpuset-cpus", "0", "--ulimit", "nofile=100:200",
        "--read-only", "--tmpfs", "/tmp:size=1m", "--cap-add", "NET_ADMIN", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "-l", "k=v", "--health-cmd", "true",
        "--health-interval", "1m30s", "busybox", "sh", "-c", "echo -n hi",
    )  # fmt: skip
    body = create_body(a)
    assert body["Image"] == "busybox" and body["Cmd"] == ["sh", "-c", "echo -n hi"]
    assert body["Env"] == ["A=1", "FROM_HOST=yes"]
    assert (body["WorkingDir"], body["User"], body["Hostname"]) == ("/w", "1:2", "box")
    assert body["Labels"] == {"k": "v"}
    assert body["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 90_000_000_000}
    assert body["AttachStdout"] and not body["Tty"] and not body["OpenStdin"]
    host = body["HostConfig"]
    assert host["Memory"] == 64 << 20 and host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 20 and host["CpuShares"] == 512 and host["CpusetCpus"] == "0"
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    assert host["ReadonlyRootfs"] and host["Tmpfs"] == {"/tmp": "size=1m"}
    assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["AutoRemove"]
    assert "Privileged" not in host and "RestartPolicy" not in host


def test_interactive_tty_and_entrypoint() -> None:
    body = create_body(run_args("-it", "--entrypoint", "", "busybox"), (40, 120))
    assert body["Tty"] and body["OpenStdin"] and body["StdinOnce"] and body["AttachStdin"]
    assert body["HostConfig"]["ConsoleSize"] == [40, 120]
    assert body["Entrypoint"] == [""] and "Cmd" not in body
    detached = create_body(run_args("-d", "-i", "busybox"))
    assert not detached["AttachStdin"] and not detached["AttachStdout"]


def test_rm_with_restart_is_refused() -> None:
    with pytest.raises(UsageError, match="Conflicting options"):
        create_body(run_args("--rm", "--restart", "always", "busybox"))


def test_arguments_after_the_image_belong_to_the_command() -> None:
    a = run_args("busybox", "ls", "-la", "--rm")
    assert a.command == ["ls", "-la", "--rm"] and not a.rm


@pytest.mark.parametrize(
    ("text", "value"),
    [("512", 512), ("1k", 1024), ("64m", 64 << 20), ("64MB", 64 << 20), ("1.5g", 3 << 29)],
)
def test_memory_bytes(text: str, value: int) -> None:
    assert memory_bytes(text) == value


@pytest.mark.parametrize("bad", ["foo", "-1m", "12q"])
def test_bad_values_name_the_value(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=bad):
        memory_bytes(bad)


def test_flag_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="argument -m/--memory: invalid size: 'foo'"):
        run_args("-m", "foo", "busybox")
    with pytest.raises(UsageError, match="invalid ulimit"):
        run_args("--ulimit", "nofile", "busybox")


def test_value_parsers() -> None:
    assert cpus_to_nano("0.5") == 500_000_000
    assert parse_duration("1m30s") == 90_000_000_000 and parse_duration("250ms") == 250_000_000
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration("5 parsecs")
    assert ulimit("nproc=10") == {"Name": "nproc", "Soft": 10, "Hard": 10}
    with pytest.raises(argparse.ArgumentTypeError, match="soft limit"):
        ulimit("nofile=20:10")
    assert restart_policy("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    with pytest.raises(argparse.ArgumentTypeError, match="cannot be used with always"):
        restart_policy("always:3")
    with pytest.raises(argparse.ArgumentTypeError, match="invalid restart policy"):
        restart_policy("sometimes")


def test_references() -> None:
    assert split_reference("busybox") == ("busybox", "latest")
    assert split_reference("localhost:5000/a/b:1") == ("localhost:5000/a/b", "1")
    assert split_reference("localhost:5000/a") == ("localhost:5000/a", "latest")
    assert split_reference("a@sha256:00") == ("a", "@sha256:00")
    assert normalize_repository("busybox") == "docker.io/library/busybox"
    assert normalize_repository("me/app") == "docker.io/me/app"
    assert normalize_repository("127.0.0.1:5000/app") == "127.0.0.1:5000/app"
    assert full_reference("busybox") == "busybox:latest"
    assert full_reference("localhost:5000/box") == "localhost:5000/box:latest"


def test_start_error_exit_codes() -> None:
    assert exit_code_of_start_error('exec: "x": executable file not found in $PATH') == 127
    assert exit_code_of_start_error("open /x: no such file or directory") == 127
    assert exit_code_of_start_error("exec /etc: permission denied") == 126
    assert exit_code_of_start_error("cgroup trouble") == 125


def test_filters_and_since() -> None:
    assert filters_query(["status=exited", "status=created", "name=a"]) == {
        "status": {"exited": True, "created": True},
        "name": {"a": True},
    }
    with pytest.raises(CliError, match="bad format of filter"):
        filters_query(["nonsense"])
    assert since_value("10m", now=1000.0) == "400"
    assert since_value("1700000000") == "1700000000"
    assert since_value("1970-01-01T00:01:00Z") == "60"
    assert since_value("1970-01-02") == "86400"


def test_globals_and_host_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert main.split_globals(["-H", "unix:///x", "--debug", "ps", "-a"]) == (
        "unix:///x", True, ["ps", "-a"],
    )  # fmt: skip
    assert main.split_globals(["--host=unix:///y", "ps"])[0] == "unix:///y"
    with pytest.raises(UsageError, match="unknown flag: --bogus"):
        main.split_globals(["--bogus", "ps"])
    monkeypatch.delenv("BERTH_HOST", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "tcp://1.2.3.4:2375")
    assert host_from_environment(None) is None  # a tcp DOCKER_HOST is not ours to use
    monkeypatch.setenv("DOCKER_HOST", "unix:///d.sock")
    assert host_from_environment(None) == "unix:///d.sock"
    monkeypatch.setenv("BERTH_HOST", "unix:///b.sock")
    assert host_from_environment(None) == "unix:///b.sock"
    assert host_from_environment("unix:///flag") == "unix:///flag"
    assert main.resolve_verb(["container", "ls", "-a"]) == ("ps", ["-a"])
    assert main.resolve_verb(["image", "inspect", "x"]) == ("inspect", ["--type", "image", "x"])


def test_exit_codes_of_main(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    assert main.run(["nosuchverb"]) == 125
    assert "'nosuchverb' is not a berth command" in capsys.readouterr().err
    assert main.run(["-H", f"unix://{tmp_path}/none.sock", "ps", "--bogus"]) == 125
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main.run(["-H", f"unix://{tmp_path}/none.sock", "ps"]) == 1
    assert capsys.readouterr().err == (
        f"Cannot connect to the Berth daemon at unix://{tmp_path}/none.sock. Is berthd running?\n"
    )
    assert main.run(["-H", "tcp://1.2.3.4:2375", "ps"]) == 125
    assert "only unix:// sockets" in capsys.readouterr().err
    assert main.run(["--help"]) == 0 and "Usage:  berth" in capsys.readouterr().out


def test_every_verb_has_a_handler() -> None:
    for verb in main.VERBS:
        assert callable(main.handler_of(verb))


def test_detach_keys() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(ValueError, match="Invalid detach keys"):
        parse_detach_keys("ctrl-pp")
    pump = StdinPump(None, b"\x10\x11")  # type: ignore[arg-type]
    assert pump._scan(b"ab\x10") == (b"ab", b"\x10")
    assert pump._scan(b"\x10x") == (b"\x10x", b"") and not pump.detached
    assert pump._scan(b"ab\x10\x11cd") == (b"ab", b"") and pump.detached
