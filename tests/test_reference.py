"""Table tests for image-reference normalization (mirrors distribution/reference's cases)."""

import pytest

from ocitool.errors import InvalidReferenceError
from ocitool.image.reference import Reference, parse_reference

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "f" * 128
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
TAG128 = "t" * 128

VALID = [
    # Docker Hub short names and their spelled-out equivalents.
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("index.docker.io/docker/docker", "docker.io/docker/docker:latest", "docker/docker:latest"),
    ("user/repo", "docker.io/user/repo:latest", "user/repo:latest"),
    ("user/repo:tag", "docker.io/user/repo:tag", "user/repo:tag"),
    ("docker.io/user/repo:tag", "docker.io/user/repo:tag", "user/repo:tag"),
    ("other/library", "docker.io/other/library:latest", "other/library:latest"),
    # "library/x/y" is not an official image, so it keeps its prefix.
    ("library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
    ("a/b/c/d/e", "docker.io/a/b/c/d/e:latest", "a/b/c/d/e:latest"),
    ("ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest", "ubuntu-12.04-base:latest"),
    # First component without "." or ":" is a namespace, not a host.
    ("test_com/foo", "docker.io/test_com/foo:latest", "test_com/foo:latest"),
    ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080", "foo/foo_bar.com:8080"),
    # A single component is never a host: the ":..." part is a tag.
    ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080", "foo_bar.com:8080"),
    ("test.com:5000", "docker.io/library/test.com:5000", "test.com:5000"),
    ("localhost", "docker.io/library/localhost:latest", "localhost:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),
    ("192.168.1.1", "docker.io/library/192.168.1.1:latest", "192.168.1.1:latest"),
    # Separator rules: "__", runs of "-", single "." and "_".
    ("dock__er/docker", "docker.io/dock__er/docker:latest", "dock__er/docker:latest"),
    ("docker---rules/docker", "docker.io/docker---rules/docker:latest", "docker---rules/docker:latest"),
    ("a_b-c__d/e.f_g--h", "docker.io/a_b-c__d/e.f_g--h:latest", "a_b-c__d/e.f_g--h:latest"),
    ("d/docker", "docker.io/d/docker:latest", "d/docker:latest"),
    # Tags: case kept, 128 characters allowed, may start with "_" or a digit.
    ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", "lowercase:Uppercase"),
    ("busybox:_x.Y-1", "docker.io/library/busybox:_x.Y-1", "busybox:_x.Y-1"),
    (f"busybox:{TAG128}", f"docker.io/library/busybox:{TAG128}", f"busybox:{TAG128}"),
    # Other registries keep their host and get no "library/".
    ("quay.io/a/b:tag", "quay.io/a/b:tag", "quay.io/a/b:tag"),
    ("quay.io/b", "quay.io/b:latest", "quay.io/b:latest"),
    ("registry-1.docker.io/busybox", "registry-1.docker.io/busybox:latest", "registry-1.docker.io/busybox:latest"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("localhost:5000/x:tag", "localhost:5000/x:tag", "localhost:5000/x:tag"),
    ("Localhost:5000/x", "Localhost:5000/x:latest", "Localhost:5000/x:latest"),
    ("test:5000/repo", "test:5000/repo:latest", "test:5000/repo:latest"),
    ("test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080/foo:latest"),
    ("127.0.0.1:5000/library/busybox:latest", "127.0.0.1:5000/library/busybox:latest",
     "127.0.0.1:5000/library/busybox:latest"),
    ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest", "192.168.0.1:8/debian:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest", "[2001:db8::1]/repo:latest"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest",
     "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
     "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io/test.example.com/my-app:test.example.com",
     "b.gcr.io/test.example.com/my-app:test.example.com"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest", "xn--n3h.com:18080/foo:latest"),
    ("Example.COM/foo", "Example.COM/foo:latest", "Example.COM/foo:latest"),
    # A hex name is fine once it has a registry (no longer ambiguous with an image ID).
    (f"docker.io/{HEX64}", f"docker.io/library/{HEX64}:latest", f"{HEX64}:latest"),
    (HEX64[:63], f"docker.io/library/{HEX64[:63]}:latest", f"{HEX64[:63]}:latest"),
    # Digests: no default tag when pinned; tag and digest together keep both.
    (f"busybox@{SHA256}", f"docker.io/library/busybox@{SHA256}", f"busybox@{SHA256}"),
    (f"busybox:tag@{SHA256}", f"docker.io/library/busybox:tag@{SHA256}", f"busybox:tag@{SHA256}"),
    (f"foo.bar/baz@{SHA256}", f"foo.bar/baz@{SHA256}", f"foo.bar/baz@{SHA256}"),
    (f"[2001:db8::1]:5000/repo:tag@{SHA256}", f"[2001:db8::1]:5000/repo:tag@{SHA256}",
     f"[2001:db8::1]:5000/repo:tag@{SHA256}"),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}", f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}",
     f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}"),
    # Pasted transport prefix.
    ("docker://busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker://quay.io/a/b:tag", "quay.io/a/b:tag", "quay.io/a/b:tag"),
    # Name length: "registry/repository" may be exactly 255 characters.
    ("quay.io/" + "a" * 247, "quay.io/" + "a" * 247 + ":latest", "quay.io/" + "a" * 247 + ":latest"),
]

INVALID = [
    "",
    "docker://",
    ":justtag",
    f"@{SHA256}",
    "busybox:",
    "busybox@",
    "busybox:tag:tag",
    HEX64,
    "Uppercase",
    "Uppercase:tag",
    "Localhost/x",
    "Docker/docker",
    "docker/Docker",
    "docker.io/Library/x",
    "test:5000/Uppercase/lowercase:tag",
    "https://github.com/docker/docker",
    "-docker",
    "-docker/docker",
    "docker-/docker",
    "-docker.io/docker/docker",
    "_docker/_docker",
    "____/____",
    "dock..er/docker",
    "dock_.er/docker",
    "dock-.er/docker",
    "dock___er/docker",
    "docker/",
    "/docker",
    "docker//docker",
    "docker///docker",
    "docker.io/docker///docker",
    "aa/asdf$$^/aa",
    "foo_bar.com:8080/x",
    "foo_bar.com/x",  # has ".", so it is a host, and "_" is not allowed in hosts
    "foo:bar/baz",
    "[fc00::1]",
    "[fc00::1]:5000",
    "[2001:db8::1]:tag",
    "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian",
    "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "busybox:-tag",
    "busybox:.tag",
    f"busybox:{TAG128}t",
    "busybox:t\u00e9st",
    " busybox",
    "busybox\n",
    "repo@sha256:" + "f" * 34,
    "repo@sha256:" + "f" * 65,
    "repo@sha256:" + "F" * 64,
    "repo@sha512:" + "f" * 64,
    "validname@invaliddigest:" + "f" * 64,
    "repo@sha256",
    "repo@" + "a" * 64,
    "quay.io/" + "a" * 248,
    "a/" * 127 + "a:tag-puts-this-over-max",
    "a/" * 128 + "a:tag",
]


@pytest.mark.parametrize(("text", "normalized", "familiar"), VALID)
def test_valid(text: str, normalized: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == normalized
    assert ref.familiar == familiar
    # The canonical and familiar forms are fixed points of parsing.
    assert parse_reference(normalized) == ref
    assert parse_reference(familiar) == ref


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid image reference"):
        parse_reference(text)


def test_tables_are_big_enough() -> None:
    assert len(VALID) >= 40 and len(INVALID) >= 15


@pytest.mark.parametrize("text", ["Localhost/x", "docker.io/Library/x", "Foo", "docker/Docker:tag"])
def test_uppercase_repository_message(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match="repository name must be lowercase"):
        parse_reference(text)


def test_error_names_the_input() -> None:
    with pytest.raises(InvalidReferenceError, match=r"'foo:bar/baz'"):
        parse_reference("foo:bar/baz")


def test_fields() -> None:
    assert parse_reference("busybox") == Reference("docker.io", "library/busybox", "latest", None)
    assert parse_reference(f"quay.io/a/b@{SHA256}") == Reference("quay.io", "a/b", None, SHA256)
    assert parse_reference(f"a/b:t@{SHA256}") == Reference("docker.io", "a/b", "t", SHA256)


def test_a_reference_is_a_value() -> None:
    """Equal parts make equal (and equally hashed) references, usable as keys."""
    assert len({parse_reference("busybox"), parse_reference("docker.io/library/busybox:latest")}) == 1
    assert parse_reference("busybox") != parse_reference("busybox:1")
    assert parse_reference("busybox") != "docker.io/library/busybox:latest"
    assert repr(parse_reference("busybox")) == \
        "Reference(registry='docker.io', repository='library/busybox', tag='latest', digest=None)"


@pytest.mark.parametrize(
    ("text", "name", "api_host", "target"),
    [
        ("busybox", "docker.io/library/busybox", "registry-1.docker.io", "latest"),
        ("index.docker.io/user/repo:v1", "docker.io/user/repo", "registry-1.docker.io", "v1"),
        ("quay.io/a/b:tag", "quay.io/a/b", "quay.io", "tag"),
        ("localhost:5000/x", "localhost:5000/x", "localhost:5000", "latest"),
        ("[::1]:5000/x", "[::1]:5000/x", "[::1]:5000", "latest"),
        (f"busybox@{SHA256}", "docker.io/library/busybox", "registry-1.docker.io", SHA256),
        (f"busybox:tag@{SHA256}", "docker.io/library/busybox", "registry-1.docker.io", SHA256),
    ],
)
def test_name_api_host_target(text: str, name: str, api_host: str, target: str) -> None:
    ref = parse_reference(text)
    assert ref.name == name
    assert ref.api_host == api_host
    assert ref.target == target


def test_with_registry() -> None:
    ref = parse_reference(f"busybox:1.36@{SHA256}")
    mirrored = ref.with_registry("mirror.gcr.io")
    assert mirrored == Reference("mirror.gcr.io", "library/busybox", "1.36", SHA256)
    assert mirrored.api_host == "mirror.gcr.io"
    assert mirrored.familiar == f"mirror.gcr.io/library/busybox:1.36@{SHA256}"
    assert ref.registry == "docker.io"  # the original is untouched
    assert mirrored.with_registry("index.docker.io") == ref
    assert ref.with_registry("localhost:5000").name == "localhost:5000/library/busybox"


@pytest.mark.parametrize("registry", ["", "bad_host", "https://mirror", "mirror.io/path", "[fe80::1%eth0]"])
def test_with_registry_rejects_bad_hosts(registry: str) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid registry host"):
        parse_reference("busybox").with_registry(registry)


def test_reference_is_frozen() -> None:
    ref = parse_reference("busybox")
    with pytest.raises(AttributeError):
        ref.tag = "other"  # type: ignore[misc]
