"""berth.runtime.capabilities: names and masks, validation, and the calls each step makes.

Rules: no real kernel call changes anything here; a recording fake stands in for ``Syscalls``.
"""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from berth.errors import BerthError, InvalidArgument
from berth.runtime import capabilities
from berth.runtime.capabilities import CAPABILITIES
from berth.runtime.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    Syscalls,
)
from berth.spec.config import Capabilities


class RecordingSyscalls(Syscalls):
    """Records prctl/capset calls; ``fail`` maps a call tuple to the errno it raises."""

    def __init__(self, fail: dict[tuple[Any, ...], int] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail or {}

    def _record(self, call: tuple[Any, ...]) -> None:
        self.calls.append(call)
        if call in self.fail:
            raise OSError(self.fail[call], f"{call}: failed")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._record(("prctl", option, arg2, arg3, arg4, arg5))
        return 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._record(("capset", effective, permitted, inheritable))


def bit(*names: str) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name]
    return mask


def test_names_match_the_kernel_header() -> None:
    header = Path("/usr/include/linux/capability.h")
    if not header.exists():
        pytest.skip("no linux/capability.h")
    found = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", header.read_text(), re.M)
        if m.group(1) != "CAP_LAST_CAP"
    }
    assert found == CAPABILITIES
    assert max(CAPABILITIES.values()) == 40 == CAPABILITIES["CAP_CHECKPOINT_RESTORE"]


def test_last_cap_reads_the_kernel() -> None:
    expected = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    assert capabilities.last_cap() == expected


def test_to_mask() -> None:
    assert capabilities.to_mask([], "f") == 0
    assert capabilities.to_mask(["CAP_CHOWN", "CAP_KILL", "CAP_CHOWN"], "f") == 0b100001
    assert capabilities.to_mask(["CAP_CHECKPOINT_RESTORE"], "f") == 1 << 40
    assert capabilities.to_names(bit("CAP_CHOWN", "CAP_SYS_ADMIN")) == [
        "CAP_CHOWN",
        "CAP_SYS_ADMIN",
    ]


def test_to_mask_unknown_name_names_the_field() -> None:
    with pytest.raises(
        InvalidArgument,
        match=r"^process\.capabilities\.effective: unknown "
        r"capability 'CAP_NOPE'$",
    ):
        capabilities.to_mask(["CAP_CHOWN", "CAP_NOPE"], "process.capabilities.effective")
    with pytest.raises(InvalidArgument, match="'chown'"):  # names are exact, as in runc
        capabilities.to_mask(["chown"], "x")


def test_names_the_kernel_lacks_are_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(capabilities, "last_cap", lambda: 38)
    monkeypatch.setattr(capabilities, "_warn", warnings.append)
    mask = capabilities.to_mask(["CAP_CHOWN", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"], "p.bounding")
    assert mask == bit("CAP_CHOWN")
    assert len(warnings) == 2 and "p.bounding" in warnings[0] and "CAP_BPF" in warnings[0]
    assert capabilities.unknown_to_kernel(["CAP_BPF", "CAP_KILL", "CAP_NOPE"]) == ["CAP_BPF"]


def test_validate_names_the_set() -> None:
    capabilities.validate(None)
    capabilities.validate(Capabilities(bounding=("CAP_CHOWN",), ambient=("CAP_KILL",)))
    for set_name in Capabilities.SETS:
        caps = Capabilities(**{set_name: ("CAP_CHOWN", "CAP_BOGUS")})
        with pytest.raises(InvalidArgument, match=rf"^process\.capabilities\.{set_name}: "):
            capabilities.validate(caps)
    with pytest.raises(InvalidArgument, match=r"^x\.caps\.permitted: unknown capability"):
        capabilities.validate(Capabilities(permitted=("CAP_X",)), "x.caps")


def test_drop_bounding_drops_everything_not_kept() -> None:
    fake = RecordingSyscalls()
    capabilities.drop_bounding(Capabilities(bounding=("CAP_CHOWN", "CAP_SETPCAP")), fake)
    dropped = [c[2] for c in fake.calls]
    assert all(c[:2] == ("prctl", PR_CAPBSET_DROP) for c in fake.calls)
    assert dropped == [n for n in range(capabilities.last_cap() + 1) if n not in (0, 8)]


def test_drop_bounding_none_keeps_all_and_empty_drops_all() -> None:
    fake = RecordingSyscalls()
    capabilities.drop_bounding(None, fake)
    assert fake.calls == []
    capabilities.drop_bounding(Capabilities(), fake)
    assert len(fake.calls) == capabilities.last_cap() + 1


def test_drop_bounding_failure_names_field_and_capability() -> None:
    fake = RecordingSyscalls(fail={("prctl", PR_CAPBSET_DROP, 5, 0, 0, 0): errno.EPERM})
    with pytest.raises(BerthError, match=r"process\.capabilities\.bounding: dropping CAP_KILL"):
        capabilities.drop_bounding(Capabilities(bounding=("CAP_CHOWN",)), fake)
    with pytest.raises(InvalidArgument, match=r"process\.capabilities\.bounding: unknown"):
        capabilities.drop_bounding(Capabilities(bounding=("CAP_NOPE",)), RecordingSyscalls())


def test_apply_sets_then_replaces_ambient() -> None:
    fake = RecordingSyscalls()
    caps = Capabilities(
        bounding=("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"),
        effective=("CAP_CHOWN",),
        permitted=("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"),
        inheritable=("CAP_KILL", "CAP_NET_RAW"),
        ambient=("CAP_NET_RAW", "CAP_KILL"),
    )
    capabilities.apply(caps, fake)
    assert fake.calls == [
        (
            "capset",
            bit("CAP_CHOWN"),
            bit("CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"),
            bit("CAP_KILL", "CAP_NET_RAW"),
        ),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAPABILITIES["CAP_KILL"], 0, 0),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAPABILITIES["CAP_NET_RAW"], 0, 0),
    ]


