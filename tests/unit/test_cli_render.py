"""Tables and units as the docker CLI prints them: ps/images rows, alignment, sizes, durations."""

from __future__ import annotations

import time

import pytest

from berth.cli.containers import PS_DEFAULT, PS_HEADERS, ps_row
from berth.cli.images import IMAGES_DEFAULT, IMAGES_HEADERS, image_rows
from berth.cli.render import (
    align,
    binary_size,
    ellipsis,
    format_rows,
    human_size,
    parse_rfc3339,
)
from berth.cli.system import df_rows, event_line

CID = "75a8de1da658a817b7fc50bf41490a117787a9aaf6f9e35e5600affc420e56aa"
NOW = 1_800_000_000.0


def container(**extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "Id": CID,
        "Names": ["/s1"],
        "Image": "busybox",
        "Command": "sh -c 'echo started; exec sleep 300'",
        "Created": int(NOW) - 32,
        "State": "running",
        "Status": "Up 31 seconds",
        "Ports": [],
        "Labels": {"b": "2", "a": "1"},
    }
    doc.update(extra)
    return doc


def test_ps_table_is_dockers() -> None:
    rows = [ps_row(container(), now=NOW)]
    text = format_rows(rows, "", PS_DEFAULT, PS_HEADERS)
    assert text == (
        "CONTAINER ID   IMAGE     COMMAND                  CREATED          STATUS          "
        "PORTS     NAMES\n"
        '75a8de1da658   busybox   "sh -c \'echo started…"   32 seconds ago   Up 31 seconds   '
        "          s1\n"
    )


def test_ps_row_fields() -> None:
    row = ps_row(container(), now=NOW)
    assert row["ID"] == CID[:12] and row["Names"] == "s1" and row["Labels"] == "a=1,b=2"
    full = ps_row(container(), trunc=False, now=NOW)
    assert full["ID"] == CID and full["Command"] == "\"sh -c 'echo started; exec sleep 300'\""
    ported = ps_row(container(Ports=[{"PrivatePort": 80, "Type": "tcp", "PublicPort": 8080,
                                      "IP": "0.0.0.0"}]), now=NOW)  # fmt: skip
    assert ported["Ports"] == "0.0.0.0:8080->80/tcp"


def test_custom_table_and_plain_formats() -> None:
    rows = [ps_row(container(), now=NOW)]
    assert format_rows(rows, "table {{.Names}}\\t{{.State}}", PS_DEFAULT, PS_HEADERS) == (
        "NAMES     STATE\ns1        running\n"
    )
    assert format_rows(rows, "{{.Names}} {{.Status}}", PS_DEFAULT, PS_HEADERS) == (
        "s1 Up 31 seconds\n"
    )
    assert format_rows(rows, "table", PS_DEFAULT, PS_HEADERS).startswith("CONTAINER ID   IMAGE")
    as_json = format_rows(rows, "json", PS_DEFAULT, PS_HEADERS)  # Go's: keys sorted
    assert as_json.startswith('{"Command":"\\"sh -c \'echo started…\\"","CreatedAt":')


def test_label_method_and_json_rows() -> None:
    rows = [ps_row(container(), now=NOW)]
    fmt = 'table {{.Names}}\t{{.Label "a"}}\t{{.Label "com.no_pe"}}'
    assert format_rows(rows, fmt, PS_DEFAULT, PS_HEADERS) == (
        "NAMES     a         no pe\ns1        1         \n"
    )
    doc = format_rows(rows, "{{json .}}", PS_DEFAULT, PS_HEADERS)
    assert '"Labels":"a=1,b=2"' in doc and 'Label"' not in doc


def test_images_rows_one_per_tag() -> None:
    now = time.time()
    image = {
        "Id": "sha256:9c1878b85c8f064224950254ad520dacda30d7d7b54af6f1f55cbff0605b11c8",
        "RepoTags": ["busybox:latest", "localhost:5000/box:1"],
        "Created": now - 3 * 365 * 86400,
        "Size": 2141234,
    }
    untagged = {"Id": "sha256:" + "1" * 64, "RepoTags": [], "Created": now - 7200, "Size": 0}
    rows = image_rows([image, untagged], trunc=True)
    text = format_rows(rows, "", IMAGES_DEFAULT, IMAGES_HEADERS)
    lines = text.splitlines()
    assert lines[0] == "REPOSITORY           TAG       IMAGE ID       CREATED       SIZE"
    assert lines[1].startswith("busybox              latest    9c1878b85c8f   ")
    assert lines[1].endswith("2.14MB")
    assert lines[2].startswith("localhost:5000/box   1         9c1878b85c8f")
    assert lines[3].startswith("<none>               <none>    111111111111")


def test_align_is_go_tabwriter_with_dockers_settings() -> None:
    assert align(["a\tbb\tc", "dddddddddddd\te\tf"]) == (
        "a              bb        c\ndddddddddddd   e         f\n"
    )
    assert align(["PID\tCMD", "1\tsleep"], min_width=20) == (
        "PID                 CMD\n1                   sleep\n"
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (999, "999B"), (1000, "1kB"), (1500, "1.5kB"), (2141234, "2.14MB"),
     (4_260_000_000, "4.26GB")],
)  # fmt: skip
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_binary_size_and_precision() -> None:
    assert binary_size(1536 * 1024) == "1.5MiB"
    assert binary_size(24 * 1024**3) == "24GiB"
    assert human_size(2141234, 4) == "2.141MB"


def test_ellipsis_and_rfc3339() -> None:
    assert ellipsis("abcdef", 4) == "abc…" and ellipsis("abc", 4) == "abc"
    assert parse_rfc3339("1970-01-01T00:00:10.5Z") == 10.5
    assert parse_rfc3339("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_rfc3339("0001-01-01T00:00:00Z") == 0.0


def test_system_df_rows() -> None:
    doc = {
        "LayersSize": 3000,
        "Images": [{"Size": 2000, "SharedSize": 0, "Containers": 1},
                   {"Size": 1000, "SharedSize": 0, "Containers": 0}],
        "Containers": [{"State": "running", "SizeRw": 10}, {"State": "exited", "SizeRw": 30}],
        "Volumes": [],
        "BuildCache": [],
    }  # fmt: skip
    rows = df_rows(doc)
    assert [r["Type"] for r in rows] == ["Images", "Containers", "Local Volumes", "Build Cache"]
    assert (rows[0]["TotalCount"], rows[0]["Active"], rows[0]["Size"]) == ("2", "1", "3kB")
    assert rows[0]["Reclaimable"] == "1kB (33%)"
    assert rows[1]["Reclaimable"] == "30B (75%)"
    assert rows[2]["Reclaimable"] == "0B"


def test_event_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        line = event_line(EVENT)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == f"2027-01-15T08:00:00.123456789Z container start {CID} (image=busybox, name=s1)"


EVENT = {
    "Type": "container",
    "Action": "start",
    "Actor": {"ID": CID, "Attributes": {"name": "s1", "image": "busybox"}},
    "timeNano": 1_800_000_000_123_456_789,
}
