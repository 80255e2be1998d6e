"""bench/runtime_bench.py in a tiny run, so the benchmark cannot rot unnoticed.

It checks that the script runs all four columns (runc, crun and berth-runtime in crun's
environment through the worker, berth on the host), reports numbers for each, that
"berth (as crun runs)" really runs as crun does (its containers, like crun's, have no cgroup
of their own in the unified hierarchy; runc's and berth's have one), that the markdown
section lands between its markers, and that nothing is left behind (the script's exit status
and the suite's leak check). No timing or memory figure is asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "runtime_bench.py"
COUNT = 4
LABELS = ("runc", "crun", "berth", "berth (as crun runs)")


def row(out: str, metric: str) -> list[str]:
    """The cells of the text table's row ``metric`` (cells are two or more spaces apart)."""
    match = re.search(rf"^{re.escape(metric)}  +(.*)$", out, re.M)
    assert match, (metric, out)
    return re.split(r"  +", match.group(1).strip())


def test_tiny_run_reports_every_runtime(tmp_path: Path) -> None:
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nkept as it is\n")
    argv = [sys.executable, str(SCRIPT), "--runs", "2", "--count", str(COUNT), "--rounds", "1"]
    done = subprocess.run(
        [*argv, "--settle", "0.2", "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr[-3000:]}"
    assert "Errors" not in out and "STILL THERE" not in out, out
    for label in LABELS:
        assert re.search(rf"^run +{re.escape(label)} +\d+\.\d +\d+\.\d +2 ", out, re.M), out
    assert row(out, "rounds completed") == ["1"] * 4
    own = row(out, "in a unified (cgroup2) cgroup of their own")
    assert own == [f"{COUNT} of {COUNT}", f"0 of {COUNT}", f"{COUNT} of {COUNT}", f"0 of {COUNT}"]
    for metric in ("kernel memory per container, MB", "per-cpu allocations per container, KB"):
        assert all(re.fullmatch(r"-?\d+\.\d+", cell) for cell in row(out, metric)), (metric, out)
    assert row(out, "left behind") == ["nothing"] * 4
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nkept as it is\n"), text
    section = text.split("<!-- runtime-bench:begin -->\n", 1)[1]
    assert section.startswith("## Runtime: berth-runtime vs runc and crun"), section
    assert "| metric | runc | crun | berth | berth (as crun runs) |" in section, section
