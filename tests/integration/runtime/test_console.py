"""Terminals: ``process.terminal`` with ``--console-socket`` (create/start and ``exec -t``),
and berth-runtime's own relay in a foreground ``run``.

Rules: the test owns the console socket (a unix socket in the test's work dir), receives the
pty master the runtime sends with SCM_RIGHTS and reads/writes the container's terminal through
it; every fd it received is closed on the way out. A foreground runtime command that needs to
run alongside the test is a Popen reaped (its process group killed) on failure.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest
from helpers_extra import (
    alive,
    console_socket,
    detached,
    read_until,
    reaped,
    runtime_cmd,
    wait_for,
)

pytestmark = pytest.mark.root


def terminal(config: dict[str, Any]) -> None:
    config["process"]["terminal"] = True


def lines(data: bytes) -> list[str]:
    return [line.rstrip("\r") for line in data.decode(errors="replace").split("\n")]


def test_create_sends_the_pty_master_and_start_writes_to_it(runtime, bundle, rt_workdir):
    b = bundle.sh("tty; echo hello", terminal)
    cid = runtime.new_id()
    with console_socket(rt_workdir / "console.sock") as cs:
        created = runtime.create(b, cid, extra=["--console-socket", str(cs.path)])
        assert created.returncode == 0, created.stderr
        master = cs.master()
        assert os.isatty(master)
        started = runtime.start(cid)
        assert started.returncode == 0, started.stderr
        out = read_until(master, b"hello\r\n")
        assert lines(out)[:2] == ["/dev/pts/0", "hello"], out
        runtime.wait_status(cid, "stopped")


def test_an_interactive_shell_reads_the_terminal(runtime, bundle, rt_workdir):
    b = bundle(["sh"], terminal)
    cid = runtime.new_id()
    with console_socket(rt_workdir / "console.sock") as cs:
        created = runtime.create(b, cid, extra=["--console-socket", str(cs.path)])
        assert created.returncode == 0, created.stderr
        master = cs.master()
        assert runtime.start(cid).returncode == 0
        os.write(master, b"echo from-stdin\n")
        out = read_until(master, b"\nfrom-stdin\r\n")
        assert "from-stdin" in lines(out), out  # the output line, not the echoed command
        assert runtime.state(cid)["status"] == "running"
        os.write(master, b"exit\n")
        runtime.wait_status(cid, "stopped")


def test_the_terminal_is_the_processs_controlling_tty(runtime, bundle, rt_workdir):
    # `[ -t 0 ]` and the session's tty: stdin, stdout and stderr are all the pty
    script = "for fd in 0 1 2; do [ -t $fd ] && echo tty$fd; done; echo end"
    b = bundle.sh(script, terminal)
    cid = runtime.new_id()
    with console_socket(rt_workdir / "console.sock") as cs:
        assert runtime.create(b, cid, extra=["--console-socket", str(cs.path)]).returncode == 0
        master = cs.master()
        assert runtime.start(cid).returncode == 0
        out = read_until(master, b"end\r\n")
        assert lines(out)[:4] == ["tty0", "tty1", "tty2", "end"], out
        runtime.wait_status(cid, "stopped")


def test_console_size_sets_the_window_size(runtime, bundle, rt_workdir):
    def sized(config: dict[str, Any]) -> None:
        terminal(config)
        config["process"]["consoleSize"] = {"height": 37, "width": 101}

    b = bundle.sh("stty size; echo end", sized)
    cid = runtime.new_id()
    with console_socket(rt_workdir / "console.sock") as cs:
        assert runtime.create(b, cid, extra=["--console-socket", str(cs.path)]).returncode == 0
        master = cs.master()
        assert runtime.start(cid).returncode == 0
        out = read_until(master, b"end\r\n")
        assert lines(out)[:2] == ["37 101", "end"], out
        runtime.wait_status(cid, "stopped")


def test_exec_with_a_terminal_sends_its_own_pty(runtime, bundle, rt_workdir):
    # runc takes --console-socket only with -d ("cannot use console socket if runc will not
    # detach or allocate tty"), so this is `exec -d -t`
    b = bundle(["sleep", "30"])
    cid = runtime.new_id()
    assert runtime.create(b, cid).returncode == 0
    assert runtime.start(cid).returncode == 0
    pid_file = rt_workdir / "exec.pid"
    with console_socket(rt_workdir / "console.sock") as cs:
        done = detached(
            runtime, "exec", "-d", "-t", "--console-socket", str(cs.path),
            "--pid-file", str(pid_file), cid, "sh", "-c", "tty; read line; echo got:$line",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        master = cs.master()
        first = read_until(master, b"\r\n")
        assert lines(first)[0].startswith("/dev/pts/"), first
        pid = int(pid_file.read_text())
        assert alive(pid)
        os.write(master, b"ping\n")
        rest = read_until(master, b"got:ping\r\n")
        assert "got:ping" in lines(rest), rest
        assert wait_for(lambda: not alive(pid)), "the exec'd shell did not exit"
    assert runtime.state(cid)["status"] == "running"


def test_berth_run_relays_its_own_terminal(runtime, bundle):
    """berth only: a foreground ``run`` with terminal true and no console socket makes the
    socket itself and copies between its stdio and the container's terminal."""
    if runtime.name != "berth":
        pytest.skip("runc's foreground run with a terminal needs a console socket")
    script = "tty; read line; echo got:$line; exit 5"
    b = bundle.sh(script, terminal)
    cid = runtime.new_id()
    runtime.ids.append(cid)  # teardown deletes it and checks for leftovers
    master, slave = os.openpty()
    try:
        with reaped(
            subprocess.Popen(
                runtime_cmd(runtime, "run", "--bundle", str(b.path), cid),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        ) as proc:
            os.close(slave)
            slave = -1
            first = read_until(master, b"\r\n")
            assert "/dev/pts/0" in lines(first), first
            os.write(master, b"ping\n")
            rest = read_until(master, b"got:ping")
            assert "got:ping" in lines(rest + read_until(master, b"\n", 0.5)), rest
            assert proc.wait(timeout=5) == 5
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert wait_for(lambda: runtime.state_raw(cid).returncode != 0, 2.0)


def test_berth_run_with_a_terminal_relays_output_and_exit_status(runtime, bundle):
    if runtime.name != "berth":
        pytest.skip("runc's foreground run with a terminal needs a console socket")
    b = bundle.sh("echo hello; exit 4", terminal)
    cid = runtime.new_id()
    runtime.ids.append(cid)
    begin = time.monotonic()
    done = subprocess.run(
        ["script", "-qec", " ".join(runtime_cmd(runtime, "run", "--bundle", str(b.path), cid)),
         "/dev/null"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done
    assert b"hello" in done.stdout, done
    assert time.monotonic() - begin < 2.0
