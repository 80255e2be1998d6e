"""berth.image.digest and berth.image.content: digests, hashing, the content-addressed store.

Rules: temp dirs only, no root needed. Every error path (tampered data, wrong size, an
exception inside the writer, a malformed digest) is checked to leave nothing behind: no blob,
no ingest file.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest

from berth.errors import InvalidArgument, NotFound
from berth.image import digest as digests
from berth.image.content import ContentStore, Info
from berth.spec.image import OCI_LAYER

DATA = b"hello, berth\n" * 1000
DATA_DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"other").hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _ingest(root: Path) -> list[str]:
    ingest = root / "ingest"
    return sorted(os.listdir(ingest)) if ingest.is_dir() else []


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(str(tmp_path / "content"))


# --- digests ----------------------------------------------------------------------------


def test_parse_accepts_sha256_and_sha512() -> None:
    parsed = digests.parse(DATA_DIGEST)
    assert (parsed.algorithm, parsed.hex, str(parsed)) == ("sha256", DATA_DIGEST[7:], DATA_DIGEST)
    sha512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert digests.parse(sha512).algorithm == "sha512"
    assert digests.validate(sha512) == sha512
    assert digests.short(DATA_DIGEST) == DATA_DIGEST[7:19]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected <algorithm>:<encoded>"),
        ("sha256", "expected <algorithm>:<encoded>"),
        (DATA_DIGEST[7:], "expected <algorithm>:<encoded>"),
        ("sha256:abc", "sha256 needs 64 lowercase hex digits"),
        ("sha256:" + "A" * 64, "sha256 needs 64 lowercase hex digits"),
        (DATA_DIGEST + "0", "sha256 needs 64 lowercase hex digits"),
        ("sha512:" + "a" * 64, "sha512 needs 128 lowercase hex digits"),
        ("md5:" + "a" * 32, "unsupported algorithm 'md5'"),
        ("SHA256:" + "a" * 64, "bad algorithm 'SHA256'"),
        (" " + DATA_DIGEST, "bad algorithm"),
    ],
)
def test_parse_refusals_name_the_value(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        digests.parse(text)
    assert info.value.message.startswith(f"invalid digest {text!r}: {why}"), info.value.message
    assert not digests.is_digest(text)


def test_hasher_streams_and_counts() -> None:
    hasher = digests.Hasher()
    for i in range(0, len(DATA), 777):
        hasher.update(DATA[i : i + 777])
    assert (hasher.digest(), hasher.size) == (DATA_DIGEST, len(DATA))
    assert digests.of_bytes(b"") == digests.EMPTY_SHA256
    assert digests.of_stream(io.BytesIO(DATA)) == (DATA_DIGEST, len(DATA))
    sha512 = digests.Hasher("sha512")
    sha512.update(b"x")
    assert sha512.digest() == "sha512:" + hashlib.sha512(b"x").hexdigest()
    with pytest.raises(InvalidArgument, match="unsupported digest algorithm 'md5'"):
        digests.Hasher("md5")


def test_of_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert digests.of_file(str(path)) == (DATA_DIGEST, len(DATA))


# --- writing ----------------------------------------------------------------------------


def test_writer_streams_verifies_and_commits(store: ContentStore, tmp_path: Path) -> None:
    with store.writer(DATA_DIGEST, len(DATA)) as w:
        for i in range(0, len(DATA), 4096):
            w.write(DATA[i : i + 4096])
        assert w.size == len(DATA)
        assert len(_ingest(tmp_path / "content")) == 1  # in progress: in ingest
    info = w.commit()  # committed on exit; commit again returns the same
    assert info == Info(DATA_DIGEST, len(DATA))
    path = store.path(DATA_DIGEST)
    assert path == str(tmp_path / "content" / "blobs" / "sha256" / DATA_DIGEST[7:])
    assert Path(path).read_bytes() == DATA
    assert os.stat(path).st_mode & 0o777 == 0o444
    assert _ingest(tmp_path / "content") == []
    assert info.descriptor(OCI_LAYER).to_json() == {
        "mediaType": OCI_LAYER,
        "digest": DATA_DIGEST,
        "size": len(DATA),
    }


def test_writer_without_expectations_names_the_blob_by_its_hash(store: ContentStore) -> None:
    with store.writer() as w:
        w.write(b"abc")
        w.write(memoryview(b"def"))
    assert w.commit() == Info(digests.of_bytes(b"abcdef"), 6)
    assert store.read_bytes(digests.of_bytes(b"abcdef")) == b"abcdef"


def test_empty_blob(store: ContentStore) -> None:
    assert store.put_bytes(b"") == Info(digests.EMPTY_SHA256, 0)
    assert store.read_bytes(digests.EMPTY_SHA256) == b""


def test_sha512_blobs_live_under_their_algorithm(store: ContentStore, tmp_path: Path) -> None:
    sha512 = "sha512:" + hashlib.sha512(DATA).hexdigest()
    assert store.put_bytes(DATA, sha512) == Info(sha512, len(DATA))
    assert (tmp_path / "content" / "blobs" / "sha512" / sha512[7:]).is_file()
    assert store.verify(sha512) == Info(sha512, len(DATA))


def test_digest_mismatch_leaves_nothing(store: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as info, store.writer(OTHER_DIGEST) as w:
        w.write(DATA)
    assert info.value.message == f"digest mismatch: expected {OTHER_DIGEST}, got {DATA_DIGEST}"
    assert _files(tmp_path / "content") == []
    assert not store.exists(OTHER_DIGEST) and not store.exists(DATA_DIGEST)


def test_tampered_bytes_are_refused(store: ContentStore, tmp_path: Path) -> None:
    tampered = DATA[:100] + b"X" + DATA[101:]
    with pytest.raises(InvalidArgument, match=f"digest mismatch: expected {DATA_DIGEST}, got "):
        store.put_bytes(tampered, DATA_DIGEST)
    assert _files(tmp_path / "content") == []


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1])
def test_wrong_size_leaves_nothing(store: ContentStore, tmp_path: Path, size: int) -> None:
    expected = f"size mismatch: expected {size} bytes"
    with pytest.raises(InvalidArgument, match=expected), store.writer(DATA_DIGEST, size) as w:
        w.write(DATA)
    assert _files(tmp_path / "content") == []


def test_too_many_bytes_fail_at_once_not_at_commit(store: ContentStore, tmp_path: Path) -> None:
    with store.writer(None, 4) as w:
        w.write(b"1234")
        with pytest.raises(InvalidArgument, match="size mismatch: expected 4 bytes, got more"):
            w.write(b"5")
        assert _files(tmp_path / "content") == []  # dropped already
        with pytest.raises(InvalidArgument, match="already committed or aborted"):
            w.write(b"6")
    assert _files(tmp_path / "content") == []


def test_exception_inside_the_block_leaves_nothing(store: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="connection reset"), store.writer(DATA_DIGEST) as w:
        w.write(DATA[:5000])
        raise RuntimeError("connection reset")
    assert _files(tmp_path / "content") == []
    with pytest.raises(InvalidArgument, match="aborted"):
        w.commit()


def test_bad_expected_digest_refused_before_anything_is_made(
    store: ContentStore, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match="invalid digest 'sha256:nope'"):
        store.writer("sha256:nope")
    with pytest.raises(InvalidArgument, match="expected size -1 is negative"):
        store.writer(None, -1)
    assert not (tmp_path / "content").exists()


def test_writing_a_present_blob_is_a_no_op(store: ContentStore, tmp_path: Path) -> None:
    first = store.put_bytes(DATA)
    path = store.path(DATA_DIGEST)
    before = os.stat(path)
    with store.writer(DATA_DIGEST, len(DATA)) as w:
        assert w.present
        w.write(DATA)
        assert _ingest(tmp_path / "content") == []  # nothing stored while present
    assert w.commit() == first
    assert store.put_bytes(DATA) == first  # found present at commit: same answer
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _ingest(tmp_path / "content") == []
    # present, yet the bytes streamed are still checked
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        store.put_bytes(b"not it" + DATA[6:], DATA_DIGEST)
    assert store.verify(DATA_DIGEST) == first


def test_concurrent_writers_of_one_digest(store: ContentStore, tmp_path: Path) -> None:
    results: list[Info] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write() -> None:
        try:
            w = store.writer(DATA_DIGEST, len(DATA))
            barrier.wait()
            with w:
                for i in range(0, len(DATA), 1000):
                    w.write(DATA[i : i + 1000])
            results.append(w.commit())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [Info(DATA_DIGEST, len(DATA))] * 4
    assert store.verify(DATA_DIGEST) == Info(DATA_DIGEST, len(DATA))
    assert _files(tmp_path / "content") == [f"blobs/sha256/{DATA_DIGEST[7:]}"]


def test_interrupted_commit_leaves_nothing(
    store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        store.put_bytes(DATA)
    monkeypatch.undo()
    assert _files(tmp_path / "content") == []


# --- reading, listing, verifying, deleting, gc -----------------------------------------------


def test_reads_and_not_found(store: ContentStore) -> None:
    store.put_bytes(DATA)
    with store.open(DATA_DIGEST) as stream:
        assert stream.read() == DATA
    assert store.info(DATA_DIGEST) == Info(DATA_DIGEST, len(DATA))
    assert store.exists(DATA_DIGEST)
    assert not store.exists(OTHER_DIGEST)
    for call in (store.open, store.info, store.path, store.verify, store.delete, store.read_bytes):
        with pytest.raises(NotFound, match=f"blob {OTHER_DIGEST} not found"):
            call(OTHER_DIGEST)
    for call in (store.open, store.info, store.path, store.exists, store.delete):
        with pytest.raises(InvalidArgument, match=r"invalid digest '\.\./\.\./etc/passwd'"):
            call("../../etc/passwd")


def test_list_usage_and_delete(store: ContentStore, tmp_path: Path) -> None:
    assert store.list() == [] and store.usage() == 0
    a, b = store.put_bytes(DATA), store.put_bytes(b"other")
    (tmp_path / "content" / "blobs" / "sha256" / "stray-file").write_bytes(b"x")
    assert store.list() == sorted([a, b], key=lambda i: i.digest)
    assert store.usage() == len(DATA) + 5
    store.delete(a.digest)
    assert store.list() == [b]
    with pytest.raises(NotFound):
        store.delete(a.digest)


def test_verify_detects_a_tampered_blob(store: ContentStore) -> None:
    store.put_bytes(DATA)
    path = store.path(DATA_DIGEST)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(10)
        f.write(b"!")
    with pytest.raises(InvalidArgument) as info:
        store.verify(DATA_DIGEST)
    assert info.value.message.startswith(
        f"blob {DATA_DIGEST} is corrupt: digest mismatch: expected {DATA_DIGEST}, got sha256:"
    )


def test_gc_keeps_what_it_is_told_and_drops_stale_ingest(
    store: ContentStore, tmp_path: Path
) -> None:
    keep, drop = store.put_bytes(DATA), store.put_bytes(b"other")
    ingest = tmp_path / "content" / "ingest"
    stale, fresh = ingest / "blob-stale", ingest / "blob-fresh"
    stale.write_bytes(b"half a layer")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert store.gc({keep.digest}) == [drop.digest]
    assert store.list() == [keep]
    assert _ingest(tmp_path / "content") == ["blob-fresh"]
    assert store.gc({keep.digest}, ingest_max_age=0) == []
    assert _ingest(tmp_path / "content") == []
    assert store.gc(set()) == [keep.digest]
    assert store.list() == []


def test_gc_on_an_empty_store(store: ContentStore) -> None:
    assert store.gc(set()) == []
