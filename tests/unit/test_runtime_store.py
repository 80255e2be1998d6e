"""berth.runtime.store: container ids, records under a root directory, atomic writes, times.

Rules: every test uses its own tmp_path as the runtime root; no kernel state is changed (the
only processes are short-lived children this file forks and reaps itself).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from berth.errors import AlreadyExists, InvalidArgument, NotFound
from berth.runtime import store
from berth.runtime.store import Record, Store, check_id, process_start_time, rfc3339


def _record(container_id: str = "web", **changes: object) -> Record:
    fields: dict[str, object] = {
        "id": container_id,
        "bundle": "/srv/bundle",
        "rootfs": "/srv/bundle/rootfs",
        "pid": 4321,
        "pid_start": 987654,
        "created": "2024-05-01T10:20:30.5Z",
        "config": {"ociVersion": "1.2.0", "process": {"args": ["sh"], "cwd": "/"}},
        "cgroup": {"paths": {"/sys/fs/cgroup/memory": "/sys/fs/cgroup/memory/web"}},
        "annotations": {"org.example": "é"},
        "owner": "",
    }
    fields.update(changes)
    return Record(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    "container_id",
    ["a", "web-1", "A_b+c.d", "0", "x" * 1024, ".hidden", "a..b", "...", "-leading"],
)
def test_check_id_accepts_runcs_charset(container_id: str) -> None:
    assert check_id(container_id) == container_id


@pytest.mark.parametrize(
    "container_id",
    ["", ".", "..", "a/b", "/abs", "x y", "tab\tx", "new\nline", "a:b", "a*b", "x" * 1025],
)
def test_check_id_refuses(container_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_id(container_id)
    assert repr(container_id)[:40].rstrip("'") in info.value.message
    assert "is invalid" in info.value.message


# runc's id regex ^[\w+-\.]+$ is ASCII-only
@pytest.mark.parametrize("container_id", ["café", "\u0663", "\uff46\uff55\uff4c\uff4c"])
def test_check_id_refuses_non_ascii(container_id: str) -> None:
    with pytest.raises(InvalidArgument):
        check_id(container_id)


def test_store_paths_check_the_id(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    assert st.dir("web") == str(tmp_path / "web")
    assert st.fifo("web") == str(tmp_path / "web" / "exec.fifo")
    with pytest.raises(InvalidArgument, match=r"'\.\./etc'"):
        st.dir("../etc")
    with pytest.raises(InvalidArgument):
        st.reserve("a/b")
    assert list(tmp_path.iterdir()) == []


def test_store_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Store("state").root == str(tmp_path / "state")


# --------------------------------------------------------------------------- records


def test_reserve_makes_the_directory_and_refuses_a_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "root"  # does not exist yet: reserve makes it
    st = Store(str(root))
    path = st.reserve("web")
    assert path == str(root / "web")
    assert os.path.isdir(path)
    assert st.exists("web")
    with pytest.raises(AlreadyExists) as info:
        st.reserve("web")
    assert "'web'" in info.value.message


def test_save_load_round_trip(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    st.reserve("web")
    record = _record()
    st.save(record)
    assert st.load("web") == record
    record.pid = 99  # records are mutable; a save replaces the file
    st.save(record)
    assert st.load("web").pid == 99


def test_record_json_uses_camel_case_keys() -> None:
    doc = _record().to_json()
    assert doc["pidStart"] == 987654
    assert "pid_start" not in doc
    assert Record.from_json(doc) == _record()


def test_record_from_json_defaults_owner_and_annotations() -> None:
    doc = _record().to_json()
    del doc["owner"], doc["annotations"]
    record = Record.from_json(doc)
    assert record.owner == ""
    assert record.annotations == {}


def test_load_of_a_missing_container_names_it(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    with pytest.raises(NotFound, match=r"container 'ghost' does not exist"):
        st.load("ghost")
    st.reserve("half")  # a create in progress: a directory without a record
    with pytest.raises(NotFound, match=r"'half'"):
        st.load("half")


@pytest.mark.parametrize("content", [b"", b"{", b'{"id": "web"}', b"[]", b'"x"'])
def test_load_of_a_damaged_record_is_a_berth_error_naming_the_container(
    tmp_path: Path, content: bytes
) -> None:
    from berth.errors import BerthError

    st = Store(str(tmp_path))
    record = Path(st.reserve("web")) / "state.json"
    record.write_bytes(content)
    with pytest.raises(BerthError) as info:
        st.load("web")
    assert not isinstance(info.value, NotFound)
    assert "'web'" in info.value.message
    assert str(record) in info.value.message


def test_write_atomically_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    store.write_atomically(str(target), b"first")
    store.write_atomically(str(target), b"second", mode=0o640)
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_atomically_uses_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "new"
    old = os.umask(0)
    try:
        store.write_atomically(str(target), b"x", mode=0o640)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o640


def test_saved_record_is_private(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    st.reserve("web")
    st.save(_record())
    assert (tmp_path / "web" / "state.json").stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in (tmp_path / "web").iterdir()) == ["state.json"]


def test_ids_lists_only_containers_with_a_record(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    for container_id in ("b", "a", "half"):
        st.reserve(container_id)
    st.save(_record("b"))
    st.save(_record("a"))
    (tmp_path / "stray-file").write_text("x")
    assert st.ids() == ["a", "b"]


def test_ids_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert Store(str(tmp_path / "nowhere")).ids() == []


def test_remove_is_idempotent(tmp_path: Path) -> None:
    st = Store(str(tmp_path))
    st.reserve("web")
    st.save(_record())
    (tmp_path / "web" / "exec.fifo").write_text("")
    (tmp_path / "web" / "state.json.tmp123").write_text("")
    st.remove("web")
    assert not st.exists("web")
    assert list(tmp_path.iterdir()) == []
    st.remove("web")
    st.remove("never-existed")


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("ts_ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_700_000_000_000_000_000, "2023-11-14T22:13:20Z"),
        (1_700_000_000_500_000_000, "2023-11-14T22:13:20.5Z"),
        (1_700_000_000_123_456_789, "2023-11-14T22:13:20.123456789Z"),
        (1_700_000_000_000_001_000, "2023-11-14T22:13:20.000001Z"),
        (1_700_000_000_120_000_000, "2023-11-14T22:13:20.12Z"),
        (951_782_400_000_000_007, "2000-02-29T00:00:00.000000007Z"),
    ],
)
def test_rfc3339_like_go_rfc3339nano(ts_ns: int, text: str) -> None:
    assert rfc3339(ts_ns) == text


def test_rfc3339_of_now_is_utc() -> None:
    now = time.time_ns()
    text = rfc3339(now)
    assert text.endswith("Z")
    assert text.startswith(time.strftime("%Y-%m-%d", time.gmtime(now // 10**9)))


def test_process_start_time_of_this_process() -> None:
    start = process_start_time(os.getpid())
    assert isinstance(start, int)
    assert start > 0
    assert process_start_time(os.getpid()) == start


def test_process_start_time_of_a_child_is_not_before_ours() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only waits to be read
        time.sleep(5)
        os._exit(0)
    try:
        child = process_start_time(pid)
        ours = process_start_time(os.getpid())
        assert child is not None
        assert ours is not None
        assert child >= ours
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_process_start_time_of_a_zombie_and_a_dead_pid() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait for it to become a zombie
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.001)
        assert process_start_time(pid) is None
    finally:
        os.waitpid(pid, 0)
    assert process_start_time(pid) is None  # reaped: gone


def test_process_start_time_of_a_pid_that_cannot_exist() -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    assert process_start_time(pid_max + 1) is None


def test_record_init_alive() -> None:
    start = process_start_time(os.getpid())
    assert start is not None
    assert _record(pid=os.getpid(), pid_start=start).init_alive()
    assert not _record(pid=os.getpid(), pid_start=start + 1).init_alive()  # pid reused
    assert not _record(pid=0, pid_start=0).init_alive()
