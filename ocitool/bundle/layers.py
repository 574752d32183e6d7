"""Layer blobs as verified tar streams (image-spec layer.md).

A layer is read exactly once. A helper thread reads the blob, checks it against the
descriptor (its size as bytes arrive, so an oversized blob is refused early; its digest
at the end), decompresses it by media type and hashes the result for the config's
``rootfs.diff_ids`` entry, while the caller walks the tar entries. The inflater, zstd and
hashlib release the GIL, so that work overlaps with the caller's file creation.

gzip is inflated by ISA-L (``isal``), with zlib's interface at twice zlib's speed or more:
inflating is most of the CPU time an unpack takes.
"""

from __future__ import annotations

import contextlib
import io
import queue
import struct
import tarfile
import threading

from isal import isal_zlib

from ocitool.errors import DigestMismatchError, LayerError
from ocitool.image.digest import DigestVerifier
from ocitool.image.manifest import LAYER_TYPES

TYPE_CHECKING = False  # type checkers treat this as True; these imports serve annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO, Protocol

    class Readable(Protocol):
        """Something to read bytes from."""

        def read(self, size: int, /) -> bytes: ...

    class _Decompressor(Protocol):
        """What zlib-style (isal) and zstandard decompressor objects have in common."""

        eof: bool
        unused_data: bytes
        unconsumed_tail: bytes

        def decompress(self, data: memoryview, /) -> bytes: ...

CHUNK = 1 << 20
_QUEUE_CHUNKS = 4  # decompressed chunks the helper thread may run ahead by
# The first chunks handed over are small, so that extraction starts early; they double up to
# CHUNK, so that a large layer still crosses between the threads in few pieces.
_FIRST_CHUNK = 128 << 10
_ZSTD_FEED = 256  # compressed bytes per zstd decompress() call (<= 8 MiB of output), see _decompress


class LayerSource:
    """One layer to apply: how to open its blob, and what it must be and hash to."""

    __slots__ = ("open_blob", "media_type", "digest", "size", "diff_id")

    def __init__(self, open_blob: Callable[[], BinaryIO], media_type: str, digest: str, size: int, diff_id: str):
        self.open_blob = open_blob
        self.media_type = media_type
        self.digest = digest
        self.size = size
        self.diff_id = diff_id


class LayerTar:
    """The entries of a layer tar, in order, for a single pass."""

    def __init__(self, tar: tarfile.TarFile, stream: _Pipe):
        self._tar = tar
        self._stream = stream

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while (info := self._tar.next()) is not None:
            self._tar.members.clear()  # tarfile indexes every header; one pass needs none
            yield info

    def content(self, info: tarfile.TarInfo) -> Iterator[bytes | memoryview]:
        """The data of the regular file ``info`` (the entry just returned), in chunks, each as
        soon as it has been decompressed."""
        if info.sparse is not None or self._stream.tell() != info.offset_data:
            reader = self._tar.extractfile(info)  # tarfile knows where the data and holes are
            assert reader is not None, f"{info.name} is not a regular file"
            yield from iter(lambda: reader.read(CHUNK), b"")
            return
        remaining = info.size  # plain data follows the header: skip tarfile's file object
        while remaining:
            chunk = self._stream.read_some(remaining)
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            remaining -= len(chunk)
            yield chunk


@contextlib.contextmanager
def open_layer(source: LayerSource) -> Iterator[LayerTar]:
    """Yield the layer's tar entries; when the block ends, check the blob and diff_id digests.

    What the caller left unread (padding, trailing zeros) is read first, so that it
    counts. Errors are ``LayerError`` (unsupported type, not a tar, corrupt or truncated
    data, wrong diff_id) or ``DigestMismatchError`` (the blob is not what its descriptor
    says). Most checks can only come at the end, after the caller has used the
    content: on an error it must throw away what it made from it.
    """
    compression = compression_of(source.media_type)
    with source.open_blob() as blob:
        stream = _Pipe(lambda: _uncompressed_chunks(blob, source, compression))
        try:
            try:
                tar = tarfile.open(fileobj=stream, mode="r:", tarinfo=_TarInfo)  # type: ignore[call-overload]
                yield LayerTar(tar, stream)
            except (tarfile.TarError, io.UnsupportedOperation) as exc:
                raise LayerError(f"layer {source.digest} is not a valid tar archive: {exc}") from None
            while stream.read(CHUNK):
                pass
        finally:
            stream.close()


