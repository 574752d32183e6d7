"""The image store: one standard OCI image layout (image-spec image-layout.md).

Layout: ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``, readable by skopeo
(``oci:PATH:REF``) and umoci (``--image PATH:REF``). ocitool's own bookkeeping lives in
``.ocitool/`` beside them (temporary downloads and lock files), which OCI tools ignore.

Invariants, so that a process killed at any moment leaves a valid layout:
- a blob appears under ``blobs/`` only by rename, after its digest and size were checked;
- ``index.json`` is replaced by rename, under an exclusive lock, re-read inside the lock;
- writers hold a shared "gc" lock while they work; ``gc`` takes it exclusively, so it
  never removes a blob that a running pull has written but not yet referenced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from ocitool.errors import NotFoundError, StoreError
from ocitool.fsutil import atomic_write, create_temp_file
from ocitool.image.digest import DigestVerifier, validate_digest
from ocitool.image.manifest import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, decode_manifest

TYPE_CHECKING = False  # importing typing costs start-up time; type checkers treat this as True
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}


class BlobWriter:
    """A blob being written to a temporary file in the store; see :meth:`ImageStore.blob_writer`."""

    def __init__(self, store: "ImageStore", digest: str, size: int | None):
        self._store = store
        self.digest = digest
        self.size = size
        self.verifier = DigestVerifier(digest, size)
        fd, name = create_temp_file(store.tmp_dir, "blob-")
        self.temp_path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    @property
    def written(self) -> int:
        """Bytes received so far (the offset to resume a download from)."""
        return self.verifier.received

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``, hashing it on the way."""
        self.verifier.update(chunk)
        self._file.write(chunk)

    def reset(self) -> None:
        """Start over from byte 0 (the server ignored our Range request)."""
        self._file.seek(0)
        self._file.truncate()
        self.verifier = DigestVerifier(self.digest, self.size)

    def commit(self) -> Path:
        """Verify the content and move it into ``blobs/``; raise DigestMismatchError otherwise."""
        self._file.close()
        self.verifier.verify()
        target = self._store.blob_path(self.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temp_path, target)
        return target

    def discard(self) -> None:
        """Drop the temporary file (a no-op after commit)."""
        self._file.close()
        self.temp_path.unlink(missing_ok=True)


