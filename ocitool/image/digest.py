"""Content digests (image-spec descriptor.md): parsing, and hashing while bytes stream."""

from __future__ import annotations

import re

from ocitool.errors import DigestMismatchError, ManifestError

TYPE_CHECKING = False  # type checkers treat this as True; at run time hashlib loads in _new_hash
if TYPE_CHECKING:
    import hashlib

ALGORITHMS = {"sha256": 64, "sha512": 128}
_ENCODED = re.compile(r"^[a-f0-9]+$")


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is a registered algorithm with a well-formed hex encoding."""
    algorithm, _, encoded = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    length = ALGORITHMS.get(algorithm)
    if length is None or len(encoded) != length or not _ENCODED.match(encoded):
        raise ManifestError(f"invalid or unsupported digest {digest!r}")
    return digest


def sha256_digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + _new_hash("sha256", data).hexdigest()


def _new_hash(algorithm: str, data: bytes = b"") -> hashlib._Hash:
    """A hash object; hashlib is imported here because it loads OpenSSL (~3 ms), which
    commands that only read the store never need."""
    import hashlib
    return hashlib.new(algorithm, data)


class DigestVerifier:
    """Hashes bytes as they pass and checks them against an expected digest and size."""

    def __init__(self, digest: str, size: int | None = None):
        self.digest = validate_digest(digest)
        self.size = size
        self.received = 0
        self._hash = _new_hash(digest.partition(":")[0])

    def update(self, chunk: bytes) -> None:
        """Account for ``chunk``; fail as soon as more bytes arrive than the descriptor says."""
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise DigestMismatchError(f"{self.digest}: got more than the {self.size} bytes its descriptor declares")
        self._hash.update(chunk)

    def verify(self) -> None:
        """Raise unless everything received so far is exactly the expected content."""
        if self.size is not None and self.received != self.size:
            raise DigestMismatchError(
                f"{self.digest}: got {self.received} bytes, its descriptor declares {self.size}")
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatchError(f"content does not match its digest: expected {self.digest}, got {actual}")


def verify_bytes(data: bytes, digest: str, size: int | None = None) -> bytes:
    """Return ``data`` after checking it against ``digest`` (and ``size``)."""
    verifier = DigestVerifier(digest, size)
    verifier.update(data)
    verifier.verify()
    return data
