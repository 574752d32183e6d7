"""Parse and normalize image references the way Docker does.

Users type short names such as ``busybox`` or ``user/app:1.0``; registries need a
host, a full repository path and a tag or digest. :func:`parse_reference` turns the
former into a :class:`Reference` following the grammar and normalization rules of
github.com/distribution/reference (``ParseNormalizedNamed`` plus ``TagNameOnly``),
so an image name means the same thing here as it does to ``docker pull``.

Grammar (from distribution/reference)::

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [ registry "/" ] repository
    registry       := host [ ":" port ]      host: DNS-ish name, IPv4, or [IPv6]
    repository     := component ( "/" component )*
    component      := [a-z0-9]+ ( separator [a-z0-9]+ )*   separator: "." "_" "__" "-"+
    tag            := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest         := algorithm ":" hex
"""

from __future__ import annotations

import re
from collections import namedtuple

from ocitool.errors import InvalidReferenceError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

#: Docker Hub's legacy name ("the Docker Index"), normalized to DEFAULT_REGISTRY.
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
#: The host that actually serves Docker Hub's registry API.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
#: Namespace of Docker Hub's official images: "busybox" is "library/busybox".
OFFICIAL_REPO_PREFIX = "library/"
#: Longest allowed "registry/repository" name.
NAME_TOTAL_LENGTH_MAX = 255

# Character classes are spelled out (no \w or \d) because Python's are Unicode-aware
# while Go's, which define the grammar, are ASCII-only.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6_ADDRESS = r"\[[a-fA-F0-9:]+\]"  # no zone ids, no IPv4-mapped forms
_REGISTRY_RE = re.compile(rf"(?:{_DOMAIN_NAME}|{_IPV6_ADDRESS})(?::[0-9]+)?")

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
#: Algorithms a digest may use, with the length of their lowercase-hex encoding.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
#: A bare image ID; rejected as a name because Docker would read it as an ID.
_IMAGE_ID_RE = re.compile(r"[a-f0-9]{64}")

_TRANSPORT_PREFIX = "docker://"


class Reference(namedtuple("Reference", "registry repository tag digest")):
    """A fully normalized image reference: where an image lives and which one it is.

    An immutable value: equal (and hashing the same) when all four parts are equal.
    """

    __slots__ = ()
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The repository with its registry, e.g. ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        """The canonical form ``name[:tag][@digest]``, usable as an unambiguous key."""
        return self._with_suffix(self.name)

    @property
    def familiar(self) -> str:
        """Docker's short display form: ``busybox:latest``, ``user/app:1``, ``quay.io/a/b:t``."""
        short = self.name
        if self.registry == DEFAULT_REGISTRY:
            short = self.repository
            official = short.removeprefix(OFFICIAL_REPO_PREFIX)
            # Only a single-component "library/x" is an official image.
            if official != short and "/" not in official:
                short = official
        return self._with_suffix(short)

    @property
    def api_host(self) -> str:
        """The host to send registry HTTP requests to (Docker Hub's API is not on docker.io)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def target(self) -> str:
        """What to request under ``/manifests/``: the digest if pinned, else the tag."""
        if self.digest is not None:
            return self.digest
        assert self.tag is not None, "a Reference always has a tag or a digest"
        return self.tag

    def with_registry(self, registry: str) -> Reference:
        """The same repository, tag and digest at another host, e.g. a pull-through mirror."""
        registry = _check_registry(registry, f"{registry}/{self.repository}")
        return self._replace(registry=registry)

    def _with_suffix(self, name: str) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{name}{tag}{digest}"


def parse_reference(text: str) -> Reference:
    """Parse a user-supplied image reference and normalize it as Docker does.

    ``busybox`` becomes ``docker.io/library/busybox:latest``; the first path
    component is taken as a registry only if it contains "." or ":" or is
    "localhost"; the tag "latest" is added only when neither tag nor digest is
    given. Raises :class:`InvalidReferenceError` for anything Docker would refuse.
    """
    original = text
    text = text.removeprefix(_TRANSPORT_PREFIX)
    if not text:
        raise _invalid(original, "reference is empty")
    if _IMAGE_ID_RE.fullmatch(text):
        raise _invalid(original, "a 64-character hex string is an image ID, not a repository name")

    registry, remainder = _split_registry(text)
    registry = _check_registry(registry, original)
    rest, has_at, digest = remainder.partition("@")
    repository, has_colon, tag = rest.partition(":")
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = OFFICIAL_REPO_PREFIX + repository

    if not _REPOSITORY_RE.fullmatch(repository):
        if _REPOSITORY_RE.fullmatch(repository.lower()):
            raise _invalid(original, "repository name must be lowercase")
        raise _invalid(
            original,
            f"invalid repository name {repository!r} (components are [a-z0-9] joined by "
            "'.', '_', '__' or dashes, separated by single '/')",
        )
    if len(registry) + 1 + len(repository) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(original, f"name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if has_colon and not _TAG_RE.fullmatch(tag):
        raise _invalid(original, f"invalid tag {tag!r} (want [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    if has_at:
        _check_digest(digest, original)

    return Reference(
        registry=registry,
        repository=repository,
        tag=tag if has_colon else (None if has_at else DEFAULT_TAG),
        digest=digest if has_at else None,
    )


def _split_registry(text: str) -> tuple[str, str]:
    """Split off the registry host, defaulting to Docker Hub when there is none."""
    first, slash, remainder = text.partition("/")
    if slash and (first == "localhost" or "." in first or ":" in first):
        return first, remainder
    # Unlike distribution/reference, an uppercase first component is not taken as a
    # host: "Foo/bar" is rejected as a non-lowercase repository instead.
    return DEFAULT_REGISTRY, text


def _check_registry(registry: str, original: str) -> str:
    """Validate a registry host[:port] and fold Docker Hub's legacy name into docker.io."""
    if not _REGISTRY_RE.fullmatch(registry):
        raise _invalid(original, f"invalid registry host {registry!r}")
    return DEFAULT_REGISTRY if registry == LEGACY_DEFAULT_REGISTRY else registry


def _check_digest(digest: str, original: str) -> None:
    """Require ``algorithm:hex`` with a supported algorithm and hex of the right length."""
    if not _DIGEST_RE.fullmatch(digest):
        raise _invalid(original, f"invalid digest {digest!r} (want algorithm:hex)")
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise _invalid(original, f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise _invalid(original, f"{algorithm} digest must be {length} lowercase hex characters")


def _invalid(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"invalid image reference {text!r}: {why}")
