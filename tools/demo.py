"""``make demo``: berthd running a small app of several containers with hard limits.

What it does, each step printed as the ``berth`` command a user would type:
- starts berthd in the background on its default socket and data root (or uses the one that
  already answers there);
- makes the busybox base image (``berth pull busybox``: built from the host's busybox-static,
  no registry needed) and builds the app's web image from ``examples/demo/web``;
- replaces the demo's containers from an earlier run, then runs three, each with limits:
  ``demo-web`` (busybox httpd with a healthcheck), ``demo-worker`` (a busy loop held to half a
  CPU) and ``demo-clock`` (a line of log a second); and one throw-away container that shows
  what a container sees (its hostname, PID 1, its memory limit);
- waits for demo-web to be healthy, fetches its page from inside it, and shows ``berth ps``
  and ``berth stats --no-stream``.
Everything stays running; the last lines say how to look at it and how to clean it up.
A failing step stops the demo with the command's own error and exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BERTH = os.path.join(REPO, ".venv", "bin", "berth")
WEB_CONTEXT = os.path.join(REPO, "examples", "demo", "web")
CONTAINERS = ("demo-web", "demo-worker", "demo-clock")
HEALTHY_WITHIN = 20.0

WORKER = "while :; do sha1sum /bin/busybox >/dev/null; done"
CLOCK = 'while :; do echo "tick $(date +%T)"; sleep 1; done'
APP = (
    ("demo-web", ["--memory", "32m", "--cpus", "0.25", "--pids-limit", "32", "berth-demo/web"]),
    ("demo-worker", ["--memory", "64m", "--cpus", "0.5", "--pids-limit", "16", "busybox"]),
    ("demo-clock", ["--memory", "16m", "--pids-limit", "8", "busybox"]),
)
COMMANDS = {"demo-worker": ["sh", "-c", WORKER], "demo-clock": ["sh", "-c", CLOCK]}
PROBE = (
    'echo "hostname: $(hostname)"; ps -o pid,comm; '
    'echo "memory limit: $(cat /sys/fs/cgroup/memory.max 2>/dev/null'
    ' || cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes"'
)


def berth(*args: str, quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``berth args``; unless ``quiet``, print the command and let its output through."""
    if not quiet:
        print(f"\n$ berth {' '.join(_quote(a) for a in args)}", flush=True)
    proc = subprocess.run(
        [BERTH, *args],
        text=True,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
        check=False,
    )
    if check and proc.returncode != 0:
        if quiet:
            sys.stderr.write(proc.stderr)
        sys.exit(f"demo: `berth {' '.join(args)}` failed with exit status {proc.returncode}")
    return proc


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in ' $;|&<>*"') else arg


def ensure_daemon() -> None:
    if berth("version", "-f", "{{.Server.Version}}", quiet=True, check=False).returncode == 0:
        print("berthd already answers on its socket: using it")
        return
    berth("daemon", "--background")


def wait_healthy(name: str) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN
    status = ""
    while time.monotonic() < deadline:
        out = berth("inspect", name, quiet=True).stdout
        state = json.loads(out)[0]["State"]
        status = (state.get("Health") or {}).get("Status", "")
        if status == "healthy":
            print(f"{name} is healthy")
            return
        if not state.get("Running"):
            break
        time.sleep(0.25)
    sys.exit(f"demo: {name} is not healthy (health: {status or 'none'}); see `berth logs {name}`")


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("demo: berthd needs root (namespaces, cgroups, overlay mounts): run it as root")
    print("Berth demo: berthd runs a small app of three containers, each with hard limits.")
    ensure_daemon()
    berth("pull", "busybox")
    berth("build", "-t", "berth-demo/web", WEB_CONTEXT)
    berth("rm", "-f", *CONTAINERS, quiet=True, check=False)  # an earlier demo's, if any
    for name, args in APP:
        berth("run", "-d", "--name", name, *args, *COMMANDS.get(name, []))
    berth("run", "--rm", "--memory", "16m", "busybox", "sh", "-c", PROBE)
    wait_healthy("demo-web")
    berth("exec", "demo-web", "wget", "-qO-", "http://127.0.0.1:8080/")
    time.sleep(1.0)  # a second of work for the CPU column
    berth("ps")
    berth("stats", "--no-stream")
    names = " ".join(CONTAINERS)
    print(
        "\nThe app keeps running. Look at it with .venv/bin/berth: ps, logs -f demo-clock,"
        " stats, exec -it demo-web sh."
        f"\nClean up: .venv/bin/berth rm -f {names}"
        "\nStop berthd: kill $(cat /var/lib/berth/run/berthd.pid)"
    )


if __name__ == "__main__":
    main()
