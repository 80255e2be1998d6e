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


def test_watches_share_one_inotify_descriptor_and_the_last_close_frees_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        one, two = tmp_path / "one", tmp_path / "two"
        one.mkdir()
        two.mkdir()
        before = _open_fds()
        woken: list[str] = []
        first = DirWatch.open(str(one), lambda: woken.append("first"))
        second = DirWatch.open(str(one), lambda: woken.append("second"))
        other = DirWatch.open(str(two), lambda: woken.append("other"))
        assert first and second and other
        assert _open_fds() == before + 1  # one instance for the loop, however many watches
        (one / "log").write_text("x")
        for _ in range(100):
            if len(woken) >= 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(woken) == ["first", "second"]  # not "other": its directory is quiet
        first.close()
        woken.clear()
        (one / "log").write_text("y")
        for _ in range(100):
            if woken:
                break
            await asyncio.sleep(0.01)
        assert woken == ["second"]
        second.close()
        other.close()
        assert _open_fds() == before

    asyncio.run(main())
