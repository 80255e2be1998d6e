"""engine.filewatch: a write in the watched directory wakes the loop at once; close() frees it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from berth.engine.filewatch import DirWatch


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_write_in_the_directory_calls_back_and_close_frees_the_descriptor(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        log = tmp_path / "ctr-json.log"
        log.write_text("")
        before = _open_fds()
        woken = asyncio.Event()
        watch = DirWatch.open(str(tmp_path), woken.set)
        assert watch is not None
        await asyncio.sleep(0.05)
        assert not woken.is_set()  # nothing written yet
        with log.open("a") as f:
            f.write('{"log":"hi\\n"}\n')
        await asyncio.wait_for(woken.wait(), 2)
        woken.clear()
        (tmp_path / "ctr-json.log.1").write_text("rotated")  # a new file counts too
        await asyncio.wait_for(woken.wait(), 2)
        watch.close()
        watch.close()  # idempotent
        assert _open_fds() == before

    asyncio.run(main())


def test_a_missing_directory_gives_no_watch(tmp_path: Path) -> None:
    async def main() -> None:
        before = _open_fds()
        assert DirWatch.open(str(tmp_path / "gone"), lambda: None) is None
        assert _open_fds() == before

    asyncio.run(main())
