"""berth.image.reference: Docker's reference grammar and normalisation, as one table.

Rules: the cases follow the ones docker/distribution's ``reference`` package tests
(normalize_test.go, reference_test.go), rewritten as our own table; every refusal is an
``InvalidArgument`` that quotes the reference and names the part at fault.
"""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.image import reference
from berth.image.reference import Reference

HEX = "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
DIGEST = f"sha256:{HEX}"
SHA512 = "sha512:" + "f" * 128

# input -> (full string after parse(), domain, path, tag, digest, familiar string)
NORMALISED = [
    ("busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", ""),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "docker.io", "library/busybox", "1.36", ""),
    (
        "library/busybox",
        "docker.io/library/busybox:latest",
        "docker.io",
        "library/busybox",
        "latest",
        "",
    ),
    (
        "docker.io/busybox",
        "docker.io/library/busybox:latest",
        "docker.io",
        "library/busybox",
        "latest",
        "",
    ),
    (
        "index.docker.io/busybox",
        "docker.io/library/busybox:latest",
        "docker.io",
        "library/busybox",
        "latest",
        "",
    ),
    (
        "index.docker.io/fooo/bar",
        "docker.io/fooo/bar:latest",
        "docker.io",
        "fooo/bar",
        "latest",
        "",
    ),
    (
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox:latest",
        "docker.io",
        "library/busybox",
        "latest",
        "",
    ),
    ("user/app:1", "docker.io/user/app:1", "docker.io", "user/app", "1", ""),
    (
        "dmcgowan/myapp",
        "docker.io/dmcgowan/myapp:latest",
        "docker.io",
        "dmcgowan/myapp",
        "latest",
        "",
    ),
    (
        "library/foo/bar",
        "docker.io/library/foo/bar:latest",
        "docker.io",
        "library/foo/bar",
        "latest",
        "",
    ),
    ("store/foo/bar", "docker.io/store/foo/bar:latest", "docker.io", "store/foo/bar", "latest", ""),
    ("other/library", "docker.io/other/library:latest", "docker.io", "other/library", "latest", ""),
    (
        "ubuntu-12.04-base",
        "docker.io/library/ubuntu-12.04-base:latest",
        "docker.io",
        "library/ubuntu-12.04-base",
        "latest",
        "",
    ),
    ("test_com/foo", "docker.io/test_com/foo:latest", "docker.io", "test_com/foo", "latest", ""),
    (
        "docker/migrator",
        "docker.io/docker/migrator:latest",
        "docker.io",
        "docker/migrator",
        "latest",
        "",
    ),
    ("test.com/foo", "test.com/foo:latest", "test.com", "foo", "latest", ""),
    ("test.com:8080/foo", "test.com:8080/foo:latest", "test.com:8080", "foo", "latest", ""),
    ("test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080", "foo", "latest", ""),
    (
        "xn--n3h.com:18080/foo",
        "xn--n3h.com:18080/foo:latest",
        "xn--n3h.com:18080",
        "foo",
        "latest",
        "",
    ),
    (
        "xn--n3h.com/myimage:xn--n3h.com",
        "xn--n3h.com/myimage:xn--n3h.com",
        "xn--n3h.com",
        "myimage",
        "xn--n3h.com",
        "",
    ),
    (
        "registry.example.com/x",
        "registry.example.com/x:latest",
        "registry.example.com",
        "x",
        "latest",
        "",
    ),
    (
        "127.0.0.1:5000/library/debian",
        "127.0.0.1:5000/library/debian:latest",
        "127.0.0.1:5000",
        "library/debian",
        "latest",
        "",
    ),
    (
        "[fc00::1]:5000/docker/docker",
        "[fc00::1]:5000/docker/docker:latest",
        "[fc00::1]:5000",
        "docker/docker",
        "latest",
        "",
    ),
    ("localhost/app", "localhost/app:latest", "localhost", "app", "latest", ""),
    (
        "localhost:5000/a/b@" + DIGEST,
        f"localhost:5000/a/b@{DIGEST}",
        "localhost:5000",
        "a/b",
        "",
        DIGEST,
    ),
    (
        "redis@" + DIGEST,
        f"docker.io/library/redis@{DIGEST}",
        "docker.io",
        "library/redis",
        "",
        DIGEST,
    ),
    (
        "busybox:latest@" + DIGEST,
        f"docker.io/library/busybox:latest@{DIGEST}",
        "docker.io",
        "library/busybox",
        "latest",
        DIGEST,
    ),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        "sub-dom1.foo.com",
        "bar/baz/quux",
        "some-long-tag",
        "",
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io/test.example.com/my-app:test.example.com",
        "b.gcr.io",
        "test.example.com/my-app",
        "test.example.com",
        "",
    ),
    (
        "xn--7o8h.com/myimage:xn--7o8h.com@" + SHA512,
        f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}",
        "xn--7o8h.com",
        "myimage",
        "xn--7o8h.com",
        SHA512,
    ),
    (
        "foo_bar.com:8080",
        "docker.io/library/foo_bar.com:8080",
        "docker.io",
        "library/foo_bar.com",
        "8080",
        "",
    ),
    (
        "foo/foo_bar.com:8080",
        "docker.io/foo/foo_bar.com:8080",
        "docker.io",
        "foo/foo_bar.com",
        "8080",
        "",
    ),
    (
        "test.com:5000",
        "docker.io/library/test.com:5000",
        "docker.io",
        "library/test.com",
        "5000",
        "",
    ),
    ("test:5000/repo:tag", "test:5000/repo:tag", "test:5000", "repo", "tag", ""),
    (
        "docker---rules/docker",
        "docker.io/docker---rules/docker:latest",
        "docker.io",
        "docker---rules/docker",
        "latest",
        "",
    ),
    (
        "dock__er/docker",
        "docker.io/dock__er/docker:latest",
        "docker.io",
        "dock__er/docker",
        "latest",
        "",
    ),
    ("d/docker", "docker.io/d/docker:latest", "docker.io", "d/docker", "latest", ""),
    ("jess/t", "docker.io/jess/t:latest", "docker.io", "jess/t", "latest", ""),
    (
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest",
        "docker.io",
        "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "latest",
        "",
    ),
    (
        f"docker.io/{'1a3f5e7d9c1b3a5f' * 4}",
        f"docker.io/library/{'1a3f5e7d9c1b3a5f' * 4}:latest",
        "docker.io",
        f"library/{'1a3f5e7d9c1b3a5f' * 4}",
        "latest",
        "",
    ),
    # an upper-case first component can only be a domain (Docker's current rule)
    ("Docker/docker", "Docker/docker:latest", "Docker", "docker", "latest", ""),
    ("busybox:TAG5", "docker.io/library/busybox:TAG5", "docker.io", "library/busybox", "TAG5", ""),
    (
        "busybox:" + "t" * 128,
        f"docker.io/library/busybox:{'t' * 128}",
        "docker.io",
        "library/busybox",
        "t" * 128,
        "",
    ),
]


