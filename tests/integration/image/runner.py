"""A build ``Runner`` for the tests: each RUN step as a real container of ``berth-runtime``.

Rules: the rootfs mounts of the step happen in a child started with ``unshare --mount
--propagation private``, which mounts them on a temp dir and execs ``berth-runtime run`` on a
bundle whose root is that dir, so every mount dies with the child; nothing reaches the test's
namespace. The config is ``default_spec()`` with a writable root, no terminal, its network
namespace kept (no network) and the step's args, env, user and workdir; the container id comes
from ``leakcheck.tagged_name()`` so the session's leak check watches its cgroups. Output is
read line by line from both pipes and handed to the process's output callback as it comes.
"""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import leakcheck
from berth.image.build import RunProcess
from berth.image.snapshots import Mount
from berth.spec.defaults import default_spec

REPO = Path(__file__).resolve().parents[3]
RUNTIME = str(REPO / ".venv" / "bin" / "berth-runtime")

# In the private mount namespace: mount the rootfs, resolve the user, write config, exec.
CHILD = r"""
import json, os, subprocess, sys

args = json.loads(sys.argv[1])
rootfs, config = args["rootfs"], args["config"]
for m in args["mounts"]:
    if m["type"] == "bind":
        subprocess.run(["mount", "--rbind", m["source"], rootfs], check=True)
    else:
        opts = ",".join(m["options"])
        subprocess.run(["mount", "-t", m["type"], "-o", opts, m["source"], rootfs], check=True)


def lookup(table, name):
    try:
        with open(os.path.join(rootfs, "etc", table)) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 3 and fields[0] == name:
                    return int(fields[2]), int(fields[3])
    except FileNotFoundError:
        pass
    sys.exit(f"unable to find {table} entry {name!r}")


user, _, group = args["user"].partition(":")
uid, gid = (int(user), 0) if user.isdigit() else lookup("passwd", user)
if group:
    gid = int(group) if group.isdigit() else lookup("group", group)[0]
config["process"]["user"] = {"uid": uid, "gid": gid}
os.makedirs(os.path.join(rootfs, config["process"]["cwd"].lstrip("/")), exist_ok=True)
with open(os.path.join(args["bundle"], "config.json"), "w") as f:
    json.dump(config, f)
argv = [args["runtime"], "--root", args["state"], "run", "--bundle", args["bundle"], args["id"]]
os.execv(argv[0], argv)
"""


class KernelRunner:
    """Runs RUN steps with ``berth-runtime run``; records the container ids it used."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.ids: list[str] = []

    def run(self, mounts: list[Mount], process: RunProcess) -> int:
        cid = leakcheck.tagged_name("test")
        self.ids.append(cid)
        tmp = Path(tempfile.mkdtemp(dir=self.work, prefix="run-"))
        try:
            bundle, rootfs, state = tmp / "bundle", tmp / "bundle" / "rootfs", tmp / "state"
            rootfs.mkdir(parents=True)
            state.mkdir()
            config = default_spec()
            config["root"] = {"path": str(rootfs), "readonly": False}
            config["process"].update(
                terminal=False,
                args=list(process.args),
                env=list(process.env),
                cwd=process.workdir or "/",
            )
            arg = {
                "rootfs": str(rootfs),
                "bundle": str(bundle),
                "state": str(state),
                "runtime": RUNTIME,
                "id": cid,
                "user": process.user or "root",
                "config": config,
                "mounts": [
                    {"type": m.type, "source": m.source, "options": list(m.options)} for m in mounts
                ],
            }
            argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-I"]
            return _stream([*argv, "-c", CHILD, json.dumps(arg)], process)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _stream(argv: list[str], process: RunProcess) -> int:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    open_pipes = 2
    try:
        while open_pipes:
            for key, _ in sel.select(timeout=120):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                process.output(str(key.data), line.decode(errors="replace").rstrip("\n"))
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