def test_apply_none_leaves_everything() -> None:
    fake = RecordingSyscalls()
    capabilities.apply(None, fake)
    assert fake.calls == []


def test_apply_empty_clears_every_set() -> None:
    fake = RecordingSyscalls()
    capabilities.apply(Capabilities(), fake)
    assert fake.calls == [
        ("capset", 0, 0, 0),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
    ]


def test_apply_capset_failure_is_an_error() -> None:
    fake = RecordingSyscalls(fail={("capset", 1, 1, 0): errno.EPERM})
    with pytest.raises(
        BerthError,
        match=r"^process\.capabilities: capset\(effective=0x1.*"
        r"Operation not permitted",
    ):
        capabilities.apply(Capabilities(effective=("CAP_CHOWN",), permitted=("CAP_CHOWN",)), fake)
    assert len(fake.calls) == 1


def test_apply_ambient_refused_is_a_debug_note_as_in_runc(monkeypatch: pytest.MonkeyPatch) -> None:
    # runc says nothing at the default log level: the refusal is noted for --debug only
    warnings: list[str] = []
    notes: list[str] = []
    monkeypatch.setattr(capabilities, "_warn", warnings.append)
    monkeypatch.setattr(capabilities, "_debug", notes.append)
    kill = CAPABILITIES["CAP_KILL"]
    fake = RecordingSyscalls(
        fail={("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, kill, 0, 0): errno.EPERM}
    )
    caps = Capabilities(
        permitted=("CAP_KILL", "CAP_CHOWN"),
        inheritable=("CAP_CHOWN",),
        ambient=("CAP_CHOWN", "CAP_KILL"),
    )
    capabilities.apply(caps, fake)
    assert fake.calls[-1] == ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, kill, 0, 0)
    assert warnings == []
    assert len(notes) == 1 and "process.capabilities.ambient" in notes[0]
    assert "CAP_KILL" in notes[0]


def test_apply_without_ambient_support(monkeypatch: pytest.MonkeyPatch) -> None:
    clear = ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    fake = RecordingSyscalls(fail={clear: errno.EINVAL})
    capabilities.apply(Capabilities(permitted=("CAP_CHOWN",)), fake)  # nothing to raise: fine
    with pytest.raises(BerthError, match=r"process\.capabilities\.ambient: clearing"):
        capabilities.apply(
            Capabilities(ambient=("CAP_CHOWN",)), RecordingSyscalls(fail={clear: errno.EINVAL})
        )


def test_keep_across_setuid() -> None:
    fake = RecordingSyscalls()
    capabilities.keep_across_setuid(fake)
    assert fake.calls == [("prctl", PR_SET_KEEPCAPS, 1, 0, 0, 0)]


def test_import_is_cheap() -> None:
    code = (
        "import sys, berth.runtime.capabilities as c; "
        "c.validate(None); "
        "print(sorted(m for m in ('logging', 'asyncio', 'subprocess', 'berth.runtime.log') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
