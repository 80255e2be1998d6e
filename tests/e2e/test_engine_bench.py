"""bench/engine_bench.py in quick mode, so the benchmark cannot rot unnoticed.

A benchmark is not a timed test: this checks that the script runs against every peer (berthd,
a private dockerd, podman with and without its bridge, runc and crun), reports a number for
each of them in every case, writes its markdown section between its markers, and leaves
nothing behind (its own exit status, and the suite's leak check). It asserts no timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "engine_bench.py"
NUMBER = r"\d+\.\d"


def test_quick_run_reports_every_peer(tmp_path: Path) -> None:
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nkept as it is\n")
    argv = [sys.executable, str(SCRIPT), "--quick", "--count", "5", "--settle", "0.2"]
    done = subprocess.run(
        [*argv, "--markdown", str(markdown)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr[-3000:]}"
    assert "Errors" not in out and "Left behind" not in out, out
    for peer in ("berthd", "dockerd", "podman (none)", "podman (bridge)", "runc", "crun"):
        assert re.search(rf"^{re.escape(peer)} +{NUMBER} +{NUMBER} +3 ", out, re.M), (peer, out)
    _, _, tables = out.partition("`run --rm busybox true`")
    run_rm, _, rest = tables.partition("create + start")
    assert "runc" not in run_rm and "crun" not in run_rm, out
    assert re.search(rf"^time to start all, s +{NUMBER}\d +{NUMBER}\d +{NUMBER}\d$", rest, re.M)
    assert re.search(r"^container processes .* +5 \(", rest, re.M), out
    assert "berthd RSS before -> after" in rest and "supervisor RSS" in rest, out
    assert "Targets (issue 4)" in out
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nkept as it is\n"), text
    section = text.split("<!-- engine-bench:begin -->\n", 1)[1]
    section, _, tail = section.partition("<!-- engine-bench:end -->")
    assert section.startswith("## Engine: berthd vs dockerd and podman"), section
    assert "| berthd |" in section and "QUICK MODE" in section and tail.strip() == "", text
