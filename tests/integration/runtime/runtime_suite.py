"""What the cross-runtime suite shares with its test files: the runtimes under test and
where their containers' cgroups are. A module of its own (not conftest.py) so test files can
import it by a name no other test directory uses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BINARIES = {
    "runc": shutil.which("runc") or "/usr/sbin/runc",
    "berth": str(REPO / ".venv" / "bin" / "berth-runtime"),
}


def is_plain_id(cid: str) -> bool:
    """A well-formed id that names one directory entry."""
    return bool(cid) and "/" not in cid and cid not in (".", "..")


def own_cgroup_dirs() -> list[Path]:
    """This process's cgroup directory in every mounted hierarchy (v1 and v2)."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fstype, _source, options = right.split()[:3]
        mountpoint = Path(left.split()[4])
        if fstype == "cgroup2":
            mounts[""] = mountpoint
        elif fstype == "cgroup":
            for opt in options.split(","):
                if "=" in opt and not opt.startswith("name="):
                    continue
                mounts[opt] = mountpoint
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        key = controllers.split(",")[0] if controllers else ""
        if key in mounts:
            dirs.append(mounts[key] / path.lstrip("/"))
    return dirs


def container_cgroups(cid: str) -> list[Path]:
    """The cgroups named ``cid`` below our own cgroup (where runc puts a container's)."""
    if not is_plain_id(cid):
        return []
    return [d / cid for d in own_cgroup_dirs() if (d / cid).exists()]
