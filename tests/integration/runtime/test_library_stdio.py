"""The runtime as a library, as the engine's supervisor uses it: a container created in the
calling process (its init stays our child) with stdio of our choosing, started at once.

Berth only: runc has no library interface.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import leakcheck
from berth.runtime import container, store
from berth.runtime.create import CreateOptions, create
from berth.runtime.process import wait_exit

pytestmark = pytest.mark.root


def test_a_library_created_container_writes_to_the_stdio_it_is_given(
    bundle: Any, rt_workdir: Path
) -> None:
    b = bundle(["sh", "-c", "echo out; echo err >&2; read line; echo got $line; exit 3"])
    st = store.Store(str(rt_workdir / "lib-state"))
    cid = leakcheck.tagged_name()
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        opts = CreateOptions(bundle=str(b.path), stdio=(stdin_r, out_w, err_w))
        created = create(st, cid, opts, foreground=True, start_at_once=True)
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
        os.write(stdin_w, b"hello\n")
        os.close(stdin_w)
        assert wait_exit(created.pid) == 3
        with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
            assert out.read() == b"out\ngot hello\n"
            assert err.read() == b"err\n"
    finally:
        container.delete(st, cid, force=True)
