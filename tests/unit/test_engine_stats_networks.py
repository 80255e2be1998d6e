"""engine.stats's ``networks``: /proc/<pid>/net/dev in dockerd's form."""

from __future__ import annotations

from pathlib import Path

from berth.engine.stats import network_stats

HEAD = "Inter-|   Receive  |  Transmit\n face |bytes packets errs drop ...|bytes packets ...\n"
NET_DEV = (
    HEAD
    + "    lo: 120 2 0 0 0 0 0 0 120 2 0 0 0 0 0 0\n"
    + "  eth0: 5310 41 1 2 0 0 0 0 2184 23 3 4 0 0 0 0\n"
)


def test_every_interface_but_lo_in_dockerds_names(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.write_text(NET_DEV)
    assert network_stats(str(dev)) == {
        "eth0": {
            "rx_bytes": 5310, "rx_packets": 41, "rx_errors": 1, "rx_dropped": 2,
            "tx_bytes": 2184, "tx_packets": 23, "tx_errors": 3, "tx_dropped": 4,
        }
    }  # fmt: skip
    assert network_stats(str(tmp_path / "gone")) == {}