@pytest.mark.parametrize(("text", "full", "domain", "path", "tag", "digest"), NORMALISED)
def test_parse_normalises_as_docker(
    text: str, full: str, domain: str, path: str, tag: str, digest: str
) -> None:
    ref = reference.parse(text)
    assert (str(ref), ref.domain, ref.path, ref.tag, ref.digest) == (
        full,
        domain,
        path,
        tag,
        digest,
    )
    assert ref.name == f"{domain}/{path}"
    # the familiar form parses back to the same reference, and so does the full one
    assert reference.parse(ref.familiar()) == ref
    assert reference.parse(str(ref)) == ref


# full name -> familiar name (normalize_test.go's TestParseRepositoryInfo)
FAMILIAR = [
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/fooo/bar", "fooo/bar"),
    ("docker.io/library/ubuntu", "ubuntu"),
    ("docker.io/nonlibrary/ubuntu", "nonlibrary/ubuntu"),
    ("docker.io/other/library", "other/library"),
    ("docker.io/library/foo/bar", "library/foo/bar"),
    ("docker.io/store/foo/bar", "store/foo/bar"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase"),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase"),
    ("example.com/private/moonbase", "example.com/private/moonbase"),
    ("example.com:8000/privatebase", "example.com:8000/privatebase"),
    ("docker.io/library/ubuntu-12.04-base", "ubuntu-12.04-base"),
    ("index.docker.io/library/foo", "foo"),
    (f"busybox:latest@{DIGEST}", f"busybox:latest@{DIGEST}"),
    (f"localhost:5000/a/b@{DIGEST}", f"localhost:5000/a/b@{DIGEST}"),
]


@pytest.mark.parametrize(("text", "familiar"), FAMILIAR)
def test_familiar_is_what_docker_prints(text: str, familiar: str) -> None:
    assert reference.familiar(text) == familiar
    assert reference.parse_normalized(text).familiar() == familiar


