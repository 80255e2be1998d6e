"""Resource limits from linux.resources, enforced by the kernel, for every runtime.

Rules: each limit is shown by a process that tries to exceed it inside the container and by
what the kernel then does (OOM kill, failed fork, throttling), not by reading cgroup files that
a runtime could set without effect.

The OOM report through ``events --stats`` is Berth's own contract (runc has none: its stats
carry no OOM counter and it refuses ``events`` for a container that is not running): while a
container exists (created or stopped), ``berth-runtime events --stats <id>`` prints one
runc-shaped stats event, ``{"type": "stats", "id": <id>, "data": {"memory": {...}}}``, whose
``data.memory.oomKills`` is the kernel's count of OOM kills in the container's memory cgroup
(``oom_kill`` of memory.oom_control on cgroup v1, of memory.events on v2).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

MiB = 1024 * 1024


def _memory_limit(limit: int) -> Any:
    def edit(config: dict[str, Any]) -> None:
        # swap == limit: no swapping on hosts that have swap, so the limit is the limit
        config["linux"]["resources"]["memory"] = {"limit": limit, "swap": limit}

    return edit


def test_memory_limit_ends_in_an_oom_kill(runtime, bundle):
    b = bundle(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"], _memory_limit(32 * MiB)
    )
    proc = runtime.run(b, runtime.new_id())
    assert proc.returncode == 137, (proc.returncode, proc.stderr)  # 128 + SIGKILL

    # control: the same probe fits in a larger limit
    roomy = bundle(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1"], _memory_limit(64 * MiB)
    )
    proc = runtime.run(roomy, runtime.new_id())
    assert proc.returncode == 0, proc.stderr


def _oom_kills(runtime, cid: str) -> int:
    proc = runtime("events", "--stats", cid)
    assert proc.returncode == 0, proc.stderr
    event = json.loads(proc.stdout)
    assert event["type"] == "stats" and event["id"] == cid, event
    return int(event["data"]["memory"]["oomKills"])


def test_events_stats_reports_the_oom_kill(runtime, bundle):
    if runtime.name == "runc":
        pytest.skip("runc's stats carry no OOM counter and need a running container")
    b = bundle(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"], _memory_limit(32 * MiB)
    )
    cid = runtime.new_id()
    created = runtime.create(b, cid)
    assert created.returncode == 0, created.stderr
    assert _oom_kills(runtime, cid) == 0  # created: the program has not run yet
    assert runtime.start(cid).returncode == 0
    runtime.wait_status(cid, "stopped")
    assert _oom_kills(runtime, cid) >= 1


def test_fork_bomb_stops_at_the_pids_limit(runtime, bundle):
    limit, attempts = 16, 40

    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["pids"] = {"limit": limit}

    # A non-interactive ash exits at the first failed fork, so the 40 `sleep &` lines go to an
    # interactive shell (an error there only abandons that line) through a here-document (no
    # helper process). Counting afterwards uses builtins only: the limit is still reached.
    lines = "\n".join(["sleep 30 &"] * attempts)
    script = (
        f"sh -i 2>/dev/shm/bomb.err <<EOF\n{lines}\nEOF\n"
        "set -- /proc/[0-9]*; echo procs=$#; "
        "n=0; for p in /proc/[0-9]*; do read c < $p/comm && [ $c = sleep ] && n=$((n+1)); done; "
        'echo sleeps=$n; f=0; while read l; do case $l in *"can\'t fork"*) f=$((f+1));; esac; '
        "done < /dev/shm/bomb.err; echo failed=$f"
    )
    proc = runtime.run(bundle.sh(script, edit), runtime.new_id())
    assert proc.returncode == 0, proc.stderr
    counts = {k: int(v) for k, v in re.findall(r"(procs|sleeps|failed)=(\d+)", proc.stdout)}
    assert set(counts) == {"procs", "sleeps", "failed"}, proc.stdout
    assert counts["procs"] <= limit, counts  # what runs: never more than the limit
    assert counts["sleeps"] >= limit // 2, counts  # the limit is what stopped it, not a crash
    assert counts["failed"] >= attempts - limit, counts  # most attempts failed to fork
    # every attempt either runs (all processes but pid 1 are its sleeps) or failed to fork
    assert counts["procs"] - 1 + counts["failed"] == attempts, counts


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_cpu_quota_holds_a_busy_loop_to_half_a_cpu(runtime, bundle):
    def edit(config: dict[str, Any]) -> None:
        config["linux"]["resources"]["cpu"] = {"quota": 50000, "period": 100000}

    cid = runtime.new_id()
    proc = runtime.run(bundle.sh("while :; do :; done", edit), cid, detach=True)
    assert proc.returncode == 0, proc.stderr
    pid = int(runtime.pid_file(cid).read_text())
    assert runtime.state(cid)["pid"] == pid
    time.sleep(0.2)  # let the loop settle into the quota
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(2.0)
    cpu1, t1 = _cpu_seconds(pid), time.monotonic()
    share = (cpu1 - cpu0) / (t1 - t0)
    assert 0.35 <= share <= 0.65, f"busy loop used {share:.2f} CPU under a 0.5 CPU quota"
