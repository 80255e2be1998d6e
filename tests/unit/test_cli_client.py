"""The CLI's HTTP client against a scripted unix-socket server: framing, streams, errors, hijack."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from berth.cli.client import ApiError, Client, DaemonUnreachable, encode_query
from berth.cli.common import CliError
from berth.cli.progress import plain_line, show_plain
from berth.cli.stats import cpu_percent, memory_used, stats_row
from berth.cli.streams import demux

CLOSE = b"close the connection instead"
PING = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\n"


class FakeDaemon:
    """Answers each request on a connection with the next scripted reply; records requests."""

    def __init__(self, path: str, replies: list[bytes]) -> None:
        self.requests: list[bytes] = []
        self.replies = replies
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn:
            while self.replies:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    byte = reader.read(1)
                    if not byte:
                        return
                    head += byte
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = reader.read(length) if length else b""
                if b"chunked" in head.lower():
                    while (size := int(reader.readline().strip(), 16)) != 0:
                        body += reader.read(size)
                        reader.readline()
                    reader.readline()
                self.requests.append(head + body)
                reply = self.replies.pop(0)
                if reply == CLOSE:  # an idle keep-alive connection the server dropped
                    return
                conn.sendall(reply)
                if reply.startswith(b"HTTP/1.1 101"):  # a hijacked stream ends with the process
                    return

    def close(self) -> None:
        self.server.close()


Factory = Callable[[list[bytes]], tuple[FakeDaemon, Client]]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Factory]:
    made: list[tuple[FakeDaemon, Client]] = []

    def make(replies: list[bytes]) -> tuple[FakeDaemon, Client]:
        path = str(tmp_path / f"d{len(made)}.sock")
        fake = FakeDaemon(path, [PING, *replies])
        client = Client(f"unix://{path}")
        made.append((fake, client))
        return fake, client

    yield make
    for fake, client in made:
        client.close()
        fake.close()


def json_reply(status: str, doc: object) -> bytes:
    body = json.dumps(doc).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunked(status: str, *pieces: bytes) -> bytes:
    out = f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    for piece in pieces:
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def test_negotiates_down_and_sends_versioned_paths(daemon_factory: Factory) -> None:
    fake, client = daemon_factory(
        [json_reply("200 OK", [{"Id": "a"}]), b"HTTP/1.1 204 No Content\r\n\r\n"]
    )
    assert client.get("/containers/json", {"all": True, "size": False}) == [{"Id": "a"}]
    assert client.post("/containers/x/start") is None
    assert fake.requests[0].startswith(b"HEAD /_ping HTTP/1.1\r\n")
    assert fake.requests[1].startswith(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\n")
    assert fake.requests[2].startswith(b"POST /v1.41/containers/x/start HTTP/1.1\r\n")
    assert b"Content-Length: 0\r\n" in fake.requests[2]


def test_a_dropped_keep_alive_connection_is_retried_once(daemon_factory: Factory) -> None:
    fake, client = daemon_factory([CLOSE, json_reply("200 OK", {"ExitCode": 5})])
    client.version  # noqa: B018  (the kept connection is now in use)
    assert client.get("/exec/e/json") == {"ExitCode": 5}
    assert fake.requests[1] == fake.requests[2]  # the same request, on a new connection
    _, stream_client = daemon_factory([CLOSE])
    with pytest.raises(DaemonUnreachable):  # a new connection that fails is not retried
        stream_client.stream("GET", "/events")


def test_error_body_becomes_api_error(daemon_factory: Factory) -> None:
    _, client = daemon_factory([json_reply("404 Not Found", {"message": "No such container: x"})])
    with pytest.raises(ApiError) as caught:
        client.get("/containers/x/json")
    assert caught.value.status == 404 and caught.value.message == "No such container: x"


def test_chunked_json_stream_split_anywhere(daemon_factory: Factory) -> None:
    reply = chunked("200 OK", b'{"status":"a"}\n{"sta', b'tus":"b"}{"status"', b':"c"}\n')
    _, client = daemon_factory([reply])
    response = client.stream("POST", "/images/create", {"fromImage": "x"})
    assert [m["status"] for m in response.json_lines()] == ["a", "b", "c"]


def test_json_body_and_chunked_upload(daemon_factory: Factory) -> None:
    fake, client = daemon_factory([json_reply("201 Created", {"Id": "c"}),
                                   chunked("200 OK", b'{"stream":"ok"}')])  # fmt: skip
    assert client.post("/containers/create", {"name": "n"}, {"Image": "busybox"}) == {"Id": "c"}
    assert fake.requests[1].endswith(b'\r\n\r\n{"Image": "busybox"}')
    assert b"Content-Type: application/json" in fake.requests[1]
    response = client.open("POST", "/images/load", None, iter([b"abc", b"", b"de"]))
    assert list(response.json_lines()) == [{"stream": "ok"}]
    assert fake.requests[2].endswith(b"\r\n\r\nabcde")


def test_hijack_needs_101(daemon_factory: Factory) -> None:
    frames = b"\x01\x00\x00\x00" + struct.pack(">I", 3) + b"out" + b"\x02\x00\x00\x00"
    frames += struct.pack(">I", 4) + b"err\n"
    upgrade = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + frames
    _, client = daemon_factory([upgrade, json_reply("200 OK", {})])
    client.version  # noqa: B018  (negotiated on the shared connection first)
    conn = client.hijack("/containers/x/attach", {"stream": True})
    out, err = io.BytesIO(), io.BytesIO()
    conn.sock.shutdown(socket.SHUT_WR)
    demux(lambda: conn.reader.read1(65536), out, err)  # type: ignore[arg-type]
    conn.close()
    assert out.getvalue() == b"out" and err.getvalue() == b"err\n"
    with pytest.raises(ApiError, match="unable to upgrade to tcp, received 200"):
        client.hijack("/containers/x/attach")


def test_run_attaches_waits_then_starts(
    daemon_factory: Factory, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """The docker CLI's order, which daemons rely on; the exit code is the wait's StatusCode."""
    from berth.cli.common import Context
    from berth.cli.run import cmd_run

    frames = b"\x01\x00\x00\x00" + struct.pack(">I", 3) + b"hi\n"
    frames += b"\x02\x00\x00\x00" + struct.pack(">I", 4) + b"oops"
    fake, client = daemon_factory([
        json_reply("201 Created", {"Id": "c" * 64, "Warnings": []}),
        b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + frames,
        chunked("200 OK", b'{"Error":null,"StatusCode":3}'),
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ])  # fmt: skip
    code = cmd_run(Context(client), ["--rm", "--name", "x", "busybox", "sh", "-c", "exit 3"])
    assert code == 3
    captured = capsysbinary.readouterr()
    assert (captured.out, captured.err) == (b"hi\n", b"oops")
    lines = [r.split(b"\r\n", 1)[0].decode() for r in fake.requests]
    cid = "c" * 64
    assert lines == [
        "HEAD /_ping HTTP/1.1",
        "POST /v1.41/containers/create?name=x HTTP/1.1",
        f"POST /v1.41/containers/{cid}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1",
        f"POST /v1.41/containers/{cid}/wait?condition=removed HTTP/1.1",
        f"POST /v1.41/containers/{cid}/start HTTP/1.1",
    ]
    body = json.loads(fake.requests[1].split(b"\r\n\r\n", 1)[1])
    assert body["Cmd"] == ["sh", "-c", "exit 3"] and body["HostConfig"]["AutoRemove"] is True


def test_unreachable_daemon_names_the_socket(tmp_path: Path) -> None:
    client = Client(f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(DaemonUnreachable, match=r"at unix://.*/nothing.sock\. Is berthd running\?"):
        client.get("/info")


def test_query_encoding() -> None:
    assert encode_query({"a": True, "b": False, "c": None, "d": 0, "n": ["x", "y"]}) == (
        "?a=1&d=0&n=x&n=y"
    )
    assert encode_query({"filters": {"status": {"exited": True}}}) == (
        "?filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D"
    )


def test_progress_plain_lines_and_errors() -> None:
    assert plain_line({"status": "Pulling fs layer", "id": "81f41ae67512"}) == (
        "81f41ae67512: Pulling fs layer\n"
    )
    assert (
        plain_line({"status": "Downloading", "progressDetail": {"current": 5}, "id": "x"}) is None
    )
    assert plain_line({"stream": "Step 1/2 : FROM busybox\n"}) == "Step 1/2 : FROM busybox\n"
    out = io.StringIO()
    aux = show_plain([{"stream": "a\n"}, {"aux": {"ID": "sha256:1"}}], out)
    assert aux == [{"ID": "sha256:1"}] and out.getvalue() == "a\n"
    with pytest.raises(CliError, match="boom"):
        show_plain([{"errorDetail": {"message": "boom"}, "error": "boom"}], out)


STATS = {
    "id": "f" * 64,
    "name": "/web",
    "read": "2026-11-26T18:00:01Z",
    "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000, "online_cpus": 2},
    "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
    "memory_stats": {"usage": 3 << 20, "limit": 24 << 30,
                     "stats": {"total_inactive_file": 1 << 20}},
    "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 0}},
    "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 4096},
                                                   {"op": "Write", "value": 0}]},
    "pids_stats": {"current": 3},
}  # fmt: skip


def test_stats_arithmetic_is_dockers() -> None:
    assert cpu_percent(STATS) == 40.0
    assert memory_used(STATS["memory_stats"]) == 2 << 20  # type: ignore[arg-type]
    row = stats_row(STATS, "web")
    assert row["ID"] == "f" * 12 and row["Name"] == "web" and row["CPUPerc"] == "40.00%"
    assert row["MemUsage"] == "2MiB / 24GiB" and row["MemPerc"] == "0.01%"
    assert row["NetIO"] == "1.5kB / 0B" and row["BlockIO"] == "4.1kB / 0B" and row["PIDs"] == "3"
    gone = stats_row({}, "web")
    assert gone["CPUPerc"] == "--" and gone["MemUsage"] == "-- / --"


def test_rich_display_of_pulls_and_builds() -> None:
    from berth.cli.progress import show_rich, step_of

    layer = "81f41ae67512"
    pull = [
        {"status": "Pulling from library/busybox", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": layer},
        {"status": "Downloading", "progressDetail": {"current": 500, "total": 2000}, "id": layer},
        {"status": "Pull complete", "progressDetail": {}, "id": layer},
        {"status": "Status: Downloaded newer image for busybox:latest"},
    ]
    out = io.StringIO()
    assert show_rich(pull, out) == []
    text = out.getvalue()
    assert "latest: Pulling from library/busybox" in text and "Pull complete" in text
    build = [{"stream": "Step 1/2 : FROM busybox\n"}, {"stream": "Step 2/2 : CMD x\n"},
             {"aux": {"ID": "sha256:ab"}}, {"stream": "Successfully built ab\n"}]  # fmt: skip
    out = io.StringIO()
    assert show_rich(build, out) == [{"ID": "sha256:ab"}]
    assert "Successfully built ab" in out.getvalue() and "step 2/2" in out.getvalue()
    assert step_of("Step 3/10 : RUN x") == (3, 10) and step_of("Stepping") is None
    with pytest.raises(CliError, match="no space"):
        show_rich([{"stream": "Step 1/1 : RUN x\n"}, {"error": "no space"}], io.StringIO())


def test_a_layers_bar_fills_at_each_final_status_dockerd_sends() -> None:
    from berth.cli.progress import _finished

    for status in ("Pull complete", "Download complete", "Already exists", "Pushed",
                   "Layer already exists", "Mounted from library/busybox", "Loaded"):  # fmt: skip
        assert _finished(status), status
    for status in ("Downloading", "Waiting", "Pushing", "Preparing", "Extracting"):
        assert not _finished(status), status
