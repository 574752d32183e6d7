"""Small file-system helpers shared by the stages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644, tmp_dir: Path | None = None,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a mix.

    The temporary file lives in ``tmp_dir`` (default: beside ``path``; it must be on the
    same file system) and is removed if anything fails. ``durable`` also survives a power
    loss (fsync before the rename).
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=tmp_dir or path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_in_one_call(path: str, data: str) -> None:
    """Write ``data`` with a single write(2), as /proc and /sys files (uid_map, sysctls) demand."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
