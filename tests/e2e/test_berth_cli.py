"""The ``berth`` command line against a private berthd, side by side with the docker CLI.

The daemon is the shared ``berthd`` module fixture (imported, not copied: its own
--data-root, socket and session-tagged --cgroup-parent; busybox pulled; everything removed and
berthd and its supervisor stopped at the end). ``berth`` runs as a subprocess of
``.venv/bin/berth`` — the fast launcher ``make install`` writes — with ``-H`` pointing at the
daemon. Where both CLIs print the same thing (tables, inspect documents), the test compares
them. Each test removes the containers and images it made.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_berthd_images import Daemon, _wait_for_socket, stop_supervisor

import leakcheck

pytestmark = [pytest.mark.root, pytest.mark.peer]

BERTH = str(Path(sys.executable).parent / "berth")
TIMEOUT = 60.0


def berth(
    d: Daemon, *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "DOCKER_"))}
    env["DOCKER_CONFIG"] = str(d.home / "docker-config")  # shared with d.docker (logins)
    proc = subprocess.run(
        [BERTH, "-H", d.url, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
        cwd=d.home,
    )
    if check:
        assert proc.returncode == 0, f"berth {' '.join(args)}: {proc.stderr}"
    return proc


def same_output(d: Daemon, *args: str) -> str:
    """What both CLIs print for ``args`` (tried 3 times: "Up 2 seconds" may tick between)."""
    for _ in range(3):
        ours = berth(d, *args).stdout
        theirs = d.docker(*args).stdout
        if ours == theirs:
            return ours
    assert ours == theirs
    return ours


def no_containers(d: Daemon) -> None:
    assert berth(d, "ps", "-aq").stdout == ""


# --------------------------------------------------------------------------- run and exit codes


def test_run_output_and_exit_codes(berthd: Daemon) -> None:
    assert berth(berthd, "run", "--rm", "busybox", "echo", "hi").stdout == "hi\n"
    flags = berth(
        berthd,
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/made/here",
        "-u",
        "1000:1000",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $A; pwd; id -u; hostname",
    )
    assert flags.stdout == "1\n/made/here\n1000\nbox\n"  # fmt: skip
    failed = berth(berthd, "run", "--rm", "busybox", "sh", "-c", "echo err >&2; exit 3",
                   check=False)  # fmt: skip
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "", "err\n")
    piped = berth(berthd, "run", "--rm", "-i", "busybox", "sh", "-c", "cat; exit 4",
                  stdin="from stdin\n", check=False)  # fmt: skip
    assert (piped.returncode, piped.stdout) == (4, "from stdin\n")
    nocmd = berth(berthd, "run", "--rm", "busybox", "nosuchcmd", check=False)
    assert nocmd.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in nocmd.stderr
    assert "Error response from daemon:" in nocmd.stderr
    missing = berth(berthd, "run", "nosuchimage", check=False)
    assert missing.returncode == 125
    assert "Unable to find image 'nosuchimage:latest' locally" in missing.stderr
    assert "pull access denied for nosuchimage" in missing.stderr
    bad = berth(berthd, "run", "--memory", "foo", "busybox", check=False)
    assert bad.returncode == 125 and "invalid size: 'foo'" in bad.stderr
    no_containers(berthd)


def test_signals_reach_the_container_and_prune(berthd: Daemon) -> None:
    script = 'trap "echo got INT; exit 9" INT; sleep 20 & wait'
    proc = subprocess.Popen([BERTH, "-H", berthd.url, "run", "--name", "sig", "busybox", "sh",
                             "-c", script], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "running" not in berth(berthd, "ps", "--format", "{{.State}}").stdout:
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.05)
        time.sleep(0.2)  # the trap is set once sh runs
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (9, "got INT\n")
    not_tty = berth(berthd, "run", "-it", "busybox", "true", check=False)
    assert (not_tty.returncode, not_tty.stderr) == (1, "the input device is not a TTY\n")
    cid = berth(berthd, "ps", "-aq", "--no-trunc").stdout.strip()
    pruned = berth(berthd, "container", "prune", "-f").stdout
    assert pruned == f"Deleted Containers:\n{cid}\n\nTotal reclaimed space: 0B\n"
    no_containers(berthd)


def test_run_limits_reach_the_container(berthd: Daemon) -> None:
    cid = berth(berthd, "run", "-d", "--name", "lim", "--memory", "64m", "--pids-limit", "20",
                "--cpu-shares", "512", "--read-only", "--tmpfs", "/scratch", "-l", "k=v",
                "busybox", "sleep", "30").stdout.strip()  # fmt: skip
    try:
        doc = json.loads(berthd.docker("inspect", cid).stdout)[0]
        host = doc["HostConfig"]
        assert host["Memory"] == 64 << 20 and host["PidsLimit"] == 20
        assert host["CpuShares"] == 512 and host["ReadonlyRootfs"] is True
        assert "/scratch" in host["Tmpfs"] and doc["Config"]["Labels"] == {"k": "v"}
        label = berth(berthd, "inspect", "-f", '{{index .Config.Labels "k"}} {{.State.Status}}',
                      "lim").stdout  # fmt: skip
        assert label == "v running\n"
    finally:
        berth(berthd, "rm", "-f", "lim")
    no_containers(berthd)


def test_duplicate_name_is_a_daemon_error(berthd: Daemon) -> None:
    cid = berth(berthd, "create", "--name", "dup", "busybox", "true").stdout.strip()
    again = berth(berthd, "run", "--name", "dup", "busybox", "true", check=False)
    assert again.returncode == 125
    assert f'The container name "/dup" is already in use by container "{cid}"' in again.stderr
    assert berth(berthd, "start", "dup").stdout == "dup\n"
    assert berth(berthd, "wait", "dup").stdout == "0\n"
    berth(berthd, "rm", "dup")
    no_containers(berthd)


# --------------------------------------------------------------------------- ps, logs, inspect


def test_ps_tables_match_dockers(berthd: Daemon) -> None:
    berth(berthd, "run", "-d", "--name", "up1", "-l", "role=web", "busybox", "sh", "-c",
          "echo started; exec sleep 30")  # fmt: skip
    berth(berthd, "run", "--name", "done1", "busybox", "true")
    try:
        table = same_output(berthd, "ps")
        assert table.splitlines()[0].split() == [
            "CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES",
        ]  # fmt: skip
        assert '"sh -c echo started;…"' in table and "done1" not in table
        assert "done1" in same_output(berthd, "ps", "-a")
        same_output(berthd, "ps", "-a", "--no-trunc")
        same_output(berthd, "ps", "-aq")
        same_output(berthd, "ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}")
        same_output(berthd, "ps", "--filter", "label=role=web", "--format",
                    "table {{.Names}}\\t{{.Labels}}\\t{{.State}}")  # fmt: skip
        same_output(berthd, "ps", "-a", "--format", "json")
        same_output(berthd, "ps", "-s")
        rows = [json.loads(line) for line in berth(berthd, "ps", "-a", "--format", "json")
                .stdout.splitlines()]  # fmt: skip
        assert sorted(r["Names"] for r in rows) == ["done1", "up1"]
        status = berth(berthd, "ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
        assert re.search(r"^done1 Exited \(0\) .* ago$", status, re.M), status
    finally:
        berth(berthd, "rm", "-f", "up1", "done1")
    no_containers(berthd)


def test_logs_and_inspect_match_dockers(berthd: Daemon) -> None:
    berth(berthd, "run", "-d", "--name", "talker", "busybox", "sh", "-c",
          "for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.2; done")  # fmt: skip
    try:
        started = time.monotonic()
        followed = berth(berthd, "logs", "-f", "talker")
        assert time.monotonic() - started < 10
        assert followed.stdout == "out 1\nout 2\nout 3\n"
        assert followed.stderr == "err 1\nerr 2\nerr 3\n"
        tail = berth(berthd, "logs", "--tail", "2", "talker")
        assert (tail.stdout, tail.stderr) == ("out 3\n", "err 3\n")
        stamped = berth(berthd, "logs", "-t", "talker").stdout
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z out 1\n", stamped), stamped
        ours = json.loads(berth(berthd, "inspect", "talker").stdout)
        assert ours == json.loads(berthd.docker("inspect", "talker").stdout)
        same_output(berthd, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.Name}}",
                    "talker")  # fmt: skip
        same_output(berthd, "inspect", "-f", "{{json .Config.Cmd}}", "talker")
        image = json.loads(berth(berthd, "inspect", "busybox").stdout)
        assert image == json.loads(berthd.docker("inspect", "busybox").stdout)
        missing = berth(berthd, "inspect", "talker", "nosuch", check=False)
        assert missing.returncode == 1 and "Error: No such object: nosuch" in missing.stderr
        assert json.loads(missing.stdout)[0]["Name"] == "/talker"
        bad = berth(berthd, "inspect", "-f", "{{.Nope", "talker", check=False)
        assert bad.returncode == 1 and "unclosed action" in bad.stderr
    finally:
        berth(berthd, "rm", "-f", "talker")
    no_containers(berthd)


def test_lifecycle_verbs(berthd: Daemon) -> None:
    berth(berthd, "run", "-d", "--name", "life", "busybox", "sleep", "30")
    try:
        first = berth(berthd, "inspect", "-f", "{{.State.Pid}}", "life").stdout
        assert berth(berthd, "restart", "-t", "0", "life").stdout == "life\n"
        assert berth(berthd, "inspect", "-f", "{{.State.Pid}}", "life").stdout != first
        refused = berth(berthd, "rm", "life", check=False)
        assert refused.returncode == 1
        assert "You cannot remove a running container" in refused.stderr
        stopped = berth(berthd, "stop", "-t", "1", "life", "nosuch", check=False)
        assert stopped.returncode == 1 and stopped.stdout == "life\n"
        assert "No such container: nosuch" in stopped.stderr
        assert berth(berthd, "inspect", "-f", "{{.State.ExitCode}}", "life").stdout == "137\n"
        berth(berthd, "start", "life")
        assert berth(berthd, "kill", "life").stdout == "life\n"
        assert berth(berthd, "wait", "life").stdout == "137\n"
        renamed = berth(berthd, "rename", "life", "life2", check=False)
        assert renamed.returncode == 0
        assert berth(berthd, "ps", "-a", "--format", "{{.Names}}").stdout == "life2\n"
    finally:
        for name in ("life", "life2"):
            berth(berthd, "rm", "-f", name, check=False)
    no_containers(berthd)


# --------------------------------------------------------------------------- images


def test_images_tag_rmi_save_load(berthd: Daemon) -> None:
    pulled = berth(berthd, "pull", "busybox").stdout
    assert "Pulling from library/busybox" in pulled
    assert pulled.splitlines()[-1] == "docker.io/library/busybox:latest"
    berth(berthd, "tag", "busybox", "cli-test/box:1")
    try:
        table = same_output(berthd, "images")
        assert table.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED",
                                                 "SIZE"]  # fmt: skip
        assert re.search(r"^cli-test/box\s+1\s+[0-9a-f]{12}\s+", table, re.M), table
        same_output(berthd, "images", "-q")
        same_output(berthd, "images", "--digests")
        same_output(berthd, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
        tar = str(berthd.home / "box.tar")
        berth(berthd, "save", "-o", tar, "cli-test/box:1")
        assert berth(berthd, "rmi", "cli-test/box:1").stdout == "Untagged: cli-test/box:1\n"
        assert "cli-test/box" not in berth(berthd, "images").stdout
        loaded = berth(berthd, "load", "-i", tar).stdout
        assert "Loaded image: cli-test/box:1" in loaded
        missing = berth(berthd, "rmi", "nosuch:1", check=False)
        assert missing.returncode == 1 and "No such image: nosuch:1" in missing.stderr
    finally:
        berth(berthd, "rmi", "cli-test/box:1", check=False)


def test_build_streams_steps(berthd: Daemon) -> None:
    context = berthd.home / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(
        'FROM busybox\nCOPY hello.txt /hello.txt\nCMD ["cat", "/hello.txt"]\n'
    )
    (context / "hello.txt").write_text("built by berth\n")
    (context / "ignored.txt").write_text("x\n")
    (context / ".dockerignore").write_text("ignored.txt\n")
    built = berth(berthd, "build", "-t", "cli-built:1", str(context), check=False)
    assert built.returncode == 0, built.stderr
    assert "Step 1/3 : FROM busybox" in built.stdout
    assert "Successfully tagged cli-built:1" in built.stdout
    try:
        assert berth(berthd, "run", "--rm", "cli-built:1").stdout == "built by berth\n"
        quiet = berth(berthd, "build", "-q", str(context)).stdout.strip()
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", quiet), quiet
    finally:
        berth(berthd, "rmi", "cli-built:1", check=False)


# --------------------------------------------------------------------------- system


def test_version_info_df_and_unreachable(berthd: Daemon) -> None:
    version = berth(berthd, "version").stdout
    assert "Server: Berth" in version and "API version:       1.43" in version
    assert berth(berthd, "version", "-f", "{{.Server.ApiVersion}}").stdout == "1.43\n"
    info = json.loads(berth(berthd, "info", "-f", "{{json .}}").stdout)
    assert info["DockerRootDir"] == str(berthd.data_root)
    assert "Server Version: 0.1.0" in berth(berthd, "info").stdout
    same_output(berthd, "system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}")
    gone = subprocess.run([BERTH, "-H", "unix:///nonexistent/b.sock", "ps"],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)  # fmt: skip
    assert gone.returncode == 1
    assert gone.stderr == (
        "Cannot connect to the Berth daemon at unix:///nonexistent/b.sock. Is berthd running?\n"
    )


def test_ps_is_fast(berthd: Daemon) -> None:
    """``berth ps`` answers in well under 150 ms (the best of 5: the machine is shared)."""
    berth(berthd, "ps")
    times = []
    for _ in range(5):
        started = time.perf_counter()
        berth(berthd, "ps")
        times.append(time.perf_counter() - started)
    assert min(times) < 0.150, times


# --------------------------------------------------------------------------- endpoints in progress


def test_exec(berthd: Daemon) -> None:
    berth(berthd, "run", "-d", "--name", "ex", "busybox", "sleep", "30")
    try:
        out = berth(berthd, "exec", "-e", "V=7", "-w", "/tmp", "ex", "sh", "-c",
                    "echo $V; pwd; exit 5", check=False)  # fmt: skip
        assert (out.returncode, out.stdout) == (5, "7\n/tmp\n"), out.stderr
        fed = berth(berthd, "exec", "-i", "ex", "cat", stdin="fed\n")
        assert fed.stdout == "fed\n"
    finally:
        berth(berthd, "rm", "-f", "ex")
    no_containers(berthd)


def test_stats_top_update_pause(berthd: Daemon) -> None:
    berth(berthd, "run", "-d", "--name", "busy", "--memory", "64m", "busybox", "sleep", "30")
    try:
        stats = berth(berthd, "stats", "--no-stream", "busy", check=False)
        lines = stats.stdout.splitlines()
        assert lines[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
        assert re.search(r"busy\s+\d+\.\d\d%\s+[\d.]+[KMG]?i?B / 64MiB", lines[1]), lines[1]
        top = berth(berthd, "top", "busy")
        assert "sleep 30" in top.stdout and top.stdout.startswith("UID")
        berth(berthd, "update", "--memory", "128m", "busy")
        assert berth(berthd, "inspect", "-f", "{{.HostConfig.Memory}}", "busy").stdout == (
            f"{128 << 20}\n"
        )
        berth(berthd, "pause", "busy")
        assert berth(berthd, "inspect", "-f", "{{.State.Status}}", "busy").stdout == "paused\n"
        berth(berthd, "unpause", "busy")
    finally:
        berth(berthd, "rm", "-f", "busy")
    no_containers(berthd)


def test_events_since_until(berthd: Daemon) -> None:
    since = str(int(time.time()) - 1)
    berth(berthd, "run", "--rm", "--name", "ev", "busybox", "true")
    until = str(int(time.time()) + 1)
    events = berth(berthd, "events", "--since", since, "--until", until, "--filter",
                   "container=ev", "--format", "{{.Type}} {{.Action}}", check=False)  # fmt: skip
    actions = events.stdout.split("\n")
    assert "container start" in actions and "container destroy" in actions
    no_containers(berthd)


def _talk(
    argv: list[str], keys: list[bytes | tuple[int, int]], timeout: float = 30.0
) -> tuple[int, bytes]:
    """Run argv on a new pty (40 rows, 100 columns), type ``keys``; (exit code, output).

    Typing starts once the session has printed something (a prompt: by then berth has the
    terminal in raw mode). A (rows, columns) item resizes the pty and sends SIGWINCH, as a
    terminal window would (the child has no controlling terminal, so the kernel would not)."""
    import fcntl
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal,
                            start_new_session=True)  # fmt: skip
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout

    def read_for(seconds: float) -> bool:
        """Collect output for up to ``seconds``; False once the session has ended."""
        until = min(deadline, time.monotonic() + seconds)
        while time.monotonic() < until:
            ready, _, _ = select.select([controller], [], [], 0.05)
            if not ready:
                if proc.poll() is not None:
                    return False
                continue
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                return False
            if not chunk:
                return False
            output.extend(chunk)
        return True

    try:
        while not output and read_for(0.1) and time.monotonic() < deadline:
            pass
        for key in keys:
            if isinstance(key, tuple):
                fcntl.ioctl(controller, termios.TIOCSWINSZ, struct.pack("HHHH", *key, 0, 0))
                proc.send_signal(signal.SIGWINCH)
            else:
                os.write(controller, key)
            read_for(0.3)
        while read_for(0.2) and time.monotonic() < deadline:
            pass
        return proc.wait(timeout=5), bytes(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)


def test_run_it_feels_like_a_terminal(berthd: Daemon) -> None:
    code, output = _talk(
        [BERTH, "-H", berthd.url, "run", "-it", "--rm", "busybox", "sh"],
        [b"tty; stty size\r", b"echo $((6*7))\r", (50, 132), b"stty size\r", b"exit 3\r"],
    )
    text = output.decode(errors="replace")
    assert code == 3, text
    assert "/dev/pts/" in text and "\n40 100\r" in text and "\n42\r" in text
    assert "\n50 132\r" in text  # resized on SIGWINCH
    no_containers(berthd)


def test_exec_it(berthd: Daemon) -> None:
    berth(berthd, "run", "-d", "--name", "exit", "busybox", "sleep", "30")
    try:
        code, output = _talk([BERTH, "-H", berthd.url, "exec", "-it", "exit", "sh"],
                             [b"stty size\r", b"exit 4\r"])  # fmt: skip
        text = output.decode(errors="replace")
        assert code == 4 and "\n40 100\r" in text, text
    finally:
        berth(berthd, "rm", "-f", "exit")
    no_containers(berthd)


def test_run_it_detach_keys_leave_it_running(berthd: Daemon) -> None:
    code, _ = _talk([BERTH, "-H", berthd.url, "run", "-it", "--name", "stay", "busybox", "sh"],
                    [b"\x10\x11"])  # fmt: skip
    try:
        assert code == 0
        assert berth(berthd, "inspect", "-f", "{{.State.Running}}", "stay").stdout == "true\n"
    finally:
        berth(berthd, "rm", "-f", "stay")
    no_containers(berthd)


# --------------------------------------------------------------------------- berth daemon


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_daemon_background_starts_berthd() -> None:
    home = Path(tempfile.mkdtemp(prefix="berth-dmn-"))
    sock = f"unix://{home / 'b.sock'}"
    log = home / "berthd.log"
    argv = [BERTH, "-H", sock, "daemon", "--background", "--log-file", str(log), "--data-root",
            str(home / "root"), "--cgroup-parent", leakcheck.tagged_name()]  # fmt: skip
    started = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    match = re.search(r"berthd started \(pid (\d+)\) on (\S+); log: (\S+)", started.stdout)
    pid = int(match.group(1)) if match else 0
    try:
        assert started.returncode == 0 and match, started.stderr + started.stdout
        assert match.group(2) == sock and match.group(3) == str(log)
        listed = subprocess.run([BERTH, "-H", sock, "ps"], capture_output=True, text=True,
                                timeout=TIMEOUT, check=True)  # fmt: skip
        assert listed.stdout.startswith("CONTAINER ID")
        assert os.getsid(pid) == pid  # detached: a session of its own
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        stop_supervisor(home / "root")
        shutil.rmtree(home)


def test_daemon_in_the_foreground_is_berthd() -> None:
    """``berth -H SOCK daemon`` becomes berthd (exec) serving SOCK; SIGTERM stops it (0)."""
    home = Path(tempfile.mkdtemp(prefix="berth-fg-"))
    sock = home / "b.sock"
    argv = [BERTH, "-H", f"unix://{sock}", "daemon", "--data-root", str(home / "root"),
            "--cgroup-parent", leakcheck.tagged_name()]  # fmt: skip
    log = open(home / "berthd.log", "wb")  # noqa: SIM115  (the child holds it)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        _wait_for_socket(str(sock), proc)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"berthd" in f.read()  # the same process, now berthd
        listed = subprocess.run([BERTH, "-H", f"unix://{sock}", "ps", "-q"], capture_output=True,
                                text=True, timeout=TIMEOUT, check=False)  # fmt: skip
        assert (listed.returncode, listed.stdout) == (0, "")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_supervisor(home / "root")
        shutil.rmtree(home)
