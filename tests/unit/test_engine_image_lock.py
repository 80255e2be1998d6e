"""The image lock: shared holders run together, exclusive alone and ahead of new sharers."""

from __future__ import annotations

import asyncio

from berth.engine.image_lock import ImageLock


def test_shared_holders_overlap_and_exclusive_waits_for_them() -> None:
    async def scenario() -> list[str]:
        lock = ImageLock()
        order: list[str] = []
        both_in = asyncio.Event()
        inside = 0

        async def sharer(name: str) -> None:
            nonlocal inside
            async with lock.shared():
                inside += 1
                order.append(f"{name} in")
                if inside == 2:
                    both_in.set()
                await both_in.wait()  # would hang if shared holders excluded each other
                await asyncio.sleep(0.01)
                order.append(f"{name} out")

        async def collector() -> None:
            await both_in.wait()
            async with lock.exclusive():
                order.append("gc")

        async def late_sharer() -> None:
            await both_in.wait()
            await asyncio.sleep(0)  # the collector is waiting by now
            async with lock.shared():
                order.append("late")

        await asyncio.wait_for(
            asyncio.gather(sharer("a"), sharer("b"), collector(), late_sharer()), 2
        )
        return order

    order = asyncio.run(scenario())
    assert order[:2] == ["a in", "b in"]
    assert order.index("gc") > max(order.index("a out"), order.index("b out"))
    assert order.index("late") > order.index("gc")  # a waiting collector goes first


def test_an_exclusive_holder_keeps_sharers_out_until_it_leaves() -> None:
    async def scenario() -> list[str]:
        lock = ImageLock()
        order: list[str] = []

        async def collector() -> None:
            async with lock.exclusive():
                order.append("gc start")
                await asyncio.sleep(0.02)
                order.append("gc end")

        async def sharer() -> None:
            await asyncio.sleep(0.005)
            async with lock.shared():
                order.append("share")

        await asyncio.wait_for(asyncio.gather(collector(), sharer()), 2)
        return order

    assert asyncio.run(scenario()) == ["gc start", "gc end", "share"]
