"""berth.engine.oci_config: docker create bodies -> OCI config.json, as dockerd 20.10 builds it.

Rules: pure, no root; the rootfs is a temp dir with its own /etc/passwd and /etc/group; host
facts (CPUs, hard rlimits) are injected so results do not depend on the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.engine.oci_config import CreateRequest, HostFacts, build_spec
from berth.spec.config import Spec

HOST = HostFacts(cpus=frozenset({0, 1}), mems=frozenset({0}), hard_limits={"RLIMIT_NOFILE": 20000})


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data\n")
    return str(tmp_path)


def _spec(rootfs: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    req = CreateRequest.from_json({"Image": "busybox", "Cmd": ["true"], **body})
    spec = build_spec("c" * 64, req, None, rootfs, hostname="cccccccccccc", host=HOST, **kw)
    Spec.from_json(spec)
    return spec


def test_plain_run_parses(rootfs: str) -> None:
    spec = _spec(rootfs, {})
    assert spec["process"]["args"] == ["true"]
    assert spec["linux"]["cgroupsPath"] == "berth/" + "c" * 64