def compression_of(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``none`` for a layer media type; LayerError if it is not a layer."""
    if media_type not in LAYER_TYPES:
        raise LayerError(f"unsupported layer media type {media_type!r}")
    if media_type.endswith(("+gzip", ".gzip")):
        return "gzip"
    return "zstd" if media_type.endswith("+zstd") else "none"


def _uncompressed_chunks(blob: BinaryIO, source: LayerSource, compression: str) -> Iterator[bytes]:
    """The layer's tar bytes; after the last one, raise if a digest does not match."""
    blob_check = DigestVerifier(source.digest, source.size)
    # An uncompressed layer's diff_id is its blob digest: the blob check already covers it.
    same_bytes = compression == "none" and source.diff_id == source.digest
    diff_check = None if same_bytes else DigestVerifier(source.diff_id)
    raw = _Verified(blob, blob_check)
    corrupt = _decompression_errors(compression)
    chunks = (iter(lambda: raw.read(CHUNK), b"") if compression == "none"
              else _batched(_decompress(raw, compression)))
    try:
        for chunk in chunks:
            if diff_check:
                diff_check.update(chunk)
            yield chunk
        while raw.read(CHUNK):  # bytes after the end of the compressed stream still count
            pass
    except corrupt as exc:
        raise LayerError(f"layer {source.digest}: corrupt or truncated {compression} data: {exc}") from None
    except OSError as exc:
        raise LayerError(f"layer {source.digest}: cannot read the blob: {exc.strerror or exc}") from None
    blob_check.verify()
    try:
        if diff_check:
            diff_check.verify()
    except DigestMismatchError:
        raise LayerError(f"layer {source.digest}: its uncompressed content does not match the diff_id "
                         f"{source.diff_id} in the image config") from None


class _Verified:
    """Passes every chunk read from ``inner`` to a DigestVerifier (which refuses excess bytes)."""

    def __init__(self, inner: Readable, verifier: DigestVerifier):
        self._inner = inner
        self._verifier = verifier

    def read(self, size: int = CHUNK, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""
        chunk = self._inner.read(size)
        self._verifier.update(chunk)
        return chunk


def _decompress(raw: Readable, compression: str) -> Iterator[bytes]:
    """The output of consecutive gzip members or zstd frames; EOFError if one is cut short.

    Not ``gzip.GzipFile`` nor ``zstandard``'s ``stream_reader`` (which just stops at a
    truncated frame): one decompressor object per member tells a finished member from an
    unfinished one. Output is bounded per call (a small input can expand enormously):
    the inflater takes a maximum length; zstd, which cannot, gets its input 256 bytes at a time
    (a 4-byte run-length block expands to 128 KiB). NUL padding between or after gzip
    members is skipped, as gzip(1) does.
    """
    limit = _FIRST_CHUNK
    gzip = compression == "gzip"
    zstd = None if gzip else _zstd_decompressor()
    member: _Decompressor | None = None
    pending = memoryview(b"")  # input not given to a decompressor yet
    while pending or (pending := memoryview(raw.read(CHUNK))):
        if member is None:
            if gzip and not (pending := memoryview(bytes(pending).lstrip(b"\0"))):
                continue
            member = isal_zlib.decompressobj(31) if zstd is None else zstd.decompressobj()
        if gzip:
            output = member.decompress(pending, limit)
            pending = memoryview(member.unconsumed_tail)
        else:
            output, pending = member.decompress(pending[:_ZSTD_FEED]), pending[_ZSTD_FEED:]
        if member.eof:
            pending = memoryview(member.unused_data + bytes(pending))
            member = None
        if output:
            limit = min(limit * 2, CHUNK)
            yield output
    if member is not None:
        raise EOFError("the data ends in the middle of a compressed member")


def _zstd_decompressor() -> Any:
    import zstandard  # only zstd layers need it
    return zstandard.ZstdDecompressor()


def _decompression_errors(compression: str) -> tuple[type[Exception], ...]:
    """What reading a corrupt or truncated stream of ``compression`` raises."""
    if compression != "zstd":
        return EOFError, isal_zlib.error
    import zstandard
    return EOFError, zstandard.ZstdError


def _batched(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Join small pieces into chunks growing from _FIRST_CHUNK to CHUNK bytes (fewer hand-overs
    between threads)."""
    batch: list[bytes] = []
    size, target = 0, _FIRST_CHUNK
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= target:
            yield b"".join(batch)
            batch, size, target = [], 0, min(target * 2, CHUNK)
    if batch:
        yield b"".join(batch)


_END = object()


class _Pipe:
    """Bytes made by a helper thread, read here with ``read``, ``tell`` and forward ``seek``.

    That is all tarfile's random-access mode ("r:") needs; its stream mode ("r|") copies
    its whole buffer on every read, which costs more than all the rest of an unpack.
    An exception in the producer is raised by the read that reaches it.
    """

    def __init__(self, produce: Callable[[], Iterator[bytes]]):
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._chunk = b""
        self._offset = 0  # in self._chunk
        self._position = 0  # in the whole stream
        self._ended = False
        self._thread = threading.Thread(target=self._produce, args=(produce,), name="layer-reader", daemon=True)
        self._thread.start()

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); ``b""`` at the end."""
        if 0 <= size <= len(self._chunk) - self._offset:  # the usual case: a header, a small file
            data = self._chunk[self._offset:self._offset + size]
            self._offset += size
            self._position += size
            return data
        if size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        parts = []
        while size and (self._offset < len(self._chunk) or self._next_chunk()):
            piece = self._chunk[self._offset:self._offset + size]
            self._offset += len(piece)
            size -= len(piece)
            parts.append(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._position += len(data)
        return data

    def read_some(self, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes of what has arrived (waiting only when nothing has), not copied;
        empty at the end."""
        if self._offset >= len(self._chunk) and not self._next_chunk():
            return b""
        data = memoryview(self._chunk)[self._offset:self._offset + size]
        self._offset += len(data)
        self._position += len(data)
        return data

    def tell(self) -> int:
        """Bytes read so far."""
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        """Skip forward to ``position``; going back is not possible."""
        if whence != io.SEEK_SET or position < self._position:
            raise io.UnsupportedOperation("a layer stream can only skip forward")
        while self._position < position and self.read(min(position - self._position, CHUNK)):
            pass
        return self._position

    def close(self) -> None:
        """Stop the producer (if it is still running) and wait for it."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()

    def _next_chunk(self) -> bool:
        if self._ended:
            return False
        item = self._queue.get()
        if item is _END or isinstance(item, BaseException):
            self._ended = True
            if isinstance(item, BaseException):
                raise item
            return False
        assert isinstance(item, bytes)
        self._chunk, self._offset = item, 0
        return True

    def _produce(self, produce: Callable[[], Iterator[bytes]]) -> None:
        try:
            for chunk in produce():
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.05)
                return True
        return False


_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")


class _TarInfo(tarfile.TarInfo):
    """tarfile's TarInfo with a faster decoder for plain ustar/GNU headers.

    ``TarInfo.frombuf`` spends ~25 µs a header, a large part of an unpack's CPU time.
    This decodes the common case (octal numbers, unsigned checksum right, not GNU
    sparse) with one ``struct`` call and gives everything else to tarfile unchanged.
    """

    __slots__ = ()

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        """Decode one 512-byte header, as ``tarfile.TarInfo.frombuf`` does."""
        if len(buf) != tarfile.BLOCKSIZE or not buf[0] or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, checksum, kind, linkname, _magic, _version, uname, gname,
         devmajor, devminor, prefix) = _HEADER.unpack(buf[:_HEADER.size])
        try:
            numbers = [int(field.split(b"\0", 1)[0].strip() or b"0", 8)
                       for field in (mode, uid, gid, size, mtime, checksum, devmajor, devminor)]
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        if numbers[5] != 256 + sum(buf) - sum(buf[148:156]):
            return super().frombuf(buf, encoding, errors)
        info = cls()
        info.mode, info.uid, info.gid, info.size, info.mtime, info.chksum, info.devmajor, info.devminor = numbers
        info.type = kind
        info.name, info.linkname, info.uname, info.gname, ustar_prefix = (
            field.split(b"\0", 1)[0].decode(encoding, errors) for field in (name, linkname, uname, gname, prefix))
        if info.type == tarfile.AREGTYPE and info.name.endswith("/"):
            info.type = tarfile.DIRTYPE
        if info.type == tarfile.DIRTYPE:
            info.name = info.name.rstrip("/")
        if ustar_prefix and info.type not in tarfile.GNU_TYPES:
            info.name = f"{ustar_prefix}/{info.name}"
        return info
