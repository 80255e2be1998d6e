"""bench/network_bench.py in quick mode, so the benchmark cannot rot unnoticed.

It checks that the script runs against every peer (berthd, a private dockerd, podman), that
dockerd and podman get a number in every case, that berthd gets either numbers or the line
saying why it has none, that the markdown section lands between its markers, and that nothing
is left behind (the script's exit status and the suite's leak check). No timing is asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "network_bench.py"
NUMBER = r"\d+\.\d+"


def test_quick_run_reports_every_peer(tmp_path: Path) -> None:
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nkept as it is\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr[-3000:]}"
    assert "Errors" not in out and "Left behind" not in out, out
    berthd_skipped = "berthd: no bridge networking yet (" in out
    peers = ["dockerd", "podman"] + ([] if berthd_skipped else ["berthd"])
    for peer in peers:
        assert re.search(rf"^{peer} +\d+ +\d+ ", out, re.M), (peer, out)
        for path in ("container to container", "published port"):
            row = rf"^{peer}: {path} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$"
            assert re.search(row, out, re.M), (peer, path, out)
    assert re.search(rf"^host loopback \(the limit\) +{NUMBER} +1\.00 +{NUMBER} +1\.00$", out, re.M)
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nkept as it is\n"), text
    section = text.split("<!-- network-bench:begin -->\n", 1)[1]
    assert section.startswith("## Network benchmark"), section
    assert "| dockerd: container to container |" in section, section
