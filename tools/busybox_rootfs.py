"""Build a busybox root filesystem from the host's busybox-static (the offline base image).

Rules: the result is a plain directory: /bin/busybox plus one symlink per applet, the usual
top-level directories and minimal /etc files. It is built in a temp dir beside the target and
renamed into place, so a half-built rootfs is never visible. Idempotent: an existing target
is left as it is.

Usage: busybox_rootfs.py TARGET
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

BUSYBOX = "/bin/busybox"
DIRECTORIES = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "root",
    "var",
    "run",
    "home",
)
ETC_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "busybox\n",
}


def build_busybox_rootfs(target: str) -> str:
    """Create ``target`` as a busybox rootfs unless it exists; return its path."""
    if os.path.isdir(target):
        return target
    if not os.access(BUSYBOX, os.X_OK):
        raise SystemExit(f"{BUSYBOX} is missing: install the Debian package busybox-static")
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".rootfs-", dir=parent)
    try:
        for d in DIRECTORIES:
            os.makedirs(os.path.join(work, d), exist_ok=True)
        os.chmod(os.path.join(work, "tmp"), 0o1777)
        shutil.copy2(BUSYBOX, os.path.join(work, "bin/busybox"))
        applets = subprocess.run(
            [BUSYBOX, "--list-full"], check=True, capture_output=True, text=True
        ).stdout.split()
        for applet in applets:
            link = os.path.join(work, applet)
            if not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink("/bin/busybox", link)
        for name, text in ETC_FILES.items():
            with open(os.path.join(work, name), "w") as f:
                f.write(text)
        os.chmod(work, 0o755)
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


if __name__ == "__main__":
    print(build_busybox_rootfs(sys.argv[1]))
