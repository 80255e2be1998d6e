"""The berth nftables table in a bare namespace this module makes: what the kernel holds is the
rendering of the desired state, a failed change keeps both as they were, close() removes it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from berth.engine import netns
from berth.engine.firewall import DnatRule, Firewall
from berth.engine.network_hooks import NetworkView
from berth.errors import Unavailable

pytestmark = pytest.mark.root

NET = NetworkView("f" * 64, "fw", "br-fw", "10.202.0.0/24", "10.202.0.1")
OTHER = NetworkView("e" * 64, "fw2", "br-fw2", "10.202.1.0/24", "10.202.1.1")


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="berth-fw-", dir="/tmp")
    path = os.path.join(base, "ns")
    netns.create(path)
    try:
        yield path
    finally:
        netns.remove(path)
        shutil.rmtree(base, ignore_errors=True)


def test_a_failed_change_keeps_the_table_and_the_desired_state(ns: str) -> None:
    async def main() -> None:
        fw = Firewall(ns)
        try:
            await fw.set_network(NET)
            await fw.set_dnat("c", (DnatRule("tcp", "0.0.0.0", 8080, "10.202.0.2", 80),))
            held = await fw.list_table()
            assert "dnat to 10.202.0.2:80" in held
            fw.nft = "false"  # nft refusing the transaction
            with pytest.raises(Unavailable):
                await fw.set_network(OTHER)
            with pytest.raises(Unavailable):
                await fw.set_dnat("c", (DnatRule("tcp", "0.0.0.0", 9090, "10.202.0.2", 80),))
            fw.nft = "nft"
            assert await fw.list_table() == held  # the kernel kept the previous table
            await fw.sync()
            assert await fw.list_table() == held  # and the desired state is the previous one
        finally:
            await fw.close()
        assert await fw.run(["list", "ruleset"]) == ""

    asyncio.run(main())


def test_other_tables_are_left_alone(ns: str) -> None:
    async def main() -> None:
        fw = Firewall(ns)
        await fw.run(["-f", "-"], "table inet someone {\n chain c {\n }\n}\n")
        try:
            await fw.set_network(NET)
            await fw.close()
            assert (
                await fw.run(["list", "ruleset"]) == "table inet someone {\n\tchain c {\n\t}\n}\n"
            )
        finally:
            await fw.run(["delete", "table", "inet", "someone"])

    asyncio.run(main())
