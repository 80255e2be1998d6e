"""The kernel's own container-to-container path, with no engine: the ceiling of every peer.

Three network namespaces held by ``unshare --net sleep`` processes (no name under /run/netns,
so nothing outlives the holders): ``bridge`` has a Linux bridge; ``a`` and ``b`` each get a
veth pair whose other end is a port of that bridge, at the kernel's defaults (MTU 1500, no
GRO on the veths, 64 KiB GSO) -- what Docker, podman and berthd build for a container on a
bridge network, minus their firewall rules. The bench runs ``tcpbench`` between ``a`` and
``b`` beside the engines' containers, so the report can say how far each engine is from what
the kernel itself gives, and what a target such as "80% of loopback" asks of the kernel.

Rules: every step is a plain ``ip`` command through ``nsenter``; ``close()`` kills the holders
(and the server), which takes the namespaces and their links with them, on any exit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine_peers import NSENTER, UNSHARE

SUBNET = "10.213.0"
PORT = 5201


class KernelPath:
    def __init__(self, tool: Path, env: dict[str, str]) -> None:
        self.tool = tool
        self.env = env
        self.holders: dict[str, subprocess.Popen[bytes]] = {}
        self.server: subprocess.Popen[str] | None = None
        self.server_ip = f"{SUBNET}.3"

    def _in(self, ns: str, argv: list[str]) -> list[str]:
        return [NSENTER, "-t", str(self.holders[ns].pid), "--net", "--", *argv]

    def _ip(self, ns: str, *args: str) -> None:
        subprocess.run(self._in(ns, ["ip", *args]), check=True, capture_output=True, timeout=30)

    def start(self) -> None:
        for ns in ("bridge", "a", "b"):
            self.holders[ns] = subprocess.Popen(
                [UNSHARE, "--net", "--", "sleep", "86400"], env=self.env
            )
        for ns in self.holders:
            self._ip(ns, "link", "set", "lo", "up")
        self._ip("bridge", "link", "add", "br0", "type", "bridge")
        self._ip("bridge", "link", "set", "br0", "up")
        for n, ns in enumerate(("a", "b"), start=2):
            pid = str(self.holders[ns].pid)
            self._ip("bridge", "link", "add", f"v{ns}", "type", "veth", "peer", "name", "eth0",
                     "netns", pid)  # fmt: skip
            self._ip("bridge", "link", "set", f"v{ns}", "master", "br0", "up")
            self._ip(ns, "addr", "add", f"{SUBNET}.{n}/24", "dev", "eth0")
            self._ip(ns, "link", "set", "eth0", "up")
        self.server = subprocess.Popen(
            self._in("b", [str(self.tool), "serve", str(PORT)]),
            stdout=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        assert self.server.stdout is not None
        self.server.stdout.readline()  # the port: it listens

    def client(self, *args: str) -> list[str]:
        """``tcpbench ARGS...`` run in namespace ``a`` (the server is at ``server_ip``)."""
        return self._in("a", [str(self.tool), *args])

    def close(self) -> None:
        for proc in [self.server, *self.holders.values()]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.holders.clear()
        self.server = None
