"""``make demo``: run one busybox container under berth-runtime and show its isolation.

It builds a busybox root filesystem from the host's busybox-static, writes a bundle whose
config is runc's default plus a hostname and hard limits (64 MiB of memory, 32 processes, half
a CPU), and runs a probe inside that prints what the container sees: its hostname, its process
table (the probe is PID 1), its mount table, its network interfaces and its cgroup limits.
Everything lives in a temp dir that is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from busybox_rootfs import build_busybox_rootfs  # noqa: E402

from berth.spec.defaults import default_spec  # noqa: E402

RUNTIME = os.path.join(os.path.dirname(HERE), ".venv", "bin", "berth-runtime")
PROBE = r"""
section() { printf '\n== %s\n' "$1"; }
section "hostname"; hostname
section "processes (the probe is PID 1)"; ps -o pid,user,args
section "mount table"; cat /proc/self/mounts
section "network interfaces"; ip -o link | cut -d' ' -f2,3
section "limits from the container's own cgroups"
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo "memory: $(cat /sys/fs/cgroup/memory.max) bytes"
  echo "pids:   $(cat /sys/fs/cgroup/pids.max)"
  echo "cpu:    $(cat /sys/fs/cgroup/cpu.max) (quota period, us)"
else
  echo "memory: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) bytes"
  echo "pids:   $(cat /sys/fs/cgroup/pids/pids.max)"
  cpu=/sys/fs/cgroup/cpu
  echo "cpu:    $(cat $cpu/cpu.cfs_quota_us) us per $(cat $cpu/cpu.cfs_period_us) us"
fi
section "capabilities"; grep Cap /proc/self/status
section "a write to a read-only path"
( : >> /proc/sys/kernel/hostname ) 2>&1 || true
section "the memory limit holds: dd asks for a 128 MiB buffer"
dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null
echo "dd exited with status $? (137: killed by the kernel's OOM killer)"
"""


def main() -> int:
    work = tempfile.mkdtemp(prefix="berth-demo-")
    try:
        bundle = os.path.join(work, "bundle")
        os.makedirs(bundle)
        build_busybox_rootfs(os.path.join(bundle, "rootfs"))
        config = default_spec()
        config["hostname"] = "berth-demo"
        config["process"]["terminal"] = False
        with open(os.path.join(bundle, "rootfs", "probe.sh"), "w") as f:
            f.write(PROBE)
        config["process"]["args"] = ["sh", "/probe.sh"]
        config["linux"]["resources"].update(
            {
                "memory": {"limit": 64 * 1024 * 1024},
                "pids": {"limit": 32},
                "cpu": {"quota": 50000, "period": 100000},
            }
        )
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        print(f"berth-runtime run: busybox container 'demo' from {bundle}")
        result = subprocess.run(
            [RUNTIME, "--root", os.path.join(work, "state"), "run", "--bundle", bundle, "demo"],
            check=False,
        )
        print(f"\ncontainer exited with status {result.returncode}; state and cgroups removed")
        return result.returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