def test_parse_normalized_adds_no_tag_and_parse_adds_latest_only_without_a_digest() -> None:
    assert str(reference.parse_normalized("busybox")) == "docker.io/library/busybox"
    assert reference.parse_normalized("busybox").familiar() == "busybox"
    assert reference.parse("busybox").familiar() == "busybox:latest"
    assert reference.parse(f"busybox@{DIGEST}").tag == ""


def test_with_tag_with_digest_and_repository() -> None:
    ref = reference.parse("test.com:8000/foo")
    assert str(ref.with_tag("TAG5")) == "test.com:8000/foo:TAG5"
    assert str(ref.with_digest(DIGEST)) == f"test.com:8000/foo:latest@{DIGEST}"
    assert str(ref.with_digest(DIGEST).repository()) == "test.com:8000/foo"
    assert ref.with_tag("v1") == Reference("test.com:8000", "foo", "v1")
    with pytest.raises(InvalidArgument, match="tag '-foo'"):
        ref.with_tag("-foo")
    with pytest.raises(InvalidArgument, match="invalid digest 'foo'"):
        ref.with_digest("foo")


# input -> a fragment the error must contain (it always quotes the input too)
INVALID = [
    ("", "repository name must have at least one component"),
    (":justtag", "repository name must have at least one component"),
    (f"@{DIGEST}", "repository name is missing before '@'"),
    ("Busybox", "repository name 'library/Busybox' must be lowercase"),
    ("docker/Docker", "repository name 'docker/Docker' must be lowercase"),
    ("docker.io/docker/Docker", "repository name 'docker/Docker' must be lowercase"),
    ("UPPERCASE_IS_INVALID_IN_DOCKER_REFERENCES", "must be lowercase"),
    ("busybox:-foo", "tag '-foo'"),
    ("busybox:.foo", "tag '.foo'"),
    ("busybox:a/b", "domain 'busybox:a'"),  # a ":" before the last "/" is no tag
    ("busybox:tag!", "tag 'tag!'"),
    ("busybox:" + "t" * 129, "is longer than 128 characters"),
    ("busybox@sha256:abc", "invalid digest 'sha256:abc'"),
    (f"busybox@sha256:{HEX.upper()}", "invalid digest"),
    (f"validname@invaliddigest:{'f' * 64}", "unsupported algorithm 'invaliddigest'"),
    (f"busybox@{DIGEST}@{DIGEST}", "invalid digest"),
    ("busybox@", "invalid digest ''"),
    ("-docker", "'-docker' in repository name"),
    ("-docker/docker", "'-docker' in repository name"),
    ("docker-/docker", "'docker-' in repository name"),
    ("-docker.io/docker/docker", "domain '-docker.io'"),
    ("docker///docker", "an empty component in repository name"),
    ("docker.io/docker///docker", "an empty component in repository name"),
    ("docker/", "an empty component"),
    ("____/____", "'____' in repository name"),
    ("_docker/_docker", "'_docker' in repository name"),
    ("dock..er/docker", "domain 'dock..er'"),  # a "." makes it a domain
    ("dock_.er/docker", "domain 'dock_.er'"),  # a "." makes it a domain
    ("dock-.er/docker", "domain 'dock-.er'"),  # a "." makes it a domain
    ("aa/asdf$$^/aa", "'asdf$$^' in repository name"),
    ("https://github.com/docker/docker", "domain 'https:'"),
    ("[fc00::1%eth0]:5000/docker/docker", "domain '[fc00::1%eth0]:5000'"),
    ("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "that is an id"),
    ("example.com/" + "a/" * 122 + "a:tag", "repository name must not be more than 255 characters"),
    ("this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255" * 4 + "/docker", "255"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_invalid_references_name_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        reference.parse(text)
    assert info.value.message.startswith(f"invalid reference format {text!r}: ")
    assert fragment in info.value.message, info.value.message


def test_name_length_limit_counts_the_normalised_name() -> None:
    # 255 characters with the domain: accepted; one more: refused
    ok = "example.com/" + "a/" * 121 + "a"
    assert len(ok) == 255
    assert reference.parse(ok).path.count("/") == 121
    with pytest.raises(InvalidArgument, match="not be more than 255"):
        reference.parse(ok + "a")
    # a familiar name is measured after docker.io/ is added, as Docker does
    assert len(str(reference.parse_normalized("a/" * 122 + "a"))) == 255
    with pytest.raises(InvalidArgument, match="not be more than 255"):
        reference.parse("a/" * 122 + "aa")