class ImageStore:
    """An OCI image layout with ocitool's ref, blob and locking rules."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.private_dir = self.path / ".ocitool"
        self.tmp_dir = self.private_dir / "tmp"

    @classmethod
    def open(cls, path: Path) -> "ImageStore":
        """Open the layout at ``path``, creating an empty one when it does not exist yet."""
        store = cls(path)
        try:
            store.tmp_dir.mkdir(parents=True, exist_ok=True)
            (store.path / "blobs").mkdir(exist_ok=True)
            if not (store.path / "oci-layout").exists():
                atomic_write(store.path / "oci-layout", json.dumps(LAYOUT_VERSION).encode(), tmp_dir=store.tmp_dir)
            if not (store.path / "index.json").exists():
                with store._index_lock():
                    if not (store.path / "index.json").exists():
                        store._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        except OSError as exc:
            raise StoreError(f"cannot use image store {path}: {exc.strerror or exc}") from None
        return store

    # -- blobs -------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        algorithm, _, encoded = validate_digest(digest).partition(":")
        return self.path / "blobs" / algorithm / encoded

    def has_blob(self, digest: str) -> bool:
        """True when the blob is present (present blobs were verified when written)."""
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        """The content of a (small) blob."""
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from the image store {self.path}") from None

    def open_blob(self, digest: str) -> BinaryIO:
        """A binary file object reading the blob."""
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from the image store {self.path}") from None

    @contextlib.contextmanager
    def blob_writer(self, digest: str, size: int | None) -> Iterator[BlobWriter]:
        """Write a blob through a temporary file; call ``commit()`` or it is discarded."""
        writer = BlobWriter(self, digest, size)
        try:
            yield writer
        finally:
            writer.discard()

    def put_blob(self, data: bytes, digest: str) -> None:
        """Store ``data`` as the blob ``digest`` after verifying it."""
        if self.has_blob(digest):
            return
        with self.blob_writer(digest, len(data)) as writer:
            writer.write(data)
            writer.commit()

    def read_manifest(self, descriptor: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Decode the manifest or index a descriptor points at."""
        data = self.read_blob(descriptor["digest"])
        return decode_manifest(data, descriptor.get("mediaType"), descriptor["digest"])

    # -- refs (index.json) --------------------------------------------------

    def index(self) -> dict[str, Any]:
        """The current ``index.json``."""
        path = self.path / "index.json"
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path} is unreadable or corrupt: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("manifests"), list):
            raise StoreError(f"{path} is not an OCI image index")
        return document

    def refs(self) -> dict[str, dict[str, Any]]:
        """Ref name -> descriptor for every named image in the store."""
        result = {}
        for descriptor in self.index()["manifests"]:
            name = descriptor.get("annotations", {}).get(REF_NAME)
            if name:
                result[name] = descriptor
        return result

    def resolve(self, name: str) -> dict[str, Any]:
        """The descriptor tagged ``name``; NotFoundError when there is none."""
        try:
            return self.refs()[name]
        except KeyError:
            raise NotFoundError(f"image {name} is not in the store {self.path} "
                                "(pull it first, or see 'ocitool images')") from None

    def set_ref(self, name: str, descriptor: dict[str, Any]) -> None:
        """Point ``name`` at ``descriptor``, replacing what it pointed at before."""
        entry = dict(descriptor)
        entry["annotations"] = {**descriptor.get("annotations", {}), REF_NAME: name}
        self._update_index(lambda manifests: [d for d in manifests if _ref_of(d) != name] + [entry])

    def remove_ref(self, name: str) -> dict[str, Any]:
        """Untag ``name`` and return the descriptor it pointed at."""
        removed: list[dict[str, Any]] = []

        def without(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            removed.extend(d for d in manifests if _ref_of(d) == name)
            return [d for d in manifests if _ref_of(d) != name]

        self._update_index(without)
        if not removed:
            raise NotFoundError(f"image {name} is not in the store {self.path}")
        return removed[0]

    def _update_index(self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        with self._index_lock():
            document = self.index()
            document["manifests"] = change(document["manifests"])
            self._write_index(document)

    def _write_index(self, document: dict[str, Any]) -> None:
        atomic_write(self.path / "index.json", json.dumps(document, indent=2).encode() + b"\n", tmp_dir=self.tmp_dir)

    # -- locking and garbage collection ------------------------------------

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        with _flock(self.private_dir / "index.lock", fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while adding blobs that are not referenced yet, so gc leaves them alone."""
        with _flock(self.private_dir / "gc.lock", fcntl.LOCK_SH):
            yield

    def reachable(self) -> set[str]:
        """Digests of every blob reachable from ``index.json``."""
        seen: set[str] = set()
        pending = list(self.index()["manifests"])
        while pending:
            descriptor = pending.pop()
            digest = descriptor.get("digest")
            if not isinstance(digest, str) or digest in seen:
                continue
            seen.add(digest)
            if descriptor.get("mediaType") in MANIFEST_TYPES + INDEX_TYPES and self.has_blob(digest):
                _, document = self.read_manifest(descriptor)
                pending.extend(document.get("manifests", []))
                pending.extend([document["config"]] if "config" in document else [])
                pending.extend(document.get("layers", []))
        return seen

    def gc(self) -> tuple[int, int]:
        """Remove unreachable blobs and abandoned temporary files; return (count, bytes) freed."""
        import shutil  # only gc removes directories; loaded here to keep reading the store quick
        with _flock(self.private_dir / "gc.lock", fcntl.LOCK_EX):
            keep = self.reachable()
            count = freed = 0
            for path in sorted((self.path / "blobs").glob("*/*")):
                if f"{path.parent.name}:{path.name}" not in keep:
                    freed += path.stat().st_size
                    path.unlink()
                    count += 1
            for path in self.tmp_dir.iterdir():
                # Writers hold the shared lock, so anything here belongs to a dead process.
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            return count, freed


def _ref_of(descriptor: dict[str, Any]) -> str | None:
    return descriptor.get("annotations", {}).get(REF_NAME)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
