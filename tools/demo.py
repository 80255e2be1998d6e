"""``make demo``: berthd running the example compose app, three containers with hard limits.

What it does, each step printed as the ``berth`` command a user would type:
- starts berthd in the background on its default socket and data root (or uses the daemon
  that already answers there, or at ``BERTH_HOST``);
- makes the busybox base image (``berth pull busybox``: built from the host's busybox-static,
  no registry needed) unless the daemon has it;
- ``berth compose up -d --wait`` on ``examples/compose-app``: a web frontend, an API backend
  and a key-value store, each built from busybox with memory, CPU and pids limits and a
  healthcheck, started in dependency order once what each needs is healthy;
- shows ``berth compose ps``, the limits the containers got, and one throw-away container
  that shows what a container sees (its hostname, PID 1, its memory limit);
- asks the frontend for a page twice over HTTP from this host (Python's urllib, to the
  published port), the frontend asking the API by name, the API asking the store;
- ``berth compose down`` then ``up`` again: the visit count survives in the named volume;
- leaves the app running and says how to look at it and how to clean it up.
A failing step stops the demo with the command's own error and exit status.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BERTH = os.path.join(REPO, ".venv", "bin", "berth")
APP = os.path.join(REPO, "examples", "compose-app")
COMPOSE = ("compose", "-f", os.path.join(APP, "compose.yaml"))
PORT = int(os.environ.get("WEB_PORT", "8080"))  # compose.yaml publishes ${WEB_PORT:-8080}
SERVICES = ("kv", "api", "web")
OLD_DEMO = ("demo-web", "demo-worker", "demo-clock")  # what earlier demos left running
PROBE = (
    'echo "hostname: $(hostname)"; ps -o pid,comm; '
    'echo "memory limit: $(cat /sys/fs/cgroup/memory.max 2>/dev/null'
    ' || cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes"'
)
LIMITS = (
    "{{.Name}}: memory {{.HostConfig.Memory}} B, {{.HostConfig.NanoCpus}} nano-CPUs, "
    "{{.HostConfig.PidsLimit}} pids"
)


def berth(*args: str, quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``berth args``; unless ``quiet``, print the command and let its output through."""
    if not quiet:
        shown = " ".join(_quote(a) for a in args).replace(os.path.join(REPO, ""), "")
        print(f"\n$ berth {shown}", flush=True)
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
    return f"'{arg}'" if any(c in arg for c in ' $;|&<>*"{') else arg


def ensure_daemon() -> None:
    if berth("version", "-f", "{{.Server.Version}}", quiet=True, check=False).returncode == 0:
        print("a daemon already answers on the socket: using it")
        return
    berth("daemon", "--background")


def ensure_busybox() -> None:
    if berth("inspect", "--type", "image", "busybox", quiet=True, check=False).returncode != 0:
        berth("pull", "busybox")


def visit() -> int:
    """GET /cgi-bin/visit on the published port; the visit number the page shows."""
    url = f"http://127.0.0.1:{PORT}/cgi-bin/visit"
    print(f"\n$ python3 -c 'urllib.request.urlopen(\"{url}\")'", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            page = response.read().decode()
    except (urllib.error.URLError, OSError) as e:
        sys.exit(f"demo: {url}: {e}")
    for line in page.splitlines():
        if line.startswith(("<h1>", "<p>")):
            print("   ", re.sub(r"<[^>]+>", "", line))
    match = re.search(r"Visit number (\d+)", page)
    if match is None:
        sys.exit(f"demo: unexpected page from {url}:\n{page}")
    return int(match.group(1))


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("demo: berthd needs root (namespaces, cgroups, overlay mounts): run it as root")
    print("Berth demo: a compose app of three busybox containers, each with hard limits.")
    ensure_daemon()
    ensure_busybox()
    berth("rm", "-f", *OLD_DEMO, quiet=True, check=False)
    berth(*COMPOSE, "up", "-d", "--wait")
    berth(*COMPOSE, "ps")
    names = [f"compose-app-{s}-1" for s in SERVICES]
    berth("inspect", "-f", LIMITS, *names)
    berth("run", "--rm", "--memory", "16m", "--network", "none", "busybox", "sh", "-c", PROBE)
    first = visit()
    visit()
    print("\nThe count lives in the kvdata volume: down removes the containers and networks,"
          " not the volume.")  # fmt: skip
    berth(*COMPOSE, "down")
    berth(*COMPOSE, "up", "-d", "--wait")
    after = visit()
    if after != first + 2:
        sys.exit(f"demo: the visit count did not survive down and up ({first + 1} -> {after})")
    time.sleep(1.0)  # a second of work for the CPU column
    berth("stats", "--no-stream", *names)
    compose = "berth compose -f examples/compose-app/compose.yaml"
    print(
        f"\nThe app keeps running at http://127.0.0.1:{PORT}/ . Look at it with .venv/bin/"
        f"{compose}: ps, logs -f, exec web sh."
        f"\nClean up: .venv/bin/{compose} down -v --rmi local"
        "\nStop berthd: kill $(cat /var/lib/berth/run/berthd.pid)"
    )


if __name__ == "__main__":
    main()
